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
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from lazyflow.errors import HashingError
from lazyflow.keys.bytecode import DYNAMIC_BUILTINS, code_info
from lazyflow.keys.hashing import Hasher, hash_value, own_wrapped, register_code_hasher
from lazyflow.keys.origin import (
    absolute_name,
    class_name,
    display_name,
    installed_unloaded,
    is_installed,
    is_user_code,
    is_user_module,
    module_token,
    note_stale_file,
    object_token,
    package_version,
    unseen_lookups,
)
from lazyflow.keys.readfiles import collect_read_file
from lazyflow.keys.rechecks import (
    ATTR,
    CLASS_ITEM,
    CLASS_KEYS,
    FUNC_ATTRS,
    ITEM,
    MISSING,
    NAMES,
    SELF,
    Check,
    attributes_of,
    in_progress,
    still_valid,
)
from lazyflow.keys.walk import Source, Walk, add_value, digest_or_note
from lazyflow.keys.weakmemo import WeakMemo

# hash_value is lazyflow's from here: importing this module registers the code hasher
__all__ = ["DYNAMIC_BUILTINS", "Fingerprint", "fingerprint", "hash_value", "is_user_code",
           "module_token", "refresh"]

_BUILTINS = frozenset(dir(builtins))
_ORIGINAL_BUILTINS = dict(vars(builtins))  # as lazyflow found them: a patched one is keyed



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
    _checks: tuple[Check, ...] = field(default=(), repr=False, compare=False)
    # the function had no attributes of its own: the memo checks it still has none first
    _bare: bool = field(default=False, repr=False, compare=False)
    # notes that say why it is not cached where nothing is wrong: no warning repeats them
    _quiet: tuple[str, ...] = field(default=(), repr=False, compare=False)

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
        and memo._extra == extra and (not memo._bare or not attributes_of(func)) \
        and (not memo._checks or still_valid(func, memo._checks))


def _hash_code(h: Hasher, obj: Any) -> None:
    """The code hasher :mod:`lazyflow.keys.hashing` calls for functions, classes and modules.

    An object whose fingerprint is in progress on this thread is written as a
    back-reference, and every fingerprint above it on the stack is marked
    tainted (not memoised): its digest holds a placeholder for a part whose
    full digest is being computed.
    """
    stack = in_progress()
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


def _compute(func: Any, extra: str) -> tuple[Fingerprint, bool]:
    """Walk ``func``; return its fingerprint and whether it may be memoised."""
    walk = Walk(getattr(func, "__globals__", None))
    frame = [func, False]
    stack = in_progress()
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
        return Fingerprint(digest, components, True, notes, _quiet=tuple(walk.quiet)), False
    checks = tuple(walk.checks)
    if checks and checks[0][1] is func and checks[0][2] == "__code__":
        checks = checks[1:]  # the function's own code: the memo checks it first
    # and that it still has no attributes, if it had none: most functions have none, and
    # their memo then has no checks left to loop over (0.24 µs a node on a warm request)
    own = [c for c in checks if c[0] == FUNC_ATTRS and c[1] is func and c[4] == ""]
    if own:
        checks = tuple(c for c in checks if c is not own[0])
    return (Fingerprint(digest, components, False, notes, extra,
                        getattr(func, "__code__", None), checks, bool(own)), not frame[1])


def _collect(obj: Any, role: str, walk: Walk) -> None:
    """Add the components of callable ``obj``, reached in ``role`` ('code', 'helper'...)."""
    if not walk.first_visit(obj):
        return
    if isinstance(obj, types.FunctionType):
        _collect_function(obj, role, walk)
    elif isinstance(obj, types.MethodType):
        _collect(obj.__func__, role, walk)
        add_value(walk, f"self:{display_name(obj)}", obj.__self__, ATTR, obj, "__self__")
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
            add_value(walk, f"self:{display_name(obj)}", owner, ATTR, obj, "__self__")
    elif hasattr(type(obj), "__lazyflow_key__"):  # it vouches for its own behaviour
        walk.add(f"callable:{display_name(obj)}", str(obj.__lazyflow_key__()), obj)
    else:  # a callable instance: partial, itemgetter, an object with __call__...
        add_value(walk, f"callable:{display_name(obj)}", obj, SELF, obj, None)
    wrapped = getattr(obj, "__wrapped__", None) if not isinstance(obj, type) else None
    if wrapped is not None and callable(wrapped):
        _add_reference(walk, f"wrapped:{display_name(wrapped)}", wrapped, ATTR, obj,
                       "__wrapped__")


def _collect_function(func: types.FunctionType, role: str, walk: Walk) -> None:
    code = func.__code__
    label = f"{role}:{display_name(func, qualified=role != 'code')}"
    installed = is_installed(func)
    walk.checks.append((ATTR, func, "__code__", code, None))
    names: tuple[str, ...] = ()
    if installed:  # never walk a package's own code; what it closes over may be the user's
        walk.add(label, object_token(func), func)
    else:
        digest, names, global_names, dynamic, paths = code_info(code, memo=role != "code")
        walk.add(label, digest, func)
        # imports first: importing a local module loads what the globals then see
        imported = {_collect_import(func, lookup, names, walk) for lookup in dynamic
                    if lookup.startswith("module:")} if dynamic else _NONE
        for note in unseen_lookups(func, dynamic) if dynamic else ():
            walk.unseeable(f"{display_name(func)} {note}")
        for path in paths:
            collect_read_file(func, path, walk)
        for attr in ("__defaults__", "__kwdefaults__"):
            value = getattr(func, attr)
            if value:
                add_value(walk, f"{label}:{attr.strip('_')}", value, ATTR, func, attr,
                           strict=role != "code")
        if func.__dict__:
            _collect_attributes(func, label, walk)
        else:  # none now: one set later is a change
            walk.checks.append((FUNC_ATTRS, func, None, None, ""))
        _collect_globals(func, global_names, names, walk, imported)
    if func.__closure__:
        for name, cell in zip(code.co_freevars, func.__closure__, strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell: the closure is not yet bound
                continue
            # the code's names: a module in a cell (``import m`` in the enclosing function)
            # is read for the attributes the code takes from it, as a global module is
            _add_reference(walk, f"{label}:closure:{name}", value, ATTR, cell, "cell_contents",
                           names, strict=not installed)


def _collect_attributes(func: types.FunctionType, label: str, walk: Walk) -> None:
    """A function's own attributes (``helper.scale = 2``, read as ``helper.scale``): their
    digest, re-hashed on every request, as attributes are set and changed in place."""
    attributes = attributes_of(func)
    digest = digest_or_note(walk, f"{label}:attributes", attributes) if attributes else ""
    if digest:
        walk.add(f"{label}:attributes", digest, Source(func, "__dict__"))
    if digest is not None:  # also without any: one set later is seen
        walk.checks.append((FUNC_ATTRS, func, None, None, digest))


def _collect_globals(func: types.FunctionType, global_names: tuple[str, ...],
                     names: tuple[str, ...], walk: Walk,
                     imported: set[str] | frozenset[str]) -> None:
    """The globals ``func``'s code reads (``global_names``), the builtins it reads, and
    modules loaded elsewhere that it names (``imported`` are the modules its body imports,
    walked). ``names`` are every name it reads, attributes too: what it reads of a module."""
    namespace = func.__globals__
    module_name = namespace.get("__name__", "?")
    # the root's module by name, not by dict: a function sent by value to a worker gets a
    # globals dict of its own, and its module's other functions there keep theirs; labels
    # must be the same on both sides (a name two namespaces share gets ``#2``, hiding none)
    home = namespace is walk.home or module_name == walk.home_name
    prefix = "global:" if home else f"global:{module_name}."
    builtin_names: list[str] = []
    for name in global_names:
        value = namespace.get(name, MISSING)
        if value is not MISSING:
            _add_reference(walk, prefix + name, value, ITEM, namespace, name, names)
            continue
        walk.checks.append((ITEM, namespace, name, MISSING, None))  # defined later: changed
        if name in imported:
            continue
        module = sys.modules.get(name)
        if module is not None and is_user_module(module):  # ``import mymod`` in the body
            _add_reference(walk, f"module:{name}", module, ITEM, sys.modules, name, names)
            continue
        if name in _ORIGINAL_BUILTINS:
            builtin_names.append(name)
        elif name not in _BUILTINS and module is None:
            walk.add(prefix + name, "<unbound>")
    if builtin_names:
        _collect_builtins(func, tuple(builtin_names), walk)
    if not _ENVIRONMENT.isdisjoint(names):  # ``os.environ``, ``getenv``: attributes mostly
        for name in sorted(_ENVIRONMENT.intersection(names)):
            note = f"{display_name(func)} reads environment variables ({name})"
            if name not in namespace and note not in walk.notes:
                walk.notes.append(note)


def _collect_builtins(func: types.FunctionType, names: tuple[str, ...], walk: Walk) -> None:
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
            _add_reference(walk, f"builtin:{name}", value, ITEM, space, name)
    walk.checks.append((NAMES, space, names, values, None))


def _collect_import(func: types.FunctionType, lookup: str, names: tuple[str, ...],
                    walk: Walk) -> str:
    """A module ``func``'s body imports (``module:<level>:<name>``), keyed as the import
    would find it now; returns the name as the code spells it.

    A module not loaded yet is what the import will load: an installed one is keyed
    ``package==version`` without importing it (as it is once loaded); a local one is
    imported here, so its attributes are walked as loaded (the import the node runs
    would load that very file; keying it unloaded would let a new process serve a
    result of an edited file).
    """
    _, level, spelled = lookup.split(":", 2)
    absolute = absolute_name(func, int(level), spelled)
    if not absolute:
        return spelled
    label = f"module:{absolute}"
    module = sys.modules.get(absolute)
    if module is None:
        top = absolute.partition(".")[0]
        installed = installed_unloaded(top)
        if installed is None:  # not found: the import fails when it runs; seen once loaded
            walk.add(label, "<not found>")
            walk.checks.append((ITEM, sys.modules, absolute, MISSING, None))
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
    _add_reference(walk, label, module, ITEM, sys.modules, absolute, names)
    return spelled


_ENVIRONMENT = frozenset({"environ", "getenv", "environb"})
_NONE: frozenset[str] = frozenset()


def _add_reference(walk: Walk, label: str, value: Any, how: int, holder: Any, name: Any,
                   names: tuple[str, ...] = (), *, strict: bool = True) -> None:
    """Add what ``value``, read as ``holder[name]``, contributes, and the check re-reading it
    (``strict``: see :func:`digest_or_note`)."""
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
    elif callable(value) and own_wrapped(value) is not None:
        walk.checks.append((how, holder, name, value, None))  # lru_cache and other wrappers
        _collect(value, "helper", walk)
    else:
        add_value(walk, label, value, how, holder, name, strict=strict)


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
                    walk: Walk) -> None:
    """A user module: the attributes ``names`` the code reads from it, as loaded."""
    walk.add(label, f"module {module.__name__}", module)
    namespace = vars(module)
    if walk.first_visit(module):
        note_stale_file(module)
        getter = namespace.get("__getattr__")  # PEP 562: attributes it computes are its code
        if getter is not None:
            _add_reference(walk, f"global:{module.__name__}.__getattr__", getter, ITEM,
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
        value = namespace.get(attr, MISSING)
        if value is not MISSING:
            _add_reference(walk, f"global:{module.__name__}.{attr}", value, ITEM, namespace,
                           attr, names)


def _collect_class(cls: type, walk: Walk) -> None:
    """A user class: its MRO's user classes — methods, nested classes, data, enum members."""
    walk.add(f"class:{class_name(cls)}",
             ",".join(f"{b.__module__}.{class_name(b)}" for b in cls.__mro__), cls)
    meta = type(cls)
    if meta is not type and is_user_code(meta):  # its methods and properties run on the class
        _collect(meta, "metaclass", walk)
    walk.checks.append((ATTR, cls, "__mro__", cls.__mro__, None))  # ``C.__bases__ = ...``
    for base in cls.__mro__:
        if base is object or (base is not cls and not walk.first_visit(base)):
            continue
        if not is_user_code(base):
            walk.add(f"base:{display_name(base)}", object_token(base), base)
            continue
        namespace = vars(base)
        walk.checks.append((CLASS_KEYS, base, None, tuple(namespace), None))
        for attr, member in namespace.items():
            _collect_member(base, attr, member, walk)


def _collect_member(cls: type, attr: str, member: Any, walk: Walk) -> None:
    where = f"{class_name(cls)}.{attr}"
    functions = _functions_of(member)
    if functions:
        walk.checks.append((CLASS_ITEM, cls, attr, member, None))
        for func in functions:
            if not is_installed(func):
                _collect(func, f"method:{where}", walk)
            else:
                walk.add(f"method:{where}", object_token(func), func)
    elif isinstance(member, type):
        walk.checks.append((CLASS_ITEM, cls, attr, member, None))
        if is_user_code(member):
            _collect(member, "class", walk)
        else:
            walk.add(f"class:{where}", object_token(member), member)
    elif isinstance(member, cls) and hasattr(member, "_value_"):  # an enum member
        walk.checks.append((CLASS_ITEM, cls, attr, member, None))
        add_value(walk, f"member:{where}", member._value_, ATTR, member, "_value_")
    elif not _is_internal_attribute(attr, member):
        add_value(walk, f"class:{where}", member, CLASS_ITEM, cls, attr)


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


# --------------------------------------------------------------------------- memo


_MEMO = WeakMemo()  # function -> its Fingerprint
