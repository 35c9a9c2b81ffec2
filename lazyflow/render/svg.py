"""Draw a laid-out DAG as SVG, each node coloured by its state in a run.

Design note
-----------
One pure function from (layout, per-node view) to an SVG string, shared by the
live widget, the static reprs of ``Flow`` and ``Run`` and ``flow.to_svg()``,
so a notebook saved without widget state still shows the same picture. Every
node is a ``<g>`` carrying ``data-node``, ``data-state`` and ``data-tier``
attributes (what the browser test and any stylesheet read) and a ``<title>``
with key, size, duration, inputs, cpu, memory, metrics and error (the hover
text). Each group of the layout (a sub-flow) is a ``<g class="lf-group"
data-group=...>`` box with its label, drawn first, behind edges and nodes.
The layout's flow inputs are ``<g class="lf-input" data-input=...>`` dashed
boxes, their edges dashed.

A running node's caption is a timer (``running 2.5s``): it is formatted at
draw time from the view's start and ``now``, so the view itself stays
constant while the node runs and the cached drawing of the node is keyed by
its caption too. Rejected: a JavaScript front end (anywidget/d3) — a bundle
to build and ship for what static SVG already does.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape

from lazyflow.cache.sizes import format_size
from lazyflow.render.layout import Layout
from lazyflow.run import STATUSES, format_duration

__all__ = ["COLOURS", "INPUT_CHARS", "NodeView", "clock", "render_svg"]

COLOURS: dict[str, str] = {
    "idle": "#ffffff",        # not part of the run
    "defined": "#ffffff",     # a drawing of the flow, not of a run (flow.to_svg)
    **{status: info.colour for status, info in STATUSES.items()},  # one table: run.py
    "cached:memory": STATUSES["cached"].colour,
    "cached:disk": "#7986cb",
    "cached:remote": "#ba68c8",
}
BOX_W, BOX_H = 150.0, 40.0
INPUT_W, INPUT_H = 150.0, 26.0
"""Size of a flow input's box (lower than a node's: it has one line)."""
INPUT_CHARS = 22
"""Longest input label drawn whole; longer ones end with an ellipsis."""


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the picture shows of one node: its state and the facts for its label and hover."""

    state: str = "idle"
    tier: str | None = None
    duration: float | None = None
    key: str | None = None
    size: int | None = None
    error: str = ""
    reason: str = ""
    started: float | None = None
    """When a running node started (``time.time()``): its caption is a timer."""
    returns: str = ""
    """The node's return annotation, shown as ``→ DataFrame`` in a drawing of the flow."""
    notes: tuple[str, ...] = ()
    """More hover lines: inputs' values, cpu, peak memory, metrics."""

    @property
    def colour(self) -> str:
        """The fill colour for the state (cached nodes by tier)."""
        if self.state == "cached":
            return COLOURS.get(f"cached:{self.tier}", COLOURS["cached:memory"])
        return COLOURS.get(self.state, COLOURS["idle"])

    @property
    def caption(self) -> str:
        """The second line of the node's label: duration and/or tier (a running node's
        timer reads the clock: see :meth:`caption_at`)."""
        return self.caption_at(time.time())

    def caption_at(self, now: float) -> str:
        """The caption at ``now``: a running node's says how long it has been running."""
        if self.state == "running" and self.started is not None:
            return f"running {clock(now - self.started)}"
        if self.state == "defined":
            return f"→ {self.returns}" if self.returns else ""
        if self.state == "cached":
            return f"cached · {self.tier or '?'}"
        if self.state == "completed" and self.duration is not None:
            return f"{format_duration(self.duration)}"
        if self.state in ("idle", "pending"):
            return ""
        return self.state

    @property
    def hover(self) -> str:
        """The tooltip text: state, key, size, duration, notes, error."""
        if self.state == "defined":  # a drawing of the flow: no run to speak of
            return "\n".join([*([f"returns {self.returns}"] if self.returns else []),
                              *self.notes])
        lines = [self.state + (f" ({self.tier})" if self.tier else "")]
        if self.duration is not None and self.state in STATUSES and STATUSES[self.state].ran:
            lines.append(f"duration {format_duration(self.duration)}")
        if self.key:
            lines.append(f"key {self.key[:16]}")
        if self.size is not None:
            lines.append(f"size {format_size(self.size)}")
        if self.reason:
            lines.append(self.reason)
        lines.extend(self.notes)
        if self.error:
            lines.append(self.error)
        return "\n".join(lines)


def render_svg(lay: Layout, views: Mapping[str, NodeView], *,
               inputs: Mapping[str, str] | None = None, now: float | None = None) -> str:
    """The SVG picture of ``lay`` with each node drawn as ``views[name]`` says (idle if absent).

    The layout's flow inputs are drawn as dashed boxes labelled ``inputs[point]``
    (the point's name if absent). ``now`` (default: the clock) dates running
    nodes' timers. The edges of a layout and each (node, view, caption) are
    drawn once and remembered, so a redraw during a run only formats the nodes
    that changed.
    """
    idle = NodeView()
    at = time.time() if now is None else now
    parts = [_frame(lay)]
    for name, (x, y) in lay.positions.items():
        if name in lay.inputs:
            parts.append(_input(name, x, y, (inputs or {}).get(name, name)))
        else:
            view = views.get(name, idle)
            parts.append(_node(name, x, y, view, view.caption_at(at)))
    parts.append("</svg>")
    return "".join(parts)


def clock(seconds: float) -> str:
    """A running timer: ``0.4s``, ``12s``, ``2m05s`` (coarser than a duration: it ticks)."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


_FRAMES: weakref.WeakKeyDictionary[Layout, str] = weakref.WeakKeyDictionary()


def _frame(lay: Layout) -> str:
    """The opening tag, the arrow marker, the group boxes and every edge of ``lay``."""
    frame = _FRAMES.get(lay)
    if frame is None:
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="lazyflow-dag" '
                 f'viewBox="0 0 {lay.width:.0f} {lay.height:.0f}" width="{lay.width:.0f}" '
                 f'style="max-width:100%;height:auto;font-family:sans-serif">',
                 '<defs><marker id="lf-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
                 'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
                 '<path d="M0,0L10,5L0,10z" fill="#78909c"/></marker></defs>']
        for label, (x, y, w, h) in lay.boxes.items():
            parts.append(f'<g class="lf-group" data-group="{escape(label)}">'
                         f'<rect x="{x:.0f}" y="{y:.0f}" width="{w:.0f}" height="{h:.0f}" '
                         'rx="8" fill="#f5f7f8" stroke="#90a4ae" stroke-dasharray="6 3"/>'
                         f'<text x="{x + 8:.0f}" y="{y + 15:.0f}" font-size="12" '
                         f'fill="#455a64">{escape(label)}</text></g>')
        for (up, down), points in lay.routes.items():
            dashed = up in lay.inputs
            kind, dash = ("lf-input-edge", ' stroke-dasharray="5 3"') if dashed \
                else ("lf-edge", "")
            parts.append(f'<path class="{kind}" data-edge="{escape(up)}->{escape(down)}" '
                         f'd="{_curve(points, INPUT_W if dashed else BOX_W)}" fill="none" '
                         f'stroke="#90a4ae" stroke-width="1.5"{dash} '
                         'marker-end="url(#lf-arrow)"/>')
        frame = _FRAMES[lay] = "".join(parts)
    return frame


@functools.lru_cache(maxsize=8192)
def _node(name: str, x: float, y: float, view: NodeView, caption: str) -> str:
    # plain <rect>/<text> with inline colours: notebook sanitizers (DOMPurify) drop <use>
    # and <style>, and a saved notebook's static repr must still show its states
    stroke = "#c62828" if view.state == "failed" else "#546e7a"
    dash = ' stroke-dasharray="4 3"' if view.state in ("idle", "skipped", "cancelled") else ""
    label = name if len(name) <= 20 else name[:19] + "…"
    hover = view.hover
    title = f"{name}: {hover}" if hover else name
    return (f'<g class="lf-node" data-node="{escape(name)}" data-state="{view.state}" '
            f'data-tier="{view.tier or ""}"><title>{escape(title)}</title>'
            f'<rect x="{x - BOX_W / 2:.0f}" y="{y - BOX_H / 2:.0f}" width="{BOX_W:.0f}" '
            f'height="{BOX_H:.0f}" rx="6" fill="{view.colour}" stroke="{stroke}"{dash}/>'
            f'<text x="{x:.0f}" y="{y - 3 if caption else y + 5:.0f}" text-anchor="middle" '
            f'font-size="13">{escape(label)}</text>'
            f'<text class="lf-caption" x="{x:.0f}" y="{y + 13:.0f}" text-anchor="middle" '
            f'font-size="11" fill="#37474f">{escape(caption)}</text></g>')


def _input(point: str, x: float, y: float, label: str) -> str:
    """A flow input: a dashed, unfilled box with its label (name, type, default)."""
    text = label if len(label) <= INPUT_CHARS else label[:INPUT_CHARS - 1] + "…"
    return (f'<g class="lf-input" data-input="{escape(point)}"><title>flow input '
            f'{escape(label)}</title><rect x="{x - INPUT_W / 2:.0f}" y="{y - INPUT_H / 2:.0f}" '
            f'width="{INPUT_W:.0f}" height="{INPUT_H:.0f}" rx="13" fill="#fafafa" '
            'stroke="#78909c" stroke-dasharray="5 3"/>'
            f'<text x="{x:.0f}" y="{y + 4:.0f}" text-anchor="middle" font-size="12" '
            f'font-style="italic" fill="#37474f">{escape(text)}</text></g>')


def _curve(points: list[tuple[float, float]], start_width: float = BOX_W) -> str:
    """A smooth path from the right edge of the first box to the left edge of the last."""
    (x0, y0), (x1, y1) = points[0], points[-1]
    inner = points[1:-1]
    start = (x0 + start_width / 2, y0)
    end = (x1 - BOX_W / 2, y1) if x1 > x0 else (x1 + BOX_W / 2, y1)
    path = [start, *inner, end]
    d = f"M{path[0][0]:.1f},{path[0][1]:.1f}"
    for (ax, ay), (bx, by) in zip(path, path[1:], strict=False):
        mx = (ax + bx) / 2
        d += f" C{mx:.1f},{ay:.1f} {mx:.1f},{by:.1f} {bx:.1f},{by:.1f}"
    return d
