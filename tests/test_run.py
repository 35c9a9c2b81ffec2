"""Run records: a node's reason, with a revision left for its first reading."""

from __future__ import annotations

import copy
import dataclasses
import functools
import pickle
import threading

from lazyflow.run import NodeRecord


def _hit_noted_later(calls: list[str]) -> NodeRecord:
    """A hit whose note on where it was computed is left for later."""
    record = NodeRecord("total", "cached", "disk")
    record.revise_reason_later(
        lambda reason: calls.append(reason) or (reason or "cached") + "; computed elsewhere")
    return record


def test_a_reason_left_for_later_is_worked_out_by_its_first_reading_only():
    calls: list[str] = []
    record = _hit_noted_later(calls)
    assert calls == []
    assert record.reason == "cached; computed elsewhere"
    assert record.reason == "cached; computed elsewhere"
    assert calls == [""]


def test_a_reason_added_to_after_a_revision_left_for_later_keeps_both_in_order():
    record = _hit_noted_later([])
    record.reason += "; caught by 'report'"
    assert record.reason == "cached; computed elsewhere; caught by 'report'"


def test_a_reason_set_anew_drops_the_revision_left_for_later():
    calls: list[str] = []
    record = _hit_noted_later(calls)
    record.reason = "the cached entry vanished"
    assert record.reason == "the cached entry vanished"
    assert calls == []


def test_a_record_shows_its_reason_as_it_reads():
    assert "reason='cached; computed elsewhere'" in repr(_hit_noted_later([]))


def test_a_reason_read_on_two_threads_at_once_holds_its_revision_once():
    both = threading.Barrier(2, timeout=30)

    def revise(reason: str) -> str:
        both.wait()  # both readers are working it out at once
        return "cached; computed elsewhere"

    record = NodeRecord("total", "cached")
    record.revise_reason_later(revise)
    read: list[str] = []
    threads = [threading.Thread(target=lambda: read.append(record.reason)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert read == ["cached; computed elsewhere"] * 2
    assert record.reason == "cached; computed elsewhere"


class _Uncopyable:
    """Stands for what a revision may hold that neither pickles nor copies (the cache)."""

    def __reduce__(self):
        raise TypeError("cannot pickle this")


def _hit_holding_the_uncopyable() -> NodeRecord:
    record = NodeRecord("total", "cached", "disk")
    record.revise_reason_later(functools.partial(_noted, _Uncopyable()))
    return record


def _noted(held: _Uncopyable, reason: str) -> str:
    return (reason or "cached") + "; elsewhere"


def test_a_record_with_a_revision_left_for_later_pickles_with_its_reason_worked_out():
    copied = pickle.loads(pickle.dumps(_hit_holding_the_uncopyable()))
    assert copied.reason == "cached; elsewhere"
    assert copied.settled_reason() == "cached; elsewhere"


def test_a_record_with_a_revision_left_for_later_deep_copies_with_its_reason_worked_out():
    assert copy.deepcopy(_hit_holding_the_uncopyable()).reason == "cached; elsewhere"


def test_a_record_with_a_revision_left_for_later_converts_to_a_dict():
    assert dataclasses.asdict(_hit_holding_the_uncopyable())["name"] == "total"
