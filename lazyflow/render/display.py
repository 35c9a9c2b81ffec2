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
from collections.abc import Mapping
from html import escape
from typing import TYPE_CHECKING, Any

from lazyflow.cache.sizes import format_size
from lazyflow.render.layout import layout
from lazyflow.render.model import Progress, nesting, small, view_of
from lazyflow.render.svg import INPUT_CHARS, NodeView, render_svg
from lazyflow.run import STATUSES, format_duration, register_html
from lazyflow.subflow import groups

if TYPE_CHECKING:
    from lazyflow.api import Flow
    from lazyflow.run import NodeRecord, Run

__all__ = ["flow_html", "flow_mimebundle", "flow_svg", "in_kernel", "run_html",
           "run_table_html", "status_html", "widget_html"]

EXTRA = ("inputs", "cpu", "peak memory", "metrics")
"""The table's columns shown only when some node has a value for them."""


def run_table_html(run: Run, inputs: Mapping[str, str] | None = None, *,
                   details: bool = False) -> str:
    """One row per node of ``run``: status, tier, time, size, key, and why (or the error).

    With ``details`` (the widget's panel), also the columns of flow inputs
    (``inputs`` maps a node to their text, ``rows=5``), cpu, peak memory and
    metrics, each where some node has a value.
    """
    extras = {r.name: (escape(inputs.get(r.name, "")) if inputs else "", _cpu(r), _peak(r),
                       _metrics(r))
              for r in run.nodes.values()} if details else {}
    shown = [i for i in range(len(EXTRA)) if any(cells[i] for cells in extras.values())]
    rows = []
    for r in run.nodes.values():
        why = f"{type(r.error).__name__}: {r.error}" if r.error is not None else r.reason
        more = "".join(f"<td>{extras[r.name][i] or '-'}</td>" for i in shown)
        rows.append(
            f'<tr data-node="{escape(r.name)}"><td>{escape(r.name)}</td><td>{r.status}</td>'
            f'<td>{r.tier or "-"}</td>'
            f'<td>{format_duration(r.duration) if STATUSES[r.status].ran else "-"}</td>'
            f'<td>{format_size(r.size) if r.size is not None else "-"}</td>'
            f'<td><code>{(r.key or "")[:12]}</code></td>{more}<td>{escape(why)}</td></tr>')
    counts = ", ".join(f"{n} {s}" for s, n in run.counts().items())
    headings = ["node", "status", "tier", "time", "size", "key", *(EXTRA[i] for i in shown),
                "why"]
    return ('<table class="lazyflow-run"><thead><tr>'
            + "".join(f"<th>{h}</th>" for h in headings) + "</tr></thead><tbody>"
            + "".join(rows) + f'</tbody></table><p class="lazyflow-footer">{escape(run.flow)}: '
            f'{run.status}; {counts}; cache saved {format_duration(run.time_saved)}</p>')


def _cpu(r: NodeRecord) -> str:
    return "" if r.cpu is None else format_duration(r.cpu)


def _peak(r: NodeRecord) -> str:
    return "" if r.peak_memory is None else format_size(r.peak_memory)


def _metrics(r: NodeRecord) -> str:
    return escape(", ".join(f"{k}={v:g}" for k, v in r.metrics.items())) if r.metrics else ""


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
    (the default only when small and the label fits: a cut-off number would mislead)."""
    funcs = [flow[t].func for t in takers]
    annotation = next((a for a in (_annotation(f, name) for f in funcs) if a), "")
    label = name + (f": {annotation}" if annotation else "")
    defaults = [flow[t].defaults[name] for t in takers if name in flow[t].defaults]
    default = small(defaults[0]) if defaults else None
    with_default = f"{label} = {default}"
    return with_default if default is not None and len(with_default) <= INPUT_CHARS else label


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
