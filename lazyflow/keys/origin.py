"""Where code comes from: the user's (a notebook, a script, a local module) or a package's.

Design note
-----------
The code fingerprint walks the user's code and keys installed code by
``package==version`` instead (never walking a package's own code). This module
decides which is which — by the file a module was loaded from: under the
standard library or a site-packages directory is installed, anything else
(``__main__``, a notebook, a file beside it, an editable install's source) is
the user's — and names installed objects by distribution version (with the
PEP 610 commit of repository and path installs, ``environment.py``). It also
notices a local module whose file changed on disk after it was loaded.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import sys
import sysconfig
import types
from collections.abc import Mapping
from typing import Any, NamedTuple

import xxhash

from lazyflow.errors import CacheWarning, warn
from lazyflow.keys.bytecode import code_info
from lazyflow.keys.environment import distribution_token

__all__ = ["absolute_name", "class_name", "code_module", "display_name", "installed_unloaded",
           "is_installed", "is_user_code", "is_user_module", "module_token", "note_stale_file",
           "object_token", "owner_module", "package_version", "path_is_installed",
           "unseen_lookups"]


def module_token(module: types.ModuleType) -> str:
    """A module's identity: ``package==version`` for installed ones, else its name."""
    name = module.__name__
    version = package_version(name) if not is_user_module(module) else ""
    return f"{name}=={version}" if version else name




def class_name(cls: type) -> str:
    """A class's qualified name as keys take it, less the function that defined it
    (``make.<locals>.Scale`` is ``Scale``): cloudpickle rebuilds a class defined in a
    function with its plain name as its qualified name, and a worker given one by value
    must key it as the process that sent it does (``executors/codecheck.py``)."""
    return cls.__qualname__.rpartition("<locals>.")[2]


def display_name(obj: Any, *, qualified: bool = True) -> str:
    """A readable, address-free name: never a ``repr`` that could hold a memory address."""
    if qualified and isinstance(obj, type):
        return class_name(obj)
    name = getattr(obj, "__qualname__" if qualified else "__name__", None)
    if not isinstance(name, str):
        name = getattr(obj, "__name__", None)
    if not isinstance(name, str):
        name = type(obj).__qualname__
    return name.replace("<locals>.", "")


def object_token(obj: Any) -> str:
    module = owner_module(obj) or "?"
    version = package_version(module) if module_is_installed(module) else ""
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(qualname, str):
        qualname = type(obj).__qualname__
    return f"{module}.{qualname}" + (f"=={version}" if version else "")


def owner_module(obj: Any) -> str | None:
    module = getattr(obj, "__module__", None)
    return module if isinstance(module, str) else None


def code_module(obj: Any) -> str | None:
    """The module whose code ``obj`` is. A function's is the namespace it runs in, not its
    ``__module__``, which ``functools.wraps`` copies from the function it wraps: a user's
    wrapper of ``np.mean`` says ``numpy`` but runs the user's code."""
    if isinstance(obj, types.FunctionType):
        name = obj.__globals__.get("__name__")
        return name if isinstance(name, str) else None
    return owner_module(obj)


def is_installed(obj: Any) -> bool:
    """Whether ``obj``'s code is a package's (never walked: keyed ``package==version``)."""
    module = code_module(obj)
    return module is not None and module_is_installed(module)


# --------------------------------------------------------------------------- local modules

class _FileState(NamedTuple):
    """What lazyflow saw of a local module: its spec (the object: an ``id`` is reused by
    the next reload's spec once the old one is freed), its file's state, the code objects
    of the functions and methods it defines (held, for the same reason) and the ids of its
    attributes (only compared: holding them would keep a module's old data alive)."""

    spec: Any
    stat: tuple[int, int] | None
    code: dict[str, types.CodeType]
    values: tuple[int, ...]


_FILE_STATES: dict[str, _FileState] = {}
_WARNED_FILES: set[str] = set()


def note_stale_file(module: types.ModuleType) -> None:
    """Warn once when a local module's file changed and the loaded code is not the file's.

    Keys come from the loaded code, never from the file: an un-reloaded kernel
    runs the old code, and keying the new file would file old results under
    new keys. ``importlib.reload`` gives the module a new spec, which resets this.
    IPython's ``%autoreload`` may instead patch the module in place (its
    *deduperreload*: a changed function gets the new code, a changed assignment
    is run again), keeping the spec: a module that changed since it was seen
    and whose functions now have the file's code is current too.
    """
    path = getattr(module, "__file__", None)
    if not path:
        return
    state = _file_state(path)
    spec = getattr(module, "__spec__", None)
    name = module.__name__
    seen = _FILE_STATES.get(name)
    if seen is None or seen.spec is not spec:
        _FILE_STATES[name] = _seen(module, spec, state)
        _WARNED_FILES.discard(name)
        return
    if seen.stat == state or name in _WARNED_FILES:
        return
    # the file changed: it is run if the module changed since too (a reload in place) and
    # its code is the file's (compiled only here, once per change of the file)
    now = _seen(module, spec, state)
    if (now.values != seen.values or not _same_code(now.code, seen.code)) \
            and _runs_file(now.code, path):
        _FILE_STATES[name] = now
        return
    _WARNED_FILES.add(name)
    warn(f"module {name!r} changed on disk ({path}) but the loaded code is the old one: "
         f"results are keyed by the loaded code; run importlib.reload({name}) or restart "
         "the kernel to use the new code", CacheWarning)


def _seen(module: types.ModuleType, spec: Any, stat: tuple[int, int] | None) -> _FileState:
    return _FileState(spec, stat, _loaded_code(module), tuple(map(id, vars(module).values())))


def _file_state(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


def _loaded_code(module: types.ModuleType) -> dict[str, types.CodeType]:
    """The code of the functions and methods ``module`` defines, by where they are defined
    (``f``, ``C.m``; a decorated function by what it wraps)."""
    found: dict[str, types.CodeType] = {}
    namespace = vars(module)
    for value in list(namespace.values()):
        if isinstance(value, type):
            if value.__module__ == module.__name__:
                _class_code(value, value.__name__ + ".", found, 0)
            continue
        func = _unwrapped(value)
        if isinstance(func, types.FunctionType) and func.__globals__ is namespace:
            found[func.__code__.co_name] = func.__code__
    return found


def _class_code(cls: type, prefix: str, found: dict[str, types.CodeType], depth: int) -> None:
    for member in list(vars(cls).values()):
        if isinstance(member, type):
            if depth < 8 and member.__qualname__.startswith(cls.__qualname__ + "."):
                _class_code(member, f"{prefix}{member.__name__}.", found, depth + 1)
            continue
        if isinstance(member, property):
            member = member.fget
        func = _unwrapped(getattr(member, "__func__", member))
        if isinstance(func, types.FunctionType):
            found[prefix + func.__code__.co_name] = func.__code__


def _unwrapped(value: Any) -> Any:
    """What a decorator's ``__wrapped__`` chain ends at (a few levels at most)."""
    for _ in range(8):
        inner = getattr(value, "__wrapped__", None) if callable(value) else None
        if inner is None:
            break
        value = inner
    return value


def _same_code(now: dict[str, types.CodeType], before: dict[str, types.CodeType]) -> bool:
    return now.keys() == before.keys() and all(now[k] is before[k] for k in now)


def _runs_file(loaded: dict[str, types.CodeType], path: str) -> bool:
    """Whether every function and method both the file and the module define is loaded
    with the file's code (by bytecode digest: line numbers do not count). A file without
    any has no code to be older than: the module changed since it was seen, so it is."""
    try:
        with open(path, "rb") as f:
            compiled = compile(f.read(), path, "exec", dont_inherit=True)
    except (OSError, SyntaxError, ValueError):
        return False
    defined = _defined_code(compiled, "")
    common = [(code, loaded[where]) for where, code in defined if where in loaded]
    if defined and not common:  # none of the file's functions is loaded: another module
        return False
    return all(code_info(new, memo=False)[0] == code_info(old, memo=False)[0]
               for new, old in common)


_FUNCTION_FLAGS = 0x1 | 0x2  # CO_OPTIMIZED | CO_NEWLOCALS (``inspect``'s): a class body has neither


def _defined_code(code: types.CodeType, prefix: str) -> list[tuple[str, types.CodeType]]:
    """The functions and methods a module's compiled ``code`` defines, as ``_loaded_code``
    names them (lambdas and comprehensions, which share names, left out)."""
    found: list[tuple[str, types.CodeType]] = []
    for const in code.co_consts:
        if not isinstance(const, types.CodeType) or const.co_name.startswith("<"):
            continue
        if const.co_flags & _FUNCTION_FLAGS:
            found.append((prefix + const.co_name, const))
        else:
            found.extend(_defined_code(const, f"{prefix}{const.co_name}."))
    return found


# --------------------------------------------------------------------------- user vs installed


_LAZYFLOW = os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + os.sep
"""The lazyflow package's folder (this module is in ``lazyflow/keys/``)."""


# Installed code is under one of two sets of folders, tried cheapest first: a module under
# the first is installed without asking the second (a union either way).


@functools.lru_cache(maxsize=1)
def _package_roots() -> tuple[str, ...]:
    """The site-packages and dist-packages folders on ``sys.path``: where packages live."""
    found = {p for p in sys.path if "site-packages" in p or "dist-packages" in p}
    return tuple(sorted(os.path.realpath(p) for p in found))


@functools.lru_cache(maxsize=1)
def _scheme_roots() -> tuple[str, ...]:
    """The install scheme's standard-library and library folders. Asked only for a module
    outside :func:`_package_roots`: ``sysconfig.get_paths`` first loads the build's
    configuration (``_sysconfigdata_*``, ~1 ms), which a hit naming only packages
    (``np``) need not pay in a new process."""
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    return tuple(sorted(os.path.realpath(r) for r in roots))


@functools.lru_cache(maxsize=4096)
def module_is_installed(module_name: str) -> bool:
    if module_name in ("__main__", "__mp_main__") or module_name.startswith("lazyflow_cell"):
        return False
    if module_name.partition(".")[0] in sys.builtin_module_names:
        return True
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if path is None:
        return module is not None and module_name.partition(".")[0] in sys.stdlib_module_names
    return path_is_installed(str(path))


def path_is_installed(path: str) -> bool:
    """Whether the file at ``path`` is installed code (a package's or the standard library's)."""
    real = os.path.realpath(path)
    if real.startswith(_LAZYFLOW):
        return True  # lazyflow itself, even from an editable install
    return real.startswith(_package_roots()) or real.startswith(_scheme_roots())


def is_user_code(obj: Any) -> bool:
    """Whether ``obj`` was defined by the user (notebook, script, project) rather than a package."""
    module = code_module(obj)
    return module is not None and not module_is_installed(module)


def is_user_module(module: types.ModuleType) -> bool:
    """Whether ``module`` is the user's (a file beside the notebook), not an installed one."""
    return not module_is_installed(module.__name__)


@functools.lru_cache(maxsize=4096)
def package_version(module_name: str) -> str:
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
    return _files_token(root)


def _files_token(root: str) -> str:
    """``files.<digest>`` of the files of an installed package no distribution describes
    (copied into site-packages by hand, a build without metadata): a version-less name
    would give one key to every copy of it, so a colleague with other code got this one's
    results. '' when no such package is found (its import fails when the node runs)."""
    try:
        spec = importlib.util.find_spec(root)
    except (ImportError, ValueError):
        return ""
    if spec is None:
        return ""
    folders = list(spec.submodule_search_locations or ())
    files = [spec.origin] if not folders and spec.origin and os.path.isfile(spec.origin) else []
    for folder in folders:
        for where, subfolders, names in os.walk(folder):
            subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
            files += [os.path.join(where, name) for name in sorted(names)]
    if not files:
        return ""
    digest = xxhash.xxh3_128()
    for path in files:
        digest.update(os.path.relpath(path, folders[0] if folders else os.path.dirname(path))
                      .encode("utf-8", "surrogateescape") + b"\0")
        try:
            with open(path, "rb") as f:
                digest.update(f.read())
        except OSError:
            digest.update(b"<unreadable>")
        digest.update(b"\0")
    return f"files.{digest.hexdigest()}"


@functools.lru_cache(maxsize=1)
def _top_level_distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def absolute_name(func: types.FunctionType, level: int, name: str) -> str:
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


def installed_unloaded(top: str) -> bool | None:
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


def unseen_lookups(func: types.FunctionType, dynamic: tuple[str, ...]) -> list[str]:
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
