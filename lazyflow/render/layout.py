"""Layered DAG layout: longest-path layers, barycenter crossing reduction.

Design note
-----------
Policy. Sugiyama's scheme, kept small: (1) each node's layer is the length of
the longest path reaching it from a source, so every edge points to a later
layer; (2) an edge spanning several layers is split by *dummy* points, one per
layer crossed, so crossings are counted and reduced for the whole edge;
(3) the order inside each layer is improved by barycenter sweeps (a node moves
to the mean position of its neighbours in the layer before, then after), and
the ordering with the fewest crossings seen is kept; (4) coordinates are
layer index times a column width and in-layer index times a row height,
each layer centred. Flows read left to right, so layers are columns.

Groups (nodes included from a sub-flow) are drawn as boxes, so a box must
hold its members and nothing else. Each group owns a horizontal *band* of
rows (plus a header row for its label) that no other point uses; the rest of
the graph shares one band. Points of a band stay together in every layer:
bands are ranked once by where an unconstrained sweep put their members, and
the barycenter sweeps then order within each band (ties and crossings are
counted as before). A dummy point belongs to a group's band only when both
ends of its edge are members. Without groups there is one band and the
drawing is as before. Rejected: boxes around wherever members landed, which
overlap other nodes as soon as a layer mixes members and non-members.

Flow inputs (``inputs=``, drawn by ``flow.to_svg()``) are points like nodes,
but each sits in the layer just before its earliest consumer rather than in
the first layer: an input that only the last node takes is drawn next to it,
not at the far left with a long edge across the picture.

State: none. :func:`layout` is a pure function of the node list and edges,
deterministic for the same input (ties keep the order nodes were given in).

Rejected: calling graphviz (a binary most machines lack, and a notebook must
draw without it); network-simplex layering (tighter edges, far more code, and
the longest path already reads well for dataflows).

Cost: O(sweeps * (V + E) log V) plus crossing counts per layer pair; a
200-node graph lays out in milliseconds. A cycle (which a request would
reject) never hangs the layout: nodes left after the topological pass go to
one extra layer and the back edges are drawn as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

__all__ = ["Layout", "crossings", "layout"]

COLUMN = 190.0
"""Horizontal distance between layers, in SVG units."""
ROW = 58.0
"""Vertical distance between nodes of a layer, in SVG units."""
SWEEPS = 8
HEADER = 22.0
"""Height of a group box's label row, in SVG units."""
INSET = 6.0
"""Gap between a group box and the cells of the rows and columns it spans."""


@dataclass(frozen=True, eq=False)
class Layout:
    """Positions of nodes and the routes of edges.

    ``layers`` lists each layer's members in drawing order, dummy points
    included (as ``(up, down, i)`` tuples); ``positions`` maps every real node
    to the centre ``(x, y)`` of its box; ``routes`` maps each edge to the
    points it passes through, endpoints first and last. ``boxes`` maps each
    group's label to its box ``(x, y, width, height)``, which holds the
    group's members and no other node. Compared (and hashed) by identity, so
    drawings can be remembered per layout.
    """

    layers: list[list[object]]
    positions: dict[str, tuple[float, float]]
    routes: dict[tuple[str, str], list[tuple[float, float]]]
    width: float
    height: float
    layer_of: dict[str, int] = field(default_factory=dict)
    boxes: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    inputs: frozenset[str] = frozenset()
    """The points that are flow inputs, not nodes (drawn as dashed boxes)."""


def layout(nodes: Sequence[str], edges: Iterable[tuple[str, str]],
           groups: Mapping[str, Sequence[str]] | None = None, *,
           inputs: Iterable[str] = ()) -> Layout:
    """Lay out a DAG of ``nodes`` with ``edges`` as (upstream, downstream) pairs.

    ``groups`` maps a label to member nodes (disjoint), each drawn in a box.
    ``inputs`` names the points of ``nodes`` that are flow inputs: each goes in
    the layer just before its earliest consumer.

    >>> lay = layout(["raw", "clean", "model"], [("raw", "clean"), ("clean", "model")])
    >>> [lay.layer_of[n] for n in ("raw", "clean", "model")]
    [0, 1, 2]
    """
    known = dict.fromkeys(nodes)
    edge_list = [(u, d) for u, d in dict.fromkeys(edges) if u in known and d in known and u != d]
    layer_of = _layers(list(known), edge_list)
    sources = frozenset(n for n in inputs if n in known)
    if sources:
        _next_to_consumers(layer_of, edge_list, sources)
    layers, chains = _with_dummies(list(known), edge_list, layer_of)
    segments = _neighbours(chains)
    layers = _reduce_crossings(layers, segments)
    group_of = {n: g for g, members in (groups or {}).items() for n in members if n in known}
    band = _bands(layers, chains, group_of)
    if band:
        layers = _reduce_crossings([sorted(layer, key=band.__getitem__) for layer in layers],
                                   segments, band)
    lay = _coordinates(layers, chains, edge_list, layer_of, band, group_of)
    return lay if not sources else replace(lay, inputs=sources)


def crossings(layers: Sequence[Sequence[object]], edges: Iterable[tuple[object, object]]) -> int:
    """How many pairs of edges cross between adjacent layers (edges as point pairs)."""
    index = {v: (li, i) for li, layer in enumerate(layers) for i, v in enumerate(layer)}
    by_gap: dict[int, list[tuple[int, int]]] = {}
    for u, d in edges:
        (lu, iu), (ld, id_) = index[u], index[d]
        if ld == lu + 1:
            by_gap.setdefault(lu, []).append((iu, id_))
        elif lu == ld + 1:
            by_gap.setdefault(ld, []).append((id_, iu))
    total = 0
    for pairs in by_gap.values():
        pairs.sort()
        for a in range(len(pairs)):
            for b in range(a + 1, len(pairs)):
                if pairs[a][0] < pairs[b][0] and pairs[a][1] > pairs[b][1]:
                    total += 1
    return total


# --------------------------------------------------------------------------- steps


def _layers(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layering by Kahn's algorithm; cycle leftovers go one layer past the end."""
    indegree = dict.fromkeys(nodes, 0)
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for u, d in edges:
        indegree[d] += 1
        children[u].append(d)
    layer = dict.fromkeys(nodes, 0)
    ready = [n for n in nodes if indegree[n] == 0]
    placed: set[str] = set()
    while ready:
        n = ready.pop()
        placed.add(n)
        for d in children[n]:
            layer[d] = max(layer[d], layer[n] + 1)
            indegree[d] -= 1
            if indegree[d] == 0:
                ready.append(d)
    leftover = [n for n in nodes if n not in placed]
    if leftover:
        last = max((layer[n] for n in placed), default=-1) + 1
        for n in leftover:
            layer[n] = last
    return layer


def _next_to_consumers(layer_of: dict[str, int], edges: list[tuple[str, str]],
                       sources: frozenset[str]) -> None:
    """Move each of ``sources`` to the layer before its earliest consumer (edges still
    point to later layers: a consumer is at least one layer on)."""
    earliest: dict[str, int] = {}
    for u, d in edges:
        if u in sources:
            earliest[u] = min(earliest.get(u, layer_of[d]), layer_of[d])
    for n in sources:
        if n in earliest:
            layer_of[n] = max(earliest[n] - 1, 0)


Point = object  # a node name, or an (up, down, i) dummy point


def _with_dummies(nodes: list[str], edges: list[tuple[str, str]], layer_of: dict[str, int]
                  ) -> tuple[list[list[Point]], dict[tuple[str, str], list[Point]]]:
    depth = max(layer_of.values(), default=-1) + 1
    layers: list[list[Point]] = [[] for _ in range(depth)]
    for n in nodes:
        layers[layer_of[n]].append(n)
    chains: dict[tuple[str, str], list[Point]] = {}
    for u, d in edges:
        lu, ld = layer_of[u], layer_of[d]
        step = 1 if ld > lu else -1
        chain: list[Point] = [u]
        for i, li in enumerate(range(lu + step, ld, step)):
            dummy = (u, d, i)
            layers[li].append(dummy)
            chain.append(dummy)
        chain.append(d)
        chains[(u, d)] = chain
    return layers, chains


def _neighbours(chains: dict[tuple[str, str], list[Point]]) -> list[tuple[Point, Point]]:
    return [(a, b) for chain in chains.values() for a, b in zip(chain, chain[1:], strict=False)]


def _bands(layers: list[list[Point]], chains: dict[tuple[str, str], list[Point]],
           group_of: dict[str, str]) -> dict[Point, int]:
    """Band rank of every point (0 for no group), bands ranked by their mean place; {} if
    there are no groups."""
    if not group_of:
        return {}
    key: dict[Point, str | None] = {v: group_of.get(v) for layer in layers for v in layer
                                    if isinstance(v, str)}
    for (u, d), chain in chains.items():
        inside = group_of.get(u) if group_of.get(u) == group_of.get(d) else None
        key.update(dict.fromkeys(chain[1:-1], inside))
    places: dict[str | None, list[float]] = {}
    for layer in layers:
        for i, v in enumerate(layer):
            places.setdefault(key[v], []).append((i + 0.5) / len(layer))
    order = sorted(places, key=lambda g: (sum(places[g]) / len(places[g]), g or ""))
    rank = {g: r for r, g in enumerate(order)}
    return {v: rank[g] for v, g in key.items()}


def _reduce_crossings(layers: list[list[Point]], segments: list[tuple[Point, Point]],
                      band: Mapping[Point, int] | None = None) -> list[list[Point]]:
    """Barycenter sweeps down and up; keep the ordering with the fewest crossings.

    With ``band``, points are ordered by band first, so each band stays contiguous.
    """
    left: dict[Point, list[Point]] = {}
    right: dict[Point, list[Point]] = {}
    layer_index = {v: li for li, layer in enumerate(layers) for v in layer}
    for a, b in segments:
        if layer_index[a] > layer_index[b]:
            a, b = b, a
        right.setdefault(a, []).append(b)
        left.setdefault(b, []).append(a)
    best = [list(layer) for layer in layers]
    best_count = crossings(best, segments)
    current = [list(layer) for layer in layers]
    for sweep in range(SWEEPS):
        if best_count == 0:
            break
        forward = sweep % 2 == 0
        order = range(1, len(current)) if forward else range(len(current) - 2, -1, -1)
        for li in order:
            fixed = current[li - 1] if forward else current[li + 1]
            where = {v: i for i, v in enumerate(fixed)}
            links = left if forward else right
            current[li] = _by_barycenter(current[li], links, where, band or {})
        count = crossings(current, segments)
        if count < best_count:
            best, best_count = [list(layer) for layer in current], count
    return best


def _by_barycenter(layer: list[Point], links: dict[Point, list[Point]],
                   where: dict[Point, int], band: Mapping[Point, int]) -> list[Point]:
    keyed = []
    for i, v in enumerate(layer):
        positions = [where[n] for n in links.get(v, ()) if n in where]
        # a node without neighbours on that side keeps its place
        keyed.append((band.get(v, 0), sum(positions) / len(positions) if positions
                      else float(i), i, v))
    keyed.sort(key=lambda t: (t[0], t[1], t[2]))
    return [t[3] for t in keyed]


def _coordinates(layers: list[list[Point]], chains: dict[tuple[str, str], list[Point]],
                 edges: list[tuple[str, str]], layer_of: dict[str, int],
                 band: Mapping[Point, int], group_of: dict[str, str]) -> Layout:
    """Columns by layer; each band a stack of rows (a group's with a header), each layer's
    points centred within their band."""
    count: dict[tuple[int, int], int] = {}
    for li, layer in enumerate(layers):
        for v in layer:
            count[(band.get(v, 0), li)] = count.get((band.get(v, 0), li), 0) + 1
    labels = {band[n]: g for n, g in group_of.items()}
    tops: dict[int, float] = {}
    spans: dict[int, float] = {}
    height = 0.0
    for b in sorted({b for b, _ in count} or {0}):
        tops[b] = height
        tallest = max((c for (bb, _), c in count.items() if bb == b), default=1)
        spans[b] = (HEADER if b in labels else 0.0) + tallest * ROW
        height += spans[b]
    at: dict[Point, tuple[float, float]] = {}
    for li, layer in enumerate(layers):
        row: dict[int, int] = {}  # next row of each band in this layer
        for v in layer:
            b = band.get(v, 0)
            i = row[b] = row.get(b, -1) + 1
            header = HEADER if b in labels else 0.0
            top = tops[b] + header + (spans[b] - header - count[(b, li)] * ROW) / 2
            at[v] = (COLUMN / 2 + li * COLUMN, top + ROW / 2 + i * ROW)
    positions = {v: xy for v, xy in at.items() if isinstance(v, str)}
    routes = {edge: [at[p] for p in chains[edge]] for edge in edges}
    boxes: dict[str, tuple[float, float, float, float]] = {}
    for b, g in sorted(labels.items()):
        cols = [layer_of[n] for n, gg in group_of.items() if gg == g]
        x = min(cols) * COLUMN + INSET
        boxes[g] = (x, tops[b] + INSET, (max(cols) + 1) * COLUMN - INSET - x,
                    spans[b] - 2 * INSET)
    return Layout(layers, positions, routes, max(len(layers), 1) * COLUMN,
                  max(height, ROW), dict(layer_of), boxes)
