"""Sizes: what a live value holds, as the memory tier's byte budget counts it."""

from __future__ import annotations

import decimal
import sys

import numpy as np
import pandas as pd
import pytest

from lazyflow.cache.sizes import LIMIT, format_size, parse_size, sizeof

MB = 10**6


class Holder:
    """A plain object whose attribute holds the data."""

    def __init__(self, data: object) -> None:
        self.data = data


class Slotted:
    """An object without a ``__dict__``: its data is in slots."""

    __slots__ = ("data", "other")

    def __init__(self, data: object) -> None:
        self.data = data
        self.other = [1, 2]


class Counted:
    """An object that counts how often its size is asked for: each ask is one object looked at."""

    __slots__ = ("next",)
    looked = 0

    def __init__(self, nxt: Counted | None = None) -> None:
        self.next = nxt

    def __sizeof__(self) -> int:
        Counted.looked += 1
        return 100


@pytest.fixture
def counted():
    Counted.looked = 0
    return Counted


@pytest.mark.parametrize("wrap", [
    lambda a: a,
    lambda a: {"a": [[a]]},
    lambda a: Holder(a),
    lambda a: Slotted(a),
    lambda a: (a,),
    lambda a: Holder({"nested": [Holder(a)]}),
], ids=["array", "dict-of-lists", "object", "slots", "tuple", "objects-and-containers"])
def test_an_array_counts_its_bytes_wherever_it_is_held(wrap):
    array = np.ones(1_000_000)  # 8 MB
    assert array.nbytes <= sizeof(wrap(array)) < array.nbytes + 10_000


def test_an_object_reachable_twice_is_counted_once():
    array = np.ones(1_000_000)
    assert sizeof([array, array, {"again": array}, Holder(array)]) < array.nbytes + 10_000


def test_a_view_counts_the_array_it_keeps_alive_once():
    base = np.ones(1_000_000)
    assert sizeof(base[:10]) == base.nbytes
    assert base.nbytes < sizeof([base[:10], base[10:], base]) < base.nbytes + 1_000


def test_bytes_strings_and_distinct_elements_add_up():
    assert sizeof(b"x" * MB) >= MB
    assert sizeof("x" * MB) >= MB
    assert sizeof(bytearray(MB)) >= MB
    assert sizeof([bytes([i]) * 1000 for i in range(10)]) >= 10_000
    assert sizeof([bytes([1]) * 1000] * 10) < 2_000  # one bytes object, ten references


def test_a_frame_counts_its_columns_and_the_python_objects_in_its_cells():
    n = 100_000
    frame = pd.DataFrame({"x": np.zeros(n), "o": [decimal.Decimal(i) for i in range(n)]})
    cells = n * sys.getsizeof(decimal.Decimal(1))
    assert 8 * n + 8 * n + 0.9 * cells < sizeof(frame) < 8 * n + 8 * n + 1.1 * cells + 10_000


def test_a_huge_container_is_sized_from_a_sample_within_the_limit(counted):
    value = [[counted() for _ in range(1000)] for _ in range(1000)]
    true_size = (1_000_000 * sys.getsizeof(value[0][0]) + 1000 * sys.getsizeof(value[0])
                 + sys.getsizeof(value))
    counted.looked = 0
    estimate = sizeof(value)
    assert counted.looked <= LIMIT
    assert 0.9 * true_size < estimate < 1.1 * true_size


def test_a_deeply_nested_value_is_sized_without_recursion_and_within_the_limit(counted):
    chain = None
    for _ in range(100_000):  # far deeper than Python's recursion limit
        chain = counted(chain)
    assert sizeof(chain) > 100 * LIMIT // 2  # what was looked at (the rest is estimated)
    assert counted.looked <= LIMIT


def test_a_limit_bounds_the_objects_looked_at(counted):
    sizeof([counted() for _ in range(10_000)], limit=50)
    assert counted.looked <= 50


def test_classes_functions_and_modules_are_not_walked_into():
    assert sizeof(Holder(np)) < 1_000
    assert sizeof([Holder, sizeof]) < sys.getsizeof(Holder) + sys.getsizeof(sizeof) + 200


def test_sizes_parse_and_format_for_people():
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    assert format_size(2_500_000) == "2.5 MB"


@pytest.mark.parametrize("value", [(), ((),), [[]], {"a": ()}, (b"ids", (1, 2), ())],
                         ids=repr)
def test_an_empty_container_inside_a_value_is_sized_by_its_own_bytes(value):
    assert sizeof(value) >= sys.getsizeof(value)
