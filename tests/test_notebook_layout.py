"""The DAG layout (layers follow edges, no overlaps, few crossings, any size, never hangs) and
``flow.to_svg()``, the drawing of a flow's definition with its inputs and return types."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import lazyflow as lf
from lazyflow.render.layout import crossings, layout


def _random_dag(n: int, seed: int) -> tuple[list[str], list[tuple[str, str]]]:
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(n)]
    edges = [(names[rng.randrange(i)], names[i]) for i in range(1, n) for _ in range(2)
             if rng.random() < 0.8]
    return names, edges


def test_every_edge_points_to_a_later_layer():
    names, edges = _random_dag(60, seed=1)
    lay = layout(names, edges)
    assert all(lay.layer_of[u] < lay.layer_of[d] for u, d in edges)


def test_a_node_sits_one_layer_after_its_deepest_input():
    lay = layout(["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("a", "d"), ("c", "d")])
    assert lay.layer_of == {"a": 0, "b": 1, "c": 2, "d": 3}


def test_no_two_nodes_share_a_position():
    names, edges = _random_dag(200, seed=2)
    lay = layout(names, edges)
    assert len(set(lay.positions.values())) == 200


def test_two_hundred_nodes_are_all_placed_inside_the_drawing():
    names, edges = _random_dag(200, seed=3)
    lay = layout(names, edges)
    assert set(lay.positions) == set(names)
    assert all(0 < x < lay.width and 0 < y < lay.height for x, y in lay.positions.values())


def test_long_edges_are_routed_through_every_layer_they_cross():
    lay = layout(["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")])
    route = lay.routes[("a", "d")]
    assert len(route) == 4
    assert [x for x, _ in route] == sorted(x for x, _ in route)


def test_barycenter_ordering_untangles_parallel_chains_given_in_crossed_order():
    # two chains a1->a2->a3 and b1->b2->b3, listed so that the naive order crosses
    names = ["a1", "b1", "b2", "a2", "a3", "b3"]
    edges = [("a1", "a2"), ("a2", "a3"), ("b1", "b2"), ("b2", "b3")]
    naive = [["a1", "b1"], ["b2", "a2"], ["a3", "b3"]]
    assert crossings(naive, edges) == 2
    lay = layout(names, edges)
    assert crossings(lay.layers, edges) == 0


def test_a_fan_out_and_fan_in_is_drawn_without_crossings():
    names = ["src", "x3", "x1", "x2", "y2", "y3", "y1", "sink"]
    edges = [("src", "x1"), ("src", "x2"), ("src", "x3"), ("x1", "y1"), ("x2", "y2"),
             ("x3", "y3"), ("y1", "sink"), ("y2", "sink"), ("y3", "sink")]
    lay = layout(names, edges)
    assert crossings(lay.layers, edges) == 0


def test_layout_is_deterministic():
    names, edges = _random_dag(80, seed=4)
    first, second = layout(names, edges), layout(names, edges)
    assert (first.layers, first.positions, first.routes) == \
        (second.layers, second.positions, second.routes)


def test_a_cycle_is_laid_out_instead_of_hanging():
    lay = layout(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "b")])
    assert set(lay.positions) == {"a", "b", "c"}


def test_edges_to_unknown_nodes_and_self_loops_are_ignored():
    lay = layout(["a", "b"], [("a", "b"), ("ghost", "a"), ("b", "b")])
    assert set(lay.routes) == {("a", "b")}


def test_an_empty_flow_lays_out_to_an_empty_drawing():
    lay = layout([], [])
    assert lay.positions == {} and lay.routes == {}


def _inside(box, point) -> bool:
    x, y, w, h = box
    return x < point[0] < x + w and y < point[1] < y + h


def _grouped_dag(n: int, seed: int) -> tuple[list[str], list[tuple[str, str]], dict]:
    """A random DAG whose nodes 1/3 and 2/3 of the way along form groups "a" and "b"."""
    names, edges = _random_dag(n, seed)
    rename = {m: f"a.{m}" for m in names[n // 3:n // 3 + n // 10]}
    rename |= {m: f"b.{m}" for m in names[2 * n // 3:2 * n // 3 + n // 10]}
    names = [rename.get(m, m) for m in names]
    edges = [(rename.get(u, u), rename.get(d, d)) for u, d in edges]
    groups = {g: [m for m in names if m.startswith(g + ".")] for g in ("a", "b")}
    return names, edges, groups


def test_a_group_box_holds_exactly_its_members():
    names, edges, groups = _grouped_dag(120, seed=5)
    lay = layout(names, edges, groups)
    assert set(lay.boxes) == {"a", "b"}
    for label, box in lay.boxes.items():
        assert {m for m, xy in lay.positions.items() if _inside(box, xy)} == set(groups[label])


def test_group_boxes_do_not_overlap_and_fit_in_the_drawing():
    names, edges, groups = _grouped_dag(120, seed=6)
    lay = layout(names, edges, groups)
    (ax, ay, aw, ah), (bx, by, bw, bh) = lay.boxes["a"], lay.boxes["b"]
    assert ay + ah <= by or by + bh <= ay or ax + aw <= bx or bx + bw <= ax
    assert all(x >= 0 and x + w <= lay.width and y >= 0 and y + h <= lay.height
               for x, y, w, h in lay.boxes.values())
    assert len(set(lay.positions.values())) == len(names)


def test_groups_keep_the_layers_of_the_ungrouped_layout():
    names, edges, groups = _grouped_dag(120, seed=7)
    assert layout(names, edges, groups).layer_of == layout(names, edges).layer_of


def test_crossing_reduction_still_untangles_chains_inside_groups():
    names = ["a.x1", "b.y1", "b.y2", "a.x2", "a.x3", "b.y3"]
    edges = [("a.x1", "a.x2"), ("a.x2", "a.x3"), ("b.y1", "b.y2"), ("b.y2", "b.y3")]
    groups = {"a": ["a.x1", "a.x2", "a.x3"], "b": ["b.y1", "b.y2", "b.y3"]}
    lay = layout(names, edges, groups)
    assert crossings(lay.layers, edges) == 0


def test_without_groups_there_are_no_boxes():
    names, edges = _random_dag(30, seed=8)
    assert layout(names, edges).boxes == {}


# --------------------------------------------------------------------------- flow.to_svg


def test_a_flow_input_sits_in_the_layer_before_its_earliest_consumer():
    lay = layout(["in:late", "a", "b", "c"], [("a", "b"), ("b", "c"), ("in:late", "c")],
                 inputs=["in:late"])
    assert lay.layer_of == {"in:late": 1, "a": 0, "b": 1, "c": 2}
    assert lay.inputs == {"in:late"}


def _drawn_flow() -> lf.Flow:
    flow = lf.Flow("drawn", cache=None)

    @flow.node
    def raw(path: Path, n: int = 5) -> list[float]:
        return [float(i) for i in range(n)]

    @flow.node
    def clean(raw, threshold: float = 0.5) -> pd.DataFrame:  # noqa: F821 - only written
        return [x for x in raw if x > threshold]

    @flow.node
    def report(clean, n):
        return len(clean)

    return flow


def _inputs(svg: str) -> dict[str, str]:
    """Each drawn flow input's point name -> its label."""
    return dict(re.findall(r'<g class="lf-input" data-input="([^"]+)">.*?<text[^>]*>([^<]*)'
                           r'</text></g>', svg))


def test_to_svg_draws_every_flow_input_as_a_dashed_box_labelled_with_type_and_default():
    svg = _drawn_flow().to_svg()
    assert _inputs(svg) == {"input:path": "path: Path", "input:n": "n: int = 5",
                            "input:threshold": "threshold: float = 0.5"}
    box = re.search(r'data-input="input:n">.*?<rect[^>]*>', svg).group(0)
    assert 'stroke-dasharray' in box


def test_to_svg_draws_a_dashed_edge_from_an_input_into_every_node_taking_it():
    svg = _drawn_flow().to_svg()
    dashed = re.findall(r'<path class="lf-input-edge" data-edge="([^"]+)"[^>]*'
                        r'stroke-dasharray', svg)
    assert sorted(dashed) == ["input:n->raw", "input:n->report", "input:path->raw",
                              "input:threshold->clean"]
    assert sorted(re.findall(r'class="lf-edge" data-edge="([^"]+)"', svg)) == \
        ["clean->report", "raw->clean"]


def test_to_svg_shows_each_nodes_return_annotation_under_its_name():
    svg = _drawn_flow().to_svg()
    captions = dict(re.findall(r'data-node="(\w+)".*?class="lf-caption"[^>]*>([^<]*)<', svg))
    assert captions == {"raw": "→ list[float]", "clean": "→ DataFrame", "report": ""}


def test_to_svg_draws_the_definition_not_the_last_run():
    flow = _drawn_flow()
    before = flow.to_svg()
    flow.run("report", path=Path("a.csv"), n=3)
    assert flow.to_svg() == before
    assert set(re.findall(r'data-state="(\w+)"', before)) == {"defined"}


def test_to_svg_gives_the_same_text_for_the_same_flow_in_any_process(tmp_path):
    script = tmp_path / "drawn.py"
    script.write_text(textwrap.dedent('''
        import sys
        import lazyflow as lf
        flow = lf.Flow("p", cache=None)
        for i in range(30):
            flow.node(name=f"n{i}", inputs={"up": f"n{i // 2}"} if i else None)(
                (lambda up, k=i, size=1: up + k) if i else (lambda seed, size=1: seed))
        sys.stdout.write(flow.to_svg())
    '''))
    texts = {subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
             for seed in ("1", "2")}
    assert len(texts) == 1 and 'data-node="n29"' in texts.pop()


def test_to_svg_writes_the_svg_to_a_path_given_as_str_or_path(tmp_path):
    flow = _drawn_flow()
    text = flow.to_svg(str(tmp_path / "a.svg"))
    flow.to_svg(tmp_path / "b.svg")
    assert (tmp_path / "a.svg").read_text() == (tmp_path / "b.svg").read_text() == text
    assert text.startswith('<svg xmlns="http://www.w3.org/2000/svg"')


def test_an_input_whose_label_would_be_cut_leaves_out_its_default():
    flow = lf.Flow("long", cache=None)

    @flow.node
    def sample(n_samples: int = 400_000, seed: int = 7):
        return n_samples + seed

    assert set(_inputs(flow.to_svg()).values()) == {"n_samples: int", "seed: int = 7"}
