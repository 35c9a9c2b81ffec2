"""lazyflow: lazy dataflow for notebooks, with content-addressed caching.

>>> import lazyflow as lf
>>> flow = lf.Flow("demo", cache=lf.Cache(disk=None))
>>> @flow.node
... def raw(n: int): return list(range(n))
>>> @flow.node
... def total(raw): return sum(raw)
>>> flow.get("total", n=10)
45

Design note
-----------
The package is layered; ``ls lazyflow/`` names the layers from the bottom:
``errors.py``/``_version.py``/``records.py``, ``keys/`` (value digests, code
fingerprints, key domains), ``cache/`` (tiers), ``model/`` (nodes, options,
plans), ``executors/``, ``run.py`` (results), ``engine/``, the services
(``history/``, ``provenance.py``, ``watch.py``, ``subflow.py``, ``handle.py``),
``render/`` (pure SVG and HTML), ``notebook/`` (IPython and ipywidgets), the
``Flow`` façade (``api.py``) and the front ends (``cli/``, ``headless.py``).
Imports point only down (``tests/test_architecture.py``).

The public names are re-exported lazily (PEP 562): ``import lazyflow`` runs
this file and nothing else, and ``lf.Flow`` imports the module that defines
``Flow`` the first time it is read. So ``import lazyflow.keys.hashing`` in a worker
process loads the hashing layer only, and importing the package starts no
thread and subscribes nothing to the event bus. Type checkers and IDEs read
the ``TYPE_CHECKING`` imports below, which give the same objects as
:data:`_EXPORTS` (tests/test_architecture.py checks that they agree).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lazyflow._version import __version__
    from lazyflow.api import Flow, default_flow, node
    from lazyflow.cache.hierarchy import Cache
    from lazyflow.engine.cancel import CancelToken
    from lazyflow.engine.events import EventBus, NodeFinished, NodeStarted, RunFinished, RunStarted
    from lazyflow.errors import (
        CacheWarning,
        CancelledError,
        CheckError,
        ConfirmationError,
        CycleError,
        DefinitionError,
        DefinitionWarning,
        HashingError,
        LazyflowError,
        LazyflowWarning,
        MapError,
        MissingInputError,
        NodeTimeout,
        NotCachedError,
        OutputError,
        ReportError,
        ResourcesWarning,
        SkippedError,
        SkippedWarning,
        UnknownInputError,
        UnknownNodeError,
        UnknownRunError,
        WiringWarning,
    )
    from lazyflow.handle import RunHandle
    from lazyflow.history import history
    from lazyflow.keys.fingerprint import Fingerprint, fingerprint
    from lazyflow.keys.hashing import hash_value, register_hasher
    from lazyflow.model.failed import Failed
    from lazyflow.model.files import Dir, File
    from lazyflow.model.graph import Node
    from lazyflow.model.lazy import Lazy
    from lazyflow.model.metrics import report
    from lazyflow.model.resources import ResourceError, Resources
    from lazyflow.model.shown import Secret
    from lazyflow.model.skip import Skip
    from lazyflow.provenance import Lineage, Verification, reuse_nondeterministic
    from lazyflow.run import Explanation, NodeRecord, Run

_EXPORTS: dict[str, str] = {
    "__version__": "lazyflow._version",
    **dict.fromkeys(["Flow", "default_flow", "node"], "lazyflow.api"),
    "Cache": "lazyflow.cache.hierarchy",
    "CancelToken": "lazyflow.engine.cancel",
    **dict.fromkeys(["CacheWarning", "CancelledError", "CheckError", "ConfirmationError",
                     "CycleError", "DefinitionError", "DefinitionWarning", "HashingError",
                     "LazyflowError", "LazyflowWarning", "MapError", "MissingInputError",
                     "NodeTimeout", "NotCachedError", "OutputError", "ReportError",
                     "ResourcesWarning", "SkippedError", "SkippedWarning",
                     "UnknownInputError", "UnknownNodeError", "UnknownRunError",
                     "WiringWarning"],
                    "lazyflow.errors"),
    **dict.fromkeys(["EventBus", "NodeFinished", "NodeStarted", "RunFinished", "RunStarted"],
                    "lazyflow.engine.events"),
    **dict.fromkeys(["Dir", "File"], "lazyflow.model.files"),
    "Failed": "lazyflow.model.failed",
    "report": "lazyflow.model.metrics",
    **dict.fromkeys(["Fingerprint", "fingerprint"], "lazyflow.keys.fingerprint"),
    "Node": "lazyflow.model.graph",
    "RunHandle": "lazyflow.handle",
    # hash_value from the module that completes it: fingerprint.py registers the code
    # hasher (functions, classes) with hashing.py, which sits below it and cannot import it
    "hash_value": "lazyflow.keys.fingerprint",
    "register_hasher": "lazyflow.keys.hashing",
    "history": "lazyflow.history",
    "Lazy": "lazyflow.model.lazy",
    **dict.fromkeys(["Lineage", "Verification", "reuse_nondeterministic"],
                    "lazyflow.provenance"),
    **dict.fromkeys(["ResourceError", "Resources"], "lazyflow.model.resources"),
    "Secret": "lazyflow.model.shown",
    **dict.fromkeys(["Explanation", "NodeRecord", "Run"], "lazyflow.run"),
    "Skip": "lazyflow.model.skip",
}
"""Each public name and the module that defines it, imported on first access."""


def __getattr__(name: str) -> Any:
    """Import the module defining a public name on first access, then keep the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lazyflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later reads are plain attribute lookups
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext lazyflow``: register ``%%flow`` and ``%flow`` (imports IPython only now)."""
    from lazyflow.notebook.magics import load

    load(ipython)


class _Package(types.ModuleType):
    """The package's module type: keeps ``lf.history`` and ``lf.fingerprint`` the functions.

    Importing a submodule binds it on its package (``lazyflow.history`` the
    module), which would hide the function of the same name that this package
    exports. The eager ``__init__`` rebound the functions after its imports;
    with lazy exports a submodule can be imported at any time, so that
    binding is refused for these names instead (the module stays reachable
    through ``sys.modules`` and ``from lazyflow.history import ...``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("history", "fingerprint") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled by name, as any module is: a node function sent to a worker process
        # that reads ``lf.report`` carries the package as a global (cloudpickle dispatches
        # modules on their exact type, which this subclass is not)
        return importlib.import_module, (self.__name__,)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "Cache",
    "CacheWarning",
    "CancelToken",
    "CancelledError",
    "CheckError",
    "ConfirmationError",
    "CycleError",
    "DefinitionError",
    "DefinitionWarning",
    "Dir",
    "EventBus",
    "Explanation",
    "Failed",
    "File",
    "Fingerprint",
    "Flow",
    "HashingError",
    "Lazy",
    "LazyflowError",
    "LazyflowWarning",
    "Lineage",
    "MapError",
    "MissingInputError",
    "Node",
    "NodeFinished",
    "NodeRecord",
    "NodeStarted",
    "NodeTimeout",
    "NotCachedError",
    "OutputError",
    "ReportError",
    "ResourceError",
    "Resources",
    "ResourcesWarning",
    "Run",
    "RunHandle",
    "RunFinished",
    "RunStarted",
    "Secret",
    "Skip",
    "SkippedError",
    "SkippedWarning",
    "UnknownInputError",
    "UnknownNodeError",
    "UnknownRunError",
    "Verification",
    "WiringWarning",
    "__version__",
    "default_flow",
    "fingerprint",
    "hash_value",
    "history",
    "load_ipython_extension",
    "node",
    "register_hasher",
    "report",
    "reuse_nondeterministic",
]
