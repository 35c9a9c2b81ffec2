"""The live DAG widget: an ipywidgets view over a :class:`FlowModel`.

Design note
-----------
A thin view: the model follows the engine's events; the widget redraws the
SVG, the progress bar and the details table from a model snapshot, at most
once per ``interval`` (0.1 s: ~10 redraws/s) through :class:`Throttle`, plus
once at the start and end of each run. While a run goes on, each redraw also
asks for another within ``TICK`` seconds, so the elapsed time and each running
node's timer move even while no event comes (a node computing for minutes).
A redraw costs one SVG string build, so even a run of hundreds of tiny nodes
is slowed by a few percent at most (``benchmarks/widget_overhead.py``); the
ticks add at most ``1 / TICK`` redraws a second while nothing else happens.

A saved notebook has no kernel to draw the widget: its output also carries
the picture as ``text/html`` (:func:`~lazyflow.render.display.widget_html`),
which nbconvert, nbviewer and GitHub show where they cannot run widgets. The
widget displays itself with a ``display_id`` (``_ipython_display_``) and
replaces that output's data when a run finishes: at most once per
``PUBLISH`` (a loop of tiny runs must not flood the frontend), and an update
held back by that limit is made when the cell ends (IPython's
``post_execute``), in the kernel's thread and under the cell's request, so a
notebook saved by nbconvert or JupyterLab always holds the last run's
picture. Rejected: updating it on every redraw — each update makes a live
frontend rebuild the widget's view; and a separate output for the picture —
a live frontend would show the DAG twice.

The only way back to the engine is cancellation. A run started with
:meth:`FlowWidget.submit` (``flow.submit``) happens in a background thread, so the kernel stays
free to receive the Cancel click, which sets the run's
:class:`~lazyflow.CancelToken`; the run stops at the next node boundary and
finished nodes stay cached. A run started synchronously in a cell
(``flow.run``) is still drawn live, but the kernel cannot hear the button
until the cell ends; the button then stays disabled and says to interrupt
the kernel instead (which the engine records as a cancellation).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
from IPython import get_ipython
from IPython.display import display, update_display

from lazyflow.engine.events import Event, RunFinished, RunStarted
from lazyflow.notebook.throttle import Throttle
from lazyflow.render.display import run_table_html, status_html, widget_html
from lazyflow.render.model import FlowModel, Progress
from lazyflow.render.svg import render_svg

if TYPE_CHECKING:
    from lazyflow.api import Flow
    from lazyflow.handle import RunHandle

__all__ = ["PUBLISH", "TICK", "FlowWidget"]

TICK = 0.5
"""Seconds between redraws while a run goes on and no event comes (the clock's tick)."""
PUBLISH = 1.0
"""Least seconds between two updates of the saved picture (one per finished run)."""


class FlowWidget(widgets.VBox):
    """The flow's DAG, live: node states, timings, tiers, progress, and a Cancel button.

    >>> import lazyflow as lf
    >>> flow = lf.Flow("doc", cache=lf.Cache(disk=None))
    >>> @flow.node
    ... def model(path: str):
    ...     return path.upper()
    >>> w = flow.widget()       # shows the DAG when it ends a cell; then, in another cell:
    >>> flow.run("model", path="a.csv").status              # drawn live
    'completed'
    >>> job = w.submit("model", path="b.csv")               # in the background: Cancel works
    >>> job.result(10)["model"]
    'B.CSV'
    """

    def __init__(self, flow: Flow, *, interval: float = 0.1) -> None:
        self.model = FlowModel(flow)
        self._drawing = threading.Lock()  # the throttle's timer thread draws too
        self.throttle = Throttle(self.redraw, interval)
        self._closed = False
        self._display_id: str | None = None  # set once shown: the saved picture's output
        self._publish = Throttle(self._update_display, PUBLISH)
        self._svg = widgets.HTML(layout=widgets.Layout(overflow="auto", max_height="640px"))
        self._bar = widgets.IntProgress(value=0, min=0, max=1, bar_style="info",
                                        layout=widgets.Layout(width="22%"))
        self._status = widgets.HTML(layout=widgets.Layout(flex="1 1 auto", margin="0 8px"))
        self._cancel = widgets.Button(description="Cancel", icon="stop", disabled=True,
                                      tooltip="stops runs started with widget.submit(...)")
        self._cancel.on_click(lambda _: self.cancel())
        self._table = widgets.HTML()
        self._details = widgets.Accordion([self._table], titles=("details",),
                                          selected_index=None)
        self._details.observe(lambda _: self.throttle.now(), "selected_index")
        self.submission: RunHandle | None = None
        self.model.listen(self._changed)
        super().__init__([self._svg, widgets.HBox([self._bar, self._status, self._cancel]),
                          self._details])
        self.add_class("lazyflow-widget")
        self.redraw()

    def submit(self, targets: str | Iterable[str], /, **options: Any) -> RunHandle:
        """``flow.submit(...)``: run in a background thread, drawn live, cancellable here."""
        self.submission = self.model.flow.submit(targets, **options)
        self.throttle.now()  # the run may have started before the handle was known
        return self.submission

    def cancel(self) -> None:
        """Cancel the run started with :meth:`submit` (at the next node boundary)."""
        if self.submission is not None:
            self.submission.cancel("Cancel pressed")

    def close(self) -> None:
        """Stop following the flow and close the view."""
        self._closed = True
        self.model.close()
        self.throttle.stop()
        self._publish.stop()
        if self._display_id is not None:
            get_ipython().events.unregister("post_execute", self._publish.flush)
        super().close()

    def __repr__(self) -> str:
        flow = self.model.flow
        return f"<FlowWidget of flow {flow.name!r}: {len(flow)} nodes>"

    def static_html(self) -> str:
        """The widget's current picture as HTML without the widget: DAG and status line."""
        views, progress = self.model.snapshot()
        return widget_html(render_svg(self.model.layout(), views), progress)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget view, its text, and its picture as ``text/html`` for saved notebooks."""
        bundle: dict[str, Any] = super()._repr_mimebundle_(**kwargs) or {}
        bundle["text/html"] = self.static_html()
        return bundle

    def _ipython_display_(self) -> None:
        """Display with a ``display_id`` in a kernel, so finished runs can update the saved
        picture (a terminal IPython would print each update: it gets none)."""
        from lazyflow.render import display as static  # looked up now: tests stand in a kernel

        if self._display_id is None and static.in_kernel():
            self._display_id = f"lazyflow-{uuid.uuid4().hex}"
            get_ipython().events.register("post_execute", self._publish.flush)
        display(self._repr_mimebundle_(), raw=True, display_id=self._display_id)

    def _update_display(self) -> None:
        if self._display_id is not None and not self._closed:
            update_display(self._repr_mimebundle_(), raw=True, display_id=self._display_id)

    def _changed(self, event: Event) -> None:
        if isinstance(event, (RunStarted, RunFinished)):
            self.throttle.now()
            if isinstance(event, RunFinished):
                self._publish()
        else:
            self.throttle()

    def redraw(self) -> None:
        """Draw the model's current state (called through the throttle)."""
        with self._drawing:
            self._draw()

    def _draw(self) -> None:
        views, progress = self.model.snapshot()
        self._svg.value = render_svg(self.model.layout(), views)
        self._bar.max = max(progress.total, 1)
        self._bar.value = progress.settled
        self._bar.bar_style = _bar_style(progress)
        self._status.value = status_html(progress)
        run = self.model.run
        # the table is the costliest part: kept current mid-run only while it is open
        if run is None or progress.status != "running" or self._details.selected_index == 0:
            self._table.value = run_table_html(run, self.model.inputs(), details=True) \
                if run is not None else ""
        self._draw_cancel(progress)
        if progress.status == "running" and not self._closed:
            self.throttle.after(TICK)  # the clocks move even while no event comes

    def _draw_cancel(self, progress: Progress) -> None:
        """Enabled, red and saying so while a submitted run goes on; grey otherwise."""
        live = self.submission is not None and not self.submission.done() \
            and progress.status == "running"
        self._cancel.disabled = not live
        self._cancel.button_style = "danger" if live else ""
        self._cancel.tooltip = ("stop at the next node boundary" if live else
                                "runs started with widget.submit(...) can be cancelled here; "
                                "interrupt the kernel to stop a run started in a cell")


def _bar_style(p: Progress) -> str:
    if p.failed:
        return "danger"
    if p.status == "cancelled":
        return "warning"
    return "success" if p.status == "completed" else "warning" if p.status == "fallback" \
        else "info"


def _register() -> None:
    from lazyflow.keys.hashing import register_hasher

    # a widget is a view, not data: a node that reads one must not be invalidated by it
    register_hasher(FlowWidget, lambda widget: "FlowWidget")


_register()
