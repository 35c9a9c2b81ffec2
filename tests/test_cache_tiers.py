"""The Tier contract, checked on every tier that serialises: disk and the remote backends."""

from __future__ import annotations

import pathlib
import uuid

import numpy as np
import pytest

from lazyflow.cache import NO_VALUE
from lazyflow.cache.disk import DiskTier
from lazyflow.cache.remote import RemoteTier
from lazyflow.cache.serialize import UnloadableEntryError

KEY = "ab" * 16
OTHER = "cd" * 16


class TierConformance:
    """Behaviour every tier must have; subclasses provide the ``tier`` fixture."""

    first_put_wins = False
    """A shared remote keeps the first entry of a key (a colleague's is as valid:
    docs/cache-format.md, conditional writes); a private tier replaces it."""

    def test_a_stored_value_reads_back_equal(self, tier):
        tier.put(KEY, {"a": [1, 2, 3]}, {"digest": "d1"})
        assert tier.get(KEY) == {"a": [1, 2, 3]}

    def test_a_large_array_reads_back_equal(self, tier):
        array = np.random.default_rng(1).random(300_000)
        tier.put(KEY, array, {"digest": "d1"})
        np.testing.assert_array_equal(tier.get(KEY), array)

    def test_metadata_keeps_the_callers_fields_and_describes_the_entry(self, tier):
        tier.put(KEY, np.arange(10), {"digest": "d1", "node": "clean", "params": {"p": "x"}})
        meta = tier.meta(KEY)
        assert meta["digest"] == "d1" and meta["node"] == "clean"
        assert meta["params"] == {"p": "x"}
        assert meta["serializer"] == "numpy"  # an array: no pickle (formats.py)
        assert meta["size"] > 80 and len(meta["checksum"]) == 32
        assert {"created", "stored", "lazyflow"} <= set(meta)

    def test_put_returns_nothing_or_the_metadata_it_stored(self, tier):
        stored = tier.put(KEY, np.arange(10), {"digest": "d1", "node": "clean"})
        getattr(tier, "flush", lambda: None)()
        if stored is not None:  # a tier may leave it to meta(), as the disk tier does
            assert stored["digest"] == "d1" and stored["node"] == "clean"
            assert stored["size"] == tier.meta(KEY)["size"]

    def test_a_record_carries_metadata_and_no_value(self, tier):
        tier.put(KEY, NO_VALUE, {"digest": "d1", "key": OTHER})
        assert tier.meta(KEY)["key"] == OTHER
        assert tier.get(KEY) is NO_VALUE

    def test_a_missing_key_has_no_metadata_and_no_value(self, tier):
        assert tier.meta(KEY) is None
        assert not tier.contains(KEY)
        with pytest.raises(KeyError):
            tier.get(KEY)

    def test_putting_a_key_again_replaces_its_entry_or_on_a_shared_remote_keeps_the_first(
            self, tier):
        tier.put(KEY, "old", {"digest": "d1"})
        tier.put(KEY, "new", {"digest": "d2"})
        kept = ("old", "d1") if self.first_put_wins else ("new", "d2")
        assert (tier.get(KEY), tier.meta(KEY)["digest"]) == kept

    def test_delete_removes_one_entry(self, tier):
        tier.put(KEY, 1, {"digest": "d1"})
        tier.put(OTHER, 2, {"digest": "d2"})
        tier.delete(KEY)
        assert not tier.contains(KEY)
        assert sorted(tier.keys()) == [OTHER]

    def test_clear_removes_every_entry(self, tier):
        tier.put(KEY, 1, {"digest": "d1"})
        tier.put(OTHER, NO_VALUE, {"digest": "d2"})
        tier.clear()
        assert list(tier.keys()) == []

    def test_an_interrupted_write_leaves_no_entry(self, tier, monkeypatch):
        from lazyflow.cache import serialize

        def broken_chunks(self):
            yield memoryview(self.header)
            raise OSError("disk full")

        monkeypatch.setattr(serialize.Encoded, "chunks", broken_chunks)
        with pytest.raises(OSError, match="disk full"):
            tier.put(KEY, np.arange(100_000), {"digest": "d1"})
            getattr(tier, "flush", lambda: None)()
        assert tier.meta(KEY) is None

    def test_check_answers_the_metadata_of_an_intact_entry_without_unpickling_it(
            self, tier, colleague_module):
        tier.put(KEY, colleague_module.module.Circle(2), {"digest": "d1", "node": "shape"})
        getattr(tier, "flush", lambda: None)()
        colleague_module.leave()  # get() cannot rebuild the value now; check() need not
        with pytest.raises(UnloadableEntryError):  # not corrupt: kept for whoever can load it
            tier.get(KEY)
        assert tier.check(KEY)["node"] == "shape"

    def test_check_answers_none_for_a_record_or_a_missing_key(self, tier):
        tier.put(KEY, NO_VALUE, {"digest": "d1"})
        getattr(tier, "flush", lambda: None)()
        assert tier.check(KEY) is None
        assert tier.check(OTHER) is None


@pytest.fixture
def disk_tier(tmp_path):
    return DiskTier(tmp_path / "disk", size_limit=10**9, min_file_size=4096)


class TestDiskTier(TierConformance):
    @pytest.fixture
    def tier(self, disk_tier):
        return disk_tier

    def test_an_interrupted_write_leaves_no_file_either(self, tier, monkeypatch):
        self.test_an_interrupted_write_leaves_no_entry(tier, monkeypatch)
        assert list(pathlib.Path(tier.directory).rglob("*.val")) == []


class TestLocalFolderRemote(TierConformance):
    first_put_wins = True

    @pytest.fixture
    def tier(self, tmp_path):
        return RemoteTier(f"file://{tmp_path}/remote", background=False)


class TestMemoryFilesystemRemote(TierConformance):
    first_put_wins = True

    @pytest.fixture
    def tier(self):
        return RemoteTier(f"memory://lazyflow-{uuid.uuid4().hex}", background=False)


@pytest.mark.s3
class TestS3Remote(TierConformance):
    first_put_wins = True

    @pytest.fixture
    def tier(self, s3_url, s3_options):
        return RemoteTier(s3_url, s3_options, background=False)
