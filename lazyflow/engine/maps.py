"""``map=`` as an engine feature: one task per element that misses (``mapping.py``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lazyflow.keys as keys
import lazyflow.model.mapping as mapping
from lazyflow._version import __version__
from lazyflow.engine.freshness import expired
from lazyflow.engine.hooks import Feature
from lazyflow.engine.step import load, store
from lazyflow.errors import HashingError, MapError
from lazyflow.executors.base import Executor, Outcome, Task
from lazyflow.keys.hashing import hash_value
from lazyflow.records import ElementMeta

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState

__all__ = ["MAPPED", "MapRun", "collect", "gather"]


class Mapped(Feature):
    """Hooks of a map node."""

    __slots__ = ()

    def submit(self, s: RunState, name: str, task: Task,
               executor: Executor) -> Future[Outcome] | None:
        """Look every element up; submit one task per element that misses."""
        return _submit_map(s, name, task.kwargs, executor)

    def outcome(self, s: RunState, name: str, outcome: Outcome) -> Outcome | None:
        """Gather the elements' outcomes (and store each computed element) into the node's."""
        elements = s.maps.pop(name, None)
        if elements is None:  # it failed before any element was submitted
            return outcome
        return collect(elements, outcome, name, lambda i, v, d: _store_element(
            s, name, elements.keys[i], i, v, d))


MAPPED = Mapped()


def _submit_map(s: RunState, name: str, kwargs: dict[str, Any],
                executor: Executor) -> Future[Outcome]:
    node, prep = s.plan.nodes[name], s.prepared[name]
    param = node.options.map
    assert param is not None  # only map nodes have this feature
    inputs = {p: s.digests[up] for p, up in s.plan.upstream[name].items()}
    key = keys.content_key(prep.code, {p: d for p, d in prep.params.items() if p != param},
                           {p: d for p, d in inputs.items() if p != param})
    try:
        items = mapping.elements(kwargs[param], name, param)
        digests = [hash_value(item) for item in items]
    except (MapError, HashingError) as e:  # the node fails, as if its function had raised
        failed: Future[Outcome] = Future()
        error = e.located(name, param) if isinstance(e, HashingError) else e
        failed.set_result(Outcome(error=error, attempts=1, started=time.time(),
                                  ended=time.time()))
        return failed
    run = MapRun([mapping.element_key(key, param, d) for d in digests],
                         [None] * len(items), [])
    max_age = node.options.max_age
    for index, element_key in enumerate(run.keys):
        try:
            if not prep.cacheable or (max_age is not None and _stale(s, element_key, max_age)):
                raise KeyError(element_key)
            run.values[index] = load(s.cache, element_key)
        except KeyError:
            run.missing.append(index)
    s.maps[name] = run
    s.run.nodes[name].reason += f"; {len(run.missing)} of {len(items)} elements to compute"
    policy = s.policies[name]
    return gather([executor.submit(Task(f"{name}[{i}]", node.call,
                                                {**kwargs, param: items[i]}, policy))
                           for i in run.missing])


def _stale(s: RunState, key: str, max_age: float) -> bool:
    """Whether the element stored under ``key`` is older than its node's ``max_age``."""
    found = s.cache.lookup(key)
    return found is not None and expired(found[0], max_age) is not None


def _store_element(s: RunState, name: str, key: str, index: int, value: Any,
                   digest: str | None) -> None:
    if not s.prepared[name].cacheable or digest is None:
        return
    meta: ElementMeta = {"digest": digest, "node": name, "element": index,
                         "flow": s.flow.name, "created": time.time(), "lazyflow": __version__}
    store(s.cache, key, value, meta)


@dataclass(slots=True)
class MapRun:
    """One map node in flight: element keys, results found so far, elements submitted."""

    keys: list[str]
    values: list[Any]
    missing: list[int]


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
                duration=sum(p.duration for p in parts), metrics=_summed(parts)))

    for future in futures:
        future.add_done_callback(part_done)
    return combined


def _summed(parts: Sequence[Outcome]) -> dict[str, float] | None:
    """The elements' ``lf.report`` figures added up, or ``None`` when none reported any."""
    total: dict[str, float] = {}
    for part in parts:
        for metric, value in (part.metrics or {}).items():
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


def collect(run: MapRun, outcome: Outcome, node: str,
            store: Callable[[int, Any, str | None], None]) -> Outcome:
    """Fold the element outcomes into the node's outcome.

    Every element that succeeded is passed to ``store(index, value, digest)``;
    the first failing element (by index) becomes the node's error, with a note
    naming its index. Otherwise the value is the list of results in order.
    """
    if outcome.error is not None:
        return outcome
    failure: Outcome | None = None
    for index, part in zip(run.missing, outcome.value, strict=True):
        if part.error is None:
            run.values[index] = part.value
            store(index, part.value, part.digest)
        elif failure is None:
            failure = part
            if hasattr(part.error, "add_note"):
                part.error.add_note(f"lazyflow: element {index} of {len(run.values)} of map "
                                    f"node {node!r} failed; the other elements are cached")
    result = Outcome(value=run.values, attempts=outcome.attempts, started=outcome.started,
                     ended=outcome.ended, duration=outcome.duration, metrics=outcome.metrics)
    if failure is not None:
        result.value = None
        result.error = failure.error
    return result
