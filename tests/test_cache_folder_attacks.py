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


def test_a_cache_folder_deleted_between_requests_gives_computed_values(tmp_path):
    folder = tmp_path / "cache"
    flow = _flow(folder, {"v": 1})
    assert _values(flow) == (11, 1)
    shutil.rmtree(folder)
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
    shutil.rmtree(ours)
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
