"""Sub-flows attacked: after each change, is an outer hit what the inner functions compute now?

Every case requests the outer target after a change, in this process and (where a stored
entry could outlive the process) in a new process sharing the disk cache. A flag class
that hashes to a constant stands for the world outside the keys (a service that is down,
then up): what lazyflow cannot key, it must not serve from the outer cache either.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lazyflow as lf


class Outside:
    """State outside every key (a remote service): hashes to a constant."""

    def __init__(self) -> None:
        self.down = True


lf.register_hasher(Outside, lambda _: "outside")

SCALE = {"by": 1}  # read through eval: out of lazyflow's sight


@pytest.fixture
def flows():
    cache = lf.Cache(disk=None)
    return lf.Flow("inner", cache=cache), lf.Flow("outer", cache=cache)


def in_new_process(tmp_path: Path, body: str, target: str) -> tuple[object, str]:
    """Define the flows in a new Python process sharing ``tmp_path``'s disk cache; return the
    outer target's value and status there."""
    script = tmp_path / "flows.py"
    script.write_text(textwrap.dedent("""\
        import json, pathlib, sys, warnings
        import lazyflow as lf
        warnings.simplefilter("ignore", lf.LazyflowWarning)
        cache = lf.Cache(disk=sys.argv[1])
        inner = lf.Flow("inner", cache=cache)
        outer = lf.Flow("outer", cache=cache)
        """) + textwrap.dedent(body) + textwrap.dedent(f"""
        run = outer.run({target!r})
        print(json.dumps([run[{target!r}], run.nodes[{target!r}].status]))
        """))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "cache")],
                          capture_output=True, text=True, cwd=tmp_path, check=True)
    value, status = json.loads(done.stdout.splitlines()[-1])
    return value, status


# --------------------------------------------------------------------------- stale, now fixed


def test_an_outer_hit_is_not_served_when_an_inner_node_reads_names_lazyflow_cannot_see(flows):
    inner, outer = flows

    @inner.node
    def scaled(n: int):
        return n * eval("SCALE['by']")

    outer.add(inner.as_node("scaled", name="result"))
    with pytest.warns(lf.CacheWarning, match="scaled"):
        assert outer.get("result", n=2) == 2
    SCALE["by"] = 5
    assert outer.get("result", n=2) == 10


def test_an_outer_hit_is_not_served_past_an_inner_node_declared_cache_false(flows):
    inner, outer = flows
    service = Outside()

    @inner.node(cache=False)
    def status():
        return "down" if service.down else "up"

    @inner.node
    def shouted(status):
        return status.upper()

    outer.add(inner.as_node("shouted", name="loud"))
    assert outer.get("loud") == "DOWN"
    service.down = False
    assert outer.get("loud") == "UP"


def test_a_new_process_does_not_serve_an_outer_result_past_an_inner_cache_false_node(tmp_path):
    body = """
        @inner.node(cache=False)
        def raw():
            return pathlib.Path("data.txt").read_text()

        @inner.node
        def shouted(raw):
            return raw.upper()

        outer.add(inner.as_node("shouted", name="loud"))
        """
    (tmp_path / "data.txt").write_text("one")
    assert in_new_process(tmp_path, body, "loud") == ("ONE", "completed")
    (tmp_path / "data.txt").write_text("two")
    assert in_new_process(tmp_path, body, "loud") == ("TWO", "completed")


def test_a_result_computed_from_a_caught_inner_failure_is_not_served_by_the_outer_flow(flows):
    inner, outer = flows
    service = Outside()

    @inner.node
    def model(n: int):
        if service.down:
            raise ConnectionError("service down")
        return n

    @inner.node(catch=("model",))
    def report(model):
        return "no model" if isinstance(model, lf.Failed) else f"model {model}"

    outer.add(inner.as_node("report", name="summary"))
    assert outer.get("summary", n=1) == "no model"
    service.down = False
    assert outer.get("summary", n=1) == "model 1"


def test_a_new_process_does_not_serve_an_outer_result_of_a_caught_inner_failure(tmp_path):
    body = """
        @inner.node
        def model():
            return pathlib.Path("model.txt").read_text()  # missing at first: it fails

        @inner.node(catch=("model",))
        def report(model):
            return "no model" if isinstance(model, lf.Failed) else f"model {model}"

        outer.add(inner.as_node("report", name="summary"))
        """
    assert in_new_process(tmp_path, body, "summary") == ("no model", "completed")
    (tmp_path / "model.txt").write_text("7")
    assert in_new_process(tmp_path, body, "summary") == ("model 7", "completed")


def test_a_fallback_value_of_an_inner_node_is_not_served_by_the_outer_flow(flows):
    inner, outer = flows
    service = Outside()

    @inner.node(on_error="fallback", fallback=0)
    def fetch(n: int):
        if service.down:
            raise ConnectionError("service down")
        return n

    @inner.node
    def doubled(fetch):
        return 2 * fetch

    outer.add(inner.as_node("doubled", name="twice"))
    assert outer.get("twice", n=3) == 0
    service.down = False
    assert outer.get("twice", n=3) == 6


def test_a_check_added_to_an_inner_node_judges_the_next_outer_request(flows):
    inner, outer = flows

    @inner.node
    def balance(n: int):
        return n

    outer.add(inner.as_node("balance", name="account"))
    assert outer.get("account", n=-3) == -3

    with pytest.warns(lf.DefinitionWarning):  # the same node, now checked
        @inner.node(check=lambda value: value >= 0)
        def balance(n: int):
            return n

    with pytest.raises(lf.CheckError, match="balance"):
        outer.get("account", n=-3)


# --------------------------------------------------------------------------- correct: guards


def test_editing_a_helper_two_sub_flows_deep_invalidates_the_outer_target(tmp_path):
    body = """
        from helpers import scale

        @inner.node
        def base(n: int = 2):
            return scale(n)

        middle = lf.Flow("middle", cache=cache)
        middle.add(inner.as_node("base", name="based"))

        @middle.node
        def tenfold(based):
            return 10 * based

        outer.add(middle.as_node("tenfold", name="top"))
        """
    helpers = tmp_path / "helpers.py"
    helpers.write_text("def scale(x):\n    return x\n")
    assert in_new_process(tmp_path, body, "top") == (20, "completed")
    assert in_new_process(tmp_path, body, "top") == (20, "cached")
    helpers.write_text("def scale(x):\n    return 3 * x\n")
    assert in_new_process(tmp_path, body, "top") == (60, "completed")


def test_a_nondeterministic_node_two_sub_flows_deep_is_asked_on_every_outer_request(calls):
    cache = lf.Cache(disk=None)
    inner, middle, outer = (lf.Flow(name, cache=cache) for name in ("inner", "middle", "outer"))

    @inner.node(deterministic=False)
    def draw():
        calls["draw"] += 1
        return calls["draw"]

    middle.add(inner.as_node("draw", name="drawn"))

    @middle.node
    def shown(drawn):
        return f"draw {drawn}"

    outer.add(middle.as_node("shown", name="top"))
    assert [outer.get("top"), outer.get("top")] == ["draw 1", "draw 2"]


def test_a_flow_as_a_node_over_a_node_asked_each_time_stores_no_outer_entry_and_says_why(
        tmp_path, calls):
    cache = lf.Cache(memory="1GB", disk=str(tmp_path / "cache"))
    inner, outer = lf.Flow("inner", cache=cache), lf.Flow("outer", cache=cache)

    @inner.node(deterministic=False)
    def draw():
        calls["draw"] += 1
        return calls["draw"]

    outer.add(inner.as_node("draw", name="drawn"))
    assert [outer.get("drawn") for _ in range(3)] == [1, 2, 3]
    disk = cache.tier("disk")
    stored = [(disk.meta(key) or {}).get("node") for key in list(disk.keys())]
    assert stored.count("drawn") == 0  # one per request before, under keys never found again
    assert "deterministic=False" in outer.explain("drawn").rows[0].reason


def test_an_inner_file_default_edited_on_disk_invalidates_the_outer_target_in_a_new_process(
        tmp_path):
    body = """
        @inner.node
        def raw(path=lf.File("data.txt")):
            return pathlib.Path(path).read_text()

        outer.add(inner.as_node("raw", name="text"))
        """
    (tmp_path / "data.txt").write_text("one")
    assert in_new_process(tmp_path, body, "text") == ("one", "completed")
    (tmp_path / "data.txt").write_text("two")
    assert in_new_process(tmp_path, body, "text") == ("two", "completed")


def test_pointing_a_sub_flow_node_at_another_inner_target_serves_that_target(flows):
    inner, outer = flows

    @inner.node
    def low(n: int):
        return n

    @inner.node
    def high(n: int):
        return n + 100

    outer.add(inner.as_node("low", name="picked"))
    assert outer.get("picked", n=1) == 1
    outer.add(inner.as_node("high", name="picked"))  # the same outer name, now for 'high'
    assert outer.get("picked", n=1) == 101


def test_an_included_node_catches_the_failure_of_the_included_copy_it_names(flows):
    inner, outer = flows

    @inner.node
    def model(n: int):
        if n < 0:
            raise ValueError("negative")
        return n

    @inner.node(catch=("model",))
    def report(model):
        return "no model" if isinstance(model, lf.Failed) else f"model {model}"

    outer.include(inner, prefix="prep")
    assert outer.get("prep.report", n=-1) == "no model"
    assert outer.get("prep.report", n=1) == "model 1"
