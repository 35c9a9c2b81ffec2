"""``RunState``: the plain record of one run, and the small reads and writes on it.

Everything the loop and the steps know about a run is a field here; the
steps are functions of it (``start.py``, ``settle.py``, the features), as in
dask's local scheduler, so what a run holds can be read in one place.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

from lazyflow.cache.snapshot import handout, immutable, shareable
from lazyflow.executors.base import Capabilities, Executor, Outcome
from lazyflow.executors.codecheck import ExpectedCode
from lazyflow.model.policies import Policy
from lazyflow.model.resources import Gate
from lazyflow.run import NodeRecord, Run

if TYPE_CHECKING:
    from lazyflow.api import Flow
    from lazyflow.cache.hierarchy import Cache
    from lazyflow.engine.graphs import GraphRun
    from lazyflow.engine.hooks import Feature
    from lazyflow.engine.lease import Leases
    from lazyflow.engine.loop import RunOptions
    from lazyflow.engine.maps import MapRun
    from lazyflow.engine.prepare import Hit, Prepared
    from lazyflow.engine.shared import Sharing
    from lazyflow.model.failed import Failed
    from lazyflow.model.graph import Plan

__all__ = ["RunState", "counted", "expected_code", "flow_inputs", "input_digests", "make_ready",
           "release_inputs", "touch", "waiting"]

_FEW = 8  # upstream nodes a node waits for, up to which a tuple holds them rather than a set


def waiting(upstream: Iterable[str]) -> tuple[str, ...] | set[str]:
    """The distinct upstream nodes a node waits for: a tuple when there are few (the cyclic
    GC stops tracking a tuple of strings, and walks a set, one per node, for the whole
    run), a set when there are many (a tuple would be rebuilt as each one settles)."""
    distinct = tuple(dict.fromkeys(upstream))
    return distinct if len(distinct) <= _FEW else set(distinct)


@dataclass(slots=True, eq=False)
class RunState:
    """The mutable state of one run."""

    flow: Flow
    cache: Cache
    plan: Plan
    prepared: Mapping[str, Prepared]
    run: Run
    options: RunOptions
    executor: Executor
    caps: Capabilities
    targets: frozenset[str]  # plan.targets is a tuple: O(n) membership
    lazy: dict[str, frozenset[str]]  # each node's lazy parameters (``lazyinputs.py``)
    hits: dict[str, Hit]
    digests: dict[str, str]  # value digest of each settled node
    keys: dict[str, str]  # content key of each settled node
    remaining: dict[str, tuple[str, ...] | set[str]]
    """Upstream nodes each needed node still waits for: eager edges, plus lazy inputs it
    demanded; a node is ready when its entry is empty."""
    consumers: dict[str, int]  # nodes still to start that read each node's value
    ready: deque[str]
    policies: dict[str, Policy]
    features: dict[str, tuple[Feature, ...]]
    """Each needed node's features (``hooks.py``), bound when it is scheduled; an empty
    tuple for the usual node, which then makes no hook call."""
    gate: Gate
    sharing: Sharing | None  # workers read and write a shared tier (``shared.py``)
    waits: bool  # False on a thread running an event loop: never park there
    buses: list[Any]
    observers: tuple[Any, ...]
    observed: bool  # anyone listens: else no event objects are built
    watched: bool  # anyone listens to node events: else no node event objects are built
    prioritized: bool = False  # some needed node has a priority=: ``ready`` is kept sorted
    fresh: bool = False  # some node of the plan has max_age= (``freshness.py``)
    expires: dict[str, float] = field(default_factory=dict)
    """The earliest max_age expiry in each settled value's ancestry, where there is one."""
    expired: dict[str, str] = field(default_factory=dict)
    """Why each node whose stored value was too old is computed again."""
    values: dict[str, Any] = field(default_factory=dict)
    """Values (or snapshots, ``snapshot.py``) readers still to start take."""
    shared_inputs: dict[int, Any] | None = None  # see ``flow_inputs``
    costs: dict[str, float] = field(default_factory=dict)
    """Compute seconds that produced each value, its ancestry included ("time saved")."""
    ancestry: dict[str, dict[str, list[Any]] | None] = field(default_factory=dict)
    """What each settled value cost node by node (``ancestry.py``); ``None`` past the cap."""
    running: dict[Future[Outcome], str] = field(default_factory=dict)
    finished: SimpleQueue[Future[Outcome] | str | None] = field(default_factory=SimpleQueue)
    """Running futures land here as they finish (dask's local scheduler works alike): one
    queue read per wake, where ``concurrent.futures.wait`` hooks every running future; so
    do the names of parked nodes whose key another request has finished computing."""
    flying: dict[str, str] = field(default_factory=dict)  # key each computing node leads
    parked: set[str] = field(default_factory=set)  # waiting for another request's key
    leases: Leases | None = None  # nodes waiting for or holding a lease (``lease.py``)
    vanished: dict[str, str] = field(default_factory=dict)
    """Hits whose entry vanished before it was read (``vanished.py``): the digest their
    dependents were keyed with."""
    kept: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    """For nodes running when an input vanished: the (digest, key) it was started with."""
    stopped: set[str] = field(default_factory=set)  # failed or skipped: consumers skip
    untraced: set[str] = field(default_factory=set)
    """Values standing in for a failure (fallbacks) and everything computed from them:
    never linked by trace key, so the next request retries the failed node."""
    # what moved.py found of a map node before its manifest was written: settle reuses it
    # (one more digest of a 20,000-element input is a tenth of an appended request's cost)
    moved: dict[str, str | None] = field(default_factory=dict)
    fatal: BaseException | None = None
    failures: dict[str, Failed] = field(default_factory=dict)
    """Each failed node, and each node skipped because of a failure above it: what a
    catching consumer receives (``catching.py``)."""
    tainted: set[str] = field(default_factory=set)
    """Nodes computed from a caught failure, or from such a node: never stored."""
    cold: set[str] = field(default_factory=set)
    """Needed nodes whose trace record no tier held (``prepare.resolve``)."""
    novel: set[str] = field(default_factory=set)
    """Cold nodes whose value is new: their entry was missing and all their inputs are
    novel too; a dependent of only those does not ask the remote (``start._served``)."""
    # features' own state
    demanded: dict[str, set[str]] = field(default_factory=dict)  # lazy inputs asked for
    used: dict[str, list[str]] = field(default_factory=dict)  # lazy inputs called, in order
    maps: dict[str, MapRun] = field(default_factory=dict)  # map nodes in flight
    shared_of: dict[str, dict[str, str]] = field(default_factory=dict)  # inputs read by key
    lane: set[Future[Outcome]] = field(default_factory=set)
    """Running async nodes' futures on the async lane: not counted against the workers."""
    deadlines: dict[Future[Outcome], float] = field(default_factory=dict)
    unstarted: set[Future[Outcome]] = field(default_factory=set)  # timed, not running yet
    timed: Executor | None = None  # a thread for inline executors' nodes with a timeout
    graphs: GraphRun | None = None  # nodes submitted as graphs (``graphs.py``)

    def emit(self, event: Any) -> None:
        """Tell the flow's and the global bus, and the run's observers."""
        for bus in self.buses:
            bus.emit(event)
        for observer in self.observers:
            observer(event)


def make_ready(s: RunState, name: str) -> None:
    """Queue ``name`` to start: after the ready nodes of its priority or higher (FIFO among
    equals), so the loop takes the highest priority first (``priority=``)."""
    ready = s.ready
    if not s.prioritized:
        ready.append(name)
        return
    priority = s.policies[name].priority
    policies = s.policies
    at = len(ready)
    while at and policies[ready[at - 1]].priority < priority:
        at -= 1
    ready.insert(at, name)


def counted(s: RunState, name: str, *, keyed: bool = False) -> dict[str, str]:
    """The edges a node waits for and holds values of: eager ones plus the lazy inputs it
    demanded; with ``keyed``, plus the lazy inputs it used instead (what its key covers)."""
    upstream = s.plan.upstream[name]
    lazy_ps = s.lazy[name]
    if not lazy_ps:
        return upstream
    called = s.used[name] if keyed and name in s.used else s.demanded[name]
    return {p: up for p, up in upstream.items() if p not in lazy_ps or p in called}


def touch(s: RunState, name: str) -> NodeRecord:
    """The record of ``name``, added to the run (with its code) if the run had none."""
    record = s.run.nodes.get(name)
    if record is None:
        record = s.run.nodes[name] = NodeRecord(name)
        s.run.code[name] = s.prepared[name].fp.components
    return record


def flow_inputs(s: RunState, name: str) -> dict[str, Any]:
    """``name``'s flow-input values; one object passed to several nodes is handed to
    each as its own copy, so a node changing it in place cannot change another's."""
    if s.shared_inputs is None:
        s.shared_inputs = _shared_flow_inputs(s.plan)
    params = s.plan.params[name]
    if not s.shared_inputs:
        return dict(params)
    shared = s.shared_inputs
    return {p: handout(shared[id(v)]) if id(v) in shared else v for p, v in params.items()}


def release_inputs(s: RunState, name: str) -> None:
    """``name`` has taken its inputs: drop values no other reader waits for."""
    for up in set(counted(s, name).values()):
        s.consumers[up] -= 1
        if s.consumers[up] <= 0 and up not in s.targets:
            s.values.pop(up, None)


def _shared_flow_inputs(plan: Plan) -> dict[int, Any]:
    """Flow-input objects passed to more than one node that could change in place, by
    identity, with the snapshot each such node gets its own copy from."""
    seen: dict[int, Any] = {}
    shared: dict[int, Any] = {}
    for params in plan.params.values():
        for value in params.values():
            if id(value) in seen and id(value) not in shared and not immutable(value):
                shared[id(value)] = shareable(value)
            seen[id(value)] = value
    return shared


def input_digests(s: RunState, name: str, upstream: Mapping[str, str]) -> dict[str, str]:
    """The digests of ``upstream`` that ``name`` was started with (an input whose entry
    vanished while ``name`` ran keeps, for ``name``, the digest it had, ``vanished.py``)."""
    kept = s.kept.get(name) if s.kept else None
    if not kept:
        return {p: s.digests[up] for p, up in upstream.items()}
    return {p: kept[up][0] if up in kept else s.digests[up] for p, up in upstream.items()}


def expected_code(s: RunState, name: str) -> ExpectedCode | None:
    """What a worker in another process must hold to run ``name`` under its key
    (``codecheck.py``); ``None`` for code whose reads cannot be seen, which is never cached."""
    fp = s.prepared[name].fp
    return None if fp.volatile else ExpectedCode.of(s.plan.nodes[name].func, fp)
