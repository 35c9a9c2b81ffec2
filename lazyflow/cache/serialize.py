"""How a value becomes bytes and back: serializers, frames, checksums.

Design note
-----------
Policy. Common plain values (``bytes``; JSON-able scalars, lists and dicts;
numpy arrays; pandas frames and series of plain columns) are stored in
formats read without running code (``formats.py``): a hit on them
unpickles nothing. Every other value is pickled with protocol 5 and its
large buffers travel *out of band*: the pickle stream is frame 0 and every
buffer numpy or pandas exposes is a further frame, written straight from
the array's memory and read back into fresh buffers the arrays then own (no
copy either way, like ``np.save``/``np.load``). numpy and pandas values use
the standard pickler; everything else uses cloudpickle, so lambdas, closures
and classes defined in a notebook survive a restart. The entry's
``serializer`` says which of these wrote it.

State. None: these are pure functions. Where the bytes live is the tiers'
business (``disk.py``, ``remote.py``); they only move :class:`Encoded` frames.

On-disk layout of an encoded entry (the same for disk files, inline disk
blobs and remote objects)::

    b"LFv1" | u32 frame count | u64 length per frame | frame 0 | frame 1 ...

(little-endian counts). For a pickled value, frame 0 is the pickle stream,
decoded by the metadata's ``serializer``, and the other frames are its
out-of-band buffers; the other serializers say what their frames hold
(``formats.py``).

The xxh3-128 *checksum* of exactly those bytes is kept in the entry's
metadata and verified on every read: a truncated, torn or corrupted entry
raises :class:`CorruptEntryError` and is never decoded into a wrong value.
Why a checksum of the bytes rather than re-hashing the decoded value: it is
as cheap (xxh3 at >10 GB/s), it is checked *before* unpickling untrusted
bytes, and it does not depend on the value's hasher being stable across
processes (the cloudpickle fallback of ``hashing.py`` is not, for some
objects). Rejected: ``np.save`` files for arrays, which cover arrays only and
would need a second format for DataFrames.

Encoding version. An encoding version names all of the above (the frame
layout and magic, the checksum, the serializers and what the tiers' metadata
envelopes look like) and is stamped in every stored entry's metadata as
``"encoding"``: the *lowest* version that reads the entry
(:func:`encoding_for`), so that older lazyflows go on reading what they can.
Version 1 is pickle and cloudpickle (and records); version 2
(:data:`ENCODING`, the newest written) adds the serializers of
``formats.py``, whose entries are stamped 2, while pickled values and
records stay 1. The frame layout did not change, so the magic still spells
``LFv1``. A change to any of it is a new encoding version, read by the new
lazyflow beside the old ones; a new serializer in particular is one, since
a reader that does not know it would take the entry for damage. An older lazyflow meeting an entry of an
encoding it does not know (:func:`readable`) treats it as a miss, says so
once per process with the fix (upgrade), and never reads, overwrites or
deletes it: on a shared remote it is a newer colleague's entry. So whatever
changes, every encoding keeps the envelope old readers rely on: metadata is a
JSON object carrying ``"encoding"`` (disk: the first line of the row;
remote: ``{"meta": {...}, "object": ...}``). Entries written before the
version was stamped carry none and are encoding 1.
"""

from __future__ import annotations

import io
import json
import json.encoder
import mmap
import pickle
import queue
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import xxhash

import lazyflow.cache.formats as formats
import lazyflow.cache.pickler as pickler
from lazyflow._version import __version__
from lazyflow.cache.base import CorruptEntryError, Meta
from lazyflow.errors import CacheWarning, LazyflowError, warn

__all__ = ["ENCODING", "KNOWN_ENCODINGS", "CorruptEntryError", "Encoded", "ForeignEntries",
           "UnknownEncodingError", "UnloadableEntryError", "decode", "decode_bytes", "dump_meta",
           "encode", "encoding_for", "encoding_of", "read_encoded", "readable", "stamp",
           "unknown_encoding", "verify_stream", "write_encoded"]

ENCODING = 3
"""The newest encoding version this lazyflow writes (see the design note): an entry is
stamped with the lowest version that reads it (:func:`encoding_for`)."""
KNOWN_ENCODINGS = frozenset({1, 2, 3})
"""The encoding versions this lazyflow reads."""
MAGIC = b"LFv1"
_COUNT = struct.Struct("<I")
_LENGTH = struct.Struct("<Q")
_MAX_FRAMES = 1 << 20
_MAP_THRESHOLD = 1 << 20
_PLAIN_ROOTS = frozenset({"numpy", "pandas"})


class UnloadableEntryError(LazyflowError, ImportError):
    """An intact entry whose value needs code this process cannot import (a colleague's
    project module): a miss here, never a reason to delete the entry."""


class UnknownEncodingError(LazyflowError, KeyError):
    """An entry of an encoding version this lazyflow does not read (a newer lazyflow wrote
    it): a miss (hence a ``KeyError``), never a reason to read, replace or delete it."""

    def __str__(self) -> str:  # KeyError quotes its argument
        return str(self.args[0]) if self.args else ""


def encoding_for(serializer: str | None) -> int:
    """The encoding version an entry of ``serializer`` is stamped with (``None``: a record):
    1 for pickled values and records, which every lazyflow reads, else the version that
    added the ``formats.py`` serializer.

    >>> encoding_for("cloudpickle"), encoding_for("json"), encoding_for("flat"), encoding_for(None)
    (1, 2, 3, 1)
    """
    return formats.ENCODING_OF.get(serializer, 1) if serializer is not None else 1


def encoding_of(meta: Meta) -> object:
    """The encoding version stamped in ``meta`` (1 when none is: written before stamping)."""
    return meta.get("encoding", 1)


_WARNED: set[object] = set()
_WARNED_LOCK = threading.Lock()


def readable(meta: Meta, where: str) -> bool:
    """Whether this lazyflow reads entries of ``meta``'s encoding version.

    An unknown version gives one :class:`CacheWarning` per process and version,
    naming the version, ``where`` it was met (a tier) and the fix.
    """
    version = encoding_of(meta)
    if version in KNOWN_ENCODINGS:
        return True
    with _WARNED_LOCK:
        first = version not in _WARNED
        _WARNED.add(version)
    if first:
        warn(
            f"the {where} holds cache entries of encoding version {version!r}, written by a "
            f"newer lazyflow; lazyflow {__version__} reads encoding "
            f"{', '.join(map(str, sorted(KNOWN_ENCODINGS)))} only, so it recomputes those "
            "values here and leaves the entries as they are (never replaced or deleted): "
            "upgrade lazyflow (pip install -U lazyflow) to use them", CacheWarning)
    return False


class ForeignEntries:
    """What a byte-storing tier remembers of entries of an encoding it does not read: it
    answers them as misses and never replaces them (a newer colleague's work survives)."""

    _foreign: set[str]

    def _screened(self, key: str, meta: Meta | None, where: str) -> Meta | None:
        """``meta``, or ``None`` (remembering ``key``) when its encoding is unknown here."""
        if meta is not None and not readable(meta, where):
            self._foreign.add(key)
            return None
        return meta

    def foreign(self, key: str) -> bool:
        """Whether ``meta`` met ``key`` holding an entry of an encoding this lazyflow does not
        read, which ``put`` leaves in place (a worker opening its own tier must too)."""
        return key in self._foreign


def unknown_encoding(meta: Meta, key: str) -> UnknownEncodingError:
    """The error a tier raises when asked for the value of an entry it cannot read."""
    return UnknownEncodingError(
        f"cache entry {key[:12]}… has encoding version {encoding_of(meta)!r}, which this "
        f"lazyflow {__version__} does not read; upgrade lazyflow to read it")


@dataclass(frozen=True, slots=True)
class Encoded:
    """A value as frames: the pickle stream, then its out-of-band buffers."""

    serializer: str
    frames: tuple[memoryview, ...]

    @property
    def header(self) -> bytes:
        """Magic, frame count and frame lengths: what precedes the frames."""
        return (MAGIC + _COUNT.pack(len(self.frames))
                + b"".join(_LENGTH.pack(f.nbytes) for f in self.frames))

    @property
    def nbytes(self) -> int:
        """Bytes of the whole encoded entry, header included."""
        return len(self.header) + sum(f.nbytes for f in self.frames)

    def chunks(self) -> Iterator[memoryview]:
        """The entry's bytes in order, without joining them."""
        yield memoryview(self.header)
        yield from self.frames

    def checksum(self) -> str:
        """xxh3-128 of the entry's bytes, as stored in metadata."""
        h = xxhash.xxh3_128()
        for chunk in self.chunks():
            h.update(chunk)
        return h.hexdigest()

    def tobytes(self) -> bytes:
        """The whole entry as one bytes object (copies: use for small entries)."""
        return b"".join(self.chunks())


def encode(value: Any) -> Encoded:
    """``value`` as frames: in a format read without running code when one gives it back
    exactly (``formats.py``), else pickled (protocol 5, buffers out of band).

    >>> encoded = encode([1, 2.5, "x"])
    >>> encoded.serializer, decode(encoded)
    ('json', [1, 2.5, 'x'])
    >>> encode((1, 2.5)).serializer
    'cloudpickle'
    """
    plain = formats.encode(value)
    if plain is not None:
        return Encoded(*plain)
    buffers: list[pickle.PickleBuffer] = []
    root = type(value).__module__.partition(".")[0]
    serializer = "pickle" if root in _PLAIN_ROOTS else "cloudpickle"
    stream = _PICKLERS[serializer](value, buffers.append)
    frames = [memoryview(stream)]
    for buffer in buffers:
        try:
            frames.append(buffer.raw())
        except BufferError:  # a non-contiguous buffer: one copy, still correct
            frames.append(memoryview(bytes(buffer)))
    return Encoded(serializer, tuple(frames))


def decode(encoded: Encoded) -> Any:
    """Rebuild the value from its frames; arrays take the frames' buffers over."""
    if encoded.serializer in formats.SERIALIZERS:
        return _decode_plain(encoded)
    if encoded.serializer not in _PICKLERS:
        raise CorruptEntryError(
            f"entry was written with serializer {encoded.serializer!r}, which this lazyflow "
            f"does not know ({', '.join(_PICKLERS)}); upgrade lazyflow or clear the cache")
    try:
        return pickle.loads(encoded.frames[0], buffers=map(formats.owner, encoded.frames[1:]))
    except (ImportError, AttributeError) as e:  # the bytes are fine: the code is missing here
        raise UnloadableEntryError(
            f"the stored value needs code this process cannot import ({e}); the entry is "
            "kept and the node is recomputed here: make that module importable to reuse it"
        ) from e
    except Exception as e:
        raise CorruptEntryError(f"entry does not unpickle: {type(e).__name__}: {e}") from e


def _decode_plain(encoded: Encoded) -> Any:
    """A value of ``formats.py``: nothing is unpickled."""
    try:
        return formats.decode(encoded.serializer, encoded.frames)
    except ImportError as e:  # the bytes are fine: a library is missing here
        raise UnloadableEntryError(
            f"the stored value needs a library this process cannot import ({e}); the entry "
            "is kept and the node is recomputed here: install it to reuse the entry") from e
    except Exception as e:
        raise CorruptEntryError(f"entry does not decode as {encoded.serializer}: "
                                f"{type(e).__name__}: {e}") from e


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def read_encoded(stream: _Readable, serializer: str, checksum: str, *,
                 chunk: int = 16 * 2**20) -> Encoded:
    """Read an entry written by :meth:`Encoded.chunks` and verify its checksum.

    Each frame is read into its own fresh, writable buffer, ``chunk`` bytes
    at a time (so a remote read streams instead of holding the object twice),
    each chunk hashed right after it is read, while it is in the CPU cache.
    Raises :class:`CorruptEntryError` on a bad header, a short read or a
    checksum mismatch.
    """
    digest = xxhash.xxh3_128()
    head = _read_exactly(stream, len(MAGIC) + _COUNT.size, chunk, digest)
    if bytes(head[:len(MAGIC)]) != MAGIC:
        raise CorruptEntryError("entry does not start with the lazyflow magic bytes")
    (count,) = _COUNT.unpack(head[len(MAGIC):])
    if not 0 < count <= _MAX_FRAMES:
        raise CorruptEntryError(f"entry header claims {count} frames")
    lengths = _read_exactly(stream, count * _LENGTH.size, chunk, digest)
    frames = tuple(_read_exactly(stream, length, chunk, digest)
                   for (length,) in _LENGTH.iter_unpack(lengths))
    if stream.read(1):
        raise CorruptEntryError("entry has trailing bytes after its last frame")
    found = digest.hexdigest()
    if found != checksum:
        raise CorruptEntryError(f"entry checksum {found} does not match the recorded {checksum}")
    return Encoded(serializer, frames)


def verify_stream(stream: _Readable, checksum: str, *, size: int | None = None,
                  chunk: int = 16 * 2**20) -> None:
    """Hash a stored entry's bytes ``chunk`` at a time and compare them with its checksum.

    What ``lazyflow cache verify`` needs: nothing is decoded or unpickled, so
    an entry whose classes this process cannot import checks like any other,
    and only one chunk is held in memory. ``size`` is the recorded size, if
    any, to name a truncated entry as such. Raises :class:`CorruptEntryError`.

    >>> encoded = encode([1, 2])
    >>> verify_stream(io.BytesIO(encoded.tobytes()), encoded.checksum())
    """
    digest = xxhash.xxh3_128()
    found = 0
    while data := stream.read(chunk):
        digest.update(data)
        found += len(data)
    if size is not None and found != size:
        raise CorruptEntryError(f"entry has {found} bytes where {size} were stored "
                                f"({'truncated' if found < size else 'bytes added'})")
    if digest.hexdigest() != checksum:
        raise CorruptEntryError(f"entry checksum {digest.hexdigest()} does not match the "
                                f"recorded {checksum}")


def write_encoded(encoded: Encoded, write: Callable[[memoryview], object], *,
                  chunk: int = 16 * 2**20) -> str:
    """Write the entry's bytes through ``write``, hashing as it goes; return the checksum.

    Hashing each chunk right after writing it hashes memory that is still in
    the CPU cache; it adds ~10% to a page-cache write (xxh3 runs at ~25 GB/s
    here). Rejected: hashing on a helper thread, which python-xxhash makes
    contend for the GIL with the writes and was slower.
    """
    digest = xxhash.xxh3_128()
    for piece in encoded.chunks():
        for start in range(0, max(piece.nbytes, 1), chunk):
            view = piece[start:start + chunk]
            write(view)
            digest.update(view)
    return digest.hexdigest()


def decode_bytes(data: bytes | memoryview, serializer: str, checksum: str) -> Encoded:
    """:func:`read_encoded` over bytes already in memory."""
    return read_encoded(io.BytesIO(data), serializer, checksum)


def stamp(meta: Meta, encoded: Encoded | None, *, checksum: bool = True) -> dict[str, Any]:
    """The metadata a tier stores: the caller's, plus size, serializer, checksum, versions
    (``records.Stamp``).

    ``created`` is when the value was first computed (kept through promotion);
    ``stored`` is when this tier wrote it, which is what ``prune`` ages by.
    ``checksum=False`` leaves the checksum to :func:`write_encoded`.
    """
    stamped = dict(meta)
    now = time.time()
    stamped.setdefault("created", now)
    stamped["stored"] = now
    stamped["lazyflow"] = __version__
    stamped["encoding"] = encoding_for(None if encoded is None else encoded.serializer)
    if encoded is not None:
        stamped.update(size=encoded.nbytes, serializer=encoded.serializer)
        if checksum:
            stamped["checksum"] = encoded.checksum()
    return stamped


def dump_meta(meta: Meta) -> bytes:
    """Metadata as compact JSON bytes (never containing a raw newline)."""
    return _encode_json(meta).encode()


# metadata: plain data, any stray object written by its repr (formats.compact_encoder)
_encode_json = formats.compact_encoder(
    json.JSONEncoder(separators=(",", ":"), default=repr).encode,
    {"a": [1, -0.5, 1e300, None, True, "\n\u00e9\"x"], "b": {"c": object}},
    default=repr, ascii_only=True)


def _read_exactly(stream: _Readable, length: int, chunk: int,
                  digest: xxhash.xxh3_128) -> memoryview:
    view = memoryview(_allocate(length))
    readinto = getattr(stream, "readinto", None)
    overlapped = readinto is not None and length >= _OVERLAP
    hasher = _OverlappedHash(digest) if overlapped else None
    if overlapped:
        chunk = min(chunk, _OVERLAP_CHUNK)
    filled = 0
    try:
        while filled < length:
            want = min(chunk, length - filled)
            if readinto is not None:
                got = readinto(view[filled:filled + want])
            else:
                data = stream.read(want)
                got = len(data)
                view[filled:filled + got] = data
            if not got:
                raise CorruptEntryError(f"entry is truncated: expected {length} more bytes, "
                                        f"got {filled}")
            if hasher is not None:
                hasher.update(view[filled:filled + got])
            else:
                digest.update(view[filled:filled + got])
            filled += got
    finally:
        if hasher is not None:
            hasher.finish()
    return view


_OVERLAP = 8 * 2**20
"""Frames from this many bytes on are hashed on a helper thread while the next chunk is
read: xxhash and ``readinto`` both release the GIL, so a 100 MB frame costs the read
alone (~26 ms here) instead of the read plus its hash (~7 ms more)."""
_OVERLAP_CHUNK = 4 * 2**20  # small enough that the last chunk's hash, not overlapped, is short


class _OverlappedHash:
    """Hashes chunks in order on a thread of its own while the caller reads the next one.

    A thread per frame, not a pool: a pool's worker would not survive a fork, and
    starting a thread (~0.1 ms) is nothing beside reading 8 MB.
    """

    __slots__ = ("_chunks", "_digest", "_thread")

    def __init__(self, digest: xxhash.xxh3_128) -> None:
        self._digest = digest
        self._chunks: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="lazyflow-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (piece := self._chunks.get()) is not None:
            self._digest.update(piece)

    def update(self, piece: memoryview) -> None:
        """Hash ``piece`` after the pieces given before it."""
        self._chunks.put(piece)

    def finish(self) -> None:
        """Wait until every piece given is hashed."""
        self._chunks.put(None)
        self._thread.join()


def _allocate(length: int) -> Any:
    """A writable buffer of ``length`` bytes, without zero-filling large ones.

    ``bytearray(n)`` writes n zeros first (0.06 s per 100 MB here, as long as
    reading the file). Large buffers come from ``np.empty`` when numpy is
    installed (the frames are numpy's or pandas' buffers anyway, and it
    reuses freed memory as ``np.load`` does), else from an anonymous mapping.
    Arrays decoded from a buffer own it. Once numpy is loaded every buffer is numpy's:
    an array decoded from a numpy buffer can be made read-only for good when the memory
    tier adopts it (``formats.owner``), one from a ``bytearray`` would have to be copied.
    """
    loaded = sys.modules.get("numpy")
    if loaded is not None:
        return loaded.empty(length, dtype=loaded.uint8)
    if length < _MAP_THRESHOLD:
        return bytearray(length)
    try:
        import numpy
    except ImportError:
        return mmap.mmap(-1, length)
    return numpy.empty(length, dtype=numpy.uint8)


def _pickle(value: Any, callback: Callable[[pickle.PickleBuffer], Any]) -> bytes:
    return pickle.dumps(value, protocol=5, buffer_callback=callback)


def _cloudpickle(value: Any, callback: Callable[[pickle.PickleBuffer], Any]) -> bytes:
    return pickler.dumps(value, callback)


_PICKLERS: dict[str, Callable[[Any, Callable[[pickle.PickleBuffer], Any]], bytes]] = {
    "pickle": _pickle,
    "cloudpickle": _cloudpickle,
}
