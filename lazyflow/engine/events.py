"""Observer API: the engine tells, the widget, history and progress bars listen.

Design note
-----------
The engine never prints or draws. It emits four plain events through an
:class:`EventBus`; anything that wants to watch a run subscribes a callable.
Each flow has its own bus (``flow.events``) and there is one global bus
(:data:`GLOBAL`) that sees every flow's runs, for the run history. Emitting
to a bus with no subscribers costs one truth test, so an unobserved run pays
nothing. A subscriber that raises is reported with a warning and dropped from
that emission; it can never fail a run.

A subscriber may take the run events only (``subscribe(fn, nodes=False)``):
a run none of whose listeners takes node events builds no node event. The run
history listens so, since it reads a run's records when the run ends (and
while a long one goes): building and delivering a node event cost ~0.5 µs,
half the history's cost on a warm request of 100 memory hits
(``benchmarks/history.py``).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lazyflow.errors import LazyflowWarning

if TYPE_CHECKING:
    from lazyflow.run import NodeRecord, Run

__all__ = ["GLOBAL", "Event", "EventBus", "NodeFinished", "NodeStarted", "RunFinished",
           "RunStarted"]


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A run began; ``run.nodes`` already lists every node it may touch.

    ``params`` holds the request's flow-input values (node -> parameter -> value), for
    observers that show small ones (the run history): the run itself keeps digests
    only, so the values live no longer than an observer keeps them (the history: until
    the run ends; it keeps their text).
    """

    run: Run
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeStarted:
    """A node began computing (cache misses only; hits go straight to finished)."""

    run: Run
    name: str


@dataclass(frozen=True, slots=True)
class NodeFinished:
    """A node reached a final status: completed, cached, failed, skipped or cancelled."""

    run: Run
    record: NodeRecord


@dataclass(frozen=True, slots=True)
class RunFinished:
    """The run ended (``run.status`` says how)."""

    run: Run


Event = RunStarted | NodeStarted | NodeFinished | RunFinished
Subscriber = Callable[[Event], Any]


class EventBus:
    """A list of subscribers, called in order for each event.

    >>> bus = EventBus()
    >>> seen = []
    >>> unsubscribe = bus.subscribe(seen.append)
    >>> unsubscribe()

    A subscriber that needs only when runs start and end says so, and a run none of
    whose subscribers takes node events builds none (the run history listens so):

    >>> unsubscribe = bus.subscribe(seen.append, nodes=False)
    """

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()
        self._node_subscribers: tuple[Subscriber, ...] = ()  # those taking node events too
        self.watches_nodes = False
        """Whether a subscriber takes node events (an attribute: the engine reads it on
        every run)."""
        self._lock = threading.Lock()

    def subscribe(self, fn: Subscriber, *, nodes: bool = True) -> Callable[[], None]:
        """Call ``fn(event)`` for every event from now on; returns an unsubscribe function.

        ``nodes=False``: only :class:`RunStarted` and :class:`RunFinished`, no
        :class:`NodeStarted` or :class:`NodeFinished` (a run that no listener takes them
        from builds none).
        """
        with self._lock:
            self._subscribers = (*self._subscribers, fn)
            if nodes:
                self._node_subscribers = (*self._node_subscribers, fn)
                self.watches_nodes = True

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not fn)
                self._node_subscribers = tuple(s for s in self._node_subscribers
                                               if s is not fn)
                self.watches_nodes = bool(self._node_subscribers)

        return unsubscribe

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber that takes it; a failing subscriber only
        warns."""
        for fn in (self._node_subscribers if isinstance(event, (NodeStarted, NodeFinished))
                   else self._subscribers):
            try:
                fn(event)
            except Exception as e:
                warnings.warn(f"event subscriber {fn!r} failed on {type(event).__name__}: "
                              f"{type(e).__name__}: {e}", LazyflowWarning, stacklevel=2)


GLOBAL = EventBus()
"""Sees the events of every flow (the run history subscribes here)."""
