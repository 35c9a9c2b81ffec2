"""Values the cache hands out are safe to change: the cached value never changes with them."""

from __future__ import annotations

import contextlib
import dataclasses
import threading

import numpy as np
import pandas as pd
import pytest

import lazyflow as lf
from lazyflow.cache import snapshot as snapshots
from lazyflow.cache.memory import MemoryTier
from lazyflow.cache.remote import RemoteTier

KEY = "ab" * 16


class Model:
    """A user class holding an array and a list, as a fitted model might."""

    def __init__(self) -> None:
        self.weights = np.arange(5.0)
        self.history = [1, 2]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Model) and np.array_equal(self.weights, other.weights)
                and self.history == other.history)


@dataclasses.dataclass
class Client:
    """Hashable field by field, but a lock cannot be pickled: the tier cannot copy it."""

    items: list
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


@pytest.fixture
def memory_flow():
    return lf.Flow("safe", cache=lf.Cache(memory="100MB", disk=None, remote=None))


@pytest.fixture
def both(tmp_path):
    """A cache with a memory and a disk tier."""
    return lf.Cache(memory="100MB", disk=str(tmp_path / "disk"), remote=None)


def frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]},
                        index=pd.Index([10, 20, 30], name="id"))


# --------------------------------------------------------------------------- what a user gets


def test_clearing_a_list_returned_by_get_does_not_change_the_cached_list(memory_flow, calls):
    @memory_flow.node
    def numbers():
        calls["numbers"] += 1
        return [1, 2, [3]]

    for _ in range(2):  # the fresh value, then the one served from memory
        got = memory_flow.get("numbers")
        got[2].append(4)
        got.clear()
    assert memory_flow.get("numbers") == [1, 2, [3]]
    assert calls["numbers"] == 1


def test_changing_a_nested_dict_returned_by_get_does_not_change_the_cached_dict(memory_flow):
    @memory_flow.node
    def config():
        return {"a": {"b": [1]}, "c": 2}

    for _ in range(2):
        got = memory_flow.get("config")
        got["a"]["b"].append(2)
        got["c"] = 3
    assert memory_flow.get("config") == {"a": {"b": [1]}, "c": 2}


def test_arrays_served_from_memory_are_read_only_views_of_an_unchanged_array(memory_flow):
    @memory_flow.node
    def signal():
        return np.arange(5.0)

    fresh = memory_flow.get("signal")
    fresh[0] = 100.0  # the function's own array: the cache kept a copy
    served = memory_flow.get("signal")
    np.testing.assert_array_equal(served, np.arange(5.0))
    with pytest.raises(ValueError, match="read-only"):
        served[0] = 100.0
    with pytest.raises(ValueError):
        served.flags.writeable = True  # a view of a read-only array cannot be made writable
    writable = served.copy()
    writable[0] = 100.0
    np.testing.assert_array_equal(memory_flow.get("signal"), np.arange(5.0))


def test_changing_a_frame_returned_by_get_does_not_change_the_cached_frame(memory_flow):
    @memory_flow.node
    def table():
        return frame()

    for _ in range(2):
        got = memory_flow.get("table")
        got.loc[10, "a"] = -1.0
        got["c"] = 0
        got.index.name = "changed"
        got.attrs["note"] = "changed"
    pd.testing.assert_frame_equal(memory_flow.get("table"), frame())
    assert memory_flow.get("table").attrs == {}


def test_changing_an_object_returned_by_get_does_not_change_the_cached_object(memory_flow):
    @memory_flow.node
    def model():
        return Model()

    for _ in range(2):
        got = memory_flow.get("model")
        got.history.append(3)
        got.weights = got.weights * 0
    assert memory_flow.get("model") == Model()


# --------------------------------------------------------------------------- what a node gets


def test_a_node_appending_to_its_input_list_does_not_change_the_cached_upstream(memory_flow,
                                                                                calls):
    @memory_flow.node
    def raw():
        calls["raw"] += 1
        return [1, 2, 3]

    @memory_flow.node
    def grown(raw):
        raw.append(100)
        return len(raw)

    assert memory_flow.get("grown") == 4  # raw computed now and handed to grown
    assert memory_flow.get("raw") == [1, 2, 3]
    assert calls["raw"] == 1  # served from memory, unchanged


def test_a_node_changing_an_input_served_from_memory_does_not_change_the_cache(memory_flow):
    @memory_flow.node
    def raw():
        return {"rows": [1, 2, 3]}

    memory_flow.get("raw")

    @memory_flow.node
    def trimmed(raw):
        raw["rows"].pop()
        return raw["rows"]

    assert memory_flow.get("trimmed") == [1, 2]
    assert memory_flow.get("raw") == {"rows": [1, 2, 3]}


def test_a_node_writing_into_an_input_array_served_from_memory_fails_loudly(memory_flow):
    @memory_flow.node
    def raw():
        return np.zeros(3)

    memory_flow.get("raw")

    @memory_flow.node
    def bumped(raw):
        raw += 1
        return raw

    with pytest.raises(ValueError, match="read-only"):
        memory_flow.get("bumped")
    np.testing.assert_array_equal(memory_flow.get("raw"), np.zeros(3))


# --------------------------------------------------------------------------- memory and disk agree


VALUES = {
    "nested": {"a": [[np.arange(4.0)]], "b": ("t", 1), "c": {1, 2}},
    "frame": frame(),
    "series": frame()["a"],
    "shared": (lambda inner: [inner, inner, {"again": inner}])([1, 2]),
    "object-array": np.array([[1], "x", None], dtype=object),
    "tuple": (1, "two", 3.0, None, (4,)),
    "array": np.arange(12.0).reshape(3, 4).T,
}


@pytest.mark.parametrize("name", VALUES)
def test_a_value_served_from_memory_equals_the_one_served_from_disk(both, name):
    value = VALUES[name]
    both.store(KEY, value, {"digest": lf.hash_value(value)})
    from_memory = both.tier("memory").get(KEY)
    from_disk = both.tier("disk").get(KEY)
    assert type(from_memory) is type(from_disk) is type(value)
    assert lf.hash_value(from_memory) == lf.hash_value(from_disk) == lf.hash_value(value)


def test_an_object_served_from_memory_equals_the_one_served_from_disk(both):
    # compared with ==: the digest of an object of a user class comes from its pickle
    # bytes, which differ for a read-only array (hashing.py, a known quirk)
    both.store(KEY, Model(), {"digest": "d"})
    from_memory = both.tier("memory").get(KEY)
    assert type(from_memory) is Model and from_memory == both.tier("disk").get(KEY) == Model()


def test_references_shared_inside_a_value_stay_shared(both):
    inner = [1]
    both.store(KEY, [inner, inner], {"digest": "d"})
    for tier in ("memory", "disk"):
        got = both.tier(tier).get(KEY)
        assert got[0] is got[1]


def test_a_flow_answers_the_same_from_memory_and_from_disk(tmp_path):
    flow = lf.Flow("agree", cache=lf.Cache(memory="100MB", disk=str(tmp_path), remote=None))

    @flow.node
    def result():
        return {"arrays": [np.arange(3.0)], "table": frame(), "model": Model()}

    flow.get("result")
    run = flow.run("result")
    from_memory = run["result"]
    flow.cache.clear("memory")
    run_disk = flow.run("result")
    assert (run.nodes["result"].tier, run_disk.nodes["result"].tier) == ("memory", "disk")
    assert lf.hash_value(from_memory) == lf.hash_value(run_disk["result"])


# --------------------------------------------------------------------------- the tier itself


def test_an_immutable_value_is_handed_out_without_a_copy():
    tier = MemoryTier(10_000)
    value = ("a", 1, (2.0, None), frozenset({"x"}))
    tier.put(KEY, value, {"digest": "d"})
    assert tier.get(KEY) is value


def test_the_tier_keeps_a_copy_of_an_array_it_is_given(memory_flow):
    tier = MemoryTier(10_000)
    array = np.zeros(3)
    tier.put(KEY, array, {"digest": "d"})
    array[0] = 1.0  # its owner may still write it
    assert array.flags.writeable
    np.testing.assert_array_equal(tier.get(KEY), np.zeros(3))


def test_a_promoted_array_is_adopted_without_a_copy(both):
    both.tier("disk").put(KEY, np.arange(1000.0), {"digest": "d"})
    value, tier = both.load(KEY)
    assert tier == "disk" and not value.flags.writeable
    again, tier = both.load(KEY)
    assert tier == "memory" and np.shares_memory(value, again)


def _write_through_the_flag(array: np.ndarray) -> None:
    """What a caller told "assignment destination is read-only" does, when numpy lets it."""
    with contextlib.suppress(ValueError):
        array.flags.writeable = True
        array[0] = -1.0


@pytest.mark.parametrize("n", [1000, 300_000], ids=["small", "large"])
def test_a_promoted_array_made_writeable_again_by_its_caller_keeps_the_cached_one(both, n):
    both.tier("disk").put(KEY, np.arange(float(n)), {"digest": "d"})
    value, tier = both.load(KEY)
    assert tier == "disk"
    _write_through_the_flag(value)
    again, tier = both.load(KEY)
    assert tier == "memory" and again[0] == 0.0


def test_an_array_in_a_promoted_dict_made_writeable_again_keeps_the_cached_one(both):
    both.tier("disk").put(KEY, {"a": np.arange(300_000.0)}, {"digest": "d"})
    value, _ = both.load(KEY)
    _write_through_the_flag(value["a"])
    again, tier = both.load(KEY)
    assert tier == "memory" and again["a"][0] == 0.0


def test_a_promoted_list_is_handed_out_and_kept_apart(both):
    both.tier("disk").put(KEY, [1, [2]], {"digest": "d"})
    value, _ = both.load(KEY)
    value[1].append(3)
    assert both.load(KEY) == ([1, [2]], "memory")


def test_a_value_over_the_budget_is_not_copied_past_the_budget():
    reached = []

    class Tail:
        def __reduce__(self):
            reached.append(True)
            return Tail, ()

    tier = MemoryTier(100_000)
    assert tier.put(KEY, [b"x" * 200_000, Tail()], {"digest": "d"}) is None
    assert not tier.contains(KEY) and reached == []


def test_frames_are_deep_copied_where_pandas_does_not_copy_on_write(monkeypatch):
    monkeypatch.setattr(snapshots, "_copy_on_write", lambda pandas: False)
    tier = MemoryTier(10**6)
    original = frame()
    tier.put(KEY, original, {"digest": "d"})
    got = tier.get(KEY)
    assert not np.shares_memory(got["a"].to_numpy(), original["a"].to_numpy())
    got.loc[10, "a"] = -1.0
    pd.testing.assert_frame_equal(tier.get(KEY), frame())


def test_a_value_that_cannot_be_copied_is_served_until_it_is_changed():
    cache = lf.Cache(memory="1MB", disk=None, remote=None)
    client = Client([1, 2])
    cache.store(KEY, client, {"digest": lf.hash_value(client)})
    assert cache.load(KEY) == (client, "memory")
    client.items.append(3)  # its holder changes it: the entry no longer matches its digest
    with pytest.warns(lf.CacheWarning, match="changed in place"), pytest.raises(KeyError):
        cache.load(KEY)  # dropped, not served
    assert not cache.tier("memory").contains(KEY)


def test_a_value_that_can_be_neither_copied_nor_hashed_is_not_kept():
    tier = MemoryTier(10**6)
    with pytest.warns(lf.CacheWarning, match="neither copied nor hashed"):
        assert tier.put(KEY, [threading.Lock(), lambda: None, (x for x in [])],
                        {"digest": "d", "node": "n"}) is None


class Unloadable:
    """Pickles, but raises when unpickled."""

    def __reduce__(self):
        return _refuse, ()


def _refuse():
    raise RuntimeError("cannot be rebuilt")


def test_a_kept_copy_that_does_not_unpickle_is_dropped_not_served():
    cache = lf.Cache(memory="1MB", disk=None, remote=None)
    cache.store(KEY, [Unloadable()], {"digest": "d"})
    with pytest.warns(lf.CacheWarning, match="does not unpickle"), pytest.raises(KeyError):
        cache.load(KEY)
    assert not cache.tier("memory").contains(KEY)


def test_a_remote_hit_is_written_to_disk_as_decoded_before_memory_adopts_it(tmp_path):
    cache = lf.Cache(memory="1MB", disk=str(tmp_path / "disk"), remote=None)
    cache.tiers.append(RemoteTier(f"file://{tmp_path}/remote", background=False))
    cache.tier("remote").put(KEY, np.arange(10.0), {"digest": "d"})
    assert cache.load(KEY)[1] == "remote"
    assert cache.tier("disk").get(KEY).flags.writeable  # as a process without memory reads it


def test_a_cached_target_collected_at_the_end_is_handed_over_without_a_copy(
        tmp_path, monkeypatch):
    flow = lf.Flow("big", cache=lf.Cache(memory=None, disk=str(tmp_path / "cache")))

    @flow.node
    def big(n: int):
        return np.arange(n, dtype=np.float64)

    expected = flow.get("big", n=1000)

    def no_copy(value):
        raise AssertionError("the collected target was copied for later readers")

    monkeypatch.setattr("lazyflow.engine.vanished.shareable", no_copy)
    run = flow.run("big", n=1000)
    assert run.nodes["big"].status == "cached"
    np.testing.assert_array_equal(run["big"], expected)
