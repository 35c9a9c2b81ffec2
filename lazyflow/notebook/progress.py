"""``flow.run(..., progress=True)``: the live widget in a notebook, a text bar in a terminal.

Design note
-----------
Both are plain event subscribers for the duration of one request, so the
engine needs no notion of progress. In a kernel a widget is displayed in
the cell's output and stops following the flow when the request ends, so it
keeps showing that request's final state; elsewhere a tqdm bar
counts settled nodes on stderr. Rejected: a progress callback argument
threaded through the engine — the events already say everything.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from lazyflow.engine.events import Event, NodeFinished, RunFinished, RunStarted

if TYPE_CHECKING:
    from lazyflow.api import Flow

__all__ = ["show_progress"]


@contextlib.contextmanager
def show_progress(flow: Flow) -> Iterator[None]:
    """Show the progress of the runs of ``flow`` inside the ``with`` block."""
    from lazyflow.render.display import in_kernel

    if in_kernel():
        from IPython.display import display

        from lazyflow.notebook.widget import FlowWidget

        widget = FlowWidget(flow)
        display(widget)
        try:
            yield
        finally:
            widget.model.close()  # it keeps showing this request, not the next ones
        return
    with _text_bar(flow):
        yield


@contextlib.contextmanager
def _text_bar(flow: Flow) -> Iterator[None]:
    try:
        from tqdm import tqdm
    except ImportError as e:
        raise ImportError("progress=True outside a notebook draws with tqdm: "
                          "pip install 'lazyflow[notebook]' (or tqdm)") from e
    bars: list[tqdm] = []

    def on_event(event: Event) -> None:
        if isinstance(event, RunStarted):
            bars.append(tqdm(total=len(event.run.nodes), desc=flow.name, unit="node",
                             leave=True))
        elif isinstance(event, NodeFinished) and bars:
            bars[-1].set_postfix_str(f"{event.record.name} {event.record.status}",
                                     refresh=False)
            bars[-1].update(1)
        elif isinstance(event, RunFinished) and bars:
            bars[-1].close()

    unsubscribe = flow.events.subscribe(on_event)
    try:
        yield
    finally:
        unsubscribe()
        for bar in bars:
            bar.close()
