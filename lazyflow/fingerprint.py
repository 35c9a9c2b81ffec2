"""Code fingerprints: what a function *is*, so editing it invalidates its results.

Design note
-----------
A fingerprint has a *static* part, computed once per code object: a digest of
the bytecode, constants (nested code objects included), names and argument
layout, but not line numbers or file names, so moving a function or re-running
its notebook cell in another position changes nothing (joblib's recurring bug
was keying on ``<ipython-input-N>``). It also lists the global names the code
reads.

The *dynamic* part is re-checked on every request, because a notebook can
rebind a global without touching the function: defaults, closure cells, and
the current value of every global the code reads. A global that is

* a user-defined function or class contributes its own fingerprint
  (transitively; mutual recursion is cut by a "seen" set);
* a function, class or module from an installed package contributes
  ``package==version`` instead of a walk through its code;
* anything else contributes :func:`hash_value` of its value.

A global whose value cannot be hashed makes the fingerprint *volatile*: the
node is recomputed every time (never return a wrong cached value) and a
:class:`CacheWarning` says why once.

Each component is kept by name (``code:f``, ``global:FACTOR``, ``helper:g``...)
so ``explain`` can say *which* function or global changed. This module knows
nothing of caches or graphs.
"""

from __future__ import annotations

import builtins
import functools
import importlib.metadata
import inspect
import os
import sys
import sysconfig
import types
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from lazyflow.errors import CacheWarning, HashingError
from lazyflow.hashing import hash_value

__all__ = ["Fingerprint", "fingerprint", "is_user_code", "module_token", "refresh"]

_BUILTINS = frozenset(dir(builtins))


# (holder, attribute or key, the object read, its digest when the object is mutable)
_Check = tuple[Any, str, Any, "str | None"]


@dataclass(frozen=True)
class Fingerprint:
    """A function's code identity: one digest plus the named parts it is made of.

    ``volatile`` is true when some part could not be hashed; such a function's
    results are never served from a cache.
    """

    digest: str
    components: Mapping[str, str] = field(default_factory=dict)
    volatile: bool = False
    # what the memo re-checks: the version token, the function's code, the values read
    _extra: str = field(default="", repr=False, compare=False)
    _code: Any = field(default=None, repr=False, compare=False)
    _checks: tuple[_Check, ...] = field(default=(), repr=False, compare=False)


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
    result = _compute(func, extra)
    if not result.volatile:
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
    return _compute(func, extra)


def _current(memo: Fingerprint, func: Callable[..., Any], extra: str) -> bool:
    """Whether ``memo``, computed for this very ``func``, still describes it."""
    return memo._code is getattr(func, "__code__", None) and memo._extra == extra \
        and (not memo._checks or _still_valid(memo._checks))


def _compute(func: Callable[..., Any], extra: str) -> Fingerprint:
    components: dict[str, str] = {}
    checks: list[_Check] = []
    volatile = _collect(func, "code", components, set(), checks)
    if extra:
        components["version"] = extra
    # one string, hashed once: the same bytes as feeding name, NUL, value, NUL per component
    folded = "".join([f"{name}\0{components[name]}\0" for name in sorted(components)])
    digest = xxhash.xxh3_128_hexdigest(folded.encode())
    if volatile:
        return Fingerprint(digest, components, volatile)
    rest = tuple(checks)
    if type(func) is types.FunctionType and not hasattr(func, "__wrapped__"):
        rest = rest[1:]  # checks[0] is the function's own code: the memo checks it first
    return Fingerprint(digest, components, volatile, extra, getattr(func, "__code__", None),
                       rest)


_MISSING = object()


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
_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), type, types.ModuleType,
              types.FunctionType, types.BuiltinFunctionType, range)


def _still_valid(checks: tuple[_Check, ...]) -> bool:
    for holder, name, value, digest in checks:
        current = holder.get(name, _MISSING) if type(holder) is dict \
            else getattr(holder, name, _MISSING)
        if current is not value:
            return False
        if digest is not None and hash_value(value) != digest:
            return False
    return True


def module_token(module: types.ModuleType) -> str:
    """A module's identity: ``package==version`` for installed ones, else its name."""
    name = module.__name__
    version = _package_version(name)
    return f"{name}=={version}" if version else name


# --------------------------------------------------------------------------- static part


# (digest, global names read): a plain tuple of strings, which the cyclic GC stops tracking
_CodeInfo = tuple[str, tuple[str, ...]]


_CODE_INFO = _WeakMemo()  # code object -> _CodeInfo


def _code_info(code: types.CodeType, *, memo: bool) -> _CodeInfo:
    """Digest and global names of ``code``; memoised for helpers, which many functions call.

    A node's own code is walked once per fingerprint, and fingerprints are
    memoised: remembering it twice would only add objects for the GC to walk.
    """
    info: _CodeInfo | None = _CODE_INFO.get(code)
    if info is None:
        parts: list[bytes] = []
        names: list[str] = []
        _walk_code(code, parts, names)
        # one call over the joined parts: xxh3 gives what feeding them one by one gives
        info = (xxhash.xxh3_128_hexdigest(b"".join(parts)),
                tuple(dict.fromkeys(names)) if names else ())
        if memo:
            _CODE_INFO.set(code, info)
    return info


def _walk_code(code: types.CodeType, parts: list[bytes], names: list[str]) -> None:
    """Feed everything that defines behaviour, nothing that only locates the code.

    The globals a code object may read are taken as its ``co_names`` (which
    also lists attribute names): a safe over-approximation that costs nothing,
    where disassembling costs ~30 µs per function. A spurious name only adds
    a component; it never hides a change. Text is gathered and encoded once
    per code object (UTF-8 of a concatenation is the concatenation of UTF-8s).
    """
    parts.append(code.co_code)
    nul, soh = "\0", "\1"  # identifiers contain neither: the layout is unambiguous
    text = [f"{code.co_argcount},{code.co_posonlyargcount},{code.co_kwonlyargcount},"
            f"{code.co_flags}{soh}{nul.join(code.co_names)}{soh}{nul.join(code.co_varnames)}"
            f"{soh}{nul.join(code.co_freevars)}{soh}{nul.join(code.co_cellvars)}"]
    names.extend(code.co_names)
    for const in code.co_consts:
        if type(const) in _SIMPLE_CONSTS:
            text.append(f"{type(const).__name__}:{const!r}|")
        elif isinstance(const, types.CodeType):
            text.append("<code>")
            parts.append("".join(text).encode())
            text = []
            _walk_code(const, parts, names)
        else:
            text.append(hash_value(const))
    parts.append("".join(text).encode())


_SIMPLE_CONSTS = frozenset({int, float, str, bool, type(None), bytes, complex, type(...)})


# --------------------------------------------------------------------------- dynamic part


def _collect(obj: Any, role: str, out: dict[str, str], seen: set[int],
             checks: list[_Check]) -> bool:
    """Add ``obj``'s components to ``out``; return whether any part was unhashable."""
    func = inspect.unwrap(obj) if hasattr(obj, "__wrapped__") else obj
    if isinstance(func, types.MethodType):
        func = func.__func__
    if id(func) in seen:
        return False
    seen.add(id(func))
    code = getattr(func, "__code__", None)
    label = f"{role}:{_display_name(func, qualified=role != 'code')}"
    if not isinstance(code, types.CodeType):
        out[label] = _object_token(func)
        return False
    digest, globals_read = _code_info(code, memo=role != "code")
    out[label] = digest
    checks.append((func, "__code__", code, None))
    volatile = False
    for attr in ("__defaults__", "__kwdefaults__"):
        value = getattr(func, attr)
        if value:
            volatile |= _add_value(out, f"{label}:{attr.strip('_')}", value, checks, func, attr)
    if func.__closure__:
        for name, cell in zip(code.co_freevars, func.__closure__, strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell: the closure is not yet bound
                continue
            volatile |= _add_reference(out, f"{label}:closure:{name}", value, seen, checks,
                                       cell, "cell_contents")
    namespace = func.__globals__
    for name in globals_read:
        value = namespace.get(name, _MISSING)
        if value is not _MISSING:
            volatile |= _add_reference(out, f"global:{name}", value, seen, checks,
                                       namespace, name)
            continue
        checks.append((namespace, name, _MISSING, None))  # defining it later must invalidate
        if name not in _BUILTINS:
            out[f"global:{name}"] = "<unbound>"
    return volatile


def _display_name(func: Any, *, qualified: bool) -> str:
    name = getattr(func, "__qualname__" if qualified else "__name__", None) or repr(func)
    return name.replace("<locals>.", "")


def _add_reference(out: dict[str, str], label: str, value: Any, seen: set[int],
                   checks: list[_Check], holder: Any, name: str) -> bool:
    """Add the component for ``value`` read as ``holder[name]``, and the check that re-reads it."""
    if isinstance(value, types.ModuleType):
        out[label] = module_token(value)
    elif isinstance(value, (types.FunctionType, types.MethodType)) and is_user_code(value):
        checks.append((holder, name, value, None))
        return _collect(value, "helper", out, seen, checks)
    elif isinstance(value, type) and is_user_code(value):
        checks.append((holder, name, value, None))
        return _collect_class(value, out, seen, checks)
    elif callable(value) and not is_user_code(value) and _owner_module(value):
        out[label] = _object_token(value)  # installed code: package==version, never walked
    else:
        return _add_value(out, label, value, checks, holder, name)
    checks.append((holder, name, value, None))
    return False


def _collect_class(cls: type, out: dict[str, str], seen: set[int],
                   checks: list[_Check]) -> bool:
    """A user class: its MRO, its methods' code and its data attributes (class constants)."""
    if id(cls) in seen:
        return False
    seen.add(id(cls))
    volatile = False
    out[f"class:{cls.__qualname__}"] = ",".join(b.__qualname__ for b in cls.__mro__)
    for attr, member in vars(cls).items():
        target = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
        if isinstance(target, property):
            target = target.fget
        elif isinstance(target, functools.cached_property):
            target = target.func
        if isinstance(target, types.FunctionType):
            volatile |= _collect(target, f"method:{cls.__qualname__}.{attr}", out, seen, checks)
        elif not _is_internal_attribute(attr, target):
            volatile |= _add_value(out, f"class:{cls.__qualname__}.{attr}", member, checks,
                                   cls, attr)
    return volatile


def _is_internal_attribute(attr: str, member: Any) -> bool:
    """Dunders, enum's ``_sunder_`` names, ABC state and slot descriptors: not user data."""
    return (attr.startswith("_") and attr.endswith("_")) or attr == "_abc_impl" \
        or member is None or isinstance(member, (types.MemberDescriptorType,
                                                 types.GetSetDescriptorType))


_warned_unhashable: set[str] = set()


def _add_value(out: dict[str, str], label: str, value: Any, checks: list[_Check],
               holder: Any, name: str) -> bool:
    """Add ``hash_value(value)``; on failure a random token and a warning (volatile)."""
    try:
        digest = out[label] = hash_value(value)
    except HashingError as e:
        out[label] = f"<unhashable {e.type_name}: {os.urandom(8).hex()}>"
        if label not in _warned_unhashable:
            _warned_unhashable.add(label)
            warnings.warn(
                f"{label} holds a {e.type_name} that cannot be hashed, so code reading it is "
                "recomputed on every request; register a hasher with lf.register_hasher",
                CacheWarning, stacklevel=4)
        return True
    immutable = isinstance(value, _IMMUTABLE) or (
        type(value) is tuple and all(isinstance(v, _IMMUTABLE) for v in value))
    # a mutable value can change in place: the check re-hashes it on every request
    checks.append((holder, name, value, None if immutable else digest))
    return False


def _object_token(obj: Any) -> str:
    module = _owner_module(obj) or "?"
    version = _package_version(module)
    qualname = getattr(obj, "__qualname__", type(obj).__qualname__)
    return f"{module}.{qualname}" + (f"=={version}" if version else "")


def _owner_module(obj: Any) -> str | None:
    module = getattr(obj, "__module__", None)
    return module if isinstance(module, str) else None


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


@functools.lru_cache(maxsize=4096)
def _package_version(module_name: str) -> str:
    """``version`` of the distribution that installs ``module_name``'s top-level package.

    Tried cheapest first: the stdlib, the package's own ``__version__``, a
    distribution named like the package (a scan of site-packages, ~10 ms),
    and only then the map of every installed distribution's top-level names,
    which costs 0.1–0.7 s to build and would otherwise land on the first
    request of every process.
    """
    root = module_name.partition(".")[0]
    if root in sys.stdlib_module_names or root in sys.builtin_module_names:
        return f"py{sys.version_info.major}.{sys.version_info.minor}"
    declared = getattr(sys.modules.get(root), "__version__", None)
    if isinstance(declared, str) and declared:
        return declared
    try:
        return importlib.metadata.version(root)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        pass
    for dist in _top_level_distributions().get(root, []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


@functools.lru_cache(maxsize=1)
def _top_level_distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()
