"""The disk tier under a flow: persistence, laziness, integrity, limits."""

from __future__ import annotations

import os
import pathlib
import sqlite3
import warnings

import numpy as np
import pytest
from chains import define_array_chain
from damage import GARBAGE, damage, set_aside

import lazyflow as lf
from lazyflow.cache.disk import DiskTier


def _disk_flow(path, name: str = "disk", **cache_options) -> lf.Flow:
    return lf.Flow(name, cache=lf.Cache(disk=str(path), remote=None, **cache_options))


def _warned(caught, text: str) -> bool:
    return any(text in str(w.message) for w in caught)


def _value_files(path) -> list[pathlib.Path]:
    return sorted(pathlib.Path(path).rglob("*.val"))


def test_a_new_cache_on_the_same_directory_hits_disk(tmp_path, calls):
    define_array_chain(_disk_flow(tmp_path), calls).get("total", n=100_000)
    fresh = define_array_chain(_disk_flow(tmp_path), calls)
    run = fresh.run("total", n=100_000)
    assert run["total"] == float(np.arange(100_000).sum())
    assert (run.nodes["total"].status, run.nodes["total"].tier) == ("cached", "disk")
    assert calls == {"raw": 1, "total": 1}


def test_a_disk_hit_is_promoted_to_memory(tmp_path, calls):
    define_array_chain(_disk_flow(tmp_path), calls).get("total", n=10)
    fresh = define_array_chain(_disk_flow(tmp_path), calls)
    assert fresh.run("total", n=10).nodes["total"].tier == "disk"
    assert fresh.run("total", n=10).nodes["total"].tier == "memory"


def test_a_hit_is_decided_without_opening_the_value_file(tmp_path, calls):
    flow = _disk_flow(tmp_path, memory=None)
    define_array_chain(flow, calls)
    flow.get("raw", n=100_000)
    for path in _value_files(tmp_path):
        path.write_bytes(b"not an entry")
    key = flow.last_run.nodes["raw"].key
    assert flow.cache.lookup(key)[1] == "disk"  # silent: a warning would be an error here
    with pytest.warns(lf.CacheWarning), pytest.raises(KeyError):
        flow.cache.load(key)


def test_a_corrupted_value_file_is_dropped_and_recomputed(tmp_path, calls):
    flow = _disk_flow(tmp_path, memory=None)
    define_array_chain(flow, calls)
    expected = flow.get("raw", n=100_000)
    (path,) = _value_files(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(lf.CacheWarning) as caught:
        value = flow.get("raw", n=100_000)
    assert _warned(caught, "checksum")
    np.testing.assert_array_equal(value, expected)
    assert calls["raw"] == 2
    assert flow.run("raw", n=100_000).nodes["raw"].tier == "disk"  # rewritten, valid again


def test_a_truncated_value_file_is_dropped_and_recomputed(tmp_path, calls):
    flow = _disk_flow(tmp_path, memory=None)
    define_array_chain(flow, calls)
    flow.get("raw", n=100_000)
    (path,) = _value_files(tmp_path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)
    with pytest.warns(lf.CacheWarning) as caught:
        value = flow.get("raw", n=100_000)
    assert _warned(caught, "truncated")
    np.testing.assert_array_equal(value, np.arange(100_000, dtype=np.float64))
    assert calls["raw"] == 2


def test_a_value_file_deleted_behind_our_back_is_a_miss(tmp_path, calls):
    flow = _disk_flow(tmp_path, memory=None)
    define_array_chain(flow, calls)
    flow.get("raw", n=100_000)
    for path in _value_files(tmp_path):
        path.unlink()
    with pytest.warns(lf.CacheWarning) as caught:
        flow.get("raw", n=100_000)
    assert _warned(caught, "vanished")
    assert calls["raw"] == 2


def test_small_values_live_inline_and_large_ones_as_files(tmp_path):
    tier = DiskTier(tmp_path, size_limit=10**9, min_file_size=10_000)
    tier.put("a" * 32, np.arange(10), {"digest": "small"})
    assert _value_files(tmp_path) == []
    tier.put("b" * 32, np.arange(10_000), {"digest": "large"})
    assert len(_value_files(tmp_path)) == 1


def test_replacing_an_entry_leaves_one_value_file(tmp_path):
    tier = DiskTier(tmp_path, size_limit=10**9)
    for seed in range(3):
        tier.put("a" * 32, np.full(100_000, seed), {"digest": str(seed)})
    assert len(_value_files(tmp_path)) == 1
    assert tier.get("a" * 32)[0] == 2


def test_the_size_limit_evicts_the_oldest_entries(tmp_path):
    tier = DiskTier(tmp_path, size_limit=3_000_000)
    for i in range(6):
        tier.put(f"{i:032x}", np.full(100_000, i, dtype=np.float64), {"digest": str(i)})
    kept = sorted(tier.keys())
    assert f"{5:032x}" in kept and f"{0:032x}" not in kept
    assert len(_value_files(tmp_path)) == len(kept)


def test_a_value_larger_than_the_limit_warns_with_the_fix(tmp_path):
    tier = DiskTier(tmp_path, size_limit=100_000)
    with pytest.warns(lf.CacheWarning) as caught:
        tier.put("a" * 32, np.zeros(100_000), {"digest": "big", "node": "raw"})
    assert _warned(caught, "disk_limit")
    assert tier.meta("a" * 32) is None


def test_unreadable_metadata_is_dropped_with_a_warning(tmp_path):
    tier = DiskTier(tmp_path, size_limit=10**9)
    tier.put("a" * 32, [1, 2], {"digest": "d"})
    tier.flush()
    with sqlite3.connect(tmp_path / "cache.db") as db:
        db.execute("UPDATE LazyflowEntries SET blob = ? WHERE key = ?",
                   (b"{broken json\n", "a" * 32))
    with pytest.warns(lf.CacheWarning, match="unreadable metadata"):
        assert tier.meta("a" * 32) is None
    assert not tier.contains("a" * 32)


def test_records_persist_so_a_fresh_process_resolves_without_computing(tmp_path, calls):
    define_array_chain(_disk_flow(tmp_path), calls).get("total", n=10)
    fresh = define_array_chain(_disk_flow(tmp_path), calls)
    explanation = fresh.explain("total", n=10)
    assert [(row.node, row.action, row.tier) for row in explanation.rows] == \
        [("total", "hit", "disk")]


# --------------------------------------------------------------------------- a damaged index

def _cache_with_a_damaged_index(path: pathlib.Path, calls, n: int = 10) -> None:
    """A disk cache in ``path`` that holds ``raw`` and ``total``; then its index is overwritten."""
    flow = define_array_chain(_disk_flow(path, memory=None), calls)
    flow.get("total", n=n)
    flow.cache.tier("disk").close()  # as when a session ends: the index is one file again
    damage(path / "cache.db")


def test_a_damaged_index_is_set_aside_and_the_flow_runs_on_a_fresh_one(tmp_path, calls):
    _cache_with_a_damaged_index(tmp_path, calls)
    with pytest.warns(lf.CacheWarning) as caught:
        flow = define_array_chain(_disk_flow(tmp_path, memory=None), calls)
        run = flow.run("total", n=10)
    assert run["total"] == 45.0
    assert calls == {"raw": 2, "total": 2}
    (aside,) = set_aside(tmp_path / "cache.db")
    assert aside.read_bytes().startswith(GARBAGE)  # kept as it was, for the user to inspect
    (message,) = [str(w.message) for w in caught if "cache.db" in str(w.message)]
    assert str(tmp_path / "cache.db") in message and str(aside) in message
    assert "lazyflow cache clear" in message


def test_the_fresh_index_opens_without_a_warning_and_serves_hits(tmp_path, calls):
    _cache_with_a_damaged_index(tmp_path, calls)
    with pytest.warns(lf.CacheWarning, match="damaged"):
        define_array_chain(_disk_flow(tmp_path, memory=None), calls).get("total", n=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = define_array_chain(_disk_flow(tmp_path, memory=None), calls)
        assert again.run("total", n=10).nodes["total"].tier == "disk"
    assert len(set_aside(tmp_path / "cache.db")) == 1


def test_an_index_with_malformed_pages_is_set_aside_too(tmp_path, calls):
    flow = define_array_chain(_disk_flow(tmp_path, memory=None), calls)
    flow.get("total", n=10)
    flow.cache.tier("disk").close()
    damage(tmp_path / "cache.db", at=4096)  # the header is intact, the pages after it not
    with pytest.warns(lf.CacheWarning, match="malformed"):
        run = define_array_chain(_disk_flow(tmp_path, memory=None), calls).run("total", n=10)
    assert run.nodes["total"].status == "completed"
    assert len(set_aside(tmp_path / "cache.db")) == 1


def test_an_index_damaged_while_open_is_set_aside_when_a_statement_first_fails(tmp_path):
    tier = DiskTier(tmp_path, size_limit=10**9)
    tier.put("a" * 32, [1, 2], {"digest": "d"})
    tier.close()  # its next statement opens a new connection, which reads the damaged file
    damage(tmp_path / "cache.db")
    with pytest.warns(lf.CacheWarning, match="damaged"):
        assert tier.meta("a" * 32) is None
    tier.put("b" * 32, [3], {"digest": "e"})
    assert tier.get("b" * 32) == [3]
    assert len(set_aside(tmp_path / "cache.db")) == 1


def test_clear_removes_the_value_files_a_set_aside_index_pointed_at(tmp_path, calls):
    _cache_with_a_damaged_index(tmp_path, calls, n=100_000)  # raw's value is a file
    with pytest.warns(lf.CacheWarning, match="damaged"):
        tier = DiskTier(tmp_path, size_limit=10**9)
    assert len(_value_files(tmp_path)) == 1  # an orphan: no row of the fresh index names it
    tier.clear()
    assert _value_files(tmp_path) == []
    assert len(set_aside(tmp_path / "cache.db")) == 1  # the damaged index is the user's to delete
