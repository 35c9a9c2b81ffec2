"""The live DAG widget, the static reprs and progress=True, driven by real runs; the widget's
picture in a notebook saved by a real kernel."""

from __future__ import annotations

import gc
import re
import subprocess
import sys
import threading
import weakref

import pytest

import lazyflow as lf
from lazyflow.notebook.throttle import Throttle


def _diamond(flow: lf.Flow, calls) -> None:
    @flow.node
    def raw(n: int = 4):
        calls["raw"] += 1
        return list(range(n))

    @flow.node
    def doubled(raw):
        return [2 * x for x in raw]

    @flow.node
    def squared(raw):
        return [x * x for x in raw]

    @flow.node
    def report(doubled, squared):
        return sum(doubled) + sum(squared)


def _states(svg: str) -> dict[str, str]:
    return dict(re.findall(r'data-node="(\w+)" data-state="(\w+)"', svg))


def test_the_widget_draws_every_node_of_the_flow_before_any_run(flow, calls):
    _diamond(flow, calls)
    w = flow.widget()
    assert _states(w._svg.value) == dict.fromkeys(["raw", "doubled", "squared", "report"],
                                                  "idle")
    assert "not run yet" in w._status.value


def test_the_widget_shows_completed_nodes_with_their_timings_after_a_run(flow, calls):
    _diamond(flow, calls)
    w = flow.widget()
    flow.run("report")
    assert set(_states(w._svg.value).values()) == {"completed"}
    assert len(re.findall(r'class="lf-caption"[^>]*>[\d.]+(µs|ms|s)<', w._svg.value)) == 4
    assert w._bar.value == w._bar.max == 4
    assert "4 done" in w._status.value


def test_the_widget_redraws_while_the_run_goes_on(flow, calls):
    seen: list[dict[str, str]] = []
    w = flow.widget(interval=0)  # no throttling: every event draws

    @flow.node
    def first():
        return 1

    @flow.node
    def second(first):
        seen.append(_states(w._svg.value))
        return first + 1

    flow.run("second")
    assert seen == [{"first": "completed", "second": "running"}]


def test_redraws_are_throttled_during_a_burst_of_events(calls):
    flow = lf.Flow("burst", cache=lf.Cache(disk=None))
    for i in range(200):
        flow.node(name=f"n{i}")(lambda i=i: i)
    w = flow.widget(interval=3600)
    flow.run([f"n{i}" for i in range(200)])
    # one immediate draw at the start and one at the end; the trailing one was dropped
    assert w.throttle.calls == 2
    assert set(_states(w._svg.value).values()) == {"completed"}


def test_a_throttled_call_is_made_once_the_interval_has_passed():
    drawn = threading.Event()
    now = [0.0]
    throttle = Throttle(drawn.set, interval=100, clock=lambda: now[0])
    throttle()  # draws at once
    drawn.clear()
    now[0] = 99.99  # a burst just before the interval is over: the trailing call is due soon
    for _ in range(100):
        throttle()
    assert drawn.wait(timeout=60)
    assert throttle.calls == 2  # one trailing call for the whole burst
    throttle.now()  # a burst that outlived that call armed the next one: do not leave it armed


def test_an_events_trailing_call_comes_sooner_than_a_tick_armed_for_later():
    drawn = threading.Event()
    throttle = Throttle(drawn.set, interval=0.01)
    throttle()  # draws at once
    drawn.clear()
    throttle.after(3600)  # a tick an hour away
    throttle()  # an event just after the last draw: its call is due in 0.01 s, not in an hour
    assert drawn.wait(timeout=60)
    throttle.stop()


def test_flush_makes_an_armed_call_at_once_and_nothing_when_none_is_armed():
    now = [0.0]
    throttle = Throttle(lambda: None, interval=100, clock=lambda: now[0])
    throttle()  # draws at once
    throttle()  # arms the trailing call
    throttle.flush()
    assert throttle.calls == 2 and throttle._timer is None
    throttle.flush()
    assert throttle.calls == 2


def test_a_failed_node_is_drawn_red_with_its_error(flow):
    w = flow.widget()

    @flow.node
    def good():
        return 1

    @flow.node
    def bad(good):
        raise ValueError("sensor offline")

    @flow.node
    def after(bad):
        return bad

    with pytest.raises(ValueError):
        flow.run("after")
    states = _states(w._svg.value)
    assert states == {"good": "completed", "bad": "failed", "after": "skipped"}
    node = re.search(r'<g class="lf-node" data-node="bad".*?</g>', w._svg.value, re.S).group(0)
    assert "#ef5350" in node and "ValueError: sensor offline" in node
    assert "ValueError: sensor offline" in w._table.value
    assert w._bar.bar_style == "danger"


def test_a_cached_run_marks_every_node_with_its_tier(flow, calls):
    _diamond(flow, calls)
    flow.run("report")
    w = flow.widget()
    flow.run(["raw", "doubled", "squared", "report"])
    assert set(_states(w._svg.value).values()) == {"cached"}
    assert w._svg.value.count('data-tier="memory"') == 4
    assert w._svg.value.count("cached · memory") == 4


def test_the_cancel_button_stops_a_submitted_run_at_the_next_node_boundary(flow, calls):
    started, release = threading.Event(), threading.Event()

    @flow.node
    def slow():
        started.set()
        release.wait(timeout=30)
        calls["slow"] += 1
        return 1

    @flow.node
    def later(slow):
        calls["later"] += 1
        return slow + 1

    w = flow.widget()
    job = w.submit("later")
    assert started.wait(timeout=30)
    w.throttle.now()
    assert not w._cancel.disabled
    w._cancel.click()
    release.set()
    with pytest.raises(lf.CancelledError):
        job.result(timeout=30)
    assert calls == {"slow": 1}
    assert _states(w._svg.value) == {"slow": "completed", "later": "cancelled"}
    assert w._cancel.disabled
    assert flow.run("slow").nodes["slow"].status == "cached"


def test_the_cancel_button_is_disabled_for_a_run_started_in_the_cell(flow, calls):
    _diamond(flow, calls)
    w = flow.widget()
    flow.run("report")
    assert w._cancel.disabled and "interrupt the kernel" in w._cancel.tooltip


def test_a_closed_widget_stops_following_the_flow(flow, calls):
    _diamond(flow, calls)
    w = flow.widget()
    w.close()
    flow.run("report")
    assert set(_states(w._svg.value).values()) == {"idle"}


def test_a_run_shows_as_its_dag_and_a_results_table(flow, calls):
    _diamond(flow, calls)
    run = flow.run("report")
    bundle = run._repr_mimebundle_()
    html = bundle["text/html"]
    assert set(_states(html).values()) == {"completed"}
    assert html.count('class="lf-edge"') == 4
    assert html.count("<tr data-node=") == 4
    assert "report" in bundle["text/plain"]


def test_a_flow_shows_as_its_dag_coloured_by_the_last_run(flow, calls):
    _diamond(flow, calls)
    flow.run("doubled")
    html = flow._repr_html_()
    assert _states(html) == {"raw": "completed", "doubled": "completed", "squared": "idle",
                             "report": "idle"}
    bundle = flow._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" not in bundle  # no kernel here


def test_progress_outside_a_notebook_draws_a_text_bar(flow, calls, capsys):
    _diamond(flow, calls)
    assert flow.get("report", progress=True) == 12 + 14
    err = capsys.readouterr().err
    assert "4/4" in err and "test" in err


def test_import_lazyflow_needs_neither_ipython_nor_ipywidgets():
    code = ("import sys\n"
            "for m in ('IPython', 'ipywidgets', 'tqdm'): sys.modules[m] = None\n"
            "import lazyflow as lf\n"
            "flow = lf.Flow('x', cache=lf.Cache(disk=None))\n"
            "flow.node(name='a')(lambda: 1)\n"
            "flow.run('a')\n"
            "assert 'data-node=\"a\"' in flow._repr_html_()\n"
            "assert 'text/html' in flow._repr_mimebundle_()\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_late_trailing_call_is_not_doubled_by_a_direct_one():
    now = [0.0]
    throttle = Throttle(lambda: None, interval=100, clock=lambda: now[0])
    throttle()  # draws at once
    now[0] = 1.0
    throttle()  # arms the trailing call (due in 99 s)
    now[0] = 150.0  # the interval is over but the timer thread has not run yet
    throttle()
    assert throttle.calls == 1
    throttle.now()
    assert throttle.calls == 2 and throttle._timer is None


def test_progress_in_a_notebook_shows_a_widget_that_keeps_its_requests_final_state(
        flow, calls, monkeypatch):
    shown: list[object] = []
    monkeypatch.setattr("lazyflow.render.display.in_kernel", lambda: True)
    monkeypatch.setattr("IPython.display.display", shown.append)
    _diamond(flow, calls)
    flow.run("report", progress=True)
    (w,) = shown
    flow.run("raw", n=5)  # a later request does not redraw it
    assert _states(w._svg.value) == dict.fromkeys(["raw", "doubled", "squared", "report"],
                                                  "completed")
    w.close()


def _boxes(svg: str) -> dict[str, tuple[float, float, float, float]]:
    found = re.findall(r'data-group="([^"]+)"><rect x="([\d.-]+)" y="([\d.-]+)" '
                       r'width="([\d.]+)" height="([\d.]+)"', svg)
    return {label: tuple(float(v) for v in xywh) for label, *xywh in found}


def _centres(svg: str) -> dict[str, tuple[float, float]]:
    found = re.findall(r'data-node="([^"]+)"[^>]*><title>.*?</title><rect x="([\d.-]+)" '
                       r'y="([\d.-]+)" width="([\d.]+)" height="([\d.]+)"', svg, re.S)
    return {name: (float(x) + float(w) / 2, float(y) + float(h) / 2)
            for name, x, y, w, h in found}


def _members(svg: str, label: str) -> set[str]:
    x, y, w, h = _boxes(svg)[label]
    return {n for n, (cx, cy) in _centres(svg).items() if x < cx < x + w and y < cy < y + h}


def _with_subflow(flow: lf.Flow) -> None:
    prep = lf.Flow("prep", cache=None)

    @prep.node
    def raw(n: int = 3):
        return list(range(n))

    @prep.node
    def clean(raw):
        return [x for x in raw if x]

    @flow.node
    def source():
        return 5

    flow.include(prep, prefix="prep", inputs={"n": "source"})

    @flow.node(inputs={"data": "prep.clean"})
    def report(data, source):
        return sum(data) + source

    flow.add(prep.as_node("clean", name="whole_prep"))


def test_the_static_repr_draws_included_nodes_inside_a_box_labelled_by_the_prefix(flow):
    _with_subflow(flow)
    html = flow._repr_html_()
    assert ">prep</text>" in html
    assert _members(html, "prep") == {"prep.raw", "prep.clean"}


def test_an_as_node_subflow_is_boxed_with_the_flow_and_target_it_runs(flow):
    _with_subflow(flow)
    assert _members(flow._repr_html_(), "prep ▸ clean") == {"whole_prep"}


def test_the_widget_and_a_runs_repr_draw_the_same_subflow_box(flow):
    _with_subflow(flow)
    w = flow.widget()
    run = flow.run("report")
    assert _members(w._svg.value, "prep") == {"prep.raw", "prep.clean"}
    assert _members(run._repr_html_(), "prep") == {"prep.raw", "prep.clean"}


# --------------------------------------------------------------------------- a livelier widget


def _blocked(flow: lf.Flow):
    """A node ``slow`` that runs until released: ``(started, release)`` events."""
    started, release = threading.Event(), threading.Event()

    @flow.node
    def slow():
        started.set()
        release.wait(timeout=60)
        return 1

    return started, release


def test_a_running_node_shows_how_long_it_has_been_running(flow):
    started, release = _blocked(flow)
    w = flow.widget()
    job = w.submit("slow")
    assert started.wait(timeout=30)
    w.throttle.now()
    caption = re.search(r'data-node="slow".*?class="lf-caption"[^>]*>([^<]*)<', w._svg.value)
    release.set()
    job.result(timeout=30)
    assert re.fullmatch(r"running \d+\.\ds", caption.group(1))


def test_the_elapsed_clock_ticks_while_a_node_runs_without_any_event(flow):
    started, release = _blocked(flow)
    w = flow.widget()
    ticked = threading.Event()
    job = w.submit("slow")
    assert started.wait(timeout=30)
    w.throttle.now()
    w._status.observe(lambda change: ticked.set(), "value")  # the node sends no event now
    assert ticked.wait(timeout=30)
    assert not release.is_set() and "1 running" in w._status.value
    release.set()
    job.result(timeout=30)


def test_the_clock_stops_ticking_when_the_run_is_over(flow):
    started, release = _blocked(flow)
    w = flow.widget()
    job = w.submit("slow")
    assert started.wait(timeout=30)
    release.set()
    job.result(timeout=30)
    w.throttle.now()  # a tick may have fired just as the run ended: the last draw arms none
    assert w.throttle._timer is None
    assert "0 running" in w._status.value


def test_the_cancel_button_is_grey_when_nothing_can_be_cancelled_and_red_when_it_can(flow):
    started, release = _blocked(flow)
    w = flow.widget()
    idle = (w._cancel.disabled, w._cancel.button_style)
    job = w.submit("slow")
    assert started.wait(timeout=30)
    w.throttle.now()
    live = (w._cancel.disabled, w._cancel.button_style)
    release.set()
    job.result(timeout=30)
    assert idle == (True, "") and live == (False, "danger")
    assert (w._cancel.disabled, w._cancel.button_style) == (True, "")


def test_a_nodes_details_show_its_small_input_values_and_the_type_of_large_ones(flow):
    @flow.node
    def load(rows: int, path: str, frame: list):
        return rows

    w = flow.widget()
    flow.run("load", rows=5, path="a.csv", frame=list(range(1000)))
    row = re.search(r'<tr data-node="load">.*?</tr>', w._table.value).group(0)
    assert "rows=5, path=&#x27;a.csv&#x27;, frame=&lt;list&gt;" in row
    assert "inputs rows=5, path=&#x27;a.csv&#x27;, frame=&lt;list&gt;" in w._svg.value


def test_a_nodes_details_never_show_a_secret_input(flow):
    @flow.node
    def load(rows: int, api_key: str, auth):
        return rows

    w = flow.widget()
    flow.run("load", rows=5, api_key="sk-7f3a9c", auth=lf.Secret("pw-7f3a9c"))
    assert "rows=5, api_key=&lt;redacted&gt;, auth=&lt;redacted&gt;" in w._table.value
    assert "7f3a9c" not in w._table.value and "7f3a9c" not in w._svg.value


def test_the_widget_keeps_no_input_value_alive_after_the_run(flow):
    class Frame(list):
        """A large input that can be watched for collection."""

    lf.register_hasher(Frame, lambda frame: "frame")

    @flow.node
    def size(frame):
        return len(frame)

    w = flow.widget()
    frame = Frame(range(1000))
    watched = weakref.ref(frame)
    flow.run("size", frame=frame)
    del frame
    gc.collect()
    alive = watched()
    assert alive is None, f"held by {_holders(alive)}"
    assert "frame=&lt;Frame&gt;" in w._table.value


def _holders(value: object) -> list[str]:
    """What refers to ``value``, and what refers to those: the failure names the holder."""
    return [f"{type(r).__name__} {str(r)[:120]!r} <- "
            f"{[type(rr).__name__ for rr in gc.get_referrers(r)][:8]}"
            for r in gc.get_referrers(value)]


def test_a_nodes_details_show_its_cpu_time_and_reported_metrics(flow):
    @flow.node
    def fit():
        lf.report(tokens=812, cost=0.013)
        return 1

    w = flow.widget()
    run = flow.run("fit")
    table = w._table.value
    headings = re.findall(r"<th>([^<]*)</th>", table)
    assert headings == ["node", "status", "tier", "time", "size", "key", "cpu", "metrics", "why"]
    assert "tokens=812, cost=0.013" in table
    cpu = re.search(r"cpu ([^\n<]*)", w._svg.value).group(1)
    assert cpu == lf.run.format_duration(run.nodes["fit"].cpu)


def test_the_details_leave_out_the_columns_no_node_has_a_value_for(flow, calls):
    _diamond(flow, calls)
    w = flow.widget()
    flow.run("report")
    assert re.findall(r"<th>([^<]*)</th>", w._table.value) == \
        ["node", "status", "tier", "time", "size", "key", "inputs", "cpu", "why"]


def test_a_runs_own_table_shows_no_details_columns(flow, calls):
    _diamond(flow, calls)
    table = flow.run("report")._repr_html_()
    assert re.findall(r"<th>([^<]*)</th>", table) == \
        ["node", "status", "tier", "time", "size", "key", "why"]


# --------------------------------------------------------------------------- saved notebooks


def test_the_widgets_output_carries_its_picture_as_html_next_to_the_view(flow, calls):
    _diamond(flow, calls)
    w = flow.widget()
    flow.run("report")
    bundle = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert set(_states(bundle["text/html"]).values()) == {"completed"}
    assert "4 done" in bundle["text/html"]


def test_a_notebook_saved_after_its_runs_shows_the_widget_picture_of_the_last_run(tmp_path):
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(source) for source in (
        "import lazyflow as lf\n"
        "flow = lf.Flow('saved', cache=lf.Cache(disk=None))\n"
        "flow.node(name='first')(lambda: 1)\n"
        "flow.node(name='second')(lambda: 2)",
        "w = flow.widget()\nw",
        "flow.run('first').status",
        # well within a second of the first run: its update waits for the end of the cell
        "flow.run('second').status",
    )])
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    (shown,) = nb.cells[1].outputs
    assert shown.output_type == "display_data"
    assert "application/vnd.jupyter.widget-view+json" in shown.data
    assert _states(shown.data["text/html"]) == {"first": "idle", "second": "completed"}
