"""Attacks on what the cache hands back: a cache folder deleted or swapped under an open
flow, two processes with different code sharing one folder, a row damaged in place, and a
value changed in place by the caller that got it. Each answer must be the value the
node's function computes now."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import warnings

import pandas as pd
import pytest

import lazyflow as lf
from lazyflow.history import flush as flush_history


def _flow(folder, setting):
    """A flow on a disk cache whose two nodes (a small value, a value in a file) read
    ``setting["v"]``."""
    flow = lf.Flow("swapped", cache=lf.Cache(memory=None, disk=folder))

    @flow.node
    def small(x=1):
        return x * 10 + setting["v"]

    @flow.node
    def large(x=1):
        return bytes(100_000) + bytes([setting["v"]])

    return flow


def _values(flow, **inputs):
    with warnings.catch_warnings():  # what the tier says about its vanished folder
        warnings.simplefilter("ignore", lf.CacheWarning)
        run = flow.run(["small", "large"], **inputs)
    return run["small"], run["large"][-1]


def _delete(folder) -> None:
    """``rm -rf`` the folder once the run history beside it is committed: the history's
    writer thread commits there in the background, and a file it writes while the folder
    is removed fails the removal ("Directory not empty")."""
    flush_history()
    shutil.rmtree(folder)


def test_a_cache_folder_deleted_between_requests_gives_computed_values(tmp_path):
    folder = tmp_path / "cache"
    flow = _flow(folder, {"v": 1})
    assert _values(flow) == (11, 1)
    _delete(folder)
    assert _values(flow) == (11, 1)
    assert _values(flow, x=2) == (21, 1)
    on_a_new_thread = []  # a thread opens its own connection to the folder's index
    thread = threading.Thread(target=lambda: on_a_new_thread.append(_values(flow, x=3)))
    thread.start()
    thread.join()
    assert on_a_new_thread == [(31, 1)]


def test_a_cache_folder_swapped_for_another_flows_serves_none_of_its_values(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    setting = {"v": 1}
    flow = _flow(ours, setting)
    assert _values(flow) == (11, 1)
    other = _flow(theirs, {"v": 7})
    assert _values(other) == (17, 7)
    _delete(ours)
    shutil.copytree(theirs, ours)
    assert _values(flow) == (11, 1)
    setting["v"] = 7  # now the swapped-in entries are this flow's own: hits are right
    assert _values(flow) == (17, 7)


def test_an_inline_value_damaged_in_its_sqlite_row_is_recomputed(tmp_path):
    folder = tmp_path / "cache"
    flow = lf.Flow("damaged", cache=lf.Cache(memory=None, disk=folder))

    @flow.node
    def small():
        return "the right value"

    assert flow.get("small") == "the right value"
    flow.cache.flush()
    with contextlib.closing(sqlite3.connect(folder / "cache.db")) as db, db:
        rows = db.execute("SELECT rowid, blob FROM LazyflowEntries").fetchall()
        for rowid, blob in rows:
            if b"the right value" in blob:
                db.execute("UPDATE LazyflowEntries SET blob = ? WHERE rowid = ?",
                           (blob.replace(b"the right value", b"the wrong value"), rowid))
    with pytest.warns(lf.CacheWarning):
        run = flow.run("small")
    assert (run["small"], run.nodes["small"].status) == ("the right value", "completed")


_COLLEAGUE = """
import sys
import lazyflow as lf

flow = lf.Flow("shared", cache=lf.Cache(memory=None, disk=sys.argv[1]))

@flow.node
def answer(x=1):
    return x + {offset}

run = flow.run("answer")
print(run["answer"], run.nodes["answer"].status)
"""


def test_two_processes_sharing_a_disk_cache_each_get_what_their_own_code_computes(tmp_path):
    folder = tmp_path / "cache"
    scripts = {}
    for name, offset in (("old", 1), ("new", 100)):
        scripts[name] = tmp_path / f"{name}.py"
        scripts[name].write_text(textwrap.dedent(_COLLEAGUE.format(offset=offset)))

    def answer(name):
        done = subprocess.run([sys.executable, str(scripts[name]), str(folder)],
                              capture_output=True, text=True, check=True, timeout=120)
        return done.stdout.split()

    assert answer("old") == ["2", "completed"]
    assert answer("new") == ["101", "completed"]
    assert answer("old") == ["2", "cached"]
    assert answer("new") == ["101", "cached"]


def test_a_list_in_a_frame_cell_changed_by_its_caller_leaves_the_next_hit_as_computed():
    flow = lf.Flow("cells", cache=lf.Cache(disk=None))

    @flow.node
    def tokens():
        return pd.DataFrame({"tokens": [[1, 2], [3]], "n": [1, 2]})

    first = flow.get("tokens")
    first.loc[0, "tokens"].append(99)  # a copy of a frame shares the lists in its cells
    run = flow.run("tokens")
    assert (run["tokens"].loc[0, "tokens"], run.nodes["tokens"].tier) == ([1, 2], "memory")


# --------------------------------------------------------------------------- a folder deleted:
# the disk tier (and the history beside it) notice and start afresh, then store again


def _request(flow, **inputs):
    """The two values, how each node was answered, and the CacheWarnings said meanwhile."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        run = flow.run(["small", "large"], **inputs)
    how = {name: (run.nodes[name].status, run.nodes[name].tier) for name in ("small", "large")}
    return (run["small"], run["large"][-1]), how, \
        [str(w.message) for w in said if issubclass(w.category, lf.CacheWarning)]


COMPUTED = {"small": ("completed", None), "large": ("completed", None)}
FROM_DISK = {"small": ("cached", "disk"), "large": ("cached", "disk")}


def test_a_deleted_cache_folder_is_started_afresh_with_one_warning_and_stored_in_again(tmp_path):
    folder = tmp_path / "cache"
    setting = {"v": 1}
    flow = _flow(folder, setting)
    assert _request(flow)[:2] == ((11, 1), COMPUTED)
    _delete(folder)
    values, how, said = _request(flow)
    assert (values, how) == ((11, 1), COMPUTED)
    assert len(said) == 1 and "was deleted" in said[0] and "fresh cache" in said[0]
    assert _request(flow) == ((11, 1), FROM_DISK, [])
    # stored in the new folder, not in the deleted one's file still open here: another
    # cache opened on the folder finds them
    assert _request(_flow(folder, setting)) == ((11, 1), FROM_DISK, [])


def test_a_deleted_cache_folder_is_started_afresh_by_a_request_on_another_thread(tmp_path):
    folder = tmp_path / "cache"
    flow = _flow(folder, {"v": 1})
    assert _request(flow)[:2] == ((11, 1), COMPUTED)
    _delete(folder)
    answered = []  # the thread opens its own connections to the folder's index
    thread = threading.Thread(target=lambda: answered.append(_request(flow, x=2)))
    thread.start()
    thread.join()
    (values, how, said), = answered
    assert (values, how, len(said)) == ((21, 1), COMPUTED, 1)
    assert _request(flow, x=2) == ((21, 1), FROM_DISK, [])


def test_a_connection_opened_after_the_folder_went_fails_once_and_the_tier_starts_afresh(
        tmp_path):
    folder = tmp_path / "cache"
    tier = lf.Cache(memory=None, disk=folder).tier("disk")
    tier.put("before", 1, {"digest": "d"})
    tier.flush()
    assert tier.get("before") == 1  # the run's one check of the folder is spent
    _delete(folder)
    failed = []

    def write_on_a_new_thread():  # a new connection: "unable to open database file"
        try:
            tier.put("after", 2, {"digest": "d"})
            tier.flush()
        except Exception as e:  # noqa: BLE001 - the test reports it below
            failed.append(e)

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        thread = threading.Thread(target=write_on_a_new_thread)
        thread.start()
        thread.join()
    assert failed == []
    assert [str(w.message) for w in said if "was deleted" in str(w.message)] == \
        [str(w.message) for w in said]
    assert len(said) == 1
    fresh = lf.Cache(memory=None, disk=folder).tier("disk")
    assert (fresh.get("after"), fresh.contains("before")) == (2, False)


_DELETER = """
import shutil
import sys
import lazyflow as lf

flow = lf.Flow("colleague", cache=lf.Cache(memory=None, disk=sys.argv[1]))

@flow.node
def answer(x=1):
    return x + 1

print(flow.run("answer").nodes["answer"].status)
if sys.argv[2] == "delete":
    shutil.rmtree(sys.argv[1])
    print(flow.run("answer").nodes["answer"].status)
"""


def test_a_cache_folder_deleted_by_another_process_is_started_afresh_in_both(tmp_path):
    folder = tmp_path / "cache"
    script = tmp_path / "colleague.py"
    script.write_text(_DELETER)

    def colleague(action):
        done = subprocess.run([sys.executable, str(script), str(folder), action],
                              capture_output=True, text=True, check=True, timeout=120)
        return done.stdout.split()

    flow = _flow(folder, {"v": 1})
    assert _request(flow)[:2] == ((11, 1), COMPUTED)
    # it shares the folder, deletes it, and its next run starts a fresh cache there
    assert colleague("delete") == ["completed", "completed"]
    values, how, said = _request(flow)  # this process's index was the deleted one
    assert (values, how, len(said)) == ((11, 1), COMPUTED, 1)
    assert _request(flow) == ((11, 1), FROM_DISK, [])
    assert colleague("keep") == ["cached"]  # both store into the one fresh cache


_REPEATED_DELETER = """
import os
import shutil
import sys

folder, stop = sys.argv[1], sys.argv[2]
print("deleting", flush=True)
deleted = 0
while not os.path.exists(stop):
    if os.path.isdir(folder):
        shutil.rmtree(folder, ignore_errors=True)
        deleted += 1
print(deleted)
"""


def test_a_cache_folder_deleted_over_and_over_by_another_process_never_fails_a_request(
        tmp_path):
    folder, stop = tmp_path / "cache", tmp_path / "stop"
    script = tmp_path / "deleter.py"
    script.write_text(_REPEATED_DELETER)
    flow = _flow(folder, {"v": 1})
    assert _request(flow)[:2] == ((11, 1), COMPUTED)
    deleter = subprocess.Popen([sys.executable, str(script), str(folder), str(stop)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert deleter.stdout.readline() == "deleting\n"
        # whatever the race (a folder gone mid-write, mid-read, between runs), each
        # answer is the computed one and no request fails
        answers = [_request(flow, x=x % 4)[0] for x in range(40)]
    finally:
        stop.touch()
        deleter.communicate(timeout=120)
    assert answers == [(x % 4 * 10 + 1, 1) for x in range(40)]
    _request(flow, x=7)  # settles on the folder as the deleter left it, and stores there
    assert _request(_flow(folder, {"v": 1}), x=7) == ((71, 1), FROM_DISK, [])


def test_a_run_history_deleted_with_its_cache_folder_goes_on_in_a_fresh_file(tmp_path):
    folder = tmp_path / "cache"
    flow = _flow(folder, {"v": 1})
    flow.run("small")
    assert len(lf.history(flow)) == 1
    _delete(folder)
    with warnings.catch_warnings():  # the disk tier's: its folder was deleted
        warnings.simplefilter("ignore", lf.CacheWarning)
        after = flow.run("small")
    assert [run.id for run in lf.history(flow)] == [after.id]
    with contextlib.closing(sqlite3.connect(folder / "history.sqlite")) as db:
        assert db.execute("SELECT id FROM runs").fetchall() == [(after.id,)]
