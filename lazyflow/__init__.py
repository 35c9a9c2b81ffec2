"""lazyflow: lazy dataflow for notebooks, with content-addressed caching.

>>> import lazyflow as lf
>>> flow = lf.Flow("demo", cache=lf.Cache(disk=None))
>>> @flow.node
... def raw(n: int): return list(range(n))
>>> @flow.node
... def total(raw): return sum(raw)
>>> flow.get("total", n=10)
45
"""

from lazyflow.cache.hierarchy import Cache
from lazyflow.cancel import CancelToken
from lazyflow.errors import (
    CacheWarning,
    CancelledError,
    CycleError,
    DefinitionError,
    HashingError,
    LazyflowError,
    LazyflowWarning,
    MapError,
    MissingInputError,
    NodeTimeout,
    NotCachedError,
    OutputError,
    SkippedError,
    SkippedWarning,
    UnknownNodeError,
    UnknownRunError,
)
from lazyflow.events import EventBus, NodeFinished, NodeStarted, RunFinished, RunStarted
from lazyflow.files import Dir, File
from lazyflow.fingerprint import Fingerprint, fingerprint
from lazyflow.graph import Flow, Node, default_flow, node
from lazyflow.handle import RunHandle
from lazyflow.hashing import hash_value, register_hasher
from lazyflow.history import history
from lazyflow.lazy import Lazy
from lazyflow.provenance import Lineage, Verification, reuse_nondeterministic
from lazyflow.resources import ResourceError, Resources
from lazyflow.run import Explanation, NodeRecord, Run
from lazyflow.skip import Skip
from lazyflow.version import __version__


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext lazyflow``: register ``%%flow`` and ``%flow`` (imports IPython only now)."""
    from lazyflow.notebook.magics import load

    load(ipython)


__all__ = [
    "Cache",
    "CacheWarning",
    "CancelToken",
    "CancelledError",
    "CycleError",
    "DefinitionError",
    "Dir",
    "EventBus",
    "Explanation",
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
    "ResourceError",
    "Resources",
    "Run",
    "RunHandle",
    "RunFinished",
    "RunStarted",
    "Skip",
    "SkippedError",
    "SkippedWarning",
    "UnknownNodeError",
    "UnknownRunError",
    "Verification",
    "__version__",
    "default_flow",
    "fingerprint",
    "hash_value",
    "history",
    "load_ipython_extension",
    "node",
    "register_hasher",
    "reuse_nondeterministic",
]
