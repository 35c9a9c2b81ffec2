"""Static rich reprs of ``Flow`` and ``Run``: an SVG DAG and a results table.

Design note
-----------
These are what a saved notebook, nbconvert or a viewer without a widget
manager shows: plain HTML, no JavaScript. ``display(flow)`` in a live kernel
additionally carries the widget view (``flow_mimebundle``), and frontends that
run widgets prefer it. Needs neither IPython nor ipywidgets to build the HTML.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from lazyflow.cache.sizes import format_size
from lazyflow.render.layout import layout
from lazyflow.render.model import nesting, view_of
from lazyflow.render.svg import render_svg
from lazyflow.run import format_duration, register_html
from lazyflow.subflow import groups

if TYPE_CHECKING:
    from lazyflow.api import Flow
    from lazyflow.run import Run

__all__ = ["flow_html", "flow_mimebundle", "in_kernel", "run_html", "run_table_html"]


def run_table_html(run: Run) -> str:
    """One row per node of ``run``: status, tier, time, size, key, and why (or the error)."""
    rows = []
    for r in run.nodes.values():
        why = f"{type(r.error).__name__}: {r.error}" if r.error is not None else r.reason
        rows.append(
            f'<tr data-node="{escape(r.name)}"><td>{escape(r.name)}</td><td>{r.status}</td>'
            f'<td>{r.tier or "-"}</td>'
            f'<td>{format_duration(r.duration) if r.status in ("completed", "failed") else "-"}</td>'
            f'<td>{format_size(r.size) if r.size is not None else "-"}</td>'
            f'<td><code>{(r.key or "")[:12]}</code></td><td>{escape(why)}</td></tr>')
    counts = ", ".join(f"{n} {s}" for s, n in run.counts().items())
    return ('<table class="lazyflow-run"><thead><tr><th>node</th><th>status</th><th>tier</th>'
            '<th>time</th><th>size</th><th>key</th><th>why</th></tr></thead><tbody>'
            + "".join(rows) + f'</tbody></table><p class="lazyflow-footer">{escape(run.flow)}: '
            f'{run.status}; {counts}; cache saved {format_duration(run.time_saved)}</p>')


def run_html(run: Run) -> str:
    """The run's DAG coloured by final state, then its results table."""
    lay = layout(list(run.nodes), run.edges, groups(run.nodes))  # a run has no node functions
    views = {name: view_of(r) for name, r in run.nodes.items()}
    return f"<div>{render_svg(lay, views)}{run_table_html(run)}</div>"


register_html(run_html)  # run.py sits below this layer: it draws runs through this hook


def flow_html(flow: Flow) -> str:
    """The flow's DAG, coloured by its last run if it had one, and that run's table."""
    run = flow.last_run
    views = {name: view_of(r) for name, r in run.nodes.items()} if run else {}
    svg = render_svg(layout(list(flow), flow.edges(), nesting(flow)), views)
    return f"<div>{svg}{run_table_html(run) if run else ''}</div>"


def flow_mimebundle(flow: Flow) -> dict[str, Any]:
    """Static HTML and text, plus the live widget's view when a kernel with widgets runs."""
    bundle: dict[str, Any] = {"text/plain": repr(flow), "text/html": flow_html(flow)}
    if in_kernel():
        view = flow.widget()._repr_mimebundle_()
        view.pop("text/plain", None)
        bundle.update(view)
    return bundle


def in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel with ipywidgets available."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return getattr(shell, "kernel", None) is not None
