"""Per-item map: ``@flow.node(map="items")`` calls the function once per element.

Design note
-----------
Policy. A map node is one node of the graph whose value is the list of its
function's results, one per element of the mapped input, in order. Each
element is also cached on its own, under an *element key*: the node's code,
parameters and other inputs, plus that element's value digest. When the
node's key misses (some element changed), the engine looks every element up
and calls the function only for the elements that miss — change one element
of 1,000 and one call runs. A map over a map's output is element-wise for the
same reason: the changed element is the only one whose digest changed.

Elements are submitted to the run's executor as separate tasks (parallel
under threads or processes), each with the node's retry policy; their
futures are gathered into one future, so the scheduler sees one node in
flight. A failing element fails the node with its own exception plus a note
naming its index; the elements that succeeded are stored, so the next
request computes only the ones that failed.

Rejected alternative: expanding a map into one graph node per element at
planning time. It makes the plan's size depend on data (a 1,000,000-element
list would be a 1,000,000-node graph before anything is known to have
changed) and needs the data before planning, which breaks lazy requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import xxhash

from lazyflow.errors import DefinitionError, MapError
from lazyflow.executors.base import Outcome
from lazyflow.keys import Domain, domain

_DOMAIN = domain(Domain.ELEMENT)

__all__ = ["MapRun", "collect", "element_key", "elements", "gather", "validate_map"]


def validate_map(node: str, params: Sequence[str], option: Any, lazy: Any) -> None:
    """Check a ``map=`` option: one parameter name of the function, not a lazy one."""
    if option is None:
        return
    if not isinstance(option, str) or option not in params:
        raise DefinitionError(f"node {node!r}: map= names the parameter whose elements the "
                              f"function is applied to, one of {', '.join(params) or 'none'}; "
                              f"got {option!r}")
    if lazy:
        raise DefinitionError(f"node {node!r}: a map node cannot take lazy inputs "
                              f"(lazy={tuple(lazy)!r}); compute the choice in an upstream node")


def elements(value: Any, node: str, param: str) -> list[Any]:
    """The elements of a mapped input, as a list."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise MapError(f"node {node!r} maps over {param!r}, which must be a list or another "
                       f"iterable of elements, got a {type(value).__name__}")
    return list(value)


def element_key(base_key: str, param: str, digest: str) -> str:
    """Where one element's result is stored: the node's key without the mapped input, plus
    the element's digest."""
    return xxhash.xxh3_128_hexdigest(
        f"{_DOMAIN}{base_key}\0{len(param)}:{param}\0{digest}".encode())


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
                duration=sum(p.duration for p in parts)))

    for future in futures:
        future.add_done_callback(part_done)
    return combined


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
                     ended=outcome.ended, duration=outcome.duration)
    if failure is not None:
        result.value = None
        result.error = failure.error
    return result
