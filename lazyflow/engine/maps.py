"""``map=`` as an engine feature: read the map's manifest, compute what it lacks, write it back.

Design note
-----------
What a manifest is and why it is never wrong: ``model/mapping.py``. Here is
the I/O around it, in the node's two hook points:

- ``submit``: the element ids (at buffer speed for flat lists), the manifest's
  chunks read from the cache (those covering the list, plus any further ones
  until one is missing), :func:`mapping.recall` for every element, and the
  elements still missing submitted in a few :class:`ElementBatch` tasks — one
  for an inline executor, a few per worker otherwise, so 20,000 elements are
  not 20,000 futures — each element called on its own with the node's retry
  policy;
- ``outcome``: the batches' results folded into the node's (:func:`collect`),
  then the manifest written back: only the chunks whose elements changed (one,
  when an element was appended), each as one whole entry that carries over the
  results the chunk it replaces held for other elements. Nothing is deleted:
  after a sample of ten elements, the whole list again computes nothing.

A node whose results may not be served (``deterministic=False``) reads no
manifest and computes every element; one that is not cached writes none.

Rejected: one object serving as both the node's list entry and its single
manifest chunk, for a list that fits in one (the two say nearly the same).
They are found by different keys: the list by its content key, which covers
the elements, so a hit reads no chunk; the chunk by the base key, which does
not, so a changed list finds its earlier results. Either key leading to the
other's object costs a read more on every hit, or reports a hit as computed
(its value rebuilt from the chunk), and the chunk is rewritten when the list
changes, so a hit through it would have to check its ids first. A small
map's first run saves its two writes elsewhere: no trace record for a node
without upstream nodes, no environment record (``engine/prepare.py``,
``cache/remote_environment.py``).
Results that name output files (``lf.File``) have their bytes stored when
computed and put back when read, as a node's value has (``files.py``).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import lazyflow.keys as keys
import lazyflow.model.files as files
import lazyflow.model.mapping as mapping
from lazyflow._version import __version__
from lazyflow.cache.snapshot import handout, immutable, snapshot
from lazyflow.engine.catching import failed_digests
from lazyflow.engine.freshness import expired
from lazyflow.engine.hooks import Feature
from lazyflow.engine.moved import moved_since_keyed
from lazyflow.errors import HashingError, MapError
from lazyflow.executors.base import Executor, Outcome, Task, refused_outcome, run_to_completion
from lazyflow.model.mapping import MISSING, Chunk, Cost
from lazyflow.model.metrics import collected, start_collecting
from lazyflow.model.skip import returned_skip
from lazyflow.records import MapChunkMeta

if TYPE_CHECKING:
    from lazyflow.cache.hierarchy import Cache
    from lazyflow.engine.state import RunState

__all__ = ["MAPPED", "ElementBatch", "MapRun", "collect", "gather"]

_BATCHES_PER_WORKER = 4  # enough to balance uneven elements, few enough to cost nothing
_PLAIN = frozenset({int, float, str, bytes, bool, type(None), complex})  # name no file


class Mapped(Feature):
    """Hooks of a map node."""

    __slots__ = ()

    def submit(self, s: RunState, name: str, task: Task,
               executor: Executor) -> Future[Outcome] | None:
        """Recall every element from the manifest; submit those it lacks."""
        return _submit_map(s, name, task.kwargs, executor)

    def outcome(self, s: RunState, name: str, outcome: Outcome) -> Outcome | None:
        """Fold the elements' outcomes into the node's; write the manifest back."""
        run = s.maps.pop(name, None)
        if run is None:  # it failed before any element was submitted
            return outcome
        result = collect(run, outcome, name, lambda value: files.capture(value, s.cache))
        if outcome.error is None:
            rates = _rates(run, outcome)
            if result.error is None:
                result.whole = _whole(run, rates)
                result.created = _oldest(run)
            if s.prepared[name].cacheable and name not in s.tainted:
                moved = s.moved[name] = moved_since_keyed(s, name)
                if moved is None:  # else its results are not its key's
                    _write_manifest(s, name, run, rates)
        return result


MAPPED = Mapped()


@dataclass(slots=True)
class MapRun:
    """One map node in flight: its manifest's address and chunks read, the elements' ids
    and results so far, and which elements each submitted batch computes."""

    base: str  # the node's key without the mapped input: the manifest's
    param: str
    ids: bytes
    values: list[Any]
    batches: list[list[int]]  # positions each batch computes, in order
    copies: dict[int, int]  # duplicates: position -> the computed position it takes
    chunks: list[Chunk | None]  # as read, by index
    created: list[float]  # when the chunks read were written (their oldest result), known
    missing: list[int]  # positions computed now, in order
    unknown: set[int] = field(default_factory=set)  # positions whose element failed


def _submit_map(s: RunState, name: str, kwargs: dict[str, Any],
                executor: Executor) -> Future[Outcome]:
    node, prep = s.plan.nodes[name], s.prepared[name]
    param = node.options.map
    assert param is not None  # only map nodes have this feature
    upstream = s.plan.upstream[name]
    # a caught failure stands in by its own digest, unique to it (catching.py)
    inputs = failed_digests(s, name, upstream) if s.failures \
        else {p: s.digests[up] for p, up in upstream.items()}
    tainted = name in s.tainted  # computed from a failure: recalls and stores nothing
    base = keys.content_key(prep.code, {p: d for p, d in prep.params.items() if p != param},
                            {p: d for p, d in inputs.items() if p != param})
    try:
        items = mapping.elements(kwargs[param], name, param)
        ids = mapping.element_ids(items)
    except (MapError, HashingError) as e:  # the node fails, as if its function had raised
        error = e.located(name, param) if isinstance(e, HashingError) else e
        return _failed(error)
    chunks, created = _read_manifest(s.cache, base, param, len(items), node.options.max_age) \
        if prep.reusable and not tainted else ([], [])
    recalled = mapping.recall(chunks, ids, dedupe=prep.reusable)
    for position in recalled.shared:  # found by id: may be another position's object too
        recalled.values[position] = _own(recalled.values[position])
    _restore_files(s.cache, recalled, name)
    batches = _batches(recalled.missing, executor)
    s.maps[name] = MapRun(base, param, ids, recalled.values, batches, recalled.copies, chunks,
                          created, recalled.missing)
    s.run.nodes[name].reason += (f"; {len(recalled.missing)} of {len(items)} elements "
                                 "to compute")
    policy = s.policies[name]
    others = {p: v for p, v in kwargs.items() if p != param}  # each batch takes its items
    return gather([executor.submit(ElementBatch(
        f"{name}[{batch[0]}]" if len(batch) == 1 else f"{name}[{batch[0]}..{batch[-1]}]",
        node.call, others, policy, hash_result=False, param=param,
        items=[items[p] for p in batch])) for batch in batches])


def _own(value: Any) -> Any:
    """``value`` itself if immutable, else a copy: two positions of the result never share
    a mutable object (computed apart, they would not)."""
    return value if type(value) in _PLAIN or immutable(value) else handout(snapshot(value))


def _failed(error: BaseException) -> Future[Outcome]:
    failed: Future[Outcome] = Future()
    now = time.time()
    failed.set_result(Outcome(error=error, attempts=1, started=now, ended=now))
    return failed


def _batches(missing: list[int], executor: Executor) -> list[list[int]]:
    """The positions to compute, split into consecutive batches: one for a single worker,
    a few per worker otherwise (and never more than the elements)."""
    if not missing:
        return []
    count = min(len(missing), max(1, executor.max_workers * _BATCHES_PER_WORKER)
                if executor.max_workers > 1 else 1)
    size = -(-len(missing) // count)
    return [missing[at:at + size] for at in range(0, len(missing), size)]


# --------------------------------------------------------------------------- the manifest


def _read_manifest(cache: Cache, base: str, param: str, length: int,
                   max_age: float | None) -> tuple[list[Chunk | None], list[float]]:
    """The manifest's chunks by index: all that cover ``length`` elements (``None`` for one
    missing, damaged, not shaped as a chunk or older than ``max_age``), then further ones
    until one is missing; and when those read were written, where their entries say."""
    chunks: list[Chunk | None] = []
    created: list[float] = []
    needed = mapping.chunk_count(length)
    while True:
        chunk, when = _read_chunk(cache, mapping.chunk_key(base, param, len(chunks)), max_age)
        if chunk is None and len(chunks) >= needed:
            return chunks, created
        chunks.append(chunk)
        if chunk is not None and when is not None:
            created.append(when)


def _read_chunk(cache: Cache, key: str, max_age: float | None
                ) -> tuple[Chunk | None, float | None]:
    """The chunk under ``key`` (``None``: a miss) and its entry's ``created``: when the
    oldest result it holds was computed (``_write_manifest``)."""
    try:  # a damaged entry is dropped, with a warning: a miss
        stored, meta, _ = cache.entry(key)
    except KeyError:
        return None, None
    if max_age is not None and expired(meta, max_age) is not None:
        return None, None  # its elements expire with the node (freshness.py)
    created = meta.get("created")
    if not isinstance(created, (int, float)) or isinstance(created, bool):
        created = None  # not said: only a chunk of another writer; it bounds nothing
    return Chunk.read(stored), created  # not shaped as a chunk: a miss


def _restore_files(cache: Cache, recalled: mapping.Recalled, name: str) -> None:
    """Put back the output files the recalled results name (``files.py``), those results
    only (not what chunks carry for other lists); a result whose files' bytes are gone
    is computed again."""
    values = recalled.values
    if set(map(type, values)) - {type(MISSING)} <= _PLAIN:  # the usual case, at C speed
        return
    lost = []
    for position, value in enumerate(values):
        if type(value) not in _PLAIN and value is not MISSING:
            try:
                files.restore(value, cache, node=name)
            except KeyError:
                values[position] = MISSING
                lost.append(position)
    if lost:
        recalled.missing = sorted([*recalled.missing, *lost])


def _write_manifest(s: RunState, name: str, run: MapRun, rates: _Rates) -> None:
    """Write each chunk whose elements changed, carrying over the results it held for
    other elements; chunks past the list's end stay (a longer list may come back).

    A chunk is stamped ``created`` when its oldest result was computed, as a node's
    value is when it was: one holding results recalled from the chunks read is as old
    as the oldest of those (a bound, never younger), so rewriting it for an appended
    element does not make its other results look new to ``max_age=``."""
    length = len(run.values)
    oldest = min(run.created, default=None)
    computed = [p for p in run.missing if p not in run.unknown] if run.unknown else run.missing
    for index in range(mapping.chunk_count(length)):
        old = run.chunks[index] if index < len(run.chunks) else None
        if old is not None and old.matches(mapping.chunk_ids(run.ids, length, index,
                                                             run.unknown)):
            continue  # the same elements: their results are the ones stored
        chunk = mapping.build_chunk(run.ids, run.values, index, run.unknown, old)
        if not len(chunk):
            continue  # every element of it failed, and it replaces nothing
        now = bisect_left(computed, (index + 1) * mapping.CHUNK) - \
            bisect_left(computed, index * mapping.CHUNK)
        chunk = replace(chunk, cost=_plus(_times(rates.now, now),
                                          _times(rates.earlier, len(chunk) - now)))
        created = time.time()
        if now < len(chunk) and oldest is not None:  # it holds results computed earlier
            created = min(created, oldest)
        meta: MapChunkMeta = {"node": name, "flow": s.flow.name, "chunk": index,
                              "elements": len(chunk), "created": created,
                              "lazyflow": __version__}
        s.cache.store(mapping.chunk_key(run.base, run.param, index), chunk.stored(), meta)


# --------------------------------------------------------------------------- costs


@dataclass(frozen=True, slots=True)
class _Rates:
    """What one element cost on average: of those computed now, and of those recalled."""

    now: Cost
    earlier: Cost


def _rates(run: MapRun, outcome: Outcome) -> _Rates:
    """Per-element costs: this run's calls (their seconds and figures over their count),
    and the chunks read (what they record over the results they hold)."""
    computed = len(run.missing) - len(run.unknown)
    now = _times((outcome.duration, outcome.metrics), 1 / computed) if computed else _NOTHING
    held = sum(len(chunk) for chunk in run.chunks if chunk is not None)
    earlier = _NOTHING
    if held:
        read = _NOTHING
        for chunk in run.chunks:
            if chunk is not None:
                read = _plus(read, chunk.cost)
        earlier = _times(read, 1 / held)
    return _Rates(now, earlier)


def _whole(run: MapRun, rates: _Rates) -> Cost:
    """What the node's whole value cost: the calls made now, plus the recalled elements
    at the rate the chunks they came from record (what a later hit on it saves)."""
    recalled = len(run.values) - len(run.missing) - len(run.copies)
    return _plus(_times(rates.now, len(run.missing)), _times(rates.earlier, recalled))


def _oldest(run: MapRun) -> float | None:
    """When the oldest result of the node's value was computed, if it holds recalled ones
    (a bound: the oldest chunk read); ``None`` when every result was computed now."""
    recalled = len(run.values) - len(run.missing) - len(run.copies)
    return min(run.created, default=None) if recalled else None


_NOTHING: Cost = (0.0, None)


def _times(cost: Cost, factor: float) -> Cost:
    seconds, metrics = cost
    return (seconds * factor,
            {m: _whole_if_near(v * factor) for m, v in metrics.items()}
            if metrics and factor else None)


def _whole_if_near(figure: float) -> float:
    """A figure that scaling left a hair off a whole number, as that number: 946 tokens
    averaged over 20 elements and summed back are 946, not 946.0000000001."""
    nearest = round(figure)
    return nearest if abs(figure - nearest) <= 1e-9 * max(1.0, abs(figure)) else figure


def _plus(a: Cost, b: Cost) -> Cost:
    return (a[0] + b[0], _summed([a[1], b[1]]))


# --------------------------------------------------------------------------- elements


@dataclass(slots=True)
class ElementBatch(Task):
    """Some elements of a map node, each called in turn as its own task (its own retries).

    The outcome's value is ``(results, failures)``: the results in order (``None``
    for an element that failed) and each failed element's outcome by its offset.
    """

    param: str = ""
    items: list[Any] = field(default_factory=list)

    def __call__(self) -> Outcome:
        refused = refused_outcome(self)  # its elements are tasks of their own, expecting none
        if refused is not None:
            return refused
        collecting = start_collecting()  # what the elements report with lf.report
        try:
            outcome = self._once() if self.policy.retries == 0 else self._each()
        finally:
            reported = collected(collecting)
        if reported:
            outcome.metrics = _summed([outcome.metrics, reported])
        return outcome

    async def acall(self) -> Outcome:
        """On the async lane: the elements awaited together, each its own task."""
        started, t0 = time.time(), time.perf_counter()
        parts = await asyncio.gather(*(self._element(item).acall() for item in self.items))
        results = [p.value if p.error is None else None for p in parts]
        failures = {offset: p for offset, p in enumerate(parts) if p.error is not None}
        return Outcome(value=(results, failures), attempts=max((p.attempts for p in parts),
                                                               default=1),
                       started=started, ended=time.time(), duration=time.perf_counter() - t0,
                       metrics=_summed([p.metrics for p in parts]))

    def _element(self, item: Any) -> Task:
        return Task(self.node, self.func, {**self.kwargs, self.param: item}, self.policy,
                    hash_result=False)

    def _each(self) -> Outcome:
        """Each element as its own task, with its own retries."""
        started = time.time()
        results: list[Any] = []
        failures: dict[int, Outcome] = {}
        attempts, duration = 1, 0.0
        reported: list[dict[str, float] | None] = []
        for offset, item in enumerate(self.items):
            part = self._element(item)()
            attempts = max(attempts, part.attempts)
            duration += part.duration
            reported.append(part.metrics)  # each task collected its own
            if part.error is None:
                results.append(part.value)
            else:
                results.append(None)
                failures[offset] = part
        return Outcome(value=(results, failures), attempts=attempts, started=started,
                       ended=time.time(), duration=duration, metrics=_summed(reported))

    def _once(self) -> Outcome:
        """What ``Task.__call__`` does for each element without retries, minus an Outcome
        and four clock reads an element (~1.5 µs: 1.5 s of a million-element map)."""
        started, t0 = time.time(), time.perf_counter()
        func, kwargs, param = self.func, dict(self.kwargs), self.param
        results: list[Any] = []
        failures: dict[int, Outcome] = {}
        for offset, item in enumerate(self.items):
            kwargs[param] = item
            try:
                value = func(**kwargs)
                # an async def node on a worker: its own loop runs it (executors/base.py)
                results.append(run_to_completion(value) if inspect.iscoroutine(value)
                               else value)
            except (KeyboardInterrupt, SystemExit):
                raise  # an interrupt cancels the run; it is not the element's failure
            except BaseException as e:  # Skip included: the element's outcome, as Task's
                results.append(None)
                now = time.time()
                failures[offset] = Outcome(error=e, attempts=1, started=now, ended=now)
        return Outcome(value=(results, failures), attempts=1, started=started,
                       ended=time.time(), duration=time.perf_counter() - t0)


def gather(futures: Sequence[Future[Outcome]]) -> Future[Outcome]:
    """One future that resolves, when all parts have, to an Outcome listing their Outcomes."""
    combined = _Gathered(futures)
    if not futures:
        combined.set_result(Outcome(value=[]))
        return combined
    left = [len(futures)]
    lock = threading.Lock()

    def part_done(_: Future[Outcome]) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last and not combined.done():
            parts = [_outcome_of(f) for f in futures]
            combined.set_result(Outcome(
                value=parts, attempts=max(p.attempts for p in parts),
                started=min(p.started for p in parts), ended=max(p.ended for p in parts),
                duration=sum(p.duration for p in parts),
                metrics=_summed([p.metrics for p in parts])))

    for future in futures:
        future.add_done_callback(part_done)
    return combined


def _summed(parts: Sequence[dict[str, float] | None]) -> dict[str, float] | None:
    """``lf.report`` figures added up, or ``None`` when none reported any."""
    total: dict[str, float] = {}
    for part in parts:
        for metric, value in (part or {}).items():
            total[metric] = total.get(metric, 0) + value
    return total or None


class _Gathered(Future):  # type: ignore[type-arg]
    """A gathered future: cancelling it cancels the parts not yet started."""

    def __init__(self, parts: Sequence[Future[Outcome]]) -> None:
        super().__init__()
        self._parts = parts

    def cancel(self) -> bool:
        for part in self._parts:
            part.cancel()
        return super().cancel()


def _outcome_of(future: Future[Outcome]) -> Outcome:
    try:
        return future.result()
    except BaseException as e:  # the executor lost the task (cancelled, dead worker)
        return Outcome(error=e, attempts=1)


def collect(run: MapRun, outcome: Outcome, node: str, computed: Any) -> Outcome:
    """Fold the batches' outcomes into the node's outcome.

    Every element computed is passed to ``computed(value)`` and takes its place in
    ``run.values`` (with its duplicates); the first failing element (by index)
    becomes the node's error, with a note naming its index, and the failed ones
    are ``run.unknown``. Otherwise the value is the list of results in order.
    """
    if outcome.error is not None:
        return outcome
    failure: tuple[int, Outcome] | None = None
    for batch, part in zip(run.batches, outcome.value, strict=True):
        results, failures = part.value if part.error is None else ([], {})
        plain = set(map(type, results)) <= _PLAIN  # no result names an output file
        for offset, position in enumerate(batch):
            lost = part if part.error is not None else failures.get(offset)
            if lost is None and not plain:  # an element that returned lf.Skip failed
                refused = returned_skip(node, results[offset])
                lost = None if refused is None else Outcome(error=refused, attempts=1)
            if lost is None:
                run.values[position] = results[offset]
                if not plain:
                    computed(results[offset])
                continue
            run.unknown.add(position)
            if failure is None:
                failure = (position, lost)
    for position, source in run.copies.items():
        if source in run.unknown:
            run.unknown.add(position)
        else:
            run.values[position] = _own(run.values[source])
    result = Outcome(value=run.values, attempts=outcome.attempts, started=outcome.started,
                     ended=outcome.ended, duration=outcome.duration, metrics=outcome.metrics)
    if failure is not None:
        position, lost = failure
        assert lost.error is not None
        if hasattr(lost.error, "add_note"):
            lost.error.add_note(f"lazyflow: element {position} of {len(run.values)} of map "
                                f"node {node!r} failed; the other elements are cached")
        result.value = None
        result.error = lost.error
    return result
