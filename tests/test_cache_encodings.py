"""Encodings without code execution (docs/cache-format.md, "Bytes"): bytes, JSON values,
numpy arrays and plain pandas values are stored so that a hit unpickles nothing; a value a
format would not give back exactly is pickled; plain entries are stamped encoding 2."""

from __future__ import annotations

import enum
import json
import math
import pickle
import struct
import warnings

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lazyflow as lf
from lazyflow.cache import formats, serialize
from lazyflow.cache.disk import DiskTier
from lazyflow.cache.remote import RemoteTier
from lazyflow.cache.serialize import CorruptEntryError, Encoded, UnloadableEntryError

KEY = "ab" * 16

JSON_VALUES = {
    "None": None, "True": True, "a big int": -(2**200), "a float": 1.25, "-0.0": -0.0,
    "nan": math.nan, "infinity": -math.inf, "a str": "é\ud800\n\"", "an empty list": [],
    "a list": [1, 1.0, True, None, "x", [2, [3.5]]],
    "a dict": {"z": 1, "a": 1.0, "m": True, "n": -0.0, "nested": {"k": [None]}},
}

ARRAYS = {
    "float 2-d": np.arange(12.0).reshape(3, 4),
    "Fortran order": np.asfortranarray(np.arange(12).reshape(3, 4)),
    "a strided view": np.arange(20)[::3],
    "0-d": np.array(7, dtype=np.int16),
    "empty": np.zeros((0, 3)),
    "datetime64": np.arange(4).astype("datetime64[s]"),
    "timedelta64": np.arange(4).astype("timedelta64[ms]"),
    "unicode": np.array(["ab", "c", ""]),
    "bytes": np.array([b"ab", b"c"]),
    "bool": np.array([True, False]),
    "complex": np.array([1 + 2j, -0.0j]),
    "big-endian": np.arange(5, dtype=">i4"),
    "float16 with nan": np.array([np.nan, -0.0, 1], dtype=np.float16),
}


def _frames() -> dict[str, pd.DataFrame | pd.Series]:
    return {
        "numbers": pd.DataFrame({"i": np.arange(5), "b": np.arange(5, dtype="int8"),
                                 "u": np.arange(5, dtype="uint64"),
                                 "f": [0.0, -0.0, np.nan, np.inf, 1.5],
                                 "f32": np.arange(5, dtype="float32"),
                                 "bool": [True, False, True, False, True]}),
        "strings": pd.DataFrame({"s": ["a", "b", None, "d", "e"],
                                 "p": pd.array(["x", None, "y", "z", "w"],
                                               dtype="string[pyarrow]")}),
        "times": pd.DataFrame({"ns": pd.date_range("2020", periods=3),
                               "s": pd.date_range("2020", periods=3).as_unit("s"),
                               "tz": pd.date_range("2020", periods=3, tz="Europe/Paris"),
                               "nat": pd.to_datetime(["2020-01-01", None, "2021-02-03"]),
                               "td": pd.to_timedelta(np.arange(3), unit="s"),
                               "period": pd.period_range("2020", periods=3, freq="M")}),
        "nullable": pd.DataFrame({"I": pd.array([1, None, 3], dtype="Int64"),
                                  "F": pd.array([1.0, None, 3], dtype="Float64"),
                                  "B": pd.array([True, None, False], dtype="boolean")}),
        "categories": pd.DataFrame({"c": pd.Categorical(["x", "y", "x"]),
                                    "o": pd.Categorical([1, 2, 1], ordered=True)}),
        "a string index": pd.DataFrame({"a": np.arange(3)},
                                       index=pd.Index(list("abc"), name="k")),
        "a range index": pd.DataFrame({"a": np.arange(3)},
                                      index=pd.RangeIndex(2, 8, 2, name="r")),
        "a float index": pd.DataFrame({"a": np.arange(3)}, index=[0.5, 1, -0.0]),
        "a datetime index": pd.DataFrame({"a": np.arange(3)}, index=pd.DatetimeIndex(
            ["2020-01-03", "2020-01-01", "2020-01-02"])),
        "named columns": pd.DataFrame({"a": [1]}).rename_axis(columns="cols"),
        "no rows": pd.DataFrame({"a": np.array([], dtype="int64")}),
        "a named series": pd.Series([1.5, 2.0], name="v"),
        "an unnamed series": pd.Series(["x", "y"], index=["a", "b"]),
    }


def _pickled_frames() -> dict[str, pd.DataFrame | pd.Series]:
    """Values Arrow would not give back exactly: pickled, as before."""
    with_attrs = pd.DataFrame({"a": [1]})
    with_attrs.attrs["unit"] = "m"
    return {
        "object column": pd.DataFrame({"o": [1, "x", None]}),
        "python strings": pd.DataFrame({"s": pd.array(["x", None], dtype="string[python]")}),
        "a frequency": pd.DataFrame({"a": np.arange(3)}, index=pd.date_range("2020", periods=3)),
        "int column labels": pd.DataFrame({0: [1], 1: [2]}),
        "no columns": pd.DataFrame(),
        "a multi-index": pd.DataFrame({"a": np.arange(4)}, index=pd.MultiIndex.from_product(
            [[1, 2], ["x", "y"]])),
        "attrs": with_attrs,
        "complex": pd.DataFrame({"c": np.array([1j, 2])}),
        "big-endian": pd.DataFrame({"a": np.arange(3, dtype=">i4")}),
        "duplicate columns": pd.DataFrame([[1, 2]], columns=["a", "a"]),
        "an int series name": pd.Series([1, 2], name=3),
        "object labels": pd.DataFrame({"a": [1]}, index=pd.Index(["x"], dtype=object)),
    }


def _same(back: object, value: object) -> bool:
    """Whether ``back`` is ``value`` exactly: type, dtype, layout, every bit of every float."""
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(back, value, check_exact=True, check_index_type=True,
                                      check_column_type=True, check_frame_type=True,
                                      check_freq=True, check_flags=True)
        return list(back.dtypes) == list(value.dtypes) and back.attrs == value.attrs
    if isinstance(value, pd.Series):
        pd.testing.assert_series_equal(back, value, check_exact=True, check_index_type=True,
                                       check_series_type=True, check_freq=True)
        return back.name == value.name
    if isinstance(value, np.ndarray):
        contiguous = value.flags.c_contiguous or value.flags.f_contiguous
        layout = (value.flags.c_contiguous, value.flags.f_contiguous) if contiguous else \
            (True, back.flags.f_contiguous)  # a strided view comes back C-ordered, as pickled
        return (type(back) is np.ndarray and back.dtype == value.dtype
                and back.shape == value.shape and back.tobytes() == value.tobytes()
                and (back.flags.c_contiguous, back.flags.f_contiguous) == layout
                and back.flags.writeable)
    return pickle.dumps(back) == pickle.dumps(value)  # types, float bits, key order


def _refuse_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way to unpickle raises from now on: what passes after it unpickled nothing."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("something was unpickled")

    for module in (pickle, cloudpickle):
        for name in ("loads", "load", "Unpickler"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)


@pytest.fixture(params=["disk", "folder remote", "s3 remote"])
def tiers(request, tmp_path):
    """A writer's tier and a fresh reader's on the same storage."""
    if request.param == "disk":
        def disk():
            return DiskTier(tmp_path / "disk", size_limit=2**30)
        return disk
    if request.param == "folder remote":
        url, options = f"file://{tmp_path / 'mount'}", {}
    else:
        url, options = request.getfixturevalue("s3_url"), request.getfixturevalue("s3_options")
    return lambda: RemoteTier(url, options, background=False)


def _stored(tiers, value: object) -> tuple[object, dict[str, object]]:
    """``value`` written by one tier and read back by a fresh one, with its metadata."""
    writer = tiers()
    writer.put(KEY, value, {"digest": lf.hash_value(value)})
    getattr(writer, "flush", lambda: None)()
    reader = tiers()
    return reader.get(KEY), dict(reader.meta(KEY))


# --------------------------------------------------------------------------- read back, unpickled


@pytest.mark.parametrize("value", [*JSON_VALUES.values(), b"\x00raw bytes", *ARRAYS.values(),
                                   *_frames().values()],
                         ids=[*JSON_VALUES, "bytes", *(f"array: {k}" for k in ARRAYS),
                              *_frames()])
def test_a_plain_value_reads_back_exactly_and_unpickles_nothing(tiers, value):
    _, meta = _stored(tiers, value)  # written with pickle available, as a colleague did
    with pytest.MonkeyPatch.context() as patched:
        _refuse_unpickling(patched)
        back = tiers().get(KEY)
    assert meta["serializer"] in formats.SERIALIZERS and meta["encoding"] == 2
    assert _same(back, value)
    assert lf.hash_value(back) == lf.hash_value(value)


NAN_WITH_PAYLOAD = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_DEAD_BEEF))[0]
FLAT_LISTS = {
    "ints across record widths": list(range(-70_000, 70_000, 7)),
    "int64 extremes": [-(2**63), 2**63 - 1, 0] * 30,
    "floats": [-0.0, math.inf, -math.inf, 5e-324, NAN_WITH_PAYLOAD, 1 / 3] * 20,
}


@pytest.mark.parametrize("value", FLAT_LISTS.values(), ids=FLAT_LISTS)
def test_a_long_list_of_ints_or_floats_reads_back_exactly_as_flat_machine_values(tiers, value):
    _, meta = _stored(tiers, value)
    with pytest.MonkeyPatch.context() as patched:
        _refuse_unpickling(patched)
        back = tiers().get(KEY)
    assert (meta["serializer"], meta["encoding"]) == ("flat", 3)
    assert _same(back, value)
    assert lf.hash_value(back) == lf.hash_value(value)


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=64, max_size=300)
       | st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=64, max_size=300))
def test_any_long_list_of_int64_ints_or_floats_round_trips_bit_for_bit(items):
    encoded = serialize.encode(items)
    assert encoded.serializer == "flat"
    assert pickle.dumps(serialize.decode(encoded)) == pickle.dumps(items)


class Count(int):
    """An int subclass: a list of these is not a list of ints."""


@pytest.mark.parametrize("extreme", [127, 128, -128, -129, 2**15 - 1, 2**15, -(2**15) - 1,
                                     2**31 - 1, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63)])
def test_ints_are_stored_in_the_fewest_bytes_that_hold_them_and_read_back_exactly(extreme):
    items = [0] * 63 + [extreme]
    encoded = serialize.encode(items)
    width = next(size for size in (1, 2, 4, 8) if -(2 ** (8 * size - 1)) <= extreme
                 < 2 ** (8 * size - 1))
    assert (encoded.serializer, len(encoded.frames[1])) == ("flat", 64 * width)
    assert pickle.dumps(serialize.decode(encoded)) == pickle.dumps(items)


def test_lists_the_flat_form_would_change_are_not_stored_flat():
    for items in ([True] * 64, [1] * 63 + [True], [1] * 63 + [2**63], [1] * 63 + [1.0],
                  [Count(1)] * 64, list(range(63))):
        assert serialize.encode(items).serializer != "flat"
        assert pickle.dumps(serialize.decode(serialize.encode(items))) == pickle.dumps(items)


@pytest.mark.parametrize("frames", [(b"q", b"\x00" * 12), (b"x", b"\x00" * 8)],
                         ids=["a torn value", "an unknown type code"])
def test_flat_frames_that_hold_no_whole_list_are_a_damaged_entry(frames):
    with pytest.raises(CorruptEntryError, match="flat"):
        serialize.decode(Encoded("flat", tuple(map(memoryview, frames))))


def test_a_lazyflow_reading_encodings_1_and_2_only_misses_a_flat_entry_and_keeps_it(
        tmp_path, monkeypatch):
    tier = DiskTier(tmp_path, size_limit=2**30)
    tier.put(KEY, list(range(100)), {"digest": "d"})
    tier.put("cd" * 16, [1, 2], {"digest": "d"})
    tier.flush()
    monkeypatch.setattr(serialize, "KNOWN_ENCODINGS", frozenset({1, 2}))
    monkeypatch.setattr(serialize, "_WARNED", set())
    older = DiskTier(tmp_path, size_limit=2**30)
    with pytest.warns(lf.CacheWarning, match="encoding version 3"):
        assert older.meta(KEY) is None
    assert older.get("cd" * 16) == [1, 2]  # JSON: still read
    assert older.contains(KEY)


def _plain_flow(cache: lf.Cache) -> lf.Flow:
    flow = lf.Flow("plain", cache=cache)

    @flow.node
    def metrics(n: int):
        return {"n": n, "mean": n / 2, "tags": ["a", "b"]}

    @flow.node
    def table(metrics):
        return pd.DataFrame({"x": np.arange(metrics["n"]), "s": ["v"] * metrics["n"]})

    @flow.node
    def column(table):
        return table["x"].to_numpy()

    return flow


def test_a_colleagues_hits_on_plain_values_unpickle_nothing(tmp_path, monkeypatch):
    url = f"file://{tmp_path / 'mount'}"
    for target in ("metrics", "table", "column"):
        _plain_flow(lf.Cache(memory=None, disk=None, remote=url)).get(target, n=4)
    _refuse_unpickling(monkeypatch)
    reader = _plain_flow(lf.Cache(memory=None, disk=None, remote=url))
    runs = {target: reader.run(target, n=4) for target in ("metrics", "table", "column")}
    assert {t: run.nodes[t].tier for t, run in runs.items()} == dict.fromkeys(runs, "remote")
    assert runs["metrics"]["metrics"] == {"n": 4, "mean": 2.0, "tags": ["a", "b"]}
    np.testing.assert_array_equal(runs["column"]["column"], np.arange(4))


# --------------------------------------------------------------------------- exact, or pickled


class Colour(enum.IntEnum):
    RED = 1


_shared = [1, 2]
_cycle: list[object] = []
_cycle.append(_cycle)


def _deep(levels: int) -> list[object]:
    value: list[object] = []
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("value", [
    (1, 2), [1, (2,)], {1: "int key"}, {"k": {2}}, Colour.RED, np.float64(1.5), np.int64(3),
    [_shared, _shared], _cycle, _deep(formats.JSON_DEPTH + 1),
    ["x"] * (formats.JSON_ITEMS + 1), 2**(formats.INT_BITS + 1), bytearray(b"x"),
    [1, 2**(formats.INT_BITS + 1), 3], [1, -2**(formats.INT_BITS + 1)],
    ["a", 2**(formats.INT_BITS + 1), None], [1.5, 2, True, (3,)],
], ids=["tuple", "a tuple inside", "an int key", "a set inside", "an int subclass",
        "numpy float", "numpy int", "a list met twice", "a cycle", "too deep", "too long",
        "a huge int", "bytearray", "a huge int in a flat list", "a huge negative int last",
        "a huge int among strings", "a tuple in a flat list"])
def test_a_value_json_would_not_give_back_exactly_is_pickled(value):
    encoded = serialize.encode(value)
    assert encoded.serializer in ("pickle", "cloudpickle")
    assert serialize.encoding_for(encoded.serializer) == 1


@pytest.mark.parametrize("value", [
    0, -7, 2**70, 1.5, -0.0, math.nan, -math.inf, 1e300, True, None, "", "é\n\"\ud800",
    [1, "a", None], {"k": [2.5, {"z": False}], "é": "\x00"},
])
def test_json_entries_hold_the_bytes_json_dumps_writes(value):
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    encoded = serialize.encode(value)
    assert encoded.serializer == "json"
    assert bytes(encoded.frames[0]) == expected.encode("utf-8", "surrogatepass")


def test_json_keeps_ints_floats_bools_negative_zero_and_key_order_apart():
    value = {"z": 1, "a": 1.0, "t": True, "n": -0.0, "nan": math.nan}
    encoded = serialize.encode(value)
    back = serialize.decode(serialize.decode_bytes(encoded.tobytes(), encoded.serializer,
                                                   encoded.checksum()))
    assert encoded.serializer == "json"
    assert list(back) == list(value)
    assert [type(v) for v in back.values()] == [int, float, bool, float, float]
    assert math.copysign(1, back["n"]) == -1 and math.isnan(back["nan"])


@pytest.mark.parametrize("array", [
    np.array([1, "x", None], dtype=object), np.zeros(3, dtype=[("a", "f8"), ("b", "i4")]),
    np.ma.masked_array([1, 2], mask=[0, 1]), np.rec.array([(1, 2.0)], names="a,b"),
    np.zeros(2, dtype="V8"),
], ids=["object", "structured", "masked", "record", "void"])
def test_an_array_the_raw_format_cannot_hold_is_pickled(array):
    assert serialize.encode(array).serializer == "pickle"


@pytest.mark.parametrize("value", list(_pickled_frames().values()), ids=list(_pickled_frames()))
def test_a_pandas_value_arrow_would_change_is_pickled_and_reads_back_exactly(value):
    encoded = serialize.encode(value)
    assert encoded.serializer == "pickle"
    back = serialize.decode(serialize.decode_bytes(encoded.tobytes(), encoded.serializer,
                                                   encoded.checksum()))
    assert _same(back, value)


def test_without_pyarrow_a_frame_is_pickled(monkeypatch):
    monkeypatch.setattr(formats, "_PYARROW", [None])
    assert serialize.encode(pd.DataFrame({"a": [1.5]})).serializer == "pickle"


def test_an_arrow_entry_read_without_pyarrow_is_kept_and_recomputed(tmp_path, monkeypatch):
    writer = DiskTier(tmp_path, size_limit=2**30)
    writer.put(KEY, pd.DataFrame({"a": [1.5]}), {"digest": "d"})
    writer.flush()
    monkeypatch.setattr(formats, "_PYARROW", [None])
    tier = DiskTier(tmp_path, size_limit=2**30)
    with pytest.raises(UnloadableEntryError, match="pyarrow"):
        tier.get(KEY)
    with pytest.warns(lf.CacheWarning, match="could not be read"), pytest.raises(KeyError):
        lf.Cache(tiers=[tier]).load(KEY)
    assert tier.contains(KEY)


def test_an_array_whose_header_does_not_match_its_bytes_is_damage_not_a_value():
    encoded = Encoded("numpy", (memoryview(b'{"dtype":"<f8","shape":[4],"order":"C"}'),
                                memoryview(bytes(16))))
    with pytest.raises(CorruptEntryError, match="does not decode"):
        serialize.decode(encoded)


def test_an_array_header_naming_object_dtype_is_damage_not_a_value():
    encoded = Encoded("numpy", (memoryview(b'{"dtype":"|O","shape":[1],"order":"C"}'),
                                memoryview(bytes(8))))
    with pytest.raises(CorruptEntryError, match="not one lazyflow writes"):
        serialize.decode(encoded)


# --------------------------------------------------------------------------- versions


def test_a_plain_entry_is_stamped_encoding_2_and_a_pickled_one_encoding_1(tmp_path):
    tier = DiskTier(tmp_path, size_limit=2**30)
    tier.put(KEY, {"a": 1}, {"digest": "d"})
    tier.put("cd" * 16, {"a": (1,)}, {"digest": "d"})
    tier.flush()
    assert (tier.meta(KEY)["serializer"], tier.meta(KEY)["encoding"]) == ("json", 2)
    assert (tier.meta("cd" * 16)["serializer"], tier.meta("cd" * 16)["encoding"]) == \
        ("cloudpickle", 1)


def test_a_lazyflow_reading_encoding_1_only_misses_a_plain_entry_and_keeps_it(
        tmp_path, monkeypatch):
    tier = DiskTier(tmp_path, size_limit=2**30)
    tier.put(KEY, {"a": 1}, {"digest": "d"})
    tier.put("cd" * 16, {"a": (1,)}, {"digest": "d"})
    tier.flush()
    monkeypatch.setattr(serialize, "KNOWN_ENCODINGS", frozenset({1}))
    monkeypatch.setattr(serialize, "_WARNED", set())
    older = DiskTier(tmp_path, size_limit=2**30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert older.meta(KEY) is None
        assert older.get("cd" * 16) == {"a": (1,)}  # pickled: still read
    assert [str(w.message) for w in caught if "encoding version 2" in str(w.message)]
    assert older.contains(KEY)


def test_the_value_digest_does_not_depend_on_the_encoding():
    for value in [*JSON_VALUES.values(), *ARRAYS.values(), *_frames().values()]:
        encoded = serialize.encode(value)
        back = serialize.decode(serialize.decode_bytes(encoded.tobytes(), encoded.serializer,
                                                       encoded.checksum()))
        assert lf.hash_value(back) == lf.hash_value(value)
