"""hash_value of pyarrow, polars, xarray, scipy.sparse and torch values: native, faithful, stable.

Every test here runs with lazyflow's generic fallback (hashing by ``__reduce_ex__``) forbidden, so each
digest below comes from the library's own hasher (lazyflow/keys/hashers/).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import scipy.sparse as sp
import torch
import xarray as xr
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lazyflow as lf
from lazyflow.keys import hashing

H = lf.hash_value


def _no_fallback(h: object, obj: object) -> None:
    """Stands in for hashing's generic fallback (objects by ``__reduce_ex__``): a type of
    these libraries reaching it has no native hasher, and fails the test."""
    raise AssertionError(f"hash_value fell back to reducing a {type(obj).__qualname__}")


@pytest.fixture(autouse=True, scope="module")
def _no_generic_fallback() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hashing, "_hash_object", _no_fallback)
        hashing._DISPATCH_CACHE.clear()
        yield
    hashing._DISPATCH_CACHE.clear()


def _all_differ(*values: object) -> bool:
    digests = [H(v) for v in values]
    return len(set(digests)) == len(digests)


def _chunked(values: list, cuts: list[int], type_: pa.DataType | None = None) -> pa.ChunkedArray:
    """``values`` as a chunked array cut at ``cuts`` (empty chunks included)."""
    bounds = [0, *sorted(min(c, len(values)) for c in cuts), len(values)]
    chunks = [pa.array(values[a:b], type_) for a, b in zip(bounds, bounds[1:], strict=False)]
    return pa.chunked_array(chunks, type_ or chunks[0].type)


optional_ints = st.lists(st.none() | st.integers(-2**63, 2**63 - 1), max_size=30)
optional_texts = st.lists(st.none() | st.text(max_size=4), max_size=20)
nested_lists = st.lists(st.none() | st.lists(st.none() | st.integers(-5, 5), max_size=3),
                        max_size=10)
cuts = st.lists(st.integers(0, 30), max_size=4)


# --------------------------------------------------------------------------- the wiring


def test_importing_lazyflow_imports_none_of_these_libraries():
    script = textwrap.dedent("""
        import sys
        import lazyflow as lf
        lf.hash_value([1, "a"])
        print(sorted(m for m in sys.modules if m.partition(".")[0] in
                     {"pyarrow", "polars", "xarray", "scipy", "torch"}
                     or m.startswith("lazyflow.keys.hashers.")
                     and m != "lazyflow.keys.hashers.stdlib"))  # the standard library's
    """)
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_a_hasher_registered_before_the_library_is_first_hashed_still_wins():
    script = textwrap.dedent("""
        import pyarrow as pa
        import lazyflow as lf
        lf.register_hasher(pa.Table, lambda t: "every table alike")
        print(lf.hash_value(pa.table({"a": [1]})) == lf.hash_value(pa.table({"b": ["x"]})))
    """)
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "True"


# --------------------------------------------------------------------------- pyarrow


@given(optional_ints, cuts, cuts)
def test_arrow_values_chunked_differently_give_equal_digests(values, cuts_a, cuts_b):
    single = pa.array(values, pa.int64())
    a, b = _chunked(values, cuts_a, pa.int64()), _chunked(values, cuts_b, pa.int64())
    assert H(a) == H(b) == H(pa.chunked_array([single]))
    assert H(single) == H(a.combine_chunks())


@given(optional_texts, cuts, cuts)
def test_arrow_string_columns_chunked_differently_give_equal_digests(values, cuts_a, cuts_b):
    assert H(_chunked(values, cuts_a, pa.string())) == H(_chunked(values, cuts_b, pa.string()))


@given(nested_lists, cuts, cuts)
def test_arrow_nested_columns_chunked_differently_give_equal_digests(values, cuts_a, cuts_b):
    type_ = pa.list_(pa.int64())
    assert H(_chunked(values, cuts_a, type_)) == H(_chunked(values, cuts_b, type_))


@given(optional_ints, optional_ints)
def test_arrow_arrays_with_different_values_or_nulls_differ(a, b):
    assume(a != b)
    assert H(pa.array(a, pa.int64())) != H(pa.array(b, pa.int64()))


@given(optional_texts, optional_texts)
def test_arrow_string_arrays_differ_whenever_their_strings_differ(a, b):
    assume(a != b)
    assert H(pa.array(a, pa.string())) != H(pa.array(b, pa.string()))


@given(nested_lists, nested_lists)
def test_arrow_list_arrays_differ_whenever_their_lists_differ(a, b):
    assume(a != b)
    type_ = pa.list_(pa.int64())
    assert H(pa.array(a, type_)) != H(pa.array(b, type_))


@given(optional_texts, st.integers(0, 20), st.integers(0, 20))
def test_an_arrow_slice_hashes_as_the_same_values_built_afresh(values, start, length):
    sliced = pa.array(values, pa.string()).slice(start, length)
    assert H(sliced) == H(pa.array(sliced.to_pylist(), pa.string()))


def test_the_bytes_under_an_arrow_null_do_not_count():
    validity = pa.array([True, False, True]).buffers()[1]

    def ints(hidden: int) -> pa.Array:
        data = pa.py_buffer(np.array([1, hidden, 3], dtype=np.int64).tobytes())
        return pa.Array.from_buffers(pa.int64(), 3, [validity, data])

    assert H(ints(2)) == H(ints(99)) == H(pa.array([1, None, 3]))


def test_an_arrow_null_and_a_value_differ_whatever_the_value():
    assert _all_differ(pa.array([1, None]), pa.array([1, 0]), pa.array([None, 1]),
                       pa.array([None, None], pa.int64()), pa.array([float("nan")]),
                       pa.array([None], pa.float64()))


def test_arrow_types_count_down_to_their_parameters():
    ints = pa.array([1, 2])
    assert _all_differ(ints, ints.cast(pa.int32()), ints.cast(pa.uint64()), ints.cast(pa.float64()),
                       ints.cast(pa.timestamp("s")), ints.cast(pa.timestamp("ms")),
                       ints.cast(pa.timestamp("s", "UTC")), ints.cast(pa.timestamp("s", "Europe/Paris")),
                       ints.cast(pa.duration("s")), ints.cast(pa.decimal128(20, 0)),
                       ints.cast(pa.decimal128(21, 0)))
    strings = pa.array(["a"])
    assert _all_differ(strings, strings.cast(pa.large_string()), strings.cast(pa.binary()),
                       strings.cast(pa.string_view()))


def test_arrow_nested_types_count_their_field_names_and_nullability():
    def structs(name: str, nullable: bool) -> pa.Array:
        return pa.array([{name: 1}], pa.struct([pa.field(name, pa.int64(), nullable)]))

    assert _all_differ(structs("x", True), structs("y", True), structs("x", False),
                       pa.array([[1]], pa.list_(pa.field("item", pa.int64()))),
                       pa.array([[1]], pa.list_(pa.field("element", pa.int64()))),
                       pa.array([[1]], pa.large_list(pa.int64())),
                       pa.array([[1]], pa.list_(pa.int64(), 1)))


def test_arrow_list_boundaries_count():
    assert _all_differ(pa.array([[1, 2], [3]]), pa.array([[1], [2, 3]]), pa.array([[1, 2, 3], []]),
                       pa.array([[1, 2, 3], None]))
    assert _all_differ(pa.array([["ab", "c"]]), pa.array([["a", "bc"]]), pa.array([["abc", ""]]))


def test_arrow_schemas_count_names_nullability_and_metadata():
    table = pa.table({"a": [1, 2], "b": ["x", "y"]})
    nullable_not = table.cast(pa.schema([pa.field("a", pa.int64(), nullable=False),
                                         pa.field("b", pa.string())]))
    field_meta = table.cast(table.schema.set(0, table.schema.field(0).with_metadata({"u": "m"})))
    assert _all_differ(table, table.rename_columns(["a", "c"]), table.select(["b", "a"]), nullable_not,
                       table.replace_schema_metadata({"k": "v"}),
                       table.replace_schema_metadata({"k": "w"}), field_meta,
                       table.slice(0, 1), pa.table({"a": [1, 2], "b": ["x", "z"]}))


def test_arrow_tables_hash_alike_however_they_are_batched():
    table = pa.table({"x": np.arange(100.0), "s": [str(i) for i in range(100)],
                      "l": [[i] * (i % 3) for i in range(100)]})
    rebatched = pa.Table.from_batches(table.to_batches(max_chunksize=7))
    assert rebatched.column(0).num_chunks > 1
    assert H(rebatched) == H(table) == H(table.combine_chunks())


def test_arrow_container_kinds_differ_with_the_same_values():
    table = pa.table({"a": [1, 2]})
    assert _all_differ(table, table.to_batches()[0], table.column(0),
                       table.column(0).combine_chunks(), [1, 2])


def test_arrow_dictionaries_count_but_their_repetition_over_chunks_does_not():
    words = pa.array(["x", "y", "x"])
    encoded = words.dictionary_encode()
    reordered = pa.DictionaryArray.from_arrays(pa.array([1, 0, 1], pa.int32()), pa.array(["y", "x"]))
    assert _all_differ(words, encoded, reordered)
    assert H(pa.chunked_array([encoded.slice(0, 1), encoded.slice(1)])) == H(pa.chunked_array([encoded]))


def test_arrow_chunks_with_different_dictionaries_count_where_each_dictionary_starts():
    def chunk(dictionary: list[str], n: int) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), pa.array(dictionary))

    a_a_b = pa.chunked_array([chunk(["a", "b"], 2), chunk(["b", "a"], 1)])
    a_b_b = pa.chunked_array([chunk(["a", "b"], 1), chunk(["b", "a"], 2)])
    assert a_a_b.to_pylist() != a_b_b.to_pylist()
    assert H(a_a_b) != H(a_b_b)


def test_a_union_counts_each_slots_type_code_and_selected_value_only():
    def sparse(codes: list[int], ints: list[int], texts: list[str]) -> pa.Array:
        return pa.UnionArray.from_sparse(pa.array(codes, pa.int8()), [pa.array(ints), pa.array(texts)])

    assert H(sparse([0, 1], [1, 2], ["a", "b"])) == H(sparse([0, 1], [1, 99], ["zz", "b"]))
    assert _all_differ(sparse([0, 1], [1, 2], ["a", "b"]), sparse([1, 0], [1, 2], ["a", "b"]),
                       sparse([0, 1], [1, 2], ["a", "c"]))
    dense = pa.UnionArray.from_dense(pa.array([1, 0], pa.int8()), pa.array([0, 1], pa.int32()),
                                     [pa.array([7, 1]), pa.array(["b", "unused"])])
    assert H(dense) == H(pa.UnionArray.from_dense(pa.array([1, 0], pa.int8()), pa.array([0, 0], pa.int32()),
                                                  [pa.array([1]), pa.array(["b"])]))


def test_a_run_end_encoded_array_counts_its_values_exactly_not_its_runs():
    stamps = pa.array([1, 1, 2], pa.timestamp("ns"))
    one_run = pa.RunEndEncodedArray.from_arrays(pa.array([2, 3], pa.int32()), stamps.take([0, 2]))
    two_runs = pa.RunEndEncodedArray.from_arrays(pa.array([1, 2, 3], pa.int32()), stamps)
    assert H(one_run) == H(two_runs)
    assert H(pc.run_end_encode(stamps)) != H(pc.run_end_encode(pa.array([1, 1, 3], pa.timestamp("ns"))))


class _Money(pa.ExtensionType):
    def __init__(self, currency: str) -> None:
        self.currency = currency
        super().__init__(pa.int64(), "test.money")

    def __arrow_ext_serialize__(self) -> bytes:
        return self.currency.encode()

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type: pa.DataType, serialized: bytes) -> _Money:
        return cls(serialized.decode())


def _exotic_arrays() -> dict[str, pa.Array]:
    union_children = [pa.array([1, 2, 3]), pa.array(["a", "b", "c"])]
    return {
        "bool": pa.array([True, None, False, True]),
        "null": pa.array([None, None, None]),
        "decimal": pa.array([1, None, 3], pa.int8()).cast(pa.decimal128(9, 2)),
        "fixed binary": pa.array([b"ab", None, b"cd"], pa.binary(2)),
        "string view": pa.array(["a long string over twelve bytes", None, "b"], pa.string_view()),
        "large binary": pa.array([b"x", None, b"yz"], pa.large_binary()),
        "list view": pa.array([[1, 2], None, [3], []], pa.list_view(pa.int64())),
        "fixed list": pa.array([[1, 2], None, [3, 4]], pa.list_(pa.int8(), 2)),
        "map": pa.array([[("a", 1)], None, [("b", 2), ("c", None)]], pa.map_(pa.string(), pa.int64())),
        "struct": pa.array([{"x": 1, "y": "a"}, None, {"x": None, "y": "c"}]),
        "dictionary": pa.array(["x", None, "y", "x"]).dictionary_encode(),
        "sparse union": pa.UnionArray.from_sparse(pa.array([0, 1, 0], pa.int8()), union_children),
        "dense union": pa.UnionArray.from_dense(pa.array([0, 1, 0], pa.int8()),
                                                pa.array([0, 0, 1], pa.int32()),
                                                [pa.array([1, None]), pa.array(["a"])]),
        "run-end encoded": pc.run_end_encode(pa.array([1, 1, None, 2, 2])),
        "extension": pa.ExtensionArray.from_storage(_Money("EUR"), pa.array([1, None, 3])),
        "month-day-nano": pa.array([(1, 2, 3), None, (4, 5, 6)], pa.month_day_nano_interval()),
    }


@pytest.mark.parametrize("name", list(_exotic_arrays()))
def test_every_arrow_layout_hashes_natively_and_slices_alike(name):
    arr = _exotic_arrays()[name]
    assert H(arr) == H(_exotic_arrays()[name])
    rebuilt = pa.concat_arrays([arr.slice(1, 1), arr.slice(2)])
    assert H(pa.chunked_array([arr.slice(1, 1), arr.slice(2)])) == H(pa.chunked_array([rebuilt]))
    assert H(arr.slice(1)) != H(arr.slice(2))


def test_an_arrow_extension_type_counts_its_name_and_parameters():
    storage = pa.array([1, 2])
    assert _all_differ(storage, pa.ExtensionArray.from_storage(_Money("EUR"), storage),
                       pa.ExtensionArray.from_storage(_Money("USD"), storage))


# --------------------------------------------------------------------------- polars


@given(st.lists(st.none() | st.floats(allow_nan=True), max_size=20), cuts)
def test_polars_series_chunked_differently_give_equal_digests(values, cut_points):
    whole = pl.Series("x", values, dtype=pl.Float64)
    bounds = [0, *sorted(min(c, len(values)) for c in cut_points), len(values)]
    parts = [whole.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False)]
    chunked = pl.concat(parts, rechunk=False)
    assert H(chunked) == H(whole) == H(whole.clone())


@given(st.lists(st.none() | st.text(max_size=4), max_size=20),
       st.lists(st.none() | st.text(max_size=4), max_size=20))
def test_polars_string_series_differ_whenever_their_strings_differ(a, b):
    assume(a != b)
    assert H(pl.Series("s", a, dtype=pl.String)) != H(pl.Series("s", b, dtype=pl.String))


def test_polars_series_count_name_dtype_values_and_nulls():
    base = pl.Series("x", [1.0, None, 3.0])
    assert H(base) == H(pl.Series("x", [1.0, None, 3.0]))
    assert _all_differ(base, base.rename("y"), base.cast(pl.Float32), pl.Series("x", [1.0, 0.0, 3.0]),
                       pl.Series("x", [1.0, float("nan"), 3.0]), pl.Series("x", [1.0, None, 4.0]),
                       pl.Series("x", [1, None, 3]))


def test_polars_dtype_parameters_count():
    stamps = pl.Series("t", [0, 1]).cast(pl.Datetime("us"))
    assert _all_differ(stamps, stamps.cast(pl.Datetime("ns")), stamps.dt.replace_time_zone("UTC"),
                       stamps.dt.replace_time_zone("Europe/Paris"))
    assert _all_differ(pl.Series("s", [{"a": 1}]), pl.Series("s", [{"b": 1}]),
                       pl.Series("s", [[1]]), pl.Series("s", [[1]], dtype=pl.Array(pl.Int64, 1)))


def test_polars_categories_count_and_enum_order_counts():
    words = ["y", "x", None]
    assert _all_differ(pl.Series("c", words), pl.Series("c", words, dtype=pl.Categorical),
                       pl.Series("c", words, dtype=pl.Categorical(pl.Categories("mine"))),
                       pl.Series("c", words, dtype=pl.Enum(["x", "y"])),
                       pl.Series("c", words, dtype=pl.Enum(["y", "x"])),
                       pl.Series("c", ["x", "y", None], dtype=pl.Categorical))
    assert H(pl.Series("c", words, dtype=pl.Categorical)) == H(pl.Series("c", words,
                                                                         dtype=pl.Categorical))


def test_polars_frames_count_column_names_order_and_values():
    df = pl.DataFrame({"a": [1, 2], "b": ["x", None], "l": [[1], [2, 3]]})
    assert H(df) == H(df.clone()) == H(pl.concat([df.slice(0, 1), df.slice(1)], rechunk=False))
    assert _all_differ(df, df.rename({"a": "c"}), df.select("b", "a", "l"), df.head(1),
                       df.with_columns(pl.col("a").cast(pl.Int32)), df.get_column("a"),
                       df.to_arrow())


def test_polars_object_columns_hash_by_their_python_values():
    assert H(pl.Series("o", [(1, 2), None], dtype=pl.Object)) == H(
        pl.Series("o", [(1, 2), None], dtype=pl.Object))
    assert H(pl.Series("o", [(1, 2)], dtype=pl.Object)) != H(pl.Series("o", [[1, 2]], dtype=pl.Object))


# --------------------------------------------------------------------------- xarray


def _data_array() -> xr.DataArray:
    return xr.DataArray(np.arange(6.0).reshape(2, 3), dims=("x", "y"), name="v",
                        coords={"x": [10, 20], "label": ("y", ["a", "b", "c"])},
                        attrs={"units": "m"})


def test_equal_xarray_values_give_equal_digests():
    da = _data_array()
    assert H(da) == H(_data_array()) == H(da.copy(deep=True))
    assert H(da.to_dataset()) == H(_data_array().to_dataset())


def test_xarray_data_arrays_count_data_dims_coords_attrs_name_encoding_and_indexes():
    da = _data_array()
    changed = da.copy(deep=True)
    changed[0, 0] = -1.0
    coord_attrs = da.copy()
    coord_attrs["x"].attrs["units"] = "km"
    encoded = da.copy()
    encoded.encoding["dtype"] = "int16"
    assert _all_differ(da, changed, da.rename("w"), da.rename({"x": "row"}), da.assign_attrs(units="km"),
                       da.assign_coords(x=[10, 30]), da.assign_coords(label=("y", ["a", "b", "d"])),
                       da.drop_vars("label"), coord_attrs, encoded, da.drop_indexes("x"),
                       da.astype(np.float32), da.transpose())


def test_xarray_datasets_count_variables_coords_and_attrs():
    ds = xr.Dataset({"a": ("t", [1.0, 2.0]), "b": ("t", [3, 4])}, coords={"t": [0, 1]})
    assert H(ds) == H(ds.copy(deep=True))
    assert _all_differ(ds, ds.rename_vars({"a": "c"}), ds.drop_vars("b"), ds.assign_attrs(k=1),
                       ds.assign(a=("t", [1.0, 2.5])), ds.assign_coords(t=[0, 2]), ds["a"],
                       ds.expand_dims("z"))


@settings(max_examples=50)
@given(hnp.arrays(np.float64, (2, 3), elements=st.floats(-5, 5)),
       hnp.arrays(np.float64, (2, 3), elements=st.floats(-5, 5)))
def test_xarray_data_arrays_differ_whenever_their_values_differ(a, b):
    assume(a.tobytes() != b.tobytes())  # -0.0 and 0.0 are different bytes, and so values here
    assert H(xr.DataArray(a, dims=("x", "y"))) != H(xr.DataArray(b, dims=("x", "y")))
    assert H(xr.DataArray(a, dims=("x", "y"))) == H(xr.DataArray(a.copy(), dims=("x", "y")))


def test_lazily_backed_xarray_data_hashes_by_its_values():
    da = _data_array()
    assert H(da.chunk({"x": 1})) == H(da)


# --------------------------------------------------------------------------- scipy.sparse


@settings(max_examples=50)
@given(hnp.arrays(np.float64, (4, 5), elements=st.sampled_from([0.0, 0.0, 1.0, -2.5])),
       hnp.arrays(np.float64, (4, 5), elements=st.sampled_from([0.0, 0.0, 1.0, -2.5])))
def test_sparse_matrices_differ_whenever_their_values_differ(a, b):
    assert H(sp.csr_array(a)) == H(sp.csr_array(a.copy()))
    assume(not np.array_equal(a, b))
    assert H(sp.csr_array(a)) != H(sp.csr_array(b))


def test_sparse_format_kind_shape_and_dtype_count():
    dense = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]])
    assert _all_differ(sp.csr_array(dense), sp.csc_array(dense), sp.coo_array(dense),
                       sp.bsr_array(dense), sp.dia_array(dense), sp.lil_array(dense),
                       sp.dok_array(dense), sp.csr_matrix(dense), sp.csr_array(dense.astype(np.float32)),
                       sp.csr_array(dense.T), sp.csr_array(np.vstack([dense, np.zeros((1, 3))])), dense)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "bsr", "dia", "lil", "dok"])
def test_every_sparse_format_hashes_natively_by_its_values(fmt):
    dense = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]])
    for cls in (sp.csr_array, sp.csr_matrix):
        a, b = cls(dense).asformat(fmt), cls(dense.copy()).asformat(fmt)
        assert H(a) == H(b)
        changed = dense.copy()
        changed[1, 2] = 4.0
        assert H(a) != H(cls(changed).asformat(fmt))


def test_sparse_storage_is_not_canonicalised_duplicates_and_order_count():
    data, rows, cols = np.array([1.0, 2.0]), np.array([0, 0]), np.array([1, 1])
    duplicated = sp.coo_array((data, (rows, cols)), shape=(2, 2))
    summed = sp.coo_array((np.array([3.0]), (np.array([0]), np.array([1]))), shape=(2, 2))
    assert (duplicated.toarray() == summed.toarray()).all()
    assert H(duplicated) != H(summed)
    unsorted = sp.csr_array((np.array([1.0, 2.0]), np.array([1, 0]), np.array([0, 2, 2])),
                            shape=(2, 2))
    ordered = unsorted.copy()
    ordered.sort_indices()
    assert H(unsorted) != H(ordered)


def test_a_sparse_matrix_hashes_alike_before_and_after_scipy_learns_its_format_flags():
    dense = np.array([[0.0, 1.0], [2.0, 0.0]])
    fresh, checked = sp.csr_array(dense), sp.csr_array(dense)
    assert checked.has_canonical_format
    assert H(fresh) == H(checked)


# --------------------------------------------------------------------------- torch


@settings(max_examples=50)
@given(hnp.arrays(hnp.floating_dtypes(sizes=(32, 64), endianness="=")
                  | hnp.integer_dtypes(endianness="="),
                  hnp.array_shapes(min_dims=1, max_dims=3, max_side=4)))
def test_equal_tensors_give_equal_digests_and_the_numpy_layout_does_not_count(arr):
    t = torch.from_numpy(arr.copy())
    assert H(t) == H(t.clone()) == H(torch.from_numpy(np.asfortranarray(arr)))


@given(st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=8),
       st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=8))
def test_tensors_differ_whenever_their_values_differ(a, b):
    assume(a != b or [str(x) for x in a] != [str(x) for x in b])  # -0.0 is a value of its own
    assert H(torch.tensor(a)) != H(torch.tensor(b))


def test_tensors_count_class_dtype_shape_and_requires_grad():
    t = torch.arange(6, dtype=torch.float32)
    assert _all_differ(t, t.to(torch.float64), t.to(torch.bfloat16), t.reshape(2, 3),
                       t.clone().requires_grad_(True), torch.nn.Parameter(t.clone()), t.numpy(),
                       torch.arange(6, dtype=torch.int32))


def test_a_tensors_accumulated_gradient_counts():
    trained = torch.ones(2, requires_grad=True)
    (trained * 2).sum().backward()
    assert H(trained) != H(torch.ones(2, requires_grad=True))


def test_tensor_strides_and_lazy_conjugation_do_not_count():
    t = torch.arange(12.0).reshape(3, 4)
    assert H(t.t()) == H(t.t().contiguous())
    assert H(t.to(memory_format=torch.contiguous_format)) == H(t)
    z = torch.tensor([1 + 2j, 3 - 1j])
    assert H(z.conj()) == H(torch.tensor([1 - 2j, 3 + 1j]))


def test_a_tensor_on_another_device_raises_a_hashing_error_naming_the_device():
    with pytest.raises(lf.HashingError, match=r"device 'meta'.*tensor\.cpu\(\)"):
        H(torch.empty(2, device="meta"))


def test_a_sparse_tensor_raises_a_hashing_error_naming_its_layout():
    with pytest.raises(lf.HashingError, match=r"sparse_coo.*to_dense\(\)"):
        H(torch.ones(2).to_sparse())


def test_an_unhashable_tensor_input_names_the_node_and_parameter(flow):
    @flow.node
    def total(t):
        return t.sum()

    with pytest.raises(lf.HashingError, match=r"node 'total', parameter 't'.*device 'meta'"):
        flow.get("total", t=torch.empty(2, device="meta"))


# --------------------------------------------------------------------------- across processes

_SAMPLES = """
import numpy as np, polars as pl, pyarrow as pa, scipy.sparse as sp, torch, xarray as xr

def samples():
    rng = np.random.default_rng(7)
    floats = rng.random(200)
    table = pa.table({"x": floats, "s": [f"w{i % 17}" for i in range(200)],
                      "l": [[i, None] for i in range(200)]}).replace_schema_metadata({"k": "v"})
    dense = np.where(rng.random((20, 10)) < 0.3, rng.random((20, 10)), 0.0)
    return {
        "arrow array": pa.array([{"a": 1, "b": "x"}, None]),
        "arrow chunked": pa.chunked_array([["a", None], ["bc"]]).dictionary_encode(),
        "arrow table": table,
        "arrow batch": table.to_batches()[0],
        "polars frame": pl.DataFrame({"x": floats, "c": pl.Series(["u", "v"] * 100,
                                                                  dtype=pl.Categorical)}),
        "polars series": pl.Series("s", [1.5, None, float("nan")]),
        "xarray array": xr.DataArray(floats.reshape(20, 10), dims=("a", "b"),
                                     coords={"a": np.arange(20)}, attrs={"u": "m"}, name="n"),
        "xarray dataset": xr.Dataset({"v": ("t", floats)}, coords={"t": np.arange(200)}),
        "csr": sp.csr_matrix(dense),
        "coo": sp.coo_array(dense),
        "dok": sp.dok_array(dense),
        "tensor": torch.from_numpy(floats).to(torch.bfloat16).reshape(10, 20),
        "parameter": torch.nn.Parameter(torch.ones(3)),
    }
"""

_CROSS_PROCESS = _SAMPLES + """
import polars as pl
import lazyflow as lf
import lazyflow.keys.hashing

def _no_fallback(h, obj):
    raise AssertionError(type(obj))

lazyflow.keys.hashing._hash_object = _no_fallback
# Categorical codes are process-wide and first come, first served: start with other strings
pl.Series(["zz", "v", "qq", "u"], dtype=pl.Categorical)
for name, value in sorted(samples().items()):
    print(name, lf.hash_value(value), sep="=")
"""


def test_digests_are_equal_across_processes_and_hash_seeds():
    namespace: dict[str, object] = {}
    exec(_SAMPLES, namespace)
    here = {name: H(value) for name, value in namespace["samples"]().items()}  # type: ignore[operator]
    for seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", _CROSS_PROCESS], env=env, check=True,
                             capture_output=True, text=True, timeout=300)
        there = dict(line.split("=") for line in out.stdout.splitlines())
        assert there == here
