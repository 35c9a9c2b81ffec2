"""Graphs as an engine feature: a node goes to the cluster with the needed nodes after it.

Design note
-----------
Policy. An executor that declares ``submits_graphs`` (Dask) runs tasks that
follow other tasks, their outcomes resolved where they run. When the engine
starts a node on it (key, lookup, claim, inputs: ``start.py`` as for every
executor), it submits the node *with the needed nodes downstream of it* that
wait only for nodes already submitted or settled: each as a
:class:`~lazyflow.engine.step.GraphStep` following its upstream steps, all
in one graph per pass of the loop (``flush``). The scheduler then runs a
chain without a round trip to the engine per node; submitting only the nodes
that are ready cannot help a chain, where one node is ready at a time.

Submitted ahead, a node has not been keyed, looked up or claimed by the
engine, so its step does that on the worker: it takes the content key from
its inputs' digests, and does not call the node when the key is an entry the
client named (each such node's last computed entry, from its "latest"
record, when it is still stored) or one the shared tier holds. The engine
still *starts* it as every other node when its inputs settle here, in the
reference order: it keys it, looks it up (early cutoff: a hit is served from
the cache, whatever the worker did), claims the key and emits the events;
only then does it take the submitted future instead of submitting one
(``Graphed.arguments``). It settles the outcome only if the worker keyed the
node as the engine did (the same input digests) and called it; otherwise
(an input whose entry the engine served with another digest, a fallback
value, an input the worker found cached and could not read) the node goes
back to the ready queue and runs from here, as it would have without a graph.
So records, events, stores and history are the reference path's.

Which nodes: those without features (``hooks.py``): a node with lazy inputs,
``map=`` or ``timeout=`` needs the engine between its steps, and one with
``resources=`` is placed per task; they run as before, and the nodes after
them join a graph once they are submitted. A node with ``lease=`` is never
submitted ahead: the engine takes its lease before it computes (``lease.py``).

Trade-off, early cutoff without a shared tier: a node submitted ahead whose
key is an entry other than its latest (an older computation it returns to)
is called on the worker, though the engine then serves it from the cache;
the value is the same, the call was spent. With a shared tier the worker
looks every key up there and calls nothing stored. Rejected: submitting only
ready nodes (no gain on a chain); looking keys up from the worker in the
client's tiers (a round trip per node, the cost this removes); submitting
ahead only nodes whose every upstream misses (true of every node of a first
run, and still no key to look up before the upstream value exists).

State. :class:`GraphRun` (``RunState.graphs``): the futures of submitted
nodes not settled yet (what later graphs follow), those submitted ahead and
not started here yet, and those started on a future submitted ahead, which
hold their inputs until their outcome is taken.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, cast

import lazyflow.keys as keys
from lazyflow.cache.snapshot import handout
from lazyflow.engine.hooks import WAIT, Feature
from lazyflow.engine.settle import entry_meta
from lazyflow.engine.state import expected_code, flow_inputs, release_inputs
from lazyflow.engine.step import RAN, GraphOutcome, GraphStep
from lazyflow.engine.vanished import Vanished, value_of
from lazyflow.executors.base import Executor, GraphExecutor, Outcome, Task

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState
    from lazyflow.model.policies import Policy

__all__ = ["GRAPHED", "GraphRun", "flush", "plain", "stop_ahead"]


class GraphRun:
    """The graph side of one run."""

    def __init__(self) -> None:
        self.flying: dict[str, Future[Outcome]] = {}
        """Nodes submitted and not settled here yet: later graphs follow these futures."""
        self.ahead: dict[str, Future[Outcome]] = {}
        """Nodes submitted before their inputs settled here, not started here yet."""
        self.adopted: dict[str, Future[Outcome] | None] = {}
        """Nodes started here on a future submitted ahead (``None`` once it is taken)."""
        self.by_key: dict[str, dict[str, str]] = {}  # a starting node's inputs in the tier
        self.keyed_there = True
        """False once a result came back unhashed (the workers cannot hash like this
        process): nodes after it could not be keyed there, so none is sent ahead."""


def plain(lazy: bool, mapped: bool, policy: Policy) -> bool:
    """Whether a node may run as a graph step: no feature needs the engine between steps."""
    return not (lazy or mapped or policy.timeout is not None or policy.resources
                or policy.priority)  # a priority goes with a task of its own (client.submit)


def stop_ahead(s: RunState) -> None:
    """The run stops: stop the steps submitted ahead too, one may be running already
    (stopping the first of a chain stops those after it, which follow it)."""
    for future in list(_graphs(s).ahead.values()):
        if not future.done():
            s.executor.abandon(future)


def flush(s: RunState) -> None:
    """Send the graphs of this pass of the loop; the engine is about to wait."""
    cast(GraphExecutor, s.executor).flush()


class Graphed(Feature):
    """Hooks of a node that runs as a graph step."""

    __slots__ = ()

    def lookup(self, s: RunState, name: str, key: str | None) -> str | None:
        """With a shared tier, a step submitted ahead may write the node's entry itself:
        wait for it to land, and do not take what it wrote for a hit."""
        future = _graphs(s).ahead.get(name)
        if future is None or s.sharing is None or key is None:
            return key
        if not future.done():  # woken, and started again, when it lands (loop.py)
            s.parked.add(name)
            future.add_done_callback(lambda _: s.finished.put(name))
            return WAIT
        try:
            outcome = future.result()
        except BaseException:
            return key
        if (isinstance(outcome, GraphOutcome) and outcome.state == RAN and outcome.stored
                and outcome.key == key and not _held_here(s, key)):
            return None  # written by the step this run submitted: no entry was there
        return key

    def arguments(self, s: RunState, name: str, upstream: Mapping[str, str],
                  kwargs: dict[str, Any]) -> frozenset[str]:
        """Take the future submitted ahead, if it may still fit: its inputs are on the
        workers. Otherwise name the inputs the shared tier holds, which workers read."""
        g = _graphs(s)
        future = g.ahead.pop(name, None)
        if future is not None and not (future.done() and not _fits(s, name, future)):
            g.adopted[name] = future
            for up in set(upstream.values()):  # held until its outcome is taken: it may
                s.consumers[up] += 1  # still have to run here (``start`` releases once now)
            return frozenset(upstream)
        if future is not None:
            g.flying.pop(name, None)
        if s.sharing is None:
            return frozenset()
        shared = s.sharing.inputs(upstream, s.keys)
        if shared is None:  # the tier is offline: run by value
            return frozenset()
        g.by_key[name] = shared
        return frozenset(shared)

    def submit(self, s: RunState, name: str, task: Task,
               executor: Executor) -> Future[Outcome] | None:
        """The future submitted ahead, or this node with those after it as one graph."""
        g = _graphs(s)
        adopted = g.adopted.get(name)
        if adopted is not None:
            g.adopted[name] = None
            return adopted
        return _submit(s, name, task, g.by_key.pop(name, {}))

    def outcome(self, s: RunState, name: str, outcome: Outcome) -> Outcome | None:
        """The outcome to settle; ``None`` when a step submitted ahead ran on inputs other
        than those settled here, or did not run: the node is started again, from here."""
        g = _graphs(s)
        g.flying.pop(name, None)
        adopted = name in g.adopted
        if adopted and not _taken(s, name, outcome):
            del g.adopted[name]
            s.run.nodes[name].status = "pending"  # it still holds its inputs: start takes them
            s.ready.append(name)
            return None
        if adopted:
            del g.adopted[name]
            release_inputs(s, name)
        if outcome.error is None and outcome.digest is None:
            g.keyed_there = False
        if isinstance(outcome, GraphOutcome) and outcome.value is not None:
            outcome.value = handout(outcome.value)  # the step kept it shareable on the worker
        return outcome


GRAPHED = Graphed()


def _graphs(s: RunState) -> GraphRun:
    if s.graphs is None:
        s.graphs = GraphRun()
    return s.graphs


def _fits(s: RunState, name: str, future: Future[Outcome]) -> bool:
    """Whether the finished ``future`` is an outcome this node may be settled with."""
    try:
        outcome = future.result()
    except BaseException:  # lost by the executor: submit it afresh
        return False
    return _taken(s, name, outcome)


def _taken(s: RunState, name: str, outcome: Outcome) -> bool:
    """Whether a step submitted ahead ran with the inputs the engine settled for it."""
    if not isinstance(outcome, GraphOutcome):
        return outcome.error is not None  # the executor failed it (a dead worker): settle
    return outcome.state == RAN and outcome.key == s.run.nodes[name].key


# ----------------------------------------------------------------- building a graph


class _Graph:
    """The steps of one submission, in dependency order."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.steps: list[Task] = []
        self.after: list[list[int | Future[Outcome]]] = []
        self.index: dict[str, int] = {}

    def add(self, name: str, step: Task, after: list[int | Future[Outcome]]) -> None:
        self.index[name] = len(self.names)
        self.names.append(name)
        self.steps.append(step)
        self.after.append(after)


def _submit(s: RunState, name: str, task: Task, by_key: dict[str, str]) -> Future[Outcome]:
    """Submit ``name`` (started: its inputs settled) and the nodes after it that may go
    ahead, as one graph; return ``name``'s future."""
    g = _graphs(s)
    graph = _Graph()
    upstream = s.plan.upstream[name]
    key = s.run.nodes[name].key
    assert key is not None
    known = {p: s.digests[up] for p, up in upstream.items()}
    graph.add(name, _step(s, name, task.kwargs, known, (), by_key, key=key), [])
    if g.keyed_there:
        _add_ahead(s, graph)
    futures = cast(GraphExecutor, s.executor).submit_graph(graph.steps, graph.after)
    for n, future in zip(graph.names, futures, strict=True):
        g.flying[n] = future
        if n != name:
            g.ahead[n] = future
    return futures[0]


def _add_ahead(s: RunState, graph: _Graph) -> None:
    """Add the needed nodes after the graph's first node that wait only for nodes it holds
    or nodes submitted or settled before, each once its inputs are in."""
    g = _graphs(s)
    queue = deque(graph.names)
    while queue:
        for d in dict.fromkeys(s.plan.downstream[queue.popleft()]):
            if d in graph.index or not _may_go_ahead(s, d):
                continue
            upstream = s.plan.upstream[d]
            if not all(up in graph.index or up in g.flying or up in s.digests
                       for up in upstream.values()):
                continue
            added = _ahead_step(s, d, graph)
            if added:
                queue.append(d)


def _may_go_ahead(s: RunState, name: str) -> bool:
    """A needed node still waiting for inputs, not started, that runs as a graph step."""
    if not s.remaining.get(name) or s.run.nodes[name].status != "pending":
        return False
    if s.vanished and name in s.vanished:
        return False
    options = s.plan.nodes[name].options
    if options.lease is not None:  # its lease is taken here before it computes (lease.py)
        return False
    return plain(bool(s.lazy[name]), options.map is not None, s.policies[name])


def _ahead_step(s: RunState, name: str, graph: _Graph) -> bool:
    """Add ``name``'s step, following the steps of its inputs not settled here; False
    when a settled input's value can no longer be read (it then starts as usual)."""
    g = _graphs(s)
    kwargs = flow_inputs(s, name)
    known: dict[str, str] = {}
    follows: list[tuple[str, str]] = []
    after: list[int | Future[Outcome]] = []
    settled: dict[str, str] = {}
    for param, up in s.plan.upstream[name].items():
        if up in s.digests and up not in graph.index:
            known[param] = s.digests[up]
            settled[param] = up
            continue
        follows.append((param, up))
        after.append(graph.index[up] if up in graph.index else g.flying[up])
    by_key = (s.sharing.inputs(settled, s.keys) if s.sharing is not None and settled
              else None) or {}
    try:
        for param, up in settled.items():
            if param not in by_key:
                kwargs[param] = handout(s.values[up]) if up in s.values else value_of(s, up)
    except Vanished:
        return False
    graph.add(name, _step(s, name, kwargs, known, tuple(follows), by_key), after)
    return True


def _step(s: RunState, name: str, kwargs: dict[str, Any], known: dict[str, str],
          follows: tuple[tuple[str, str], ...], by_key: dict[str, str],
          key: str | None = None) -> GraphStep:
    """``name``'s graph step; ``key``: the content key the engine took (a started node),
    else ``None`` (submitted ahead: the worker keys and looks it up)."""
    prep = s.prepared[name]
    upstream = s.plan.upstream[name]
    settled = {p: upstream[p] for p in known}
    sharing = s.sharing
    shared = sharing is not None and getattr(sharing.tier, "outage", None) is None
    meta = None
    if shared and prep.cacheable and not (key is not None and _foreign(s, key)):
        meta = entry_meta(s, name, settled, known, "", 0.0, 0.0, 0.0)
        meta["inputs"] = {p: meta["inputs"].get(p, "") for p in upstream}  # the worker fills
    return GraphStep(
        name, s.plan.nodes[name].call, kwargs, s.policies[name], key=None, code=prep.code,
        params=prep.params, known=known, follows=follows,
        base=sum(s.costs.get(up, 0.0) for up in set(settled.values())),
        look=key is None and prep.reusable,
        found={} if key is not None or shared or not prep.reusable else _latest(s, name),
        opener=sharing.opener if shared and sharing is not None else None,
        by_key=by_key, meta=meta,
        expected_code=expected_code(s, name) if s.caps.elsewhere else None)


def _latest(s: RunState, name: str) -> dict[str, tuple[str, float]]:
    """``name``'s last computed entry, if still stored: the key an upstream node that
    computes an equal value again leads back to (early cutoff on the worker)."""
    latest = s.cache.find_record(keys.latest_key(s.flow.name, name), local=True)
    if latest is None:
        return {}
    found = s.cache.lookup(latest["key"])
    if found is None:
        return {}
    meta = found[0]
    return {latest["key"]: (meta["digest"],
                            float(meta.get("cost") or meta.get("duration") or 0.0))}


def _held_here(s: RunState, key: str) -> bool:
    """Whether a tier other than the shared one holds ``key`` (workers do not look there)."""
    assert s.sharing is not None
    for tier in s.cache.tiers:
        if tier is s.sharing.tier:
            continue
        try:
            if tier.meta(key) is not None:
                return True
        except Exception:  # unreadable: as the cache's own lookup, a miss
            continue
    return False


def _foreign(s: RunState, key: str) -> bool:
    """Whether the shared tier holds an entry of a newer encoding at ``key``, which a
    worker's fresh tier would write over (its value then comes back to be stored here)."""
    assert s.sharing is not None
    foreign = getattr(s.sharing.tier, "foreign", None)
    return bool(callable(foreign) and foreign(key))
