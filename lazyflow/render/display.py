"""Static renderings of flows and runs: SVG DAGs, results tables, the widget's picture.

Design note
-----------
These are what a saved notebook, nbconvert or a viewer without a widget
manager shows: plain HTML, no JavaScript. ``display(flow)`` in a live kernel
additionally carries the widget view (``flow_mimebundle``), and frontends that
run widgets prefer it; the widget's own output carries :func:`widget_html`
next to its view for the same reason. :func:`flow_svg` is the picture of the
flow's definition (``flow.to_svg()``, ``lazyflow graph``): nodes with their
return annotations and flow inputs as dashed boxes, and nothing of any run,
so the same flow always gives the same text. Needs neither IPython nor
ipywidgets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from html import escape
from typing import TYPE_CHECKING, Any

from lazyflow.cache.sizes import format_size
from lazyflow.render.layout import layout
from lazyflow.render.model import Progress, nesting, small, view_of
from lazyflow.render.svg import NodeView, render_svg
from lazyflow.run import format_duration, register_html
from lazyflow.subflow import groups

if TYPE_CHECKING:
    from lazyflow.api import Flow
    from lazyflow.run import NodeRecord, Run

__all__ = ["flow_html", "flow_mimebundle", "flow_svg", "in_kernel", "run_html",
           "run_table_html", "status_html", "widget_html"]

Column = Callable[["NodeRecord", str], str]


def _time(r: NodeRecord, _: str) -> str:
    return format_duration(r.duration) if r.status in ("completed", "failed") else ""


def _why(r: NodeRecord, _: str) -> str:
    return f"{type(r.error).__name__}: {r.error}" if r.error is not None else r.reason


_COLUMNS: dict[str, tuple[Column, bool]] = {
    # heading: (cell text of a record and its inputs' text, shown even when empty everywhere)
    "node": (lambda r, _: r.name, True),
    "status": (lambda r, _: r.status, True),
    "tier": (lambda r, _: r.tier or "", True),
    "time": (_time, True),
    "size": (lambda r, _: format_size(r.size) if r.size is not None else "", True),
    "key": (lambda r, _: (r.key or "")[:12], True),
    "inputs": (lambda _, inputs: inputs, False),
    "cpu": (lambda r, _: format_duration(r.cpu) if r.cpu is not None else "", False),
    "peak memory": (lambda r, _: format_size(r.peak_memory) if r.peak_memory is not None
                    else "", False),
    "metrics": (lambda r, _: ", ".join(f"{k}={v:g}" for k, v in (r.metrics or {}).items()),
                False),
    "why": (_why, True),
}


def run_table_html(run: Run, inputs: Mapping[str, str] | None = None) -> str:
    """One row per node of ``run``: status, tier, time, size, key, and why (or the error).

    ``inputs`` maps a node to its flow inputs' text (``rows=5``); that column,
    and those of cpu, peak memory and metrics, are shown when some node has one.
    """
    cells = {r.name: {h: text(r, (inputs or {}).get(r.name, "")) for h, (text, _) in
                      _COLUMNS.items()} for r in run.nodes.values()}
    shown = [h for h, (_, always) in _COLUMNS.items()
             if always or any(row[h] for row in cells.values())]
    rows = "".join(f'<tr data-node="{escape(name)}">' + "".join(
        f"<td>{_cell(h, row[h])}</td>" for h in shown) + "</tr>" for name, row in cells.items())
    counts = ", ".join(f"{n} {s}" for s, n in run.counts().items())
    return ('<table class="lazyflow-run"><thead><tr>'
            + "".join(f"<th>{h}</th>" for h in shown) + "</tr></thead><tbody>"
            + rows + f'</tbody></table><p class="lazyflow-footer">{escape(run.flow)}: '
            f'{run.status}; {counts}; cache saved {format_duration(run.time_saved)}</p>')


def _cell(heading: str, text: str) -> str:
    if heading == "key":
        return f"<code>{text}</code>"
    return escape(text) if text or heading in ("why", "inputs", "metrics") else "-"


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
        bundle.update({k: v for k, v in view.items() if k not in bundle})
    return bundle


def flow_svg(flow: Flow) -> str:
    """The flow's definition as SVG: every node with its return annotation (``→ DataFrame``),
    each flow input a dashed box (``rows: int = 5``) with dashed edges into the nodes that
    take it. Nothing of any run: the same flow gives the same text."""
    inputs = flow.flow_inputs()
    points = {f"{_INPUT}{name}": name for name in inputs}  # no node name starts with it
    edges = [(point, taker) for point, name in points.items() for taker in inputs[name]]
    lay = layout([*points, *flow], [*edges, *flow.edges()], nesting(flow), inputs=points)
    views = {name: NodeView("defined", returns=_annotation(node.func, "return"))
             for name, node in flow.nodes.items()}
    labels = {point: _input_label(flow, name, inputs[name]) for point, name in points.items()}
    return render_svg(lay, views, inputs=labels)


_INPUT = "input:"


def _input_label(flow: Flow, name: str, takers: tuple[str, ...]) -> str:
    """``name: type = default``, the type and default from the first taker declaring one
    (the default only when small)."""
    funcs = [flow[t].func for t in takers]
    annotation = next((a for a in (_annotation(f, name) for f in funcs) if a), "")
    defaults = [flow[t].defaults[name] for t in takers if name in flow[t].defaults]
    default = small(defaults[0]) if defaults else None
    return name + (f": {annotation}" if annotation else "") \
        + (f" = {default}" if default is not None else "")


def _annotation(func: Any, name: str) -> str:
    """The annotation of ``func``'s parameter ``name`` (or ``"return"``) as short text:
    ``DataFrame``, ``list[float]``, ``Optional[int]``; ``""`` when there is none."""
    try:
        annotation = getattr(func, "__annotations__", {}).get(name)
    except Exception:  # an annotation that fails to evaluate (Python 3.14's lazy ones)
        return ""
    if annotation is None:
        return ""
    if isinstance(annotation, str):  # from __future__ import annotations: as written
        text = annotation.strip("'\"")
    elif isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        text = annotation.__qualname__
    else:
        text = repr(annotation)
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", text)  # pd.DataFrame, typing.Optional: short


def status_html(p: Progress) -> str:
    """The widget's status line: counts, elapsed time, time saved."""
    if p.status == "idle":
        return "<span class='lf-status'>not run yet</span>"
    parts = [f"{p.completed} done", f"{p.cached} cached", f"{p.running} running",
             f"{p.pending} to run"]
    for state in ("failed", "skipped", "cancelled"):
        n = getattr(p, state)
        if n:
            parts.append(f"{n} {state}")
    text = " · ".join([*parts, f"{format_duration(p.elapsed)} elapsed",
                       f"saved {format_duration(p.saved)}"])
    return f"<span class='lf-status' data-status='{p.status}'>{escape(text)}</span>"


def widget_html(svg: str, progress: Progress) -> str:
    """The widget's picture without the widget: its DAG and status line, for the
    ``text/html`` a saved notebook keeps next to the widget view."""
    return (f'<div class="lazyflow-static">{svg}'
            f'<p style="font-family:sans-serif;font-size:13px">{status_html(progress)}</p></div>')


def in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel with ipywidgets available."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return getattr(shell, "kernel", None) is not None
