"""Code fingerprints: what a function *is*, so editing it invalidates its results.

Design note
-----------
The rule: a fingerprint covers everything the code can reach that decides
what it computes, or the function is *volatile* (never served from a cache)
and says why. A false change costs a recompute; a missed change costs a
wrong result, so every doubt resolves towards "changed".

A fingerprint has a *static* part, computed once per code object: a digest of
the bytecode, constants (nested code objects included), names and argument
layout, but not line numbers or file names, so moving a function or re-running
its notebook cell in another position changes nothing (joblib's recurring bug
was keying on ``<ipython-input-N>``). The same pass finds *dynamic lookups*
(``globals()``, ``eval``, ``getattr(module, name)`` with a computed name...):
reads no static walk can follow, which make the function volatile.

The *dynamic* part is a walk of what the code reaches, re-checked on every
request because a notebook rebinds and mutates things without touching the
function. What is walked, by kind:

* a user function (defined in the notebook, a script or a local module): its
  code, defaults, closure cells, the globals its code names, and what it wraps
  (``__wrapped__``) — so decorators, their arguments and their bodies count;
* a bound method: its function *and* its instance's state;
* a user class: every class of its MRO that is user code — methods (through
  staticmethod, classmethod, property), nested classes, class data, enum
  members — plus the set of attribute names, so monkeypatching is seen; a
  base from an installed package (``enum.Enum``) contributes
  ``package==version`` and is never walked;
* a user module (a file next to the notebook): the attributes the code reads
  from it, by the *loaded* objects, never by the file on disk (an un-reloaded
  kernel still runs the old code; a changed file gets one warning);
* a function, class or module *defined in* an installed package:
  ``package==version`` (an installed function's closure is still walked: it
  may hold user code);
* an object whose class defines ``__lazyflow_key__()``: the string it returns
  (a ``%%flow`` cell, whose node ``version=`` carries its code's digest);
* any other value — a callable instance such as ``functools.partial``,
  ``operator.itemgetter`` or a user object with ``__call__`` included — its
  :func:`hash_value`, which hashes state by ``__reduce_ex__`` and reaches any
  code inside through this module (see ``_hash_code``).

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
into :mod:`lazyflow.hashing`, which values carrying code go through.
"""

from __future__ import annotations

import builtins
import dis
import functools
import importlib.metadata
import os
import sys
import sysconfig
import threading
import types
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from lazyflow import hashing
from lazyflow.environment import distribution_token
from lazyflow.errors import HashingError
from lazyflow.hashing import hash_value

__all__ = ["DYNAMIC_BUILTINS", "Fingerprint", "fingerprint", "is_user_code", "module_token",
           "refresh"]

_BUILTINS = frozenset(dir(builtins))

DYNAMIC_BUILTINS = frozenset({"eval", "exec", "globals", "vars", "__import__"})
"""Builtins through which code reads names no static analysis sees (also used by ``%%flow``)."""

# how a check re-reads what the walk read
_ITEM, _ATTR, _CLASS_ITEM, _CLASS_KEYS, _SELF = range(5)
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
        and memo._extra == extra and (not memo._checks or _still_valid(func, memo._checks))


# --------------------------------------------------------------------------- in progress

_LOCAL = threading.local()


def _in_progress() -> list[list[Any]]:
    """This thread's stack of ``[object, tainted]``: fingerprints being computed or checked."""
    stack: list[list[Any]] | None = getattr(_LOCAL, "stack", None)
    if stack is None:
        stack = _LOCAL.stack = []
    return stack


def _hash_code(h: hashing.Hasher, obj: Any) -> None:
    """The code hasher :mod:`lazyflow.hashing` calls for functions, classes and modules.

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
            h.chunk(_display_name(obj).encode())
            return
    fp = fingerprint(obj)
    # a function whose reads cannot be seen cannot be keyed; a class's instances are still
    # values (their state is hashed beside the class), whatever its methods read at run time
    if fp.volatile and not isinstance(obj, type):
        raise HashingError(_display_name(obj), "; ".join(fp.notes) or "its code is volatile")
    h.tag(b"x")
    h.chunk(fp.digest.encode())


hashing.register_code_hasher(_hash_code)


# --------------------------------------------------------------------------- the walk


class _Walk:
    """One fingerprint computation: components by unique label, checks, notes."""

    __slots__ = ("checks", "components", "home", "labels", "notes", "seen", "volatile")

    def __init__(self, home: Any) -> None:
        self.components: dict[str, str] = {}
        self.checks: list[_Check] = []
        self.notes: list[str] = []
        self.seen: set[int] = set()
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
    return (Fingerprint(digest, components, False, notes, extra,
                        getattr(func, "__code__", None), checks), not frame[1])


def _collect(obj: Any, role: str, walk: _Walk) -> None:
    """Add the components of callable ``obj``, reached in ``role`` ('code', 'helper'...)."""
    if not walk.first_visit(obj):
        return
    if isinstance(obj, types.FunctionType):
        _collect_function(obj, role, walk)
    elif isinstance(obj, types.MethodType):
        _collect(obj.__func__, role, walk)
        _add_value(walk, f"self:{_display_name(obj)}", obj.__self__, _ATTR, obj, "__self__")
    elif isinstance(obj, type):
        if is_user_code(obj):
            _collect_class(obj, walk)
        else:
            walk.add(f"{role}:{_display_name(obj)}", _object_token(obj), obj)
    elif isinstance(obj, types.ModuleType):
        walk.add(f"{role}:{obj.__name__}", module_token(obj), obj)
    elif isinstance(obj, types.BuiltinFunctionType):  # C functions, and methods of C objects
        walk.add(f"{role}:{_display_name(obj)}", _object_token(obj), obj)
        owner = getattr(obj, "__self__", None)
        if owner is not None and not isinstance(owner, types.ModuleType):
            _add_value(walk, f"self:{_display_name(obj)}", owner, _ATTR, obj, "__self__")
    elif hasattr(type(obj), "__lazyflow_key__"):  # it vouches for its own behaviour
        walk.add(f"callable:{_display_name(obj)}", str(obj.__lazyflow_key__()), obj)
    else:  # a callable instance: partial, itemgetter, an object with __call__...
        _add_value(walk, f"callable:{_display_name(obj)}", obj, _SELF, obj, None)
    wrapped = getattr(obj, "__wrapped__", None) if not isinstance(obj, type) else None
    if wrapped is not None and callable(wrapped):
        _add_reference(walk, f"wrapped:{_display_name(wrapped)}", wrapped, _ATTR, obj,
                       "__wrapped__")


def _collect_function(func: types.FunctionType, role: str, walk: _Walk) -> None:
    code = func.__code__
    label = f"{role}:{_display_name(func, qualified=role != 'code')}"
    installed = _is_installed(func)
    walk.checks.append((_ATTR, func, "__code__", code, None))
    if installed:  # never walk a package's own code; what it closes over may be the user's
        walk.add(label, _object_token(func), func)
    else:
        digest, names, dynamic = _code_info(code, memo=role != "code")
        walk.add(label, digest, func)
        for note in _unseen_lookups(func, dynamic) if dynamic else ():
            walk.unseeable(f"{_display_name(func)} {note}")
        for attr in ("__defaults__", "__kwdefaults__"):
            value = getattr(func, attr)
            if value:
                _add_value(walk, f"{label}:{attr.strip('_')}", value, _ATTR, func, attr)
        _collect_globals(func, names, walk)
    if func.__closure__:
        for name, cell in zip(code.co_freevars, func.__closure__, strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell: the closure is not yet bound
                continue
            _add_reference(walk, f"{label}:closure:{name}", value, _ATTR, cell, "cell_contents")


def _collect_globals(func: types.FunctionType, names: tuple[str, ...], walk: _Walk) -> None:
    """The globals ``func``'s code names, and modules it imports inside its body."""
    namespace = func.__globals__
    home = namespace is walk.home
    prefix = "global:" if home else f"global:{namespace.get('__name__', '?')}."
    for name in names:
        value = namespace.get(name, _MISSING)
        if value is not _MISSING:
            _add_reference(walk, prefix + name, value, _ITEM, namespace, name, names)
            continue
        walk.checks.append((_ITEM, namespace, name, _MISSING, None))  # defined later: changed
        module = sys.modules.get(name)
        if module is not None and is_user_module(module):  # ``import mymod`` in the body
            _add_reference(walk, f"module:{name}", module, _ITEM, sys.modules, name, names)
            continue
        if name in _ENVIRONMENT:
            note = f"{_display_name(func)} reads environment variables ({name})"
            if note not in walk.notes:
                walk.notes.append(note)
        if name not in _BUILTINS and module is None:
            walk.add(prefix + name, "<unbound>")


_ENVIRONMENT = frozenset({"environ", "getenv", "environb"})


def _add_reference(walk: _Walk, label: str, value: Any, how: int, holder: Any, name: Any,
                   names: tuple[str, ...] = ()) -> None:
    """Add what ``value``, read as ``holder[name]``, contributes, and the check re-reading it."""
    if isinstance(value, types.ModuleType):
        walk.checks.append((how, holder, name, value, None))
        if is_user_module(value):
            _collect_module(value, label, names, walk)
        else:
            walk.add(label, module_token(value), value)
    elif isinstance(value, (*_CODE_TYPES, type)):
        walk.checks.append((how, holder, name, value, None))
        if _plainly_installed(value):  # package==version, under the name the code reads
            walk.add(label, _object_token(value), value)
        else:
            _collect(value, "helper", walk)
    elif callable(value) and "__wrapped__" in getattr(value, "__dict__", ()):
        walk.checks.append((how, holder, name, value, None))  # lru_cache and other wrappers
        _collect(value, "helper", walk)
    else:
        _add_value(walk, label, value, how, holder, name)


_CODE_TYPES = (types.FunctionType, types.MethodType, types.BuiltinFunctionType)


def _plainly_installed(value: Any) -> bool:
    """A function or class defined in an installed package that holds nothing of the user's:
    no closure, no instance it is bound to (``{}.get`` is bound to a value)."""
    if isinstance(value, types.MethodType) or not _is_installed(value):
        return False
    if isinstance(value, types.FunctionType):
        return not value.__closure__ and not hasattr(value, "__wrapped__")
    owner = getattr(value, "__self__", None)
    return owner is None or isinstance(owner, (types.ModuleType, type))


def _collect_module(module: types.ModuleType, label: str, names: tuple[str, ...],
                    walk: _Walk) -> None:
    """A user module: the attributes ``names`` the code reads from it, as loaded."""
    walk.add(label, f"module {module.__name__}", module)
    if not walk.first_visit(module):
        return
    _note_stale_file(module)
    namespace = vars(module)
    for attr in names:
        value = namespace.get(attr, _MISSING)
        if value is not _MISSING and not (attr.startswith("__") and attr.endswith("__")):
            _add_reference(walk, f"global:{module.__name__}.{attr}", value, _ITEM, namespace,
                           attr, names)


def _collect_class(cls: type, walk: _Walk) -> None:
    """A user class: its MRO's user classes — methods, nested classes, data, enum members."""
    walk.add(f"class:{cls.__qualname__}",
             ",".join(f"{b.__module__}.{b.__qualname__}" for b in cls.__mro__), cls)
    for base in cls.__mro__:
        if base is object or (base is not cls and not walk.first_visit(base)):
            continue
        if not is_user_code(base):
            walk.add(f"base:{_display_name(base)}", _object_token(base), base)
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
            if is_user_code(func) or not _owner_module(func):
                _collect(func, f"method:{where}", walk)
            else:
                walk.add(f"method:{where}", _object_token(func), func)
    elif isinstance(member, type):
        walk.checks.append((_CLASS_ITEM, cls, attr, member, None))
        if is_user_code(member):
            _collect(member, "class", walk)
        else:
            walk.add(f"class:{where}", _object_token(member), member)
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
    """Whether ``value`` can never change in place (and holds no code that could)."""
    if isinstance(value, _IMMUTABLE):
        return True
    return type(value) in (tuple, frozenset) and all(isinstance(v, _IMMUTABLE) for v in value)


def _add_value(walk: _Walk, label: str, value: Any, how: int, holder: Any, name: Any) -> None:
    """Add ``hash_value(value)``; a value that cannot be hashed makes the walk volatile."""
    try:
        digest = hash_value(value)
    except HashingError as e:
        walk.add(label, f"<unhashable {e.type_name}>")
        walk.unseeable(f"{label} holds a {e.type_name} that cannot be hashed ({e.reason}); "
                       "register a hasher with lf.register_hasher")
        return
    walk.add(label, digest, _Source(holder, name))
    # a value that can change in place is re-hashed on every request
    walk.checks.append((how, holder, name, value, None if _is_immutable(value) else digest))


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
            if how == _CLASS_KEYS:
                if tuple(holder.__dict__) != value:
                    return False
                continue
            current = _read(how, holder, name)
            if current is not value:
                return False
            if digest is not None:
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


class _Entry(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to a memoised object that carries its memo key and value."""

    __slots__ = ("key", "value")
    key: int
    value: Any


class _WeakMemo:
    """A memo keyed by object identity that forgets an entry when its object dies.

    ``weakref.WeakKeyDictionary`` builds a weak reference on every lookup, which
    cost more than the rest of a warm fingerprint check; here a lookup is one
    dict access and an identity test, and an entry is one object (a weak
    reference carrying key and value, as ``WeakValueDictionary``'s ``KeyedRef``),
    which matters because every object added is one more for the cyclic GC to
    walk. Objects that cannot be weakly referenced are simply not memoised.
    """

    __slots__ = ("_entries", "_forget")

    def __init__(self) -> None:
        entries: dict[int, _Entry] = {}

        def forget(entry: _Entry) -> None:
            if entries.get(entry.key) is entry:
                del entries[entry.key]

        self._entries = entries
        self._forget = forget

    def get(self, obj: Any) -> Any:
        entry = self._entries.get(id(obj))
        return entry.value if entry is not None and entry() is obj else None

    def set(self, obj: Any, value: Any) -> None:
        try:
            entry = _Entry(obj, self._forget)
        except TypeError:  # not weak-referenceable (a builtin): computed afresh each time
            return
        entry.key, entry.value = id(obj), value
        self._entries[entry.key] = entry


_MEMO = _WeakMemo()  # function -> its Fingerprint


def module_token(module: types.ModuleType) -> str:
    """A module's identity: ``package==version`` for installed ones, else its name."""
    name = module.__name__
    version = _package_version(name) if not is_user_module(module) else ""
    return f"{name}=={version}" if version else name


# --------------------------------------------------------------------------- static part


# (digest, global names read, dynamic lookups): plain tuples of strings, untracked by the GC
_CodeInfo = tuple[str, tuple[str, ...], tuple[str, ...]]


_CODE_INFO = _WeakMemo()  # code object -> _CodeInfo


def _code_info(code: types.CodeType, *, memo: bool) -> _CodeInfo:
    """Digest, global names and dynamic lookups of ``code``; memoised for helpers.

    A node's own code is walked once per fingerprint, and fingerprints are
    memoised: remembering it twice would only add objects for the GC to walk.
    """
    info: _CodeInfo | None = _CODE_INFO.get(code)
    if info is None:
        parts: list[bytes] = []
        names: list[str] = []
        dynamic: list[str] = []
        _walk_code(code, parts, names, dynamic)
        # one call over the joined parts: xxh3 gives what feeding them one by one gives
        info = (xxhash.xxh3_128_hexdigest(b"".join(parts)),
                tuple(dict.fromkeys(names)) if names else (),
                tuple(dict.fromkeys(dynamic)) if dynamic else ())
        if memo:
            _CODE_INFO.set(code, info)
    return info


def _walk_code(code: types.CodeType, parts: list[bytes], names: list[str],
               dynamic: list[str]) -> None:
    """Feed everything that defines behaviour, nothing that only locates the code.

    The globals a code object may read are taken as its ``co_names`` (which
    also lists attribute names): a safe over-approximation that costs nothing,
    where disassembling costs ~30 µs per function. A spurious name only adds
    a component; it never hides a change. Code is disassembled only when it
    names a builtin that can read names dynamically. Text is gathered and
    encoded once per code object (UTF-8 of a concatenation is the
    concatenation of UTF-8s).
    """
    parts.append(code.co_code)
    nul, soh = "\0", "\1"  # identifiers contain neither: the layout is unambiguous
    text = [f"{code.co_argcount},{code.co_posonlyargcount},{code.co_kwonlyargcount},"
            f"{code.co_flags}{soh}{nul.join(code.co_names)}{soh}{nul.join(code.co_varnames)}"
            f"{soh}{nul.join(code.co_freevars)}{soh}{nul.join(code.co_cellvars)}"]
    names.extend(code.co_names)
    if not _SUSPECT.isdisjoint(code.co_names):
        dynamic.extend(_dynamic_lookups(code))
    for const in code.co_consts:
        if type(const) in _SIMPLE_CONSTS:
            text.append(f"{type(const).__name__}:{const!r}|")
        elif isinstance(const, types.CodeType):
            text.append("<code>")
            parts.append("".join(text).encode())
            text = []
            _walk_code(const, parts, names, dynamic)
        else:
            text.append(hash_value(const))
    parts.append("".join(text).encode())


_SIMPLE_CONSTS = frozenset({int, float, str, bool, type(None), bytes, complex, type(...)})
_SUSPECT = DYNAMIC_BUILTINS | {"getattr", "import_module"}
_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})



def _dynamic_lookups(code: types.CodeType) -> list[str]:
    """Reads by computed name, as ``kind:target``: ``call:globals`` (``globals()``,
    ``eval``...), ``getattr:<module>`` (``getattr(m, <expr>)`` on a global or an
    imported module) and ``import:`` (``import_module(<expr>)``); the dynamic part
    decides which of them it cannot see into (a user module's attributes)."""
    found: list[str] = []
    instructions = [x for x in dis.get_instructions(code)
                    if x.opname not in ("PUSH_NULL", "CACHE", "PRECALL")]
    imported: dict[str, str] = {}  # local name -> module it was imported as
    for i, ins in enumerate(instructions):
        name = ins.argval
        if ins.opname == "IMPORT_NAME" and i + 1 < len(instructions) \
                and instructions[i + 1].opname == "STORE_FAST":
            imported[instructions[i + 1].argval] = name
        elif ins.opname in _LOADS and name in DYNAMIC_BUILTINS:
            found.append(f"call:{name}")
        elif name == "getattr" and ins.opname in _LOADS:
            target, key = instructions[i + 1:i + 2], instructions[i + 2:i + 3]
            if target and key and key[0].opname != "LOAD_CONST":
                if target[0].opname in _LOADS:
                    found.append(f"getattr:{target[0].argval}")
                elif target[0].opname == "LOAD_FAST" and target[0].argval in imported:
                    found.append(f"getattr:{imported[target[0].argval]}")
        elif name == "import_module" and ins.opname in _LOADS | {"LOAD_ATTR", "LOAD_METHOD"}:
            key = instructions[i + 1:i + 2]
            if not key or key[0].opname != "LOAD_CONST":
                found.append("import:")
    return found


def _unseen_lookups(func: types.FunctionType, dynamic: tuple[str, ...]) -> list[str]:
    """Which dynamic lookups of ``func`` reach what the walk cannot see, described."""
    notes = []
    for lookup in dynamic:
        kind, _, target = lookup.partition(":")
        if kind == "call":
            notes.append(f"calls {target}(), which reads names lazyflow cannot follow")
        elif kind == "import":
            notes.append("imports a module by a computed name (import_module)")
        else:
            module = func.__globals__.get(target, sys.modules.get(target))
            if not isinstance(module, types.ModuleType) or is_user_module(module):
                notes.append(f"calls getattr({target}, <computed name>), which reads "
                             "attributes lazyflow cannot follow")
    return notes


# --------------------------------------------------------------------------- names and tokens


def _display_name(obj: Any, *, qualified: bool = True) -> str:
    """A readable, address-free name: never a ``repr`` that could hold a memory address."""
    name = getattr(obj, "__qualname__" if qualified else "__name__", None)
    if not isinstance(name, str):
        name = getattr(obj, "__name__", None)
    if not isinstance(name, str):
        name = type(obj).__qualname__
    return name.replace("<locals>.", "")


def _object_token(obj: Any) -> str:
    module = _owner_module(obj) or "?"
    version = _package_version(module) if _module_is_installed(module) else ""
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(qualname, str):
        qualname = type(obj).__qualname__
    return f"{module}.{qualname}" + (f"=={version}" if version else "")


def _owner_module(obj: Any) -> str | None:
    module = getattr(obj, "__module__", None)
    return module if isinstance(module, str) else None


def _is_installed(obj: Any) -> bool:
    module = _owner_module(obj)
    return module is not None and _module_is_installed(module)


# --------------------------------------------------------------------------- local modules

_FILE_STATES: dict[str, tuple[int, tuple[int, int] | None]] = {}  # module -> (spec id, stat)
_WARNED_FILES: set[str] = set()


def _note_stale_file(module: types.ModuleType) -> None:
    """Warn once when a local module's file changed since lazyflow first saw it loaded.

    Keys come from the loaded code, never from the file: an un-reloaded kernel
    runs the old code, and keying the new file would file old results under
    new keys. ``importlib.reload`` gives the module a new spec, which resets this.
    """
    import warnings

    from lazyflow.errors import CacheWarning

    path = getattr(module, "__file__", None)
    if not path:
        return
    try:
        stat = os.stat(path)
        state: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        state = None
    spec = id(getattr(module, "__spec__", None))
    seen = _FILE_STATES.get(module.__name__)
    if seen is None or seen[0] != spec:
        _FILE_STATES[module.__name__] = (spec, state)
        return
    if seen[1] != state and module.__name__ not in _WARNED_FILES:
        _WARNED_FILES.add(module.__name__)
        warnings.warn(f"module {module.__name__!r} changed on disk ({path}) but the loaded "
                      "code is the old one: results are keyed by the loaded code; run "
                      f"importlib.reload({module.__name__}) or restart the kernel to use the "
                      "new code", CacheWarning, stacklevel=2)


# --------------------------------------------------------------------------- user vs installed


@functools.lru_cache(maxsize=1)
def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    roots |= {p for p in sys.path if "site-packages" in p or "dist-packages" in p}
    return tuple(sorted(os.path.realpath(r) for r in roots))


@functools.lru_cache(maxsize=4096)
def _module_is_installed(module_name: str) -> bool:
    if module_name in ("__main__", "__mp_main__") or module_name.startswith("lazyflow_cell"):
        return False
    if module_name.partition(".")[0] in sys.builtin_module_names:
        return True
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if path is None:
        return module is not None and module_name.partition(".")[0] in sys.stdlib_module_names
    real = os.path.realpath(str(path))
    if real.startswith(os.path.dirname(os.path.realpath(__file__)) + os.sep):
        return True  # lazyflow itself, even from an editable install
    return real.startswith(_installed_roots())


def is_user_code(obj: Any) -> bool:
    """Whether ``obj`` was defined by the user (notebook, script, project) rather than a package."""
    module = _owner_module(obj)
    return module is not None and not _module_is_installed(module)


def is_user_module(module: types.ModuleType) -> bool:
    """Whether ``module`` is the user's (a file beside the notebook), not an installed one."""
    return not _module_is_installed(module.__name__)


@functools.lru_cache(maxsize=4096)
def _package_version(module_name: str) -> str:
    """``version`` of the distribution that installs ``module_name``'s top-level package,
    with the commit (or RECORD digest) of a repository or path install (PEP 610).

    Tried cheapest first: the stdlib, the package's own ``__version__``, a
    distribution named like the package (a scan of site-packages, ~10 ms),
    and only then the map of every installed distribution's top-level names,
    which costs 0.1–0.7 s to build and would otherwise land on the first
    request of every process.
    """
    root = module_name.partition(".")[0]
    if root in sys.stdlib_module_names or root in sys.builtin_module_names:
        return f"py{sys.version_info.major}.{sys.version_info.minor}"
    installed = distribution_token(root)  # with the commit of a repository or path install
    if installed:
        return installed
    declared = getattr(sys.modules.get(root), "__version__", None)
    if isinstance(declared, str) and declared:
        return declared
    try:
        return importlib.metadata.version(root)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        pass
    for dist in _top_level_distributions().get(root, []):
        try:
            return distribution_token(dist) or importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


@functools.lru_cache(maxsize=1)
def _top_level_distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()
