"""The memory tier: an LRU of live values bounded by bytes, safe under real threads."""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest

import lazyflow as lf
from lazyflow.cache.base import NO_VALUE, Tier
from lazyflow.cache.memory import MemoryTier, sizeof

MB = 10**6


def sized(n: int) -> np.ndarray:
    """A value whose size the tier knows exactly: ``n`` bytes."""
    return np.zeros(n, dtype=np.uint8)


def test_the_memory_tier_satisfies_the_tier_protocol():
    assert isinstance(MemoryTier(100), Tier)


def test_an_immutable_value_comes_back_as_the_same_object_with_its_metadata():
    tier = MemoryTier(1000)
    value = (1, "two", (3.0, None))
    tier.put("k", value, {"digest": "d"})
    assert tier.get("k") is value
    assert tier.meta("k") == {"digest": "d", "size": sizeof(value)}
    assert tier.contains("k")


def test_put_returns_the_metadata_held_with_its_size():
    tier = MemoryTier(1000)
    stored = tier.put("k", (1, 2, 3), {"digest": "d"})
    assert stored == tier.meta("k") == {"digest": "d", "size": sizeof((1, 2, 3))}


def test_put_of_a_value_over_the_budget_keeps_nothing_and_returns_none():
    tier = MemoryTier(100)
    assert tier.put("k", sized(1000), {"digest": "d"}) is None
    assert not tier.contains("k")


def test_a_missing_key_has_no_metadata_and_get_raises_key_error():
    tier = MemoryTier(1000)
    assert tier.meta("nope") is None
    assert not tier.contains("nope")
    with pytest.raises(KeyError):
        tier.get("nope")


def test_the_least_recently_used_entries_are_evicted_to_stay_within_the_byte_budget():
    tier = MemoryTier(1000)
    for key in "abc":
        tier.put(key, sized(400), {"digest": key})
    assert list(tier.keys()) == ["b", "c"]
    assert tier.nbytes == 800


def test_reading_an_entry_makes_it_recently_used():
    tier = MemoryTier(1000)
    tier.put("a", sized(400), {"digest": "a"})
    tier.put("b", sized(400), {"digest": "b"})
    tier.get("a")
    tier.put("c", sized(400), {"digest": "c"})
    assert sorted(tier.keys()) == ["a", "c"]


def test_a_value_larger_than_the_budget_is_not_kept_and_drops_an_older_entry_of_that_key():
    tier = MemoryTier(1000)
    tier.put("small", sized(10), {"digest": "s"})
    tier.put("big", sized(10), {"digest": "old"})
    tier.put("big", sized(2000), {"digest": "new"})
    assert not tier.contains("big")
    assert tier.contains("small")
    assert tier.nbytes == 10


def test_replacing_an_entry_accounts_its_bytes_once():
    tier = MemoryTier(1000)
    tier.put("k", sized(300), {"digest": "1"})
    tier.put("k", sized(500), {"digest": "2"})
    assert tier.nbytes == 500
    assert tier.meta("k") == {"digest": "2", "size": 500}


def test_a_size_in_the_metadata_is_trusted_over_an_estimate():
    tier = MemoryTier(1000)
    tier.put("k", [1], {"digest": "d", "size": 900})
    assert tier.nbytes == 900


def test_records_without_a_value_cost_a_small_fixed_size():
    tier = MemoryTier(1000)
    tier.put("r", NO_VALUE, {"digest": "d", "key": "k"})
    assert tier.nbytes == 64
    assert tier.get("r") is NO_VALUE


def test_delete_and_clear_release_their_bytes():
    tier = MemoryTier(1000)
    tier.put("a", sized(100), {"digest": "a"})
    tier.put("b", sized(200), {"digest": "b"})
    tier.delete("a")
    tier.delete("never-stored")
    assert tier.nbytes == 200 and list(tier.keys()) == ["b"]
    tier.clear()
    assert tier.nbytes == 0 and list(tier.keys()) == []


def test_concurrent_puts_gets_and_deletes_keep_the_books_balanced():
    tier = MemoryTier(50_000)
    threads, rounds = 8, 2000
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(rounds):
                key = f"k{(worker * 7 + i) % 40}"
                tier.put(key, sized(100 + (i % 13) * 100), {"digest": key})
                with contextlib.suppress(KeyError):  # evicted or deleted by another thread
                    tier.get(f"k{(worker + i) % 40}")
                if i % 5 == 0:
                    tier.delete(f"k{(worker * 3 + i) % 40}")
        except BaseException as e:  # reported below: a thread must not die silently
            errors.append(e)

    pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    held = list(tier.keys())
    assert tier.nbytes == sum(tier.get(k).nbytes for k in held)
    assert tier.nbytes <= tier.max_bytes
    assert all(tier.meta(k)["digest"] == k for k in held)


class Holder:
    """A plain object whose attribute holds the data."""

    def __init__(self, data: object) -> None:
        self.data = data


HOLDING = {"array": lambda a: a, "dict_of_lists": lambda a: {"a": [[a]]},
           "instance": Holder, "list_of_instances": lambda a: [Holder([a])]}


def holding_flow(nbytes: int) -> lf.Flow:
    """Four nodes, each returning a value that holds an array of ``nbytes`` in its own way."""
    flow = lf.Flow("holding", cache=lf.Cache(memory="5MB", disk=None, remote=None))
    for name, wrap in HOLDING.items():
        flow.node(name=name)(lambda wrap=wrap: wrap(np.ones(nbytes // 8)))
    return flow


def test_values_holding_an_array_larger_than_the_budget_are_not_kept():
    flow = holding_flow(8 * MB)
    run = flow.run(list(HOLDING))
    memory = flow.cache.tier("memory")
    assert not any(memory.contains(run.nodes[name].key) for name in HOLDING)
    assert memory.nbytes < MB  # the trace records only


def test_values_holding_arrays_are_evicted_to_keep_the_budget():
    flow = holding_flow(2 * MB)
    run = flow.run(list(HOLDING))
    memory = flow.cache.tier("memory")
    kept = [name for name in HOLDING if memory.contains(run.nodes[name].key)]
    assert 1 <= len(kept) <= 2
    assert memory.nbytes <= memory.max_bytes
    assert all(memory.meta(run.nodes[name].key)["size"] >= 2 * MB for name in kept)
