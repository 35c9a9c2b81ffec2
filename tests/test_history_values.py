"""What the run history keeps besides digests: readable flow-input values (local only, with
secrets redacted), each node's cpu, peak memory and metrics, and what a run's hits saved."""

from __future__ import annotations

import gc
import os
import sqlite3
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lazyflow as lf
from lazyflow.history import FILENAME, RunEntry, flush
from lazyflow.history.recorder import process_recorder
from lazyflow.history.rows import RUN_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
MARKER = "unique-marker-7f3a9c"  # a value found nowhere unless lazyflow wrote it


@pytest.fixture
def beside_disk(tmp_path, monkeypatch) -> lf.Flow:
    """A flow with memory and disk tiers; its history beside the disk tier."""
    monkeypatch.delenv("LAZYFLOW_HISTORY", raising=False)
    return lf.Flow("values", cache=lf.Cache(memory="100MB", disk=str(tmp_path / "cache"),
                                            remote=None))


def _taking(flow: lf.Flow, *params: str) -> None:
    """A node ``used`` taking ``params`` as flow inputs, returning how many it got."""
    source = f"def used({', '.join(params)}):\n    return {len(params)}\n"
    scope: dict[str, object] = {}
    exec(source, scope)  # a node with exactly these parameter names
    flow.node(scope["used"])


def _last(flow: lf.Flow) -> RunEntry:
    return lf.history(flow, limit=1)[0]


def _stored_text(path: Path) -> str:
    """Every text column of every run in the history file, joined."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs").fetchall()
    return "\n".join(str(v) for row in rows for v in row)


# --------------------------------------------------------------------------- small values


def test_small_input_values_read_back_by_value_next_to_their_digests(flow):
    _taking(flow, "n", "rate", "label", "flag", "nothing", "where", "pair")
    run = flow.run("used", n=3, rate=0.5, label="a.csv", flag=True, nothing=None,
                   where=Path("data/a.csv"), pair=(1, "b"))
    entry = _last(flow)
    assert entry.input_values == {"n": "3", "rate": "0.5", "label": "'a.csv'", "flag": "True",
                                  "nothing": "None", "where": repr(Path("data/a.csv")),
                                  "pair": "(1, 'b')"}
    assert entry.inputs == run.inputs  # the digests, as before


def test_the_summary_prints_input_values_instead_of_digests(flow):
    _taking(flow, "n", "label")
    run = flow.run("used", n=3, label="a.csv")
    summary = _last(flow).summary()
    assert "inputs n=3, label='a.csv'" in summary
    assert run.inputs["n"][:12] not in summary


def test_input_values_read_back_in_a_fresh_process(tmp_path):
    history = tmp_path / "history.sqlite"
    script = tmp_path / "record.py"
    script.write_text(textwrap.dedent("""
        import lazyflow as lf
        flow = lf.Flow("elsewhere", cache=lf.Cache(disk=None))

        @flow.node
        def used(n, label, api_key):
            return n

        flow.run("used", n=3, label="a.csv", api_key="abc123")
        """))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LAZYFLOW_HISTORY": str(history)}
    subprocess.run([sys.executable, str(script)], env=env, check=True, timeout=60)
    (entry,) = lf.history(None, path=str(history))
    assert entry.input_values == {"n": "3", "label": "'a.csv'", "api_key": "<redacted>"}


def test_a_warm_request_stores_its_input_values_with_every_run(beside_disk):
    _taking(beside_disk, "n")
    for _ in range(3):
        beside_disk.run("used", n=3)
    assert [r.input_values for r in lf.history(beside_disk)] == [{"n": "3"}] * 3


def test_a_run_written_while_going_keeps_its_input_values(beside_disk):
    _taking(beside_disk, "n")

    def flush_when_started(event) -> None:
        if isinstance(event, lf.RunStarted):
            flush()  # the run is written "running", then how it ended

    beside_disk.run("used", n=3, observers=[flush_when_started])
    assert _last(beside_disk).input_values == {"n": "3"}


# --------------------------------------------------------------------------- large values


@pytest.mark.parametrize(("value", "text"), [
    (np.zeros((1000, 3)), "<ndarray float64 (1000, 3)>"),
    (pd.DataFrame({"a": range(10), "b": range(10)}), "<DataFrame (10, 2)>"),
    (list(range(1000)), "<list len 1000>"),
    ("x" * 300, "<str len 300>"),
    (tuple(range(9)), "<tuple len 9>"),
    ({"a": 1}, "<dict len 1>"),
    ([1, 2], "<list len 2>"),  # it could change before the history reads it
], ids=["ndarray", "DataFrame", "list", "long str", "long tuple", "dict", "short list"])
def test_a_large_input_reads_as_its_type_and_shape_with_its_digest(flow, value, text):
    _taking(flow, "data")
    run = flow.run("used", data=value)
    entry = _last(flow)
    assert entry.input_values == {"data": text}
    assert f"inputs data={text} {run.inputs['data'][:12]}" in entry.summary()


def test_a_repr_of_up_to_200_characters_is_kept_by_value(flow):
    _taking(flow, "label")
    flow.run("used", label="x" * 198)  # its repr, quotes included: 200 characters
    assert _last(flow).input_values == {"label": repr("x" * 198)}


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize("name", ["api_key", "TOKEN", "db_password", "client_secret"])
def test_a_parameter_named_like_a_secret_is_redacted_whatever_its_value(beside_disk, tmp_path,
                                                                        name):
    _taking(beside_disk, name)
    beside_disk.run("used", **{name: MARKER})
    flush()
    assert _last(beside_disk).input_values == {name: "<redacted>"}
    assert f"{name}=<redacted>" in _last(beside_disk).summary()
    assert MARKER not in _stored_text(tmp_path / "cache" / FILENAME)


def test_an_lf_secret_is_redacted_under_any_name(beside_disk, tmp_path):
    _taking(beside_disk, "header")
    beside_disk.run("used", header=lf.Secret(MARKER))
    flush()
    assert _last(beside_disk).input_values == {"header": "<redacted>"}
    assert MARKER not in _stored_text(tmp_path / "cache" / FILENAME)


def test_a_secret_reads_as_stars_in_repr_str_and_format():
    secret = lf.Secret(MARKER)
    assert repr(secret) == str(secret) == f"{secret}" == "Secret('***')"
    assert MARKER not in repr([secret, (secret,)])


def test_a_node_receives_the_secret_and_reveals_its_value(flow):
    @flow.node
    def header(api_key):
        return f"Bearer {api_key.reveal()}"

    assert flow.get("header", api_key=lf.Secret("abc")) == "Bearer abc"


def test_another_secret_is_another_key_so_it_recomputes(flow, calls):
    @flow.node
    def header(api_key):
        calls["header"] += 1
        return len(api_key.reveal())

    assert flow.get("header", api_key=lf.Secret("abc")) == 3
    assert flow.get("header", api_key=lf.Secret("abcdef")) == 6  # never the stale 3
    assert flow.get("header", api_key=lf.Secret("abc")) == 3
    assert calls["header"] == 2


def test_a_secret_and_its_plain_value_are_different_inputs():
    assert lf.hash_value(lf.Secret("abc")) != lf.hash_value("abc")
    assert lf.hash_value(lf.Secret("abc")) == lf.hash_value(lf.Secret("abc"))


def test_a_secret_passes_to_a_worker_process(flow):
    @flow.node
    def header(api_key):
        return api_key.reveal().upper()

    assert flow.get("header", api_key=lf.Secret("abc"), executor="processes") == "ABC"


def test_lineage_redacts_a_secret_named_input_and_shows_the_others(beside_disk):
    _taking(beside_disk, "n", "api_key")
    beside_disk.get("used", n=3, api_key=MARKER)
    tree = str(beside_disk.lineage("used", n=3, api_key=MARKER))
    assert "n=3" in tree and "api_key=<redacted>" in tree
    assert MARKER not in tree


# --------------------------------------------------------------------------- local only


@pytest.mark.parametrize("secret", [False, True], ids=["plain value", "lf.Secret"])
def test_input_values_never_reach_the_cache_that_travels(tmp_path, monkeypatch, secret):
    monkeypatch.delenv("LAZYFLOW_HISTORY", raising=False)
    disk, remote = tmp_path / "disk", tmp_path / "mount"
    flow = lf.Flow("travels", cache=lf.Cache(memory=None, disk=str(disk),
                                             remote=f"file://{remote}"))

    @flow.node
    def used(label):
        return 7  # the value holds nothing of the input

    flow.run("used", label=lf.Secret(MARKER) if secret else MARKER)
    flush()
    stored = [p for root in (disk, remote) for p in root.rglob("*")
              if p.is_file() and not p.name.startswith(FILENAME)]
    assert any(p.is_relative_to(remote) for p in stored)  # the remote holds the entry
    assert not [p for p in stored if MARKER.encode() in p.read_bytes()]
    # while the history beside the disk tier keeps it (unless it is a secret)
    assert (MARKER in _stored_text(disk / FILENAME)) is not secret


# --------------------------------------------------------------------------- node profile


def _metered(flow: lf.Flow) -> None:
    @flow.node(profile_memory=True)
    def fit(n: int):
        lf.report(tokens=812, cost=0.013)
        return np.ones(n * 1024, dtype=np.uint8).sum()

    @flow.node
    def report(fit):
        return int(fit)


def test_a_computed_nodes_cpu_peak_memory_and_metrics_read_back(flow):
    _metered(flow)
    run = flow.run("report", n=256)
    entry = _last(flow)
    for name in ("fit", "report"):
        record, node = run.nodes[name], entry.node(name)
        assert (node.cpu, node.peak_memory, node.metrics) == \
            (record.cpu, record.peak_memory, record.metrics)
    fit = entry.node("fit")
    assert fit.cpu is not None and fit.peak_memory and fit.metrics == {"tokens": 812,
                                                                        "cost": 0.013}
    assert entry.metrics() == {"tokens": 812, "cost": 0.013}


def test_a_hit_reads_back_its_stored_metrics_and_the_run_what_it_saved(beside_disk):
    _metered(beside_disk)
    beside_disk.run("report", n=256)
    warm = beside_disk.run(["fit", "report"], n=256)
    entry = _last(beside_disk)
    assert entry.id == warm.id
    assert entry.node("fit").metrics == warm.nodes["fit"].metrics == {"tokens": 812,
                                                                       "cost": 0.013}
    assert entry.node("fit").cpu is None  # a hit ran nothing
    assert entry.saved_metrics == warm.saved_metrics() == {"tokens": 812, "cost": 0.013}
    assert entry.metrics() == {}


def test_a_warm_run_with_metrics_is_still_one_row_sharing_its_node_set(beside_disk, tmp_path):
    _metered(beside_disk)
    beside_disk.run("report", n=256)
    warm = beside_disk.run("report", n=256)
    flush()
    with sqlite3.connect(tmp_path / "cache" / FILENAME) as conn:
        nodes, node_set = conn.execute("SELECT nodes, node_set FROM runs WHERE id = ?",
                                       (warm.id,)).fetchone()
    assert (nodes, node_set is not None) == ("[]", True)


def test_a_run_with_hits_and_computed_nodes_reads_back_what_its_hits_saved(flow):
    _metered(flow)
    flow.run("fit", n=256)

    @flow.node
    def again(fit):  # computed now, its input a hit
        return int(fit)

    run = flow.run("again", n=256)
    entry = _last(flow)
    assert [n.status for n in entry.nodes] == ["cached", "completed"]
    assert entry.saved_metrics == run.saved_metrics() == {"tokens": 812, "cost": 0.013}


def test_the_summary_prints_cpu_peak_memory_and_metrics(flow):
    _metered(flow)
    flow.run("report", n=256)
    summary = _last(flow).summary()
    assert "cpu" in summary and "peak" in summary
    assert "tokens=812 cost=0.013" in summary
    assert "reported: 812 tokens, 0.013 cost" in summary


def test_the_summary_of_a_warm_run_says_what_its_hits_saved(flow):
    _metered(flow)
    flow.run("report", n=256)
    flow.run(["fit", "report"], n=256)
    summary = _last(flow).summary()
    assert "saved tokens=812 cost=0.013" in summary
    assert "saved: 812 tokens, 0.013 cost" in summary


def test_a_finished_runs_history_keeps_no_input_value_alive(beside_disk):
    class Frame(list):
        """A large input that can be watched for collection."""

    lf.register_hasher(Frame, lambda frame: "frame")

    @beside_disk.node
    def size(frame):
        return len(frame)

    frame = Frame(range(1000))
    watched = weakref.ref(frame)
    recorder = process_recorder()
    recorder._start()  # the writer thread runs, so the run below never needs its lock
    # held, the writer cannot be building the row of a run going (with its values) just
    # as the frame is dropped: what the check sees is what the finished run keeps
    with recorder._drain_lock:
        beside_disk.run("size", frame=frame)  # computed: its row is built by the writer
        del frame
        gc.collect()
        assert watched() is None
    flush()
    assert _last(beside_disk).input_values["frame"] == "<Frame len 1000>"
