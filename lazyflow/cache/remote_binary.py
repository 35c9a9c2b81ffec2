"""The compact body of a layout-3 entry object: a binary header instead of JSON field names.

Design note
-----------
Why. In layout 2 an entry object was JSON whose field names, hex digests
and base64 took most of its bytes: an 8-byte value cost 317 bytes. Layout
3 packs the same information into a binary body (``struct``): the fields
every entry has (times, versions, size, serializer, checksum, digest, the
key a record names) at fixed places behind a bit mask, 32-hex digests as
their 16 bytes, serializers as one-byte codes, a value's content named by a
flag when it is the metadata's ``checksum`` (always, outside packs),
inline bytes raw, signatures raw. Fields a caller adds beyond those
(``node``, ``flow``, ``params``...) follow as compact JSON, so readers
still get back every field exactly, and ignore those they do not know.

The body travels inside a JSON object, ``{"v": 3, "b": "<base85 of the
body>"}``, which costs a quarter more than raw bytes but keeps one rule
for every lazyflow sharing a bucket: a layout-2 reader parses it, finds
``"v": 3`` and takes it for an entry of a newer layout (a miss, kept).
Rejected: a raw binary object, which a layout-2 reader would take for
damage and delete. Values are exact both ways: a field whose value does
not have the expected shape (a ``created`` that is an ``int``, a digest
that is not 32 lowercase hex digits) is written in the JSON part instead.

Layout of the body (little-endian; ``varint`` is LEB128)::

    u8 flags      DATA, CAS (the checksum's object), CAS_NAMED (16 more bytes: a pack),
                  SPAN, CARRIED, SHA256, SIGNED
    u16 fields    which header fields follow, in this order:
                  created f64, stored f64 (absent and flag STORED_SAME: equal to
                  created), lazyflow (u8 length + ASCII), encoding u8, size varint,
                  serializer u8 code, checksum 16 B, digest 16 B, key 16 B
    varint n, n bytes   the other fields, compact JSON (n = 0: none)
    DATA:       varint n, n bytes       the encoded value
    CAS_NAMED:  16 B                    the content object's checksum
    SPAN:       varint offset, varint length   the value's bytes within that object
    SHA256:     32 B
    SIGNED:     u8 count, then per signature: u8 n + key id, u8 n + algorithm,
                u8 n + the raw signature
    CARRIED:    the body of the carried entry (without CARRIED of its own)
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from typing import Any

from lazyflow.cache.base import CorruptEntryError, Meta
from lazyflow.cache.serialize import dump_meta

__all__ = ["SERIALIZERS", "Body", "decode", "encode"]

SERIALIZERS = ("pickle", "cloudpickle", "bytes", "json", "numpy", "arrow", "flat")
"""Serializer codes: a serializer's code is its position plus one (0: in the JSON part)."""

_DATA, _CAS, _CAS_NAMED, _SPAN, _CARRIED, _SHA256, _SIGNED = (1 << i for i in range(7))
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEADER = ("created", "stored", "lazyflow", "encoding", "size", "serializer", "checksum",
           "digest", "key")
_STORED_SAME = 1 << 15

Body = dict[str, Any]
"""An entry as plain fields: ``meta`` and, when present, ``data`` (bytes), ``cas``,
``span`` (offset, length), ``sha256``, ``sig`` (list of (key id, algorithm, raw
signature)) and ``entry`` (the carried entry's fields)."""


def encode(body: Body) -> bytes:
    """The binary body of an entry's fields (:data:`Body`)."""
    out = bytearray()
    _encode(out, body, nested=False)
    return bytes(out)


def decode(raw: bytes) -> Body:
    """The fields of a binary body; :class:`CorruptEntryError` if it is not one."""
    try:
        reader = _Reader(raw)
        body = _decode(reader, nested=False)
        if reader.at != len(raw):
            raise CorruptEntryError("entry object has bytes after its end")
        return body
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as e:
        raise CorruptEntryError(f"entry object is not a layout-3 body: {e}") from e


def to_text(raw: bytes) -> str:
    """The body as base85 text (JSON-safe: no quote, no backslash)."""
    return base64.b85encode(raw).decode()


def from_text(text: Any) -> bytes:
    """The body from its base85 text; :class:`CorruptEntryError` if it is not."""
    if not isinstance(text, str):
        raise CorruptEntryError("entry object has no body")
    try:
        return base64.b85decode(text)
    except (ValueError, binascii.Error) as e:
        raise CorruptEntryError(f"entry object's body is not base85: {e}") from e


# --------------------------------------------------------------------------- writing


def _encode(out: bytearray, body: Body, *, nested: bool) -> None:
    meta: Meta = body["meta"]
    cas, data, span = body.get("cas"), body.get("data"), body.get("span")
    sha256, sig, carried = body.get("sha256"), body.get("sig") or (), body.get("entry")
    flags = (_DATA if data is not None else 0) | (_SPAN if span is not None else 0) \
        | (_SHA256 if sha256 is not None else 0) | (_SIGNED if sig else 0) \
        | (_CARRIED if carried is not None and not nested else 0)
    if cas is not None:
        flags |= _CAS if cas == meta.get("checksum") and _HEX32.match(cas) else _CAS_NAMED
    out.append(flags)
    _encode_meta(out, meta)
    if data is not None:
        _varint(out, len(data))
        out += data
    if flags & _CAS_NAMED:
        out += _hex16(cas, "content checksum")
    if span is not None:
        _varint(out, span[0])
        _varint(out, span[1])
    if sha256 is not None:
        out += bytes.fromhex(sha256)
    if sig:
        out.append(len(sig))
        for key, alg, value in sig:
            for part in (key.encode(), alg.encode(), value):
                out.append(len(part))
                out += part
    if carried is not None and flags & _CARRIED:
        _encode(out, carried, nested=True)


def _encode_meta(out: bytearray, meta: Meta) -> None:
    present = 0
    header = bytearray()
    rest = dict(meta)
    created = rest.get("created")
    for index, name in enumerate(_HEADER):
        value = rest.get(name)
        packed = _pack_field(name, value)
        if packed is None:
            continue
        if name == "stored" and type(created) is float and value == created \
                and _pack_field("created", created) is not None:
            present |= _STORED_SAME
            del rest[name]
            continue
        present |= 1 << index
        header += packed
        del rest[name]
    out += struct.pack("<H", present)
    out += header
    extra = dump_meta(rest) if rest else b""
    _varint(out, len(extra))
    out += extra


def _pack_field(name: str, value: Any) -> bytes | None:
    """The header bytes of a field, or ``None`` when its value goes to the JSON part."""
    if name in ("created", "stored"):
        return struct.pack("<d", value) if type(value) is float and math.isfinite(value) \
            else None
    if name == "lazyflow":
        return bytes((len(value),)) + value.encode() if type(value) is str \
            and value.isascii() and len(value) < 256 else None
    if name == "encoding":
        return bytes((value,)) if type(value) is int and 0 <= value < 256 else None
    if name == "size":
        if type(value) is not int or value < 0:
            return None
        out = bytearray()
        _varint(out, value)
        return bytes(out)
    if name == "serializer":
        return bytes((SERIALIZERS.index(value) + 1,)) if value in SERIALIZERS else None
    return bytes.fromhex(value) if type(value) is str and _HEX32.match(value) else None


def _hex16(value: Any, what: str) -> bytes:
    if not (isinstance(value, str) and _HEX32.match(value)):
        raise ValueError(f"{what} {value!r} is not 32 lowercase hex digits")
    return bytes.fromhex(value)


def _varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


# --------------------------------------------------------------------------- reading


class _Reader:
    __slots__ = ("at", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.at = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.raw):
            raise ValueError("truncated")
        part = self.raw[self.at:self.at + n]
        self.at += n
        return part

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")


def _decode(reader: _Reader, *, nested: bool) -> Body:
    flags = reader.byte()
    if flags >= 1 << 7:
        raise ValueError("unknown flags (a new field comes with a new layout version)")
    meta = _decode_meta(reader)
    body: Body = {"meta": meta}
    if flags & _DATA:
        body["data"] = reader.take(reader.varint())
    if flags & _CAS:
        body["cas"] = meta.get("checksum")
    if flags & _CAS_NAMED:
        body["cas"] = reader.take(16).hex()
    if flags & _SPAN:
        body["span"] = (reader.varint(), reader.varint())
    if flags & _SHA256:
        body["sha256"] = reader.take(32).hex()
    if flags & _SIGNED:
        body["sig"] = [tuple(reader.take(reader.byte()) for _ in range(3))
                       for _ in range(reader.byte())]
        body["sig"] = [(k.decode(), a.decode(), v) for k, a, v in body["sig"]]
    if flags & _CARRIED:
        if nested:
            raise ValueError("a carried entry carries another")
        body["entry"] = _decode(reader, nested=True)
    return body


def _decode_meta(reader: _Reader) -> Meta:
    present = struct.unpack("<H", reader.take(2))[0]
    header: dict[str, Any] = {}
    for index, name in enumerate(_HEADER):
        if not present & (1 << index):
            continue
        if name in ("created", "stored"):
            header[name] = struct.unpack("<d", reader.take(8))[0]
        elif name == "lazyflow":
            header[name] = reader.take(reader.byte()).decode("ascii")
        elif name == "encoding":
            header[name] = reader.byte()
        elif name == "size":
            header[name] = reader.varint()
        elif name == "serializer":
            code = reader.byte()  # a code this lazyflow does not know: a newer serializer,
            # which comes with a newer encoding, so the entry is a miss, kept (never damage)
            header[name] = SERIALIZERS[code - 1] if 1 <= code <= len(SERIALIZERS) \
                else f"#{code}"
        else:
            header[name] = reader.take(16).hex()
    if present & _STORED_SAME and "created" in header:
        header["stored"] = header["created"]
    extra = reader.take(reader.varint())
    rest = json.loads(extra) if extra else {}
    if not isinstance(rest, dict):
        raise ValueError("metadata is not an object")
    return {**rest, **header}
