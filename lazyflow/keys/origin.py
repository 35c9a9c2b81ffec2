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
import os
import sys
import sysconfig
import types
from collections.abc import Mapping
from typing import Any

from lazyflow.errors import CacheWarning, warn
from lazyflow.keys.environment import distribution_token

__all__ = ["code_module", "display_name", "is_installed", "is_user_code", "is_user_module", "module_token",
           "note_stale_file", "object_token", "owner_module", "package_version",
           "path_is_installed"]


def module_token(module: types.ModuleType) -> str:
    """A module's identity: ``package==version`` for installed ones, else its name."""
    name = module.__name__
    version = package_version(name) if not is_user_module(module) else ""
    return f"{name}=={version}" if version else name




def display_name(obj: Any, *, qualified: bool = True) -> str:
    """A readable, address-free name: never a ``repr`` that could hold a memory address."""
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

_FILE_STATES: dict[str, tuple[int, tuple[int, int] | None]] = {}  # module -> (spec id, stat)
_WARNED_FILES: set[str] = set()


def note_stale_file(module: types.ModuleType) -> None:
    """Warn once when a local module's file changed since lazyflow first saw it loaded.

    Keys come from the loaded code, never from the file: an un-reloaded kernel
    runs the old code, and keying the new file would file old results under
    new keys. ``importlib.reload`` gives the module a new spec, which resets this.
    """
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
        warn(f"module {module.__name__!r} changed on disk ({path}) but the loaded "
                      "code is the old one: results are keyed by the loaded code; run "
                      f"importlib.reload({module.__name__}) or restart the kernel to use the "
                      "new code", CacheWarning)


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
    return ""


@functools.lru_cache(maxsize=1)
def _top_level_distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()
