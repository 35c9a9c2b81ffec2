"""The view model of a flow: per-node state of the current run, fed by engine events.

Design note
-----------
State flows one way: engine events -> :class:`FlowModel` -> views. The model
subscribes to ``flow.events`` and turns each event into :class:`NodeView`
values under a lock (events may come from a worker thread); views register a
listener and read a consistent :meth:`snapshot` when they redraw. The model
never calls the engine. Handling an event is a few dict writes, so an observed
run pays microseconds per node; drawing is the view's business (throttled).

The layout is recomputed only when the flow's nodes, edges or sub-flow
groups change (a notebook redefines nodes all the time; a run does not).

A node's details show its flow inputs' values when they are small (numbers,
short strings, paths: :func:`small`). A :class:`~lazyflow.run.Run` keeps
inputs as digests only, so the request's values reach the model through
:func:`requested`: ``Flow.run`` wraps the engine call in it, and the model
reads it when ``RunStarted`` arrives, which the engine emits in the thread
that called it, and keeps only their text. Rejected: keeping values on the
``Run`` (every run would hold its inputs alive, large ones included, for as
long as the run is kept).
"""

from __future__ import annotations

import contextlib
import numbers
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from lazyflow.cache.sizes import format_size
from lazyflow.engine.events import Event, NodeFinished, NodeStarted, RunFinished, RunStarted
from lazyflow.model.shown import REDACTED, Secret, is_redacted
from lazyflow.render.layout import Layout, layout
from lazyflow.render.svg import NodeView
from lazyflow.run import STATUSES, format_duration
from lazyflow.subflow import groups

if TYPE_CHECKING:
    from lazyflow.api import Flow
    from lazyflow.run import NodeRecord, Run

__all__ = ["FlowModel", "Progress", "detailed_view", "inputs_text", "nesting", "requested",
           "small", "view_of"]

SHORT = 40
"""Longest string (or repr) shown as an input's value; longer ones show their type."""

_REQUEST: ContextVar[Mapping[str, Mapping[str, Any]] | None] = ContextVar(
    "lazyflow_request_inputs", default=None)


@contextlib.contextmanager
def requested(params: Mapping[str, Mapping[str, Any]]) -> Iterator[None]:
    """Within the block, runs started by this thread (or task) were asked with ``params``
    (node -> flow-input parameter -> value), for the views to show small values."""
    token = _REQUEST.set(params)
    try:
        yield
    finally:
        _REQUEST.reset(token)


def small(value: Any) -> str | None:
    """The repr of a value small enough to show (numbers, booleans, None, short strings
    and bytes, paths, short tuples of these); ``None`` for anything else.

    >>> small(3), small("a.csv"), small([1, 2]), small("x" * 100)
    ('3', "'a.csv'", None, None)
    """
    if value is None or isinstance(value, (bool, numbers.Number, str, bytes, PurePath)):
        text = repr(str(value)) if isinstance(value, PurePath) else repr(value)
    elif type(value) is tuple and len(value) <= 4:
        items = [shown for v in value if (shown := small(v)) is not None]
        if len(items) < len(value):
            return None
        text = "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    else:
        return None
    return text if len(text) <= SHORT else None


def inputs_text(values: Mapping[str, Any]) -> str:
    """``rows=5, path='a.csv', frame=<DataFrame>, api_key=<redacted>``: small values shown,
    others by type, secrets never (``model/shown.py``: ``lf.Secret`` and names like
    ``*token*``, ``*password*``, ``*key*``, ``*secret*``)."""
    return ", ".join(f"{name}={_input_text(name, v)}" for name, v in values.items())


def _input_text(name: str, value: Any) -> str:
    if is_redacted(name) or type(value) is Secret:
        return REDACTED
    text = small(value)
    return text if text is not None else f"<{type(value).__name__}>"


@dataclass(frozen=True, slots=True)
class Progress:
    """Counts of the current run, for a progress bar."""

    total: int = 0
    pending: int = 0
    running: int = 0
    completed: int = 0
    cached: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    elapsed: float = 0.0
    saved: float = 0.0
    status: str = "idle"

    @property
    def settled(self) -> int:
        """Nodes that reached a final status."""
        return self.total - self.pending - self.running


def view_of(record: NodeRecord) -> NodeView:
    """The picture's view of a node record."""
    error = f"{type(record.error).__name__}: {record.error}" if record.error is not None else ""
    duration = record.duration if STATUSES[record.status].ran else None
    return NodeView(record.status, record.tier, duration, record.key, record.size, error,
                    record.reason)


def detailed_view(record: NodeRecord, inputs: str = "") -> NodeView:
    """:func:`view_of` with the widget's details in its hover text: the node's flow inputs
    (``inputs``, as :func:`inputs_text` writes them), cpu, peak memory and metrics."""
    return replace(view_of(record), notes=_notes(record, inputs))


def _notes(record: NodeRecord, inputs: str) -> tuple[str, ...]:
    """The hover lines beyond state and key: inputs, cpu, peak memory, metrics."""
    notes = []
    if inputs:
        notes.append(f"inputs {inputs}")
    if record.cpu is not None:
        notes.append(f"cpu {format_duration(record.cpu)}")
    if record.peak_memory is not None:
        notes.append(f"peak memory {format_size(record.peak_memory)}")
    if record.metrics:
        notes.append("metrics " + ", ".join(f"{k}={v:g}" for k, v in record.metrics.items()))
    return tuple(notes)


def nesting(flow: Flow) -> dict[str, list[str]]:
    """The groups drawn as boxes: included sub-flows by prefix, and each ``as_node`` node
    (not already in one) labelled ``inner ▸ target`` by the flow and target it runs."""
    boxes = groups(flow)
    grouped = {n for members in boxes.values() for n in members}
    for name, node in flow.nodes.items():
        ref = getattr(node.func, "__lazyflow_subflow__", None)
        if ref is not None and name not in grouped:
            boxes.setdefault(f"{ref.flow.name} ▸ {ref.target}", []).append(name)
    return boxes


class FlowModel:
    """Per-node state of ``flow``'s latest run, kept current by its events."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.run: Run | None = None
        self._views: dict[str, NodeView] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Event], Any]] = []
        self._layout: tuple[Any, Layout] | None = None
        self._checked: Run | None = None  # the run whose start the layout was checked at
        self._inputs: dict[str, str] = {}  # the current request's inputs, per node, as text
        if flow.last_run is not None:
            self._adopt(flow.last_run)
        self._unsubscribe = flow.events.subscribe(self._on_event)

    def listen(self, fn: Callable[[Event], Any]) -> None:
        """Call ``fn(event)`` after each event has been applied."""
        self._listeners.append(fn)

    def close(self) -> None:
        """Stop following the flow's events."""
        self._unsubscribe()

    def layout(self) -> Layout:
        """The flow's current DAG, laid out (cached until nodes or edges change).

        While a run goes on the flow is checked for changes once, at its start:
        redraws mid-run then cost no walk over the flow's wiring.
        """
        running = self.run is not None and self.run.status == "running"
        if self._layout is not None and running and self._checked is self.run:
            return self._layout[1]
        names = tuple(self.flow)
        edges = tuple(self.flow.edges())
        boxes = nesting(self.flow)
        if self._layout is None or self._layout[0] != (names, edges, boxes):
            self._layout = ((names, edges, boxes), layout(names, edges, boxes))
        self._checked = self.run
        return self._layout[1]

    def inputs(self) -> dict[str, str]:
        """Each node's flow inputs in the current run, as :func:`inputs_text` writes them
        (nodes without inputs left out; empty when the run was not asked through
        :func:`requested`)."""
        with self._lock:
            return dict(self._inputs)

    def snapshot(self) -> tuple[dict[str, NodeView], Progress]:
        """A consistent copy of the node views and the run's counts."""
        with self._lock:
            views = dict(self._views)
            run = self.run
        counts: dict[str, int] = {}
        for view in views.values():
            counts[view.state] = counts.get(view.state, 0) + 1
        if run is None:
            return views, Progress()
        saved = run.time_saved  # each cached node's cost once (engine/ancestry.py)
        progress = Progress(len(views), counts.get("pending", 0), counts.get("running", 0),
                            counts.get("completed", 0), counts.get("cached", 0),
                            counts.get("failed", 0), counts.get("skipped", 0),
                            counts.get("cancelled", 0),
                            (run.ended or time.time()) - run.started, saved, run.status)
        return views, progress

    # ----------------------------------------------------------------- events

    def _on_event(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, RunStarted):
                self.run = event.run
                # set by this thread's Flow.run; kept as text: a view holds no input alive
                self._inputs = {name: inputs_text(values)
                                for name, values in (_REQUEST.get() or {}).items() if values}
                self._views = {name: NodeView("pending") for name in event.run.nodes}
            elif event.run is not self.run:
                return  # a straggler from an older run
            elif isinstance(event, NodeStarted):
                self._views[event.name] = NodeView(
                    "running", started=event.run.nodes[event.name].started or time.time())
            elif isinstance(event, NodeFinished):
                self._views[event.record.name] = self._view(event.record)
            elif isinstance(event, RunFinished):
                self._views = {name: self._view(r) for name, r in event.run.nodes.items()}
        for fn in self._listeners:
            fn(event)

    def _view(self, record: NodeRecord) -> NodeView:
        return detailed_view(record, self._inputs.get(record.name, ""))

    def _adopt(self, run: Run) -> None:
        self.run = run
        self._views = {name: detailed_view(r) for name, r in run.nodes.items()}
