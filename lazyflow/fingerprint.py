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
import contextlib
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

__all__ = ["Fingerprint", "fingerprint", "is_user_code", "module_token"]

_BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class Fingerprint:
    """A function's code identity: one digest plus the named parts it is made of.

    ``volatile`` is true when some part could not be hashed; such a function's
    results are never served from a cache.
    """

    digest: str
    components: Mapping[str, str] = field(default_factory=dict)
    volatile: bool = False


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
    try:
        memo = _MEMO.get(func)
    except TypeError:  # not weak-referenceable (a builtin): no memo
        memo = None
    if memo is not None and memo[0] == extra and _still_valid(memo[2]):
        return memo[1]
    components: dict[str, str] = {}
    checks: list[_Check] = []
    volatile = _collect(func, "code", components, set(), checks)
    if extra:
        components["version"] = extra
    h = xxhash.xxh3_128()
    for name in sorted(components):
        h.update(name.encode())
        h.update(b"\0")
        h.update(components[name].encode())
        h.update(b"\0")
    result = Fingerprint(h.hexdigest(), components, volatile)
    if not volatile:
        with contextlib.suppress(TypeError):
            _MEMO[func] = (extra, result, tuple(checks))
    return result


# (holder, attribute or key, the object read, its digest when the object is mutable)
_Check = tuple[Any, str, Any, "str | None"]
_MISSING = object()
_MEMO: weakref.WeakKeyDictionary[Any, tuple[str, Fingerprint, tuple[_Check, ...]]] = \
    weakref.WeakKeyDictionary()
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


def _check(checks: list[_Check], holder: Any, name: str, value: Any, digest: str | None) -> None:
    immutable = isinstance(value, _IMMUTABLE) or (
        type(value) is tuple and all(isinstance(v, _IMMUTABLE) for v in value))
    checks.append((holder, name, value, None if immutable else digest))


def module_token(module: types.ModuleType) -> str:
    """A module's identity: ``package==version`` for installed ones, else its name."""
    name = module.__name__
    version = _package_version(name)
    return f"{name}=={version}" if version else name


# --------------------------------------------------------------------------- static part


@dataclass(frozen=True)
class _CodeInfo:
    digest: str
    globals_read: tuple[str, ...]


_CODE_INFO: weakref.WeakKeyDictionary[types.CodeType, _CodeInfo] | dict[types.CodeType, _CodeInfo]
try:
    _CODE_INFO = weakref.WeakKeyDictionary()
    _probe = (lambda: None).__code__
    _CODE_INFO[_probe] = _CodeInfo("", ())
    _CODE_INFO.clear()
except TypeError:  # code objects are not weak-referenceable on this Python
    _CODE_INFO = {}


def _code_info(code: types.CodeType) -> _CodeInfo:
    info = _CODE_INFO.get(code)
    if info is None:
        h = xxhash.xxh3_128()
        names: list[str] = []
        _walk_code(code, h, names)
        info = _CodeInfo(h.hexdigest(), tuple(dict.fromkeys(names)))
        _CODE_INFO[code] = info
    return info


def _walk_code(code: types.CodeType, h: xxhash.xxh3_128, names: list[str]) -> None:
    """Feed everything that defines behaviour, nothing that only locates the code.

    The globals a code object may read are taken as its ``co_names`` (which
    also lists attribute names): a safe over-approximation that costs nothing,
    where disassembling costs ~30 µs per function. A spurious name only adds
    a component; it never hides a change.
    """
    h.update(code.co_code)
    h.update(repr((code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount,
                   code.co_flags, code.co_names, code.co_varnames, code.co_freevars,
                   code.co_cellvars)).encode())
    names.extend(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            h.update(b"<code>")
            _walk_code(const, h, names)
        elif type(const) in _SIMPLE_CONSTS:
            h.update(f"{type(const).__name__}:{const!r}|".encode())
        else:
            h.update(hash_value(const).encode())


_SIMPLE_CONSTS = frozenset({int, float, str, bool, type(None), bytes, complex, type(...)})


# --------------------------------------------------------------------------- dynamic part


def _collect(obj: Any, role: str, out: dict[str, str], seen: set[int],
             checks: list[_Check]) -> bool:
    """Add ``obj``'s components to ``out``; return whether any part was unhashable."""
    func = inspect.unwrap(obj) if callable(obj) else obj
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
    out[label] = _code_info(code).digest
    checks.append((func, "__code__", code, None))
    volatile = False
    for attr in ("__defaults__", "__kwdefaults__"):
        value = getattr(func, attr)
        if value:
            volatile |= _add_value(out, f"{label}:{attr.strip('_')}", value)
            _check(checks, func, attr, value, out[f"{label}:{attr.strip('_')}"])
    for name, cell in zip(code.co_freevars, func.__closure__ or (), strict=False):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell: the closure is not yet bound
            continue
        volatile |= _add_reference(out, f"{label}:closure:{name}", value, seen, checks)
        _check(checks, cell, "cell_contents", value, out.get(f"{label}:closure:{name}"))
    namespace = func.__globals__
    for name in _code_info(code).globals_read:
        value = namespace.get(name, _MISSING)
        checks.append((namespace, name, value, None))
        if value is not _MISSING:
            volatile |= _add_reference(out, f"global:{name}", value, seen, checks)
            _check(checks, namespace, name, value, out.get(f"global:{name}"))
        elif name not in _BUILTINS:
            out[f"global:{name}"] = "<unbound>"
    return volatile


def _display_name(func: Any, *, qualified: bool) -> str:
    name = getattr(func, "__qualname__" if qualified else "__name__", None) or repr(func)
    return name.replace("<locals>.", "")


def _add_reference(out: dict[str, str], label: str, value: Any, seen: set[int],
                   checks: list[_Check]) -> bool:
    if isinstance(value, types.ModuleType):
        out[label] = module_token(value)
        return False
    if isinstance(value, (types.FunctionType, types.MethodType)) and is_user_code(value):
        return _collect(value, "helper", out, seen, checks)
    if isinstance(value, type) and is_user_code(value):
        return _collect_class(value, out, seen, checks)
    if callable(value) and not is_user_code(value) and _owner_module(value):
        out[label] = _object_token(value)
        return False
    return _add_value(out, label, value)


def _collect_class(cls: type, out: dict[str, str], seen: set[int],
                   checks: list[_Check]) -> bool:
    if id(cls) in seen:
        return False
    seen.add(id(cls))
    volatile = False
    out[f"class:{cls.__qualname__}"] = ",".join(b.__qualname__ for b in cls.__mro__)
    for attr, member in vars(cls).items():
        target = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
        if isinstance(target, property):
            target = target.fget
        if isinstance(target, types.FunctionType):
            volatile |= _collect(target, f"method:{cls.__qualname__}.{attr}", out, seen, checks)
    return volatile


_warned_unhashable: set[str] = set()


def _add_value(out: dict[str, str], label: str, value: Any) -> bool:
    try:
        out[label] = hash_value(value)
        return False
    except HashingError as e:
        out[label] = f"<unhashable {e.type_name}: {os.urandom(8).hex()}>"
        if label not in _warned_unhashable:
            _warned_unhashable.add(label)
            warnings.warn(
                f"{label} holds a {e.type_name} that cannot be hashed, so code reading it is "
                "recomputed on every request; register a hasher with lf.register_hasher",
                CacheWarning, stacklevel=4)
        return True


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
    real = os.path.realpath(path)
    if real.startswith(os.path.dirname(os.path.realpath(__file__)) + os.sep):
        return True  # lazyflow itself, even from an editable install
    return real.startswith(_installed_roots())


def is_user_code(obj: Any) -> bool:
    """Whether ``obj`` was defined by the user (notebook, script, project) rather than a package."""
    module = _owner_module(obj)
    return module is not None and not _module_is_installed(module)


@functools.lru_cache(maxsize=4096)
def _package_version(module_name: str) -> str:
    root = module_name.partition(".")[0]
    dists = _top_level_distributions().get(root, [])
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    if root in sys.stdlib_module_names:
        return f"py{sys.version_info.major}.{sys.version_info.minor}"
    return ""


@functools.lru_cache(maxsize=1)
def _top_level_distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()
