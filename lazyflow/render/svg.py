"""Draw a laid-out DAG as SVG, each node coloured by its state in a run.

Design note
-----------
One pure function from (layout, per-node view) to an SVG string, shared by the
live widget and the static reprs of ``Flow`` and ``Run``, so a notebook saved
without widget state still shows the same picture. Every node is a ``<g>``
carrying ``data-node``, ``data-state`` and ``data-tier`` attributes (what the
browser test and any stylesheet read) and a ``<title>`` with key, size,
duration and error (the hover text). Each group of the layout (a sub-flow)
is a ``<g class="lf-group" data-group=...>`` box with its label, drawn first,
behind edges and nodes. Rejected: a JavaScript front end
(anywidget/d3) — a bundle to build and ship for what static SVG already does.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape

from lazyflow.cache.sizes import format_size
from lazyflow.render.layout import Layout
from lazyflow.run import format_duration

__all__ = ["COLOURS", "NodeView", "render_svg"]

COLOURS: dict[str, str] = {
    "idle": "#ffffff",        # not part of the run
    "pending": "#eceff1",
    "running": "#ffca28",
    "completed": "#66bb6a",
    "cached:memory": "#64b5f6",
    "cached:disk": "#7986cb",
    "cached:remote": "#ba68c8",
    "failed": "#ef5350",
    "skipped": "#cfd8dc",
    "cancelled": "#ffab91",
}
BOX_W, BOX_H = 150.0, 40.0


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

    @property
    def colour(self) -> str:
        """The fill colour for the state (cached nodes by tier)."""
        if self.state == "cached":
            return COLOURS.get(f"cached:{self.tier}", COLOURS["cached:memory"])
        return COLOURS.get(self.state, COLOURS["idle"])

    @property
    def caption(self) -> str:
        """The second line of the node's label: duration and/or tier."""
        if self.state == "cached":
            return f"cached · {self.tier or '?'}"
        if self.state == "completed" and self.duration is not None:
            return f"{format_duration(self.duration)}"
        if self.state in ("idle", "pending"):
            return ""
        return self.state

    @property
    def hover(self) -> str:
        """The tooltip text: state, key, size, duration, error."""
        lines = [self.state + (f" ({self.tier})" if self.tier else "")]
        if self.duration is not None and self.state in ("completed", "failed"):
            lines.append(f"duration {format_duration(self.duration)}")
        if self.key:
            lines.append(f"key {self.key[:16]}")
        if self.size is not None:
            lines.append(f"size {format_size(self.size)}")
        if self.reason:
            lines.append(self.reason)
        if self.error:
            lines.append(self.error)
        return "\n".join(lines)


def render_svg(lay: Layout, views: Mapping[str, NodeView]) -> str:
    """The SVG picture of ``lay`` with each node drawn as ``views[name]`` says (idle if absent).

    The edges of a layout and each (node, view) pair are drawn once and
    remembered, so a redraw during a run only formats the nodes that changed.
    """
    idle = NodeView()
    parts = [_frame(lay)]
    parts.extend(_node(name, x, y, views.get(name, idle))
                 for name, (x, y) in lay.positions.items())
    parts.append("</svg>")
    return "".join(parts)


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
            parts.append(f'<path class="lf-edge" data-edge="{escape(up)}->{escape(down)}" '
                         f'd="{_curve(points)}" fill="none" stroke="#90a4ae" '
                         'stroke-width="1.5" marker-end="url(#lf-arrow)"/>')
        frame = _FRAMES[lay] = "".join(parts)
    return frame


@functools.lru_cache(maxsize=8192)
def _node(name: str, x: float, y: float, view: NodeView) -> str:
    # plain <rect>/<text> with inline colours: notebook sanitizers (DOMPurify) drop <use>
    # and <style>, and a saved notebook's static repr must still show its states
    stroke = "#c62828" if view.state == "failed" else "#546e7a"
    dash = ' stroke-dasharray="4 3"' if view.state in ("idle", "skipped", "cancelled") else ""
    label = name if len(name) <= 20 else name[:19] + "…"
    return (f'<g class="lf-node" data-node="{escape(name)}" data-state="{view.state}" '
            f'data-tier="{view.tier or ""}"><title>{escape(name)}: {escape(view.hover)}</title>'
            f'<rect x="{x - BOX_W / 2:.0f}" y="{y - BOX_H / 2:.0f}" width="{BOX_W:.0f}" '
            f'height="{BOX_H:.0f}" rx="6" fill="{view.colour}" stroke="{stroke}"{dash}/>'
            f'<text x="{x:.0f}" y="{y - 3:.0f}" text-anchor="middle" font-size="13">'
            f'{escape(label)}</text>'
            f'<text class="lf-caption" x="{x:.0f}" y="{y + 13:.0f}" text-anchor="middle" '
            f'font-size="11" fill="#37474f">{escape(view.caption)}</text></g>')


def _curve(points: list[tuple[float, float]]) -> str:
    """A smooth path from the right edge of the first box to the left edge of the last."""
    (x0, y0), (x1, y1) = points[0], points[-1]
    inner = points[1:-1]
    start = (x0 + BOX_W / 2, y0)
    end = (x1 - BOX_W / 2, y1) if x1 > x0 else (x1 + BOX_W / 2, y1)
    path = [start, *inner, end]
    d = f"M{path[0][0]:.1f},{path[0][1]:.1f}"
    for (ax, ay), (bx, by) in zip(path, path[1:], strict=False):
        mx = (ax + bx) / 2
        d += f" C{mx:.1f},{ay:.1f} {mx:.1f},{by:.1f} {bx:.1f},{by:.1f}"
    return d
