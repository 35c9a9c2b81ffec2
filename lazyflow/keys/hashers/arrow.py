"""pyarrow digests: Array, ChunkedArray, RecordBatch and Table.

Design note
-----------
A digest is the value's tag, its type, its length and its content.

*Type.* The type (for tables and batches: the schema) is walked once through
the Arrow C data interface (``__arrow_c_schema__``): every node of the type
tree gives its format string (Arrow's own spelling of the node and its
parameters: ``tsu:UTC``, ``d:10,2``, ``+l``...), its field name, its
key/value metadata, its flags (nullable, dictionary ordered, map keys sorted),
its children and its dictionary. That covers nested and extension types (an
extension's name and serialised parameters travel as field metadata) without
a case per pyarrow class, and each detail is hashed as a value, never joined.

*Content.* A tree of xxh3 streams mirrors the type: per node a stream of the
positions of its nulls, the streams of its own buffers (fixed-width values;
string lengths and bytes; list lengths) and one subtree per child. Chunks are
*fed* into the tree one after another, so the streams hold the concatenated
logical values and chunking leaves no trace: the same values chunked
differently give equal digests (chunks are layout, not behaviour; the
concatenation is never materialised). Nulls are taken out (``filter``) before
a node's values are written, so whatever bytes lie under a null slot, and
whatever a slice's offset is, never reach the digest. Dictionary-encoded
columns hash their indices plus each dictionary with the position where it
takes over (the dictionary is visible behaviour, like pandas categories);
consecutive chunks sharing a dictionary record it once, so chunks carrying
*different* dictionaries digest differently from one chunk with their union:
the one case where chunking shows. A union writes each slot's type code, then
per child the values its slots select; a run-end encoded array writes its
decoded values (runs are an encoding, like chunks). A layout this module does
not know (from a newer Arrow) is written element by element through
``hash_value`` of its Python values: slower, and only as exact as ``as_py``.

Fixed-width buffers are read in place (``memoryview`` of the Arrow buffer,
offset applied); only nulls (``filter``), booleans (bit-packed, unpacked
through numpy) and string/list lengths (``numpy.diff`` of the offsets) cost a
copy.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from lazyflow.keys.hashing import Hasher, _install, hash_value

__all__ = ["register", "type_value", "write_chunks"]

_ARRAY, _CHUNKED, _BATCH, _TABLE = b"\xa1", b"\xa2", b"\xa3", b"\xa4"


# --------------------------------------------------------------------------- the type


class _CSchema(ctypes.Structure):
    """``struct ArrowSchema`` of the Arrow C data interface (read only, never released here)."""


_CSchema._fields_ = [
    ("format", ctypes.c_char_p),
    ("name", ctypes.c_char_p),
    ("metadata", ctypes.c_void_p),
    ("flags", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("children", ctypes.POINTER(ctypes.POINTER(_CSchema))),
    ("dictionary", ctypes.POINTER(_CSchema)),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]

# a prototype of our own: setting restype on ctypes.pythonapi's shared function would change it
# for every other user in the process
_capsule_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi))
_INT32 = np.dtype("<i4")
_LARGE = {pa.string_view(): pa.large_string(), pa.binary_view(): pa.large_binary()}


def type_value(obj: Any) -> tuple[Any, ...]:
    """The whole type tree of a DataType, Field or Schema as a plain nested tuple.

    >>> type_value(pa.field("x", pa.int32(), nullable=False))
    (b'i', b'x', None, 0, (), None)
    """
    capsule = obj.__arrow_c_schema__()  # owns the struct (and releases it) while we read
    return _node_value(_CSchema.from_address(_capsule_pointer(capsule, b"arrow_schema")))


def _node_value(node: _CSchema) -> tuple[Any, ...]:
    children = tuple(_node_value(node.children[i].contents) for i in range(node.n_children))
    dictionary = _node_value(node.dictionary.contents) if node.dictionary else None
    return (node.format, node.name, _metadata(node.metadata), node.flags, children, dictionary)


def _metadata(address: int | None) -> tuple[tuple[bytes, bytes], ...] | None:
    """Decode C-interface metadata: int32 count, then int32-length-prefixed keys and values."""
    if not address:
        return None
    pos = address

    def take(n: int) -> bytes:
        nonlocal pos
        data = ctypes.string_at(pos, n)
        pos += n
        return data

    def item() -> bytes:
        return take(int(np.frombuffer(take(4), _INT32)[0]))

    count = int(np.frombuffer(take(4), _INT32)[0])
    return tuple((item(), item()) for _ in range(count))


# --------------------------------------------------------------------------- the content


_KINDS: dict[int, str] = {}
"""Type id -> kind: the layout follows from the id alone (parameters never change it)."""


def _kind(t: pa.DataType) -> str:
    """How a type's values lie in memory, i.e. how its node writes them."""
    kind = _KINDS.get(t.id)
    if kind is None:
        kind = _KINDS[t.id] = _layout_kind(t)
    return kind


def _layout_kind(t: pa.DataType) -> str:
    types = pa.types
    if types.is_null(t):
        return "null"
    if types.is_boolean(t):
        return "bool"
    if types.is_dictionary(t):
        return "dictionary"
    if types.is_binary_view(t) or types.is_string_view(t):
        return "view"
    if (types.is_binary(t) or types.is_string(t) or types.is_large_binary(t)
            or types.is_large_string(t)):
        return "binary"
    if types.is_list(t) or types.is_large_list(t) or types.is_map(t):
        return "list"
    if types.is_list_view(t) or types.is_large_list_view(t):
        return "list_view"
    if types.is_fixed_size_list(t):
        return "fixed_list"
    if types.is_struct(t):
        return "struct"
    if types.is_union(t):
        return "union"
    if types.is_run_end_encoded(t):
        return "run_end"
    try:
        return "fixed" if t.bit_width % 8 == 0 else "elements"
    except ValueError:  # a layout this module does not know (a newer Arrow's)
        return "elements"


def _storage(t: pa.DataType) -> pa.DataType:
    """An extension type's storage type (its name and parameters are in the type walk)."""
    return t.storage_type if isinstance(t, pa.BaseExtensionType) else t


def _child_types(t: pa.DataType, kind: str) -> list[pa.DataType]:
    if kind in ("list", "list_view", "fixed_list"):
        if pa.types.is_map(t):
            return [pa.struct([t.key_field, t.item_field])]
        return [t.value_type]
    if kind in ("struct", "union"):
        return [t.field(i).type for i in range(t.num_fields)]
    if kind == "run_end":
        return [t.value_type]
    if kind == "dictionary":
        return [t.index_type]
    return []


class _Column:
    """The content of one type node, accumulated over chunks into xxh3 streams."""

    __slots__ = ("children", "dictionaries", "kind", "length", "nulls", "parts", "type")

    def __init__(self, t: pa.DataType) -> None:
        self.type = _storage(t)
        self.kind = _kind(self.type)
        self.length = 0
        self.nulls = xxhash.xxh3_128()
        n_parts = {"bool": 1, "fixed": 1, "binary": 2, "view": 2, "list": 1, "list_view": 1,
                   "union": 1, "elements": 1}.get(self.kind, 0)
        self.parts = [xxhash.xxh3_128() for _ in range(n_parts)]
        self.children = [_Column(c) for c in _child_types(self.type, self.kind)]
        self.dictionaries: list[tuple[int, bytes]] = []

    def feed(self, arr: pa.Array) -> None:
        """Append one chunk's values (any offset, any nulls)."""
        n = len(arr)
        if n == 0:
            return  # an empty chunk adds nothing, not even its dictionary
        if isinstance(arr, pa.ExtensionArray):
            arr = arr.storage
        if self.kind == "view":  # views point anywhere in any number of buffers: take the
            arr = arr.cast(_LARGE[arr.type])  # plain large form, which is canonical
        if self.kind != "null" and arr.null_count:
            valid = arr.is_valid()
            positions = np.flatnonzero(~valid.to_numpy(zero_copy_only=False)) + self.length
            self.nulls.update(positions.astype("<i8", copy=False).data)
            arr = arr.filter(valid)  # the bytes under a null slot are not values
        self.length += n
        if len(arr):  # only nulls: nothing more to write (not even this chunk's dictionary)
            getattr(self, f"_feed_{self.kind}")(arr)

    def write(self, h: Hasher) -> None:
        """Write the accumulated content into ``h``."""
        h.value(self.length)
        h.chunk(self.nulls.digest())
        for part in self.parts:
            h.chunk(part.digest())
        if self.kind == "dictionary":
            h.value(self.dictionaries)
        for child in self.children:
            child.write(h)

    # one writer per kind; each gets a chunk with no nulls at its own level

    def _feed_null(self, arr: pa.Array) -> None:
        pass  # every value is null: the length says it all

    def _feed_bool(self, arr: pa.Array) -> None:
        self.parts[0].update(memoryview(arr.to_numpy(zero_copy_only=False)))  # bits -> bytes

    def _feed_fixed(self, arr: pa.Array) -> None:
        width = self.type.bit_width // 8
        data = memoryview(arr.buffers()[1])
        self.parts[0].update(data[arr.offset * width:(arr.offset + len(arr)) * width])

    def _feed_binary(self, arr: pa.Array) -> None:
        buffers = arr.buffers()
        offset_type = np.dtype("<i8" if pa.types.is_large_binary(arr.type)
                              or pa.types.is_large_string(arr.type) else "<i4")
        offsets = np.frombuffer(buffers[1], offset_type)[arr.offset:arr.offset + len(arr) + 1]
        self.parts[0].update(np.diff(offsets).data)
        if buffers[2] is not None:
            self.parts[1].update(memoryview(buffers[2])[offsets[0]:offsets[-1]])

    _feed_view = _feed_binary  # given the large form (see feed)

    def _feed_list(self, arr: pa.Array) -> None:
        offsets = arr.offsets.to_numpy()  # this slice's n + 1 offsets into the whole child
        self.parts[0].update(np.diff(offsets).data)
        self.children[0].feed(arr.values.slice(offsets[0], offsets[-1] - offsets[0]))

    def _feed_list_view(self, arr: pa.Array) -> None:
        self.parts[0].update(memoryview(pc.list_value_length(arr).to_numpy()))
        self.children[0].feed(arr.flatten())

    def _feed_fixed_list(self, arr: pa.Array) -> None:
        self.children[0].feed(arr.flatten())  # the list size is in the type

    def _feed_struct(self, arr: pa.Array) -> None:
        for child, values in zip(self.children, arr.flatten(), strict=True):
            child.feed(values)

    def _feed_dictionary(self, arr: pa.Array) -> None:
        digest = _array_digest(arr.dictionary)
        if not self.dictionaries or self.dictionaries[-1][1] != digest:
            # where in the indices each dictionary takes over: without it, chunks
            # (D1: [0, 0]) (D2: [0]) and (D1: [0]) (D2: [0, 0]) would write alike
            self.dictionaries.append((self.children[0].length, digest))
        self.children[0].feed(arr.indices)

    def _feed_union(self, arr: pa.Array) -> None:
        # each slot's type code, then per child the values its slots select, in order: a
        # sparse child's unselected slots and a dense child's unreferenced values do not count
        buffers, start, stop = arr.buffers(), arr.offset, arr.offset + len(arr)
        codes = np.frombuffer(buffers[1], np.int8)[start:stop]
        self.parts[0].update(codes.data)
        dense = self.type.mode == "dense"
        offsets = np.frombuffer(buffers[2], _INT32)[start:stop] if dense else None
        for i, (child, code) in enumerate(zip(self.children, self.type.type_codes, strict=True)):
            selected = codes == code
            values = arr.field(i)  # a sparse child comes sliced to this array already
            if offsets is not None:
                child.feed(values.take(pa.array(offsets[selected])))
            else:
                child.feed(values.filter(pa.array(selected)))

    def _feed_run_end(self, arr: pa.Array) -> None:
        # runs are an encoding, like chunks: the decoded values are what counts
        self.children[0].feed(pc.run_end_decode(arr))

    def _feed_elements(self, arr: pa.Array) -> None:
        for scalar in arr:  # slow, and only as exact as as_py(); no Arrow layout lands here today
            self.parts[0].update(bytes.fromhex(hash_value(scalar.as_py())))


def _array_digest(arr: pa.Array) -> bytes:
    """The digest of one array on its own (a dictionary, once per distinct dictionary)."""
    h = Hasher()
    _hash_array(h, arr)
    return bytes.fromhex(h.hexdigest())


def write_chunks(h: Hasher, t: pa.DataType, chunks: Iterable[pa.Array]) -> None:
    """Write the content of the arrays ``chunks`` of type ``t``, as one column (type not included).

    Chunking leaves no trace: ``[[1, 2], [3]]`` and ``[[1], [2, 3]]`` write the same.
    """
    column = _Column(t)
    for chunk in chunks:
        column.feed(chunk)
    column.write(h)


# --------------------------------------------------------------------------- the hashers


def _hash_array(h: Hasher, arr: pa.Array) -> None:
    h.tag(_ARRAY)
    h.value(type_value(arr.type))
    write_chunks(h, arr.type, [arr])


def _hash_chunked(h: Hasher, arr: pa.ChunkedArray) -> None:
    h.tag(_CHUNKED)
    h.value(type_value(arr.type))
    write_chunks(h, arr.type, arr.chunks)


def _write_columns(h: Hasher, schema: pa.Schema, num_rows: int,
                   columns: Iterable[Iterable[pa.Array]]) -> None:
    h.value(type_value(schema))  # names, types, nullability, field and schema metadata
    h.value(num_rows)  # a table without columns still has rows
    for field, chunks in zip(schema, columns, strict=True):
        write_chunks(h, field.type, chunks)


def _hash_batch(h: Hasher, batch: pa.RecordBatch) -> None:
    h.tag(_BATCH)
    _write_columns(h, batch.schema, batch.num_rows, ([c] for c in batch.columns))


def _hash_table(h: Hasher, table: pa.Table) -> None:
    h.tag(_TABLE)
    _write_columns(h, table.schema, table.num_rows, (c.chunks for c in table.columns))


def register() -> None:
    """Install the pyarrow hashers (subclasses such as ``pa.Int64Array`` use ``pa.Array``'s)."""
    _install(pa.Array, _hash_array)
    _install(pa.ChunkedArray, _hash_chunked)
    _install(pa.RecordBatch, _hash_batch)
    _install(pa.Table, _hash_table)
