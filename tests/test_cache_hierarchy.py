"""The hierarchy over real tiers: promotion, records, stats, clear and prune."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

import lazyflow as lf
from lazyflow.cache import NO_VALUE, MemoryTier
from lazyflow.cache.remote import RemoteTier

KEY = "ab" * 16


@pytest.fixture
def cache(tmp_path):
    """Memory, disk and a local-folder remote (written at once, no background thread)."""
    built = lf.Cache(memory="100MB", disk=str(tmp_path / "disk"), remote=None)
    built.tiers.append(RemoteTier(f"file://{tmp_path}/remote", background=False))
    return built


def test_a_computed_value_is_written_to_every_tier(cache):
    cache.store(KEY, np.arange(10), {"digest": "d"})
    assert all(t.meta(KEY)["digest"] == "d" for t in cache.tiers)


def test_store_returns_the_metadata_a_lookup_then_answers(cache):
    stored = cache.store(KEY, np.arange(10), {"digest": "d"})
    meta, tier = cache.lookup(KEY)
    assert tier == "memory" and stored == meta


def test_store_returns_none_when_the_fastest_tier_keeps_nothing(tmp_path):
    cache = lf.Cache(memory=100, disk=str(tmp_path / "disk"), remote=None)
    assert cache.store(KEY, np.zeros(1000), {"digest": "d"}) is None  # over the memory budget
    assert cache.lookup(KEY)[1] == "disk"


def test_a_remote_hit_is_promoted_to_disk_and_memory(cache):
    cache.tier("remote").put(KEY, np.arange(10), {"digest": "d"})
    value, tier = cache.load(KEY)
    assert tier == "remote"
    np.testing.assert_array_equal(value, np.arange(10))
    assert cache.lookup(KEY)[1] == "memory"
    assert cache.tier("disk").meta(KEY)["digest"] == "d"


def test_records_live_on_every_tier_and_are_promoted(cache):
    cache.record(KEY, {"key": "cd" * 16, "digest": "d"})
    cache.tier("memory").clear()
    cache.tier("disk").clear()
    assert cache.find_record(KEY)["key"] == "cd" * 16
    assert cache.tier("disk").get(KEY) is NO_VALUE


def test_stats_count_entries_bytes_hits_and_misses_per_tier(cache):
    cache.store(KEY, np.zeros(1000), {"digest": "d"})
    cache.load(KEY)
    with pytest.raises(KeyError):
        cache.load("ef" * 16)
    stats = cache.stats()
    assert stats["memory"] == {"entries": 1, "hits": 1, "misses": 1, "bytes": 8000}
    assert stats["disk"]["entries"] == 1 and stats["disk"]["misses"] == 1
    assert stats["remote"]["bytes"] > 8000
    assert stats["total"] == {"hits": 1, "misses": 1}


def test_clear_of_one_tier_leaves_the_others(cache):
    cache.store(KEY, 1, {"digest": "d"})
    cache.clear("disk")
    assert cache.tier("disk").meta(KEY) is None
    assert cache.tier("remote").meta(KEY) is not None


def test_clear_names_the_configured_tiers_when_given_an_unknown_one(cache):
    with pytest.raises(KeyError, match="configured: memory, disk, remote"):
        cache.clear("tape")


def test_prune_older_than_removes_old_entries_from_disk_and_remote(cache):
    cache.store(KEY, 1, {"digest": "d"})
    report = cache.prune(older_than=dt.timedelta(0), confirm=True)
    assert report["disk"]["removed"] == report["remote"]["removed"] == 1
    assert cache.tier("memory").meta(KEY) is not None  # memory bounds itself


# --------------------------------------------------------------------------- deleting from a remote


def _held_everywhere(cache) -> bool:
    return all(cache.tier(name).meta(KEY) is not None for name in ("memory", "disk", "remote"))


def test_clearing_a_remote_without_confirmation_names_it_and_deletes_nothing(cache, tmp_path):
    cache.store(KEY, 1, {"digest": "d"})
    with pytest.raises(lf.ConfirmationError, match=rf"cache.clear\(\) would delete entries of "
                                                   rf"the remote cache file://{tmp_path}/remote.*"
                                                   r"Pass confirm=True"):
        cache.clear()
    assert _held_everywhere(cache)  # all or nothing: not even memory and disk were cleared
    assert (tmp_path / "remote").is_dir()


def test_clearing_the_remote_tier_alone_needs_confirmation_too(cache):
    cache.store(KEY, 1, {"digest": "d"})
    with pytest.raises(lf.ConfirmationError, match=r"cache.clear\('remote'\)"):
        cache.clear("remote")
    assert _held_everywhere(cache)


def test_a_confirmed_clear_empties_the_remote_too(cache):
    cache.store(KEY, 1, {"digest": "d"})
    cache.clear(confirm=True)
    assert all(cache.tier(name).meta(KEY) is None for name in ("memory", "disk", "remote"))


def test_pruning_a_remote_without_confirmation_deletes_nothing(cache):
    cache.store(KEY, 1, {"digest": "d"})
    with pytest.raises(lf.ConfirmationError, match=r"cache.prune\(\) would delete"):
        cache.prune(older_than=dt.timedelta(0))
    assert _held_everywhere(cache)


def test_pruning_the_disk_tier_alone_needs_no_confirmation(cache):
    cache.store(KEY, 1, {"digest": "d"})
    assert cache.prune(older_than=dt.timedelta(0), tier="disk")["disk"]["removed"] == 1
    assert cache.tier("remote").meta(KEY) is not None


def test_a_remote_configured_in_the_environment_is_protected_too(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYFLOW_REMOTE", f"file://{tmp_path}/team")
    cache = lf.Cache(disk=str(tmp_path / "disk"))
    cache.store(KEY, 1, {"digest": "d"})
    cache.flush()
    with pytest.raises(lf.ConfirmationError, match=f"file://{tmp_path}/team"):
        cache.clear()
    assert cache.tier("remote").meta(KEY) is not None


def test_a_refused_delete_is_a_lazyflow_error_and_a_permission_error(cache):
    with pytest.raises(lf.ConfirmationError) as refused:
        cache.clear()
    assert isinstance(refused.value, lf.LazyflowError)
    assert isinstance(refused.value, PermissionError)


def test_prune_keeps_young_entries(cache):
    cache.store(KEY, 1, {"digest": "d"})
    assert cache.prune(older_than="7d", confirm=True)["disk"]["removed"] == 0


def test_prune_to_a_size_removes_the_oldest_first(cache):
    keys = [f"{i:032x}" for i in range(4)]
    for key in keys:
        cache.store(key, np.zeros(100_000), {"digest": key})
    cache.prune(max_size="2MB", tier="disk")
    assert sorted(cache.tier("disk").keys()) == keys[2:]


def test_prune_needs_a_criterion(cache):
    with pytest.raises(ValueError, match="max_size=.*older_than="):
        cache.prune()


def test_an_age_that_is_not_one_says_how_to_write_it(cache):
    with pytest.raises(ValueError, match="'30d'"):
        cache.prune(older_than="a month")


def test_a_failing_tier_write_warns_and_the_others_still_get_the_value(cache, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("read-only file system")

    monkeypatch.setattr(cache.tier("disk"), "put", broken)
    with pytest.warns(lf.CacheWarning, match="read-only file system"):
        cache.store(KEY, 1, {"digest": "d"})
    assert cache.tier("remote").get(KEY) == 1


def test_an_unreachable_entry_is_skipped_with_a_warning_but_kept(cache, tmp_path):
    cache.tier("remote").put(KEY, np.arange(1000), {"digest": "d"})  # > 4 KiB: not inline
    (value_object,) = [p for p in (tmp_path / "remote").rglob("*") if p.is_file()
                       and p.suffix != ".json"]
    value_object.unlink()
    value_object.mkdir()  # reading it now fails with an OSError, not a checksum mismatch
    with pytest.warns(lf.CacheWarning, match="could not be read"), pytest.raises(KeyError):
        cache.load(KEY)
    assert cache.tier("remote").meta(KEY) is not None


def test_a_remote_tier_pickles_as_its_settings(cache):
    import pickle

    cache.tier("remote").put(KEY, [1, 2], {"digest": "d"})
    copy = pickle.loads(pickle.dumps(cache.tier("remote")))
    assert copy.get(KEY) == [1, 2]


class _ListedButEmpty(MemoryTier):
    """A tier whose index lists an entry whose value cannot be found (a broken store)."""

    name = "disk"

    def entry(self, key):
        raise KeyError(key)

    get = entry


def test_an_entry_listed_without_a_value_is_dropped_not_served_forever():
    broken = _ListedButEmpty(10**6)
    broken.put(KEY, 1, {"digest": "d"})
    cache = lf.Cache(tiers=[broken])
    with pytest.warns(lf.CacheWarning, match="value is missing"), pytest.raises(KeyError):
        cache.load(KEY)
    assert cache.lookup(KEY) is None


# --------------------------------------------------------------------------- a replaced entry


def _replaced_while_read(monkeypatch, tmp_path, value, digest):
    """A disk-only cache whose entry ``KEY`` (value 1, digest "one") another writer (a second
    tier on the same folder: another process) replaces with ``value`` of ``digest`` just
    after the cache read its metadata and before it reads the value."""
    from lazyflow.cache.disk import DiskTier

    cache = lf.Cache(memory="100MB", disk=str(tmp_path / "disk"), remote=None)
    disk = cache.tiers[1]
    disk.put(KEY, 1, {"digest": "one"})
    disk.flush()
    other = DiskTier(str(tmp_path / "disk"), size_limit=10**9)
    read_meta = DiskTier.meta

    def meta_then_replaced(self, key):
        found = read_meta(self, key)
        if self is disk and key == KEY:
            other.put(KEY, value, {"digest": digest})
            other.flush()
        return found

    monkeypatch.setattr(DiskTier, "meta", meta_then_replaced)
    return cache


def test_an_entry_replaced_with_another_digest_while_it_is_read_is_a_miss(monkeypatch, tmp_path):
    cache = _replaced_while_read(monkeypatch, tmp_path, 2, "two")
    with pytest.raises(KeyError):
        cache.load(KEY, digest="one")
    assert cache.tiers[0].meta(KEY) is None  # nothing promoted


def test_a_value_read_is_promoted_with_the_metadata_of_its_own_read(monkeypatch, tmp_path):
    cache = _replaced_while_read(monkeypatch, tmp_path, 2, "two")
    assert cache.load(KEY) == (2, "disk")
    assert cache.tiers[0].meta(KEY)["digest"] == "two"  # not "one", read before the value


def test_an_entry_replaced_with_the_same_digest_while_it_is_read_is_a_hit(monkeypatch, tmp_path):
    cache = _replaced_while_read(monkeypatch, tmp_path, 1, "one")
    assert cache.load(KEY, digest="one") == (1, "disk")
