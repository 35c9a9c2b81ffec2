"""flow.watch: re-run a target when an input file's content changes, until stopped."""

from __future__ import annotations

import contextlib
import os
import threading

import pytest

import lazyflow as lf
from lazyflow.watch import Watcher

OLD = 1_600_000_000 * 10**9


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("1 2 3")
    return path


@pytest.fixture
def summed(flow, calls):
    @flow.node
    def total(data: lf.File):
        calls["total"] += 1
        return sum(int(x) for x in data.read_text().split())

    return flow


class Runs:
    """Collects finished runs from flow events; waits for the n-th without sleeping."""

    def __init__(self, flow):
        self.runs = []
        self.changed = threading.Condition()
        flow.events.subscribe(self.seen)

    def seen(self, event):
        if isinstance(event, lf.RunFinished):
            with self.changed:
                self.runs.append(event.run)
                self.changed.notify_all()

    def wait_for(self, n):
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.runs) >= n, timeout=60), self.runs
        return self.runs[n - 1]


@contextlib.contextmanager
def watching(flow, data, **options):
    """Watch in a thread; always stop it, even when an assertion fails."""
    token = lf.CancelToken()
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "run", flow.watch("total", data=lf.File(data), cancel=token, **options)), daemon=True)
    thread.start()
    try:
        yield result
    finally:
        token.cancel("test done")
        thread.join(60)
        assert not thread.is_alive()


def save(path, text):
    """Save as editors do: write a temporary file, then rename it over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.mark.parametrize("poll", [False, True], ids=["watchdog", "polling"])
def test_editing_a_watched_file_reruns_the_target(summed, data, poll):
    runs = Runs(summed)
    with watching(summed, data, poll=poll, interval=0.05) as result:
        assert runs.wait_for(1)["total"] == 6
        save(data, "10 20")
        assert runs.wait_for(2)["total"] == 30
    assert result["run"]["total"] == 30


def test_a_failing_run_keeps_the_watch_going(summed, data):
    runs = Runs(summed)
    data.write_text("not numbers")
    with watching(summed, data, interval=0.05):
        assert runs.wait_for(1).status == "failed"
        save(data, "4 5")
        assert runs.wait_for(2)["total"] == 9


def test_touching_a_watched_file_is_not_a_change(summed, data):
    watcher = Watcher(summed, "total", {"data": lf.File(data)})
    watcher.snapshot()
    os.utime(data, ns=(OLD, OLD))
    assert not watcher.changed()
    data.write_text("1 2 4")
    assert watcher.changed()


def test_file_defaults_are_watched_too(flow, data):
    @flow.node
    def size(path=lf.File(data)):  # noqa: B008 - a File default is the documented use
        return len(path.read_bytes())

    assert [f.path for f in Watcher(flow, "size", {}).files()] == [data]


def test_max_runs_stops_the_watch_and_returns_the_last_run(summed, data, calls):
    run = summed.watch("total", data=lf.File(data), max_runs=1)
    assert run["total"] == 6 and calls["total"] == 1


def test_ctrl_c_stops_the_watch_and_returns_the_last_run(summed, data):
    def interrupt(run):
        raise KeyboardInterrupt

    assert summed.watch("total", data=lf.File(data), on_run=interrupt)["total"] == 6
