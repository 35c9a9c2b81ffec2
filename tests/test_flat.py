"""Flat lists at buffer speed (lazyflow/keys/flat.py): never a different digest, only a faster
one, and element ids that tell every value apart that lf.hash_value tells apart."""

from __future__ import annotations

import math
import struct

from hypothesis import given
from hypothesis import strategies as st

import lazyflow as lf
from lazyflow.keys import flat, hashing
from lazyflow.keys.hashing import Hasher
from lazyflow.model.mapping import element_ids

LONG = {"min_size": flat.MIN_LENGTH, "max_size": flat.MIN_LENGTH * 3}


def generic(value: object) -> str:
    """The digest the type dispatch writes, element by element: no one-call shortcut, and no
    list or tuple inside the value written by flat.py either."""
    written_by_flat = hashing._flat_write
    hashing._flat_write = hashing._no_flat_write
    try:
        hasher = Hasher()
        hasher.value(value)
        return hasher.hexdigest()
    finally:
        hashing._flat_write = written_by_flat


# every bit pattern a float can have: NaN payloads, -0.0, infinities, subnormals
any_float = st.integers(0, 2**64 - 1).map(lambda bits: struct.unpack("<d",
                                                                     bits.to_bytes(8, "little"))[0])
edge_ints = st.sampled_from([0, 1, -1, 127, 128, -128, -129, 255, 256, 2**15 - 1, 2**15,
                             -(2**15) - 1, 2**31, 2**55 - 1, 2**55, -(2**55), 2**62,
                             2**63 - 1, -(2**63) + 1])
ints = st.integers(-(2**63) + 1, 2**63 - 1) | edge_ints
texts = st.text(st.characters(exclude_categories=()) | st.sampled_from(["\0", "\ud800", "é"]),
                max_size=12)

flat_lists = (st.lists(ints, **LONG) | st.lists(any_float, **LONG) | st.lists(texts, **LONG)
              | st.lists(st.binary(max_size=12), **LONG))


@given(flat_lists, st.booleans())
def test_a_flat_list_digests_as_the_type_dispatch_does(items, as_tuple):
    value = tuple(items) if as_tuple else items
    assert flat.list_digest(value) == generic(value)
    assert lf.hash_value(value) == generic(value)


@given(st.lists(st.integers(-(2**63) + 1, 2**63 - 1), min_size=2, max_size=9), st.integers(32, 80))
def test_runs_of_ints_of_one_width_digest_as_the_type_dispatch_does(bounds, repeat):
    # sorted ranges hold a few runs of one record width (0..127, then 128..32767, ...);
    # ``repeat`` alternating pairs make more runs than the per-run slices take
    ints_in_runs = [x for a, b in zip(bounds[:-1], bounds[1:], strict=True) for x in (a, b) * repeat]
    for items in (sorted(ints_in_runs), ints_in_runs, list(range(-70_000, 70_000, 7))):
        assert flat.list_digest(items) == generic(items)


@given(st.lists(st.integers(-(2**70), 2**70) | st.booleans() | st.floats(), **LONG))
def test_any_other_list_gets_the_digest_of_the_type_dispatch(items):
    assert lf.hash_value(items) == generic(items)


def test_lists_the_fast_path_cannot_write_take_the_type_dispatch():
    long = flat.MIN_LENGTH
    for items in ([True] * long, [1] * (long - 1) + [1.0], [2**63] * long, [-(2**63)] * long,
                  list(range(long - 1))):
        assert flat.list_digest(items) is None
        assert lf.hash_value(items) == generic(items)


@given(st.lists(ints, **LONG) | st.lists(any_float, **LONG))
def test_ids_at_buffer_speed_are_the_ids_one_by_one(items):
    assert flat.scalar_ids(items) == b"".join(flat.scalar_id(item) for item in items)


scalars = st.integers(-3, 3) | st.booleans() | st.sampled_from(
    [0.0, -0.0, 1.0, -1.0, math.nan, math.inf, 2**63, -(2**63), "1", b"1", None])


@given(st.lists(scalars, max_size=8))
def test_two_elements_share_an_id_exactly_when_they_share_a_digest(items):
    ids = element_ids(items)
    for i, a in enumerate(items):
        for j, b in enumerate(items):
            same_id = ids[16 * i:16 * i + 16] == ids[16 * j:16 * j + 16]
            assert same_id == (lf.hash_value(a) == lf.hash_value(b)), (a, b)


def test_one_true_and_one_point_zero_have_three_ids():
    ids = element_ids([1, True, 1.0])
    assert len({ids[:16], ids[16:32], ids[32:]}) == 3


@given(st.lists(ints, min_size=1, max_size=flat.MIN_LENGTH * 2), st.data())
def test_an_id_is_found_at_its_index_and_an_absent_one_is_not(items, data):
    ids = element_ids(items)
    index = data.draw(st.integers(0, len(items) - 1))
    assert items.index(items[index]) == flat.find_id(ids, ids[16 * index:16 * index + 16])
    assert flat.find_id(ids, flat.scalar_id(0.5)) == -1


@given(st.lists(ints | any_float, min_size=flat.MIN_LENGTH, max_size=flat.MIN_LENGTH * 2))
def test_ids_said_to_be_distinct_are_distinct(items):
    ids = element_ids(items)
    if flat.all_distinct(ids):
        assert len({ids[at:at + 16] for at in range(0, len(ids), 16)}) == len(items)


def test_a_repeated_id_is_never_said_to_be_distinct():
    assert not flat.all_distinct(element_ids([*range(flat.MIN_LENGTH), 5]))


@given(flat_lists, st.booleans(), st.sampled_from(["dict", "list", "tuple", "nested"]))
def test_a_flat_list_inside_a_value_digests_as_the_type_dispatch_does(items, as_tuple, holder):
    part = tuple(items) if as_tuple else items
    value = {"dict": {"part": part, "n": 1}, "list": [part, 2.5], "tuple": ("a", part),
             "nested": {"rows": [part, [part[:3]]]}}[holder]
    assert lf.hash_value(value) == generic(value)


def test_a_long_flat_list_inside_a_value_is_written_by_flat(monkeypatch):
    written = []
    monkeypatch.setattr(hashing, "_flat_write",
                        lambda update, items: written.append(len(items)) or False)
    lf.hash_value({"x": list(range(100)), "short": list(range(5))})
    assert written == [100]  # offered to flat.py; a short one is not


def test_a_hasher_registered_for_an_element_type_turns_flat_lists_off(monkeypatch):
    for table in ("_HASHERS", "_SCALARS", "_ONE_CALL", "_USER_HASHERS", "_DISPATCH_CACHE"):
        monkeypatch.setattr(hashing, table, dict(getattr(hashing, table)))
    monkeypatch.setattr(hashing, "_flat_write", hashing._flat_write)
    lf.register_hasher(float, lambda value: round(value))  # 1.0 and 1.2 are alike now
    alike, other = [1.0] * 100, [1.2] * 100
    assert lf.hash_value(alike) == lf.hash_value(other)
    assert lf.hash_value({"x": alike}) == lf.hash_value({"x": other})
