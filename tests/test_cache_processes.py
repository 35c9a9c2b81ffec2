"""Several processes and threads on one cache: fresh kernels, a team, races."""

from __future__ import annotations

import json
import multiprocessing
import os
import pathlib
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import lazyflow as lf

ROOT = pathlib.Path(lf.__file__).resolve().parent.parent

# A notebook-like script: the same code in every process, configured by environment only.
SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import lazyflow as lf

    LOG = sys.argv[1]
    flow = lf.Flow("team")

    @flow.node
    def raw(n: int):
        with open(LOG, "a") as f:
            f.write("raw\\n")
        return np.arange(n, dtype=np.float64)

    @flow.node
    def total(raw):
        with open(LOG, "a") as f:
            f.write("total\\n")
        return float(raw.sum())

    run = flow.run("total", n=1_000_000)
    print(json.dumps({"value": run["total"],
                      "nodes": {n: [r.status, r.tier] for n, r in run.nodes.items()}}))
''')


def _run_script(tmp_path, log, **env):
    script = tmp_path / "analysis.py"
    script.write_text(SCRIPT)
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    done = subprocess.run([sys.executable, str(script), str(log)], env=environment,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _computed(log) -> list[str]:
    return log.read_text().split() if log.exists() else []


@pytest.mark.slow
def test_a_fresh_process_hits_what_another_process_wrote_to_disk(tmp_path):
    log, disk = tmp_path / "calls.log", str(tmp_path / "cache")
    first = _run_script(tmp_path, log, LAZYFLOW_CACHE_DIR=disk)
    second = _run_script(tmp_path, log, LAZYFLOW_CACHE_DIR=disk)
    assert first["nodes"]["total"] == ["completed", None]
    assert second["nodes"] == {"total": ["cached", "disk"]}
    assert second["value"] == first["value"]
    assert _computed(log) == ["raw", "total"]


@pytest.mark.slow
@pytest.mark.s3
def test_a_colleague_with_an_empty_disk_gets_remote_hits_then_disk_hits(tmp_path, s3_url,
                                                                       s3_options):
    log = tmp_path / "calls.log"
    remote = {"LAZYFLOW_REMOTE": s3_url, "LAZYFLOW_REMOTE_OPTIONS": json.dumps(s3_options)}
    alice = _run_script(tmp_path, log, LAZYFLOW_CACHE_DIR=str(tmp_path / "alice"), **remote)
    bob = _run_script(tmp_path, log, LAZYFLOW_CACHE_DIR=str(tmp_path / "bob"), **remote)
    bob_again = _run_script(tmp_path, log, LAZYFLOW_CACHE_DIR=str(tmp_path / "bob"), **remote)
    assert alice["nodes"]["total"][0] == "completed"
    assert bob["nodes"] == {"total": ["cached", "remote"]}
    assert bob_again["nodes"] == {"total": ["cached", "disk"]}
    assert bob["value"] == bob_again["value"] == alice["value"]
    assert _computed(log) == ["raw", "total"]  # only alice computed


# --------------------------------------------------------------------------- races


class _Gate:
    """Holds a barrier; hashes to a constant so reading it leaves node keys alone."""

    barrier = None


GATE = _Gate()
lf.register_hasher(_Gate, lambda gate: "gate")


def _race_flow(cache: lf.Cache, *, deterministic: bool = True) -> lf.Flow:
    flow = lf.Flow("race", cache=cache)

    @flow.node(deterministic=deterministic)
    def big(n: int):
        GATE.barrier.wait(timeout=60)  # every racer is computing: all miss, all store
        return np.arange(n, dtype=np.float64)

    return flow


def _race_in_process(disk: str, remote: str | None, options: dict, barrier, results) -> None:
    GATE.barrier = barrier
    cache = lf.Cache(memory=None, disk=disk, remote=remote, remote_options=options)
    run = _race_flow(cache).run("big", n=500_000)
    results.put((run.nodes["big"].status, run.nodes["big"].key, float(run["big"].sum())))


def _race_processes(disk: str, remote: str | None = None, options: dict | None = None,
                    count: int = 3) -> list[tuple[str, str, float]]:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(count), context.Queue()
    racers = [context.Process(target=_race_in_process,
                              args=(disk, remote, options or {}, barrier, results))
              for _ in range(count)]
    for p in racers:
        p.start()
    outcomes = [results.get(timeout=120) for _ in racers]
    for p in racers:
        p.join(timeout=60)
        assert p.exitcode == 0
    return outcomes


def _check_one_valid_entry(cache: lf.Cache, tier: str, outcomes) -> None:
    assert [status for status, _, _ in outcomes] == ["completed"] * len(outcomes)
    keys = {key for _, key, _ in outcomes}
    assert len(keys) == 1
    (key,) = keys
    value = cache.tier(tier).get(key)
    np.testing.assert_array_equal(value, np.arange(500_000, dtype=np.float64))
    assert {total for _, _, total in outcomes} == {float(value.sum())}


@pytest.mark.slow
def test_processes_computing_one_key_at_once_leave_one_valid_entry(tmp_path):
    outcomes = _race_processes(str(tmp_path / "cache"))
    cache = lf.Cache(memory=None, disk=str(tmp_path / "cache"), remote=None)
    _check_one_valid_entry(cache, "disk", outcomes)
    assert len(list((tmp_path / "cache").rglob("*.val"))) == 1  # losers' files removed


@pytest.mark.slow
@pytest.mark.s3
def test_processes_racing_on_s3_leave_one_valid_entry(tmp_path, s3_url, s3_options):
    outcomes = _race_processes(str(tmp_path / "cache"), s3_url, s3_options)
    cache = lf.Cache(memory=None, disk=None, remote=s3_url, remote_options=s3_options)
    _check_one_valid_entry(cache, "remote", outcomes)


def test_threads_computing_one_key_at_once_leave_one_valid_entry(tmp_path):
    cache = lf.Cache(memory=None, disk=str(tmp_path / "cache"), remote=None)
    GATE.barrier = threading.Barrier(4)
    outcomes: list[tuple[str, str, float]] = []

    def race() -> None:
        # threads of one process asking for one deterministic key compute it once
        # (single-flight, flights.py); a deterministic=False node is computed by each and
        # stored by each under one key: the concurrent writers this test is about
        run = _race_flow(cache, deterministic=False).run("big", n=500_000)
        outcomes.append((run.nodes["big"].status, run.nodes["big"].key, float(run["big"].sum())))

    threads = [threading.Thread(target=race) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == 4
    _check_one_valid_entry(cache, "disk", outcomes)
    assert len(list((tmp_path / "cache").rglob("*.val"))) == 1
