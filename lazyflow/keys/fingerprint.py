"""Code fingerprints: what a function *is*, so editing it invalidates its results.

Design note
-----------
The rule: a fingerprint covers everything the code can reach that decides
what it computes, or the function is *volatile* (never served from a cache)
and says why. A false change costs a recompute; a missed change costs a
wrong result, so every doubt resolves towards "changed".

A fingerprint has a *static* part, computed once per code object
(``bytecode.py``: the code's digest, the names it may read, its dynamic
lookups such as ``globals()`` or ``eval``, which make the function volatile),
and what is the user's versus a package's is decided in ``origin.py``.

The *dynamic* part is a walk of what the code reaches, re-checked on every
request because a notebook rebinds and mutates things without touching the
function. What is walked, by kind:

* a user function (defined in the notebook, a script or a local module): its
  code, defaults, closure cells, its own attributes, the globals its code names,
  the builtins it reads when patched, the modules its body imports (a local one
  not yet loaded is imported, so a new process keys the file it would run), and
  what it wraps (``__wrapped__``) — so decorators, their arguments and their
  bodies count. *User* is decided by the namespace the code runs in, never by
  ``__module__``, which ``functools.wraps`` copies from what it wraps;
* a bound method: its function *and* its instance's state;
* a user class: every class of its MRO that is user code — methods (through
  staticmethod, classmethod, property), nested classes, class data, enum
  members — plus the set of attribute names, so monkeypatching is seen, the
  MRO itself (``__bases__`` can be reassigned) and a user metaclass; a
  base from an installed package (``enum.Enum``) contributes
  ``package==version`` and is never walked;
* a user module (a file next to the notebook): the attributes each function
  reaching it reads from it (a module met again is read for the new reader's
  names) and its ``__getattr__``, by the *loaded* objects, never by the file on
  disk (an un-reloaded kernel still runs the old code; a changed file gets one
  warning);
* a function, class or module *defined in* an installed package:
  ``package==version`` (an installed function's closure is still walked: it
  may hold user code);
* an object whose class defines ``__lazyflow_key__()``: the string it returns
  (a ``%%flow`` cell, whose node ``version=`` carries its code's digest);
* any other value — a callable instance such as ``functools.partial``,
  ``operator.itemgetter`` or a user object with ``__call__`` included — its
  :func:`hash_value`, which hashes state by ``__reduce_ex__`` and reaches any
  code inside through this module (see ``_hash_code``). A queue or weak
  container anywhere in it makes the function volatile (``hash_read_value``):
  its items change without the name being rebound, and a value digest keys
  it by type (as an input, a control channel). Not for the function's own
  defaults, which are its inputs' values, nor for what an installed
  function's closure holds (the package's state: ``singledispatch``'s cache).

Each part is a named component (``code:f``, ``global:FACTOR``,
``helper:g``...) so ``explain`` can say *which* part changed. Labels are
unique: a global of another module is qualified by its module, and a second
part under a taken label gets ``#2``, so no part can hide another.

Memo. Results are memoised per function and re-validated by *checks*: each
holder/name read is still the same object, mutable values still hash the
same, classes have the same attribute names. A warm request pays a few
identity tests per node. A walk that meets an object whose own fingerprint is
in progress on this thread (mutual references through values) writes a
placeholder and is not memoised, so the result never depends on the order
in which a process first met its functions.

This module knows nothing of caches or graphs; it registers its code hasher
into :mod:`lazyflow.keys.hashing`, which values carrying code go through.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from lazyflow.errors import HashingError
from lazyflow.keys.bytecode import DYNAMIC_BUILTINS, code_info
from lazyflow.keys.hashing import Hasher, hash_read_value, hash_value, register_code_hasher
from lazyflow.keys.origin import (
    display_name,
    is_installed,
    is_user_code,
    is_user_module,
    module_token,
    note_stale_file,
    object_token,
    package_version,
    path_is_installed,
)
from lazyflow.keys.weakmemo import WeakMemo

__all__ = ["DYNAMIC_BUILTINS", "Fingerprint", "fingerprint", "is_user_code", "module_token",
           "refresh"]

_BUILTINS = frozenset(dir(builtins))
_ORIGINAL_BUILTINS = dict(vars(builtins))  # as lazyflow found them: a patched one is keyed

# how a check re-reads what the walk read
_ITEM, _ATTR, _CLASS_ITEM, _CLASS_KEYS, _SELF, _NAMES, _FUNC_ATTRS = range(7)
# (how, holder, name, the object read, its digest when it must be re-hashed)
_Check = tuple[int, Any, Any, Any, "str | None"]


@dataclass(frozen=True)
class Fingerprint:
    """A function's code identity: one digest plus the named parts it is made of.

    ``volatile`` is true when some part could not be seen into; such a
    function's results are never served from a cache. ``notes`` says why (and
    names external state the code reads, such as environment variables).
    """

    digest: str
    components: Mapping[str, str] = field(default_factory=dict)
    volatile: bool = False
    notes: tuple[str, ...] = ()
    # what the memo re-checks: the version token, the function's code, the values read
    _extra: str = field(default="", repr=False, compare=False)
    _code: Any = field(default=None, repr=False, compare=False)
    _checks: tuple[_Check, ...] = field(default=(), repr=False, compare=False)
    # the function had no attributes of its own: the memo checks it still has none first
    _bare: bool = field(default=False, repr=False, compare=False)

    @property
    def volatile_reason(self) -> str:
        """Why results of this code are not cached (for ``explain`` and run records)."""
        return "not cached: " + ("; ".join(self.notes) or "its code cannot be seen into")


def fingerprint(func: Callable[..., Any], *, extra: str = "") -> Fingerprint:
    """Fingerprint ``func`` (and, transitively, the helpers and globals it reads).

    ``extra`` is mixed in as a user token (a node's ``version=``). The result
    is memoised per function and re-validated on each call by checking that
    every global, closure cell and default it read is still the same object
    (and, for mutable values, still hashes the same), so a warm request pays
    a few identity tests instead of a walk through the code.

    >>> def f(x): return x + 1
    >>> fingerprint(f).digest == fingerprint(f).digest
    True
    """
    memo: Fingerprint | None = _MEMO.get(func)
    if memo is not None and _current(memo, func, extra):
        return memo
    result, memoisable = _compute(func, extra)
    if memoisable:
        _MEMO.set(func, result)
    return result


def refresh(previous: Fingerprint | None, func: Callable[..., Any], *, extra: str = ""
            ) -> Fingerprint:
    """``previous``, a fingerprint of ``func`` the caller keeps, if it still holds; else a
    new one, which this module does not memoise (the caller keeps it: a graph node does,
    which spares the process-wide memo one entry per node for the cyclic GC to walk)."""
    if previous is not None and _current(previous, func, extra):
        return previous
    memo: Fingerprint | None = _MEMO.get(func)
    if memo is not None and _current(memo, func, extra):
        return memo
    return _compute(func, extra)[0]


def _current(memo: Fingerprint, func: Any, extra: str) -> bool:
    """Whether ``memo``, computed for this very ``func``, still describes it."""
    return not memo.volatile and memo._code is getattr(func, "__code__", None) \
        and memo._extra == extra and (not memo._bare or not _attributes_of(func)) \
        and (not memo._checks or _still_valid(func, memo._checks))


# --------------------------------------------------------------------------- in progress

_LOCAL = threading.local()


def _in_progress() -> list[list[Any]]:
    """This thread's stack of ``[object, tainted]``: fingerprints being computed or checked."""
    stack: list[list[Any]] | None = getattr(_LOCAL, "stack", None)
    if stack is None:
        stack = _LOCAL.stack = []
    return stack


def _hash_code(h: Hasher, obj: Any) -> None:
    """The code hasher :mod:`lazyflow.keys.hashing` calls for functions, classes and modules.

    An object whose fingerprint is in progress on this thread is written as a
    back-reference, and every fingerprint above it on the stack is marked
    tainted (not memoised): its digest holds a placeholder for a part whose
    full digest is being computed.
    """
    stack = _in_progress()
    for i, frame in enumerate(stack):
        if frame[0] is obj:
            for above in stack[i + 1:]:
                above[1] = True
            h.tag(b"@")
            h.chunk(display_name(obj).encode())
            return
    fp = fingerprint(obj)
    # a function whose reads cannot be seen cannot be keyed; a class's instances are still
    # values (their state is hashed beside the class), whatever its methods read at run time
    if fp.volatile and not isinstance(obj, type):
        raise HashingError(display_name(obj), "; ".join(fp.notes) or "its code is volatile")
    h.tag(b"x")
    h.chunk(fp.digest.encode())


register_code_hasher(_hash_code)


# --------------------------------------------------------------------------- the walk


class _Walk:
    """One fingerprint computation: components by unique label, checks, notes."""

    __slots__ = ("checks", "components", "home", "labels", "notes", "seen", "volatile")

    def __init__(self, home: Any) -> None:
        self.components: dict[str, str] = {}
        self.checks: list[_Check] = []
        self.notes: list[str] = []
        self.seen: set[Any] = set()  # ids of objects, (id of a module's dict, attribute)
        self.labels: dict[str, Any] = {}  # label -> what it stands for (to share or number it)
        self.home = home  # the root's global namespace: its globals keep short labels
        self.volatile = False

    def add(self, label: str, digest: str, source: Any = None) -> None:
        """Add a component; a label taken by another part is numbered, never overwritten."""
        key = label
        n = 1
        while key in self.components:
            if source is not None and self.labels.get(key) == source:
                return  # the same part, reached twice
            n += 1
            key = f"{label}#{n}"
        self.components[key] = digest
        self.labels[key] = source

    def first_visit(self, obj: Any) -> bool:
        if id(obj) in self.seen:
            return False
        self.seen.add(id(obj))
        return True

    def unseeable(self, note: str) -> None:
        """Something the walk cannot see into: the function becomes volatile."""
        self.volatile = True
        if note not in self.notes:
            self.notes.append(note)


def _compute(func: Any, extra: str) -> tuple[Fingerprint, bool]:
    """Walk ``func``; return its fingerprint and whether it may be memoised."""
    walk = _Walk(getattr(func, "__globals__", None))
    frame = [func, False]
    stack = _in_progress()
    stack.append(frame)
    try:
        _collect(func, "code", walk)
    finally:
        stack.pop()
    components = walk.components
    if extra:
        components["version"] = extra
    # one string, hashed once: the same bytes as feeding name, NUL, value, NUL per component
    folded = "".join([f"{name}\0{components[name]}\0" for name in sorted(components)])
    digest = xxhash.xxh3_128_hexdigest(folded.encode())
    notes = tuple(walk.notes)
    if walk.volatile:
        return Fingerprint(digest, components, True, notes), False
    checks = tuple(walk.checks)
    if checks and checks[0][1] is func and checks[0][2] == "__code__":
        checks = checks[1:]  # the function's own code: the memo checks it first
    # and that it still has no attributes, if it had none: most functions have none, and
    # their memo then has no checks left to loop over (0.24 µs a node on a warm request)
    own = [c for c in checks if c[0] == _FUNC_ATTRS and c[1] is func and c[4] == ""]
    if own:
        checks = tuple(c for c in checks if c is not own[0])
    return (Fingerprint(digest, components, False, notes, extra,
                        getattr(func, "__code__", None), checks, bool(own)), not frame[1])


def _collect(obj: Any, role: str, walk: _Walk) -> None:
    """Add the components of callable ``obj``, reached in ``role`` ('code', 'helper'...)."""
    if not walk.first_visit(obj):
        return
    if isinstance(obj, types.FunctionType):
        _collect_function(obj, role, walk)
    elif isinstance(obj, types.MethodType):
        _collect(obj.__func__, role, walk)
        _add_value(walk, f"self:{display_name(obj)}", obj.__self__, _ATTR, obj, "__self__")
    elif isinstance(obj, type):
        if is_user_code(obj):
            _collect_class(obj, walk)
        else:
            walk.add(f"{role}:{display_name(obj)}", object_token(obj), obj)
    elif isinstance(obj, types.ModuleType):
        walk.add(f"{role}:{obj.__name__}", module_token(obj), obj)
    elif isinstance(obj, types.BuiltinFunctionType):  # C functions, and methods of C objects
        walk.add(f"{role}:{display_name(obj)}", object_token(obj), obj)
        owner = getattr(obj, "__self__", None)
        if owner is not None and not isinstance(owner, types.ModuleType):
            _add_value(walk, f"self:{display_name(obj)}", owner, _ATTR, obj, "__self__")
    elif hasattr(type(obj), "__lazyflow_key__"):  # it vouches for its own behaviour
        walk.add(f"callable:{display_name(obj)}", str(obj.__lazyflow_key__()), obj)
    else:  # a callable instance: partial, itemgetter, an object with __call__...
        _add_value(walk, f"callable:{display_name(obj)}", obj, _SELF, obj, None)
    wrapped = getattr(obj, "__wrapped__", None) if not isinstance(obj, type) else None
    if wrapped is not None and callable(wrapped):
        _add_reference(walk, f"wrapped:{display_name(wrapped)}", wrapped, _ATTR, obj,
                       "__wrapped__")


def _collect_function(func: types.FunctionType, role: str, walk: _Walk) -> None:
    code = func.__code__
    label = f"{role}:{display_name(func, qualified=role != 'code')}"
    installed = is_installed(func)
    walk.checks.append((_ATTR, func, "__code__", code, None))
    if installed:  # never walk a package's own code; what it closes over may be the user's
        walk.add(label, object_token(func), func)
    else:
        digest, names, dynamic = code_info(code, memo=role != "code")
        walk.add(label, digest, func)
        # imports first: importing a local module loads what the globals then see
        imported = {_collect_import(func, lookup, names, walk) for lookup in dynamic
                    if lookup.startswith("module:")} if dynamic else _NONE
        for note in _unseen_lookups(func, dynamic) if dynamic else ():
            walk.unseeable(f"{display_name(func)} {note}")
        for attr in ("__defaults__", "__kwdefaults__"):
            value = getattr(func, attr)
            if value:
                _add_value(walk, f"{label}:{attr.strip('_')}", value, _ATTR, func, attr,
                           strict=role != "code")
        if func.__dict__:
            _collect_attributes(func, label, walk)
        else:  # none now: one set later is a change
            walk.checks.append((_FUNC_ATTRS, func, None, None, ""))
        _collect_globals(func, names, walk, imported)
    if func.__closure__:
        for name, cell in zip(code.co_freevars, func.__closure__, strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell: the closure is not yet bound
                continue
            _add_reference(walk, f"{label}:closure:{name}", value, _ATTR, cell, "cell_contents",
                           strict=not installed)


def _collect_attributes(func: types.FunctionType, label: str, walk: _Walk) -> None:
    """A function's own attributes (``helper.scale = 2``, read as ``helper.scale``): their
    digest, re-hashed on every request, as attributes are set and changed in place."""
    attributes = _attributes_of(func)
    digest = _digest_or_note(walk, f"{label}:attributes", attributes) if attributes else ""
    if digest:
        walk.add(f"{label}:attributes", digest, _Source(func, "__dict__"))
    if digest is not None:  # also without any: one set later is seen
        walk.checks.append((_FUNC_ATTRS, func, None, None, digest))


def _attributes_of(func: Any) -> dict[str, Any]:
    """``func.__dict__`` without dunders (``__wrapped__``, ``__signature__``: metadata that
    tools set, not data the code reads; what ``__wrapped__`` names is walked)."""
    found: dict[str, Any] = func.__dict__
    if not found:
        return found
    return {k: v for k, v in found.items() if not (k.startswith("__") and k.endswith("__"))}


def _collect_globals(func: types.FunctionType, names: tuple[str, ...], walk: _Walk,
                     imported: set[str] | frozenset[str]) -> None:
    """The globals ``func``'s code names, the builtins it reads, and modules loaded
    elsewhere that it names (``imported`` are the modules its body imports, walked)."""
    namespace = func.__globals__
    home = namespace is walk.home
    prefix = "global:" if home else f"global:{namespace.get('__name__', '?')}."
    builtin_names: list[str] = []
    for name in names:
        value = namespace.get(name, _MISSING)
        if value is not _MISSING:
            _add_reference(walk, prefix + name, value, _ITEM, namespace, name, names)
            continue
        walk.checks.append((_ITEM, namespace, name, _MISSING, None))  # defined later: changed
        if name in imported:
            continue
        module = sys.modules.get(name)
        if module is not None and is_user_module(module):  # ``import mymod`` in the body
            _add_reference(walk, f"module:{name}", module, _ITEM, sys.modules, name, names)
            continue
        if name in _ENVIRONMENT:
            note = f"{display_name(func)} reads environment variables ({name})"
            if note not in walk.notes:
                walk.notes.append(note)
        if name in _ORIGINAL_BUILTINS:
            builtin_names.append(name)
        elif name not in _BUILTINS and module is None:
            walk.add(prefix + name, "<unbound>")
    if builtin_names:
        _collect_builtins(func, tuple(builtin_names), walk)


def _collect_builtins(func: types.FunctionType, names: tuple[str, ...], walk: _Walk) -> None:
    """Builtins the code reads: a patched one (``builtins.abs = ...``) is keyed like a global;
    one check re-reads them all, so patching one later is seen."""
    space = func.__builtins__
    values = tuple(map(space.get, names))
    patched = () if values == tuple(map(_ORIGINAL_BUILTINS.get, names)) else names
    for name in patched:
        value = space.get(name)
        if value is _ORIGINAL_BUILTINS[name]:
            continue
        if isinstance(value, types.MethodType) and is_installed(value):
            walk.add(f"builtin:{name}", object_token(value), value)  # ipykernel's ``input``
        elif value is not None:
            _add_reference(walk, f"builtin:{name}", value, _ITEM, space, name)
    walk.checks.append((_NAMES, space, names, values, None))


def _collect_import(func: types.FunctionType, lookup: str, names: tuple[str, ...],
                    walk: _Walk) -> str:
    """A module ``func``'s body imports (``module:<level>:<name>``), keyed as the import
    would find it now; returns the name as the code spells it.

    A module not loaded yet is what the import will load: an installed one is keyed
    ``package==version`` without importing it (as it is once loaded); a local one is
    imported here, so its attributes are walked as loaded (the import the node runs
    would load that very file; keying it unloaded would let a new process serve a
    result of an edited file).
    """
    _, level, spelled = lookup.split(":", 2)
    absolute = _absolute_name(func, int(level), spelled)
    if not absolute:
        return spelled
    label = f"module:{absolute}"
    module = sys.modules.get(absolute)
    if module is None:
        top = absolute.partition(".")[0]
        installed = _installed_unloaded(top)
        if installed is None:  # not found: the import fails when it runs; seen once loaded
            walk.add(label, "<not found>")
            walk.checks.append((_ITEM, sys.modules, absolute, _MISSING, None))
            return spelled
        if installed:
            walk.add(label, f"{absolute}=={package_version(top)}" if package_version(top)
                     else absolute)
            return spelled
        try:
            module = importlib.import_module(absolute)
        except Exception as e:  # noqa: BLE001 - the node's own import would fail alike
            walk.unseeable(f"{display_name(func)} imports {absolute}, which failed to import "
                           f"({type(e).__name__}: {e})")
            return spelled
    _add_reference(walk, label, module, _ITEM, sys.modules, absolute, names)
    return spelled


def _absolute_name(func: types.FunctionType, level: int, name: str) -> str:
    """The module an import of ``name`` at ``level`` in ``func``'s module names ('' if none)."""
    if not level:
        return name
    package = func.__globals__.get("__package__")
    if not isinstance(package, str) or not package:
        return ""
    try:
        return importlib.util.resolve_name("." * level + name, package)
    except (ImportError, ValueError):
        return ""


def _installed_unloaded(top: str) -> bool | None:
    """Whether the unloaded top-level module ``top`` is installed; ``None``: not found.
    Only the top level is looked up: finding ``pkg.sub`` would import ``pkg``."""
    if top in sys.builtin_module_names:
        return True
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    origin = spec.origin if spec.has_location else None
    locations = list(spec.submodule_search_locations or ())
    where = origin or (locations[0] if locations else None)
    return where is None or path_is_installed(where)  # frozen modules have no file


_ENVIRONMENT = frozenset({"environ", "getenv", "environb"})
_NONE: frozenset[str] = frozenset()


def _add_reference(walk: _Walk, label: str, value: Any, how: int, holder: Any, name: Any,
                   names: tuple[str, ...] = (), *, strict: bool = True) -> None:
    """Add what ``value``, read as ``holder[name]``, contributes, and the check re-reading it
    (``strict``: see :func:`_digest_or_note`)."""
    if isinstance(value, types.ModuleType):
        walk.checks.append((how, holder, name, value, None))
        if is_user_module(value):
            _collect_module(value, label, names, walk)
        else:
            walk.add(label, module_token(value), value)
    elif isinstance(value, (*_CODE_TYPES, type)):
        walk.checks.append((how, holder, name, value, None))
        if _plainly_installed(value):  # package==version, under the name the code reads
            walk.add(label, object_token(value), value)
        else:
            _collect(value, "helper", walk)
    elif callable(value) and "__wrapped__" in getattr(value, "__dict__", ()):
        walk.checks.append((how, holder, name, value, None))  # lru_cache and other wrappers
        _collect(value, "helper", walk)
    else:
        _add_value(walk, label, value, how, holder, name, strict=strict)


_CODE_TYPES = (types.FunctionType, types.MethodType, types.BuiltinFunctionType)


def _plainly_installed(value: Any) -> bool:
    """A function or class defined in an installed package that holds nothing of the user's:
    no closure, no instance it is bound to (``{}.get`` is bound to a value)."""
    if isinstance(value, types.MethodType) or not is_installed(value):
        return False
    if isinstance(value, types.FunctionType):
        return not value.__closure__ and not hasattr(value, "__wrapped__")
    owner = getattr(value, "__self__", None)
    return owner is None or isinstance(owner, (types.ModuleType, type))


def _collect_module(module: types.ModuleType, label: str, names: tuple[str, ...],
                    walk: _Walk) -> None:
    """A user module: the attributes ``names`` the code reads from it, as loaded."""
    walk.add(label, f"module {module.__name__}", module)
    namespace = vars(module)
    if walk.first_visit(module):
        note_stale_file(module)
        getter = namespace.get("__getattr__")  # PEP 562: attributes it computes are its code
        if getter is not None:
            _add_reference(walk, f"global:{module.__name__}.__getattr__", getter, _ITEM,
                           namespace, "__getattr__")
    if "__dict__" in names:
        walk.unseeable(f"reads {module.__name__}.__dict__, which reaches attributes lazyflow "
                       "cannot follow")
    # each reader's names: a module met again through another function may be read for
    # other attributes (``mymod.f()`` here, ``mymod.K`` in a helper)
    for attr in names:
        if attr.startswith("__") and attr.endswith("__"):
            continue
        read = (id(namespace), attr)
        if read in walk.seen:
            continue
        walk.seen.add(read)
        value = namespace.get(attr, _MISSING)
        if value is not _MISSING:
            _add_reference(walk, f"global:{module.__name__}.{attr}", value, _ITEM, namespace,
                           attr, names)


def _collect_class(cls: type, walk: _Walk) -> None:
    """A user class: its MRO's user classes — methods, nested classes, data, enum members."""
    walk.add(f"class:{cls.__qualname__}",
             ",".join(f"{b.__module__}.{b.__qualname__}" for b in cls.__mro__), cls)
    meta = type(cls)
    if meta is not type and is_user_code(meta):  # its methods and properties run on the class
        _collect(meta, "metaclass", walk)
    walk.checks.append((_ATTR, cls, "__mro__", cls.__mro__, None))  # ``C.__bases__ = ...``
    for base in cls.__mro__:
        if base is object or (base is not cls and not walk.first_visit(base)):
            continue
        if not is_user_code(base):
            walk.add(f"base:{display_name(base)}", object_token(base), base)
            continue
        namespace = vars(base)
        walk.checks.append((_CLASS_KEYS, base, None, tuple(namespace), None))
        for attr, member in namespace.items():
            _collect_member(base, attr, member, walk)


def _collect_member(cls: type, attr: str, member: Any, walk: _Walk) -> None:
    where = f"{cls.__qualname__}.{attr}"
    functions = _functions_of(member)
    if functions:
        walk.checks.append((_CLASS_ITEM, cls, attr, member, None))
        for func in functions:
            if not is_installed(func):
                _collect(func, f"method:{where}", walk)
            else:
                walk.add(f"method:{where}", object_token(func), func)
    elif isinstance(member, type):
        walk.checks.append((_CLASS_ITEM, cls, attr, member, None))
        if is_user_code(member):
            _collect(member, "class", walk)
        else:
            walk.add(f"class:{where}", object_token(member), member)
    elif isinstance(member, cls) and hasattr(member, "_value_"):  # an enum member
        walk.checks.append((_CLASS_ITEM, cls, attr, member, None))
        _add_value(walk, f"member:{where}", member._value_, _ATTR, member, "_value_")
    elif not _is_internal_attribute(attr, member):
        _add_value(walk, f"class:{where}", member, _CLASS_ITEM, cls, attr)


def _functions_of(member: Any) -> tuple[Any, ...]:
    """The functions a class attribute runs: itself, or what a descriptor wraps."""
    if isinstance(member, (staticmethod, classmethod)):
        return (member.__func__,)
    if isinstance(member, property):
        return tuple(f for f in (member.fget, member.fset, member.fdel) if f is not None)
    if isinstance(member, functools.cached_property):
        return (member.func,)
    if isinstance(member, (types.FunctionType, types.BuiltinFunctionType)):
        return (member,)
    return ()


def _is_internal_attribute(attr: str, member: Any) -> bool:
    """Dunders, ``_sunder_`` names, ABC state and slot descriptors: not user data."""
    return (attr.startswith("_") and attr.endswith("_")) or attr == "_abc_impl" \
        or member is None or isinstance(member, (types.MemberDescriptorType,
                                                 types.GetSetDescriptorType))


_MISSING = object()
_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), range)


def _is_immutable(value: Any) -> bool:
    """Whether ``value`` can never change in place (and holds no code that could). Exact
    types only: a subclass of ``str`` or ``int`` may carry attributes that change."""
    if type(value) in _IMMUTABLE:
        return True
    return type(value) in (tuple, frozenset) and all(type(v) in _IMMUTABLE for v in value)


def _add_value(walk: _Walk, label: str, value: Any, how: int, holder: Any, name: Any, *,
               strict: bool = True) -> None:
    """Add the value digest of ``value``; one that cannot be hashed makes the walk volatile."""
    digest = _digest_or_note(walk, label, value, strict=strict)
    if digest is None:
        return
    walk.add(label, digest, _Source(holder, name))
    # a value that can change in place is re-hashed on every request
    walk.checks.append((how, holder, name, value, None if _is_immutable(value) else digest))


def _digest_or_note(walk: _Walk, label: str, value: Any, *, strict: bool = True
                    ) -> str | None:
    """The digest of ``value``, or ``None`` when it cannot be hashed (the walk turns volatile).

    ``strict``, for what user code reads: by :func:`hash_read_value`, to which a queue or
    weak container (whose items change without the name being rebound) cannot be keyed, so
    the node is not cached. Otherwise by :func:`hash_value`, which keys them by type: for
    the fingerprinted function's own defaults, which are its inputs' values (a node's
    engine passes them, hashed as inputs: a queue there is a control channel), and for what
    an installed function's closure holds, the package's own state
    (``functools.singledispatch`` keeps its dispatch cache, derived from the registry hashed
    beside it, in a ``WeakKeyDictionary``).
    """
    try:
        return hash_read_value(value) if strict else hash_value(value)
    except HashingError as e:
        walk.add(label, f"<unhashable {e.type_name}>")
        walk.unseeable(f"{label} holds a {e.type_name} that cannot be hashed ({e.reason}); "
                       "register a hasher with lf.register_hasher")
        return None


class _Source(tuple):  # type: ignore[type-arg]
    """Where a value was read (holder identity, name): the same read reached twice is one part."""

    def __new__(cls, holder: Any, name: Any) -> _Source:
        return super().__new__(cls, (id(holder), name))


# --------------------------------------------------------------------------- checks


def _read(how: int, holder: Any, name: Any) -> Any:
    if how == _ITEM:
        return holder.get(name, _MISSING)
    if how == _ATTR:
        return getattr(holder, name, _MISSING)
    if how == _CLASS_ITEM:
        return holder.__dict__.get(name, _MISSING)
    if how == _CLASS_KEYS:
        return tuple(holder.__dict__)
    return holder


def _still_valid(owner: Any, checks: tuple[_Check, ...]) -> bool:
    """Re-read every check; values are re-hashed with ``owner`` in progress, as in the walk."""
    frame: list[Any] | None = None
    stack = _in_progress()
    try:
        for how, holder, name, value, digest in checks:
            # the common reads inline: this loop is a warm request's whole cost
            if how == _ITEM:
                if holder.get(name, _MISSING) is not value:
                    return False
            elif how == _ATTR:
                if getattr(holder, name, _MISSING) is not value:
                    return False
            elif how == _FUNC_ATTRS:
                if not digest:  # it had none: any set since is a change
                    if holder.__dict__ and _attributes_of(holder):
                        return False
                    continue
                value = _attributes_of(holder)
            elif how == _NAMES:  # identity of each (tuple equality tests identity first)
                if tuple(map(holder.get, name)) != value:
                    return False
                continue
            elif how == _CLASS_KEYS:
                if tuple(holder.__dict__) != value:
                    return False
                continue
            elif _read(how, holder, name) is not value:
                return False
            if digest is not None:  # by hash_value: a walk that met a queue was not memoised
                if frame is None:
                    frame = [owner, False]
                    stack.append(frame)
                try:
                    if hash_value(value) != digest:
                        return False
                except HashingError:
                    return False
        return True
    finally:
        if frame is not None:
            stack.pop()


# --------------------------------------------------------------------------- memo


_MEMO = WeakMemo()  # function -> its Fingerprint


def _unseen_lookups(func: types.FunctionType, dynamic: tuple[str, ...]) -> list[str]:
    """Which dynamic lookups of ``func`` reach what the walk cannot see, described."""
    notes = []
    for lookup in dynamic:
        kind, _, target = lookup.partition(":")
        if kind == "module":  # an import by a constant name: walked by _collect_import
            continue
        if kind == "modules":
            notes.append("reads sys.modules by a computed name, which reaches modules "
                         "lazyflow cannot follow")
        elif kind == "call":
            notes.append(f"calls {target}(), which reads names lazyflow cannot follow")
        elif kind == "import":
            notes.append("imports a module by a computed name (import_module)")
        else:
            module = func.__globals__.get(target, sys.modules.get(target))
            if not isinstance(module, types.ModuleType) or is_user_module(module):
                notes.append(f"calls getattr({target}, <computed name>), which reads "
                             "attributes lazyflow cannot follow")
    return notes


