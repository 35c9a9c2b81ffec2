"""``lf.report``: a node records numbers about its call; hits show them as saved."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import lazyflow as lf


def _llm(prompt):
    lf.report(tokens=len(prompt) * 100, cost=0.01)
    return prompt.upper()


@pytest.fixture
def chat(flow):
    @flow.node
    def answer(prompt: str):
        return _llm(prompt)

    @flow.node
    def summary(answer):
        lf.report(tokens=5)
        lf.report(tokens=7)
        return answer[:3]

    return flow


def test_a_nodes_reports_land_on_its_record_and_add_up_per_name(chat):
    run = chat.run("summary", prompt="hello")
    assert run.nodes["answer"].metrics == {"tokens": 500, "cost": 0.01}
    assert run.nodes["summary"].metrics == {"tokens": 12}


def test_run_metrics_sums_the_calls_made_in_the_run(chat):
    assert chat.run("summary", prompt="hello").metrics() == {"tokens": 512, "cost": 0.01}


def test_a_hit_shows_the_figures_its_value_cost_as_saved_ancestors_included(chat):
    chat.get("summary", prompt="hello")
    run = chat.run("summary", prompt="hello")
    assert run.metrics() == {}
    assert run.nodes["summary"].metrics == {"tokens": 12}
    assert run.saved_metrics() == {"tokens": 512, "cost": 0.01}
    assert "saved: 512 tokens, 0.01 cost" in run.summary()


def test_report_outside_a_running_node_is_an_error():
    with pytest.raises(lf.ReportError, match="no node is running here"):
        lf.report(tokens=1)


@pytest.mark.parametrize("value", ["812", None, True, [1]])
def test_report_takes_numbers_only(flow, value):
    @flow.node
    def answer():
        lf.report(tokens=value)

    with pytest.raises(lf.ReportError, match="metrics are numbers"):
        flow.get("answer")


def test_every_attempt_of_a_retried_call_counts(flow):
    attempts = []

    @flow.node(retries=2, retry_delay=0)
    def answer():
        lf.report(tokens=10)
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("rate limited")
        return "ok"

    assert flow.run("answer").nodes["answer"].metrics == {"tokens": 30}


def test_a_map_nodes_elements_reports_add_up(flow):
    @flow.node(map="prompts")
    def answers(prompts):
        return _llm(prompts)

    run = flow.run("answers", prompts=["a", "bb"])
    assert run.nodes["answers"].metrics == {"tokens": 300, "cost": 0.02}


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_reports_reach_the_run_from_other_threads_and_processes(chat, executor):
    run = chat.run("summary", prompt="hello", executor=executor)
    assert run.metrics() == {"tokens": 512, "cost": 0.01}


def test_a_new_process_sees_the_stored_figures_of_a_hit(tmp_path):
    script = textwrap.dedent(f"""
        import lazyflow as lf
        flow = lf.Flow("chat", cache=lf.Cache(disk={str(tmp_path / "cache")!r}))
        @flow.node
        def answer(prompt: str):
            lf.report(tokens=812, cost=0.013)
            return prompt.upper()
        run = flow.run("answer", prompt="hi")
        print(run.nodes["answer"].status, run.saved_metrics())
    """)
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True).stdout
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True).stdout
    assert first.split()[0] == "completed"
    assert again.strip() == "cached {'tokens': 812, 'cost': 0.013}"
