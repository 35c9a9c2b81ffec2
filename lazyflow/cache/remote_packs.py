"""Packs: values written at the same moment share one content object, each read by its span.

Design note
-----------
Why. A ``map=`` node over thousands of small elements stores its manifest's
chunks (``model/mapping.py``: up to 2,048 results each) and its own list of
results at once, each too large to travel inline in its entry: each was a
content object plus an entry, two PUTs apiece. Written as one *pack* — one
content object holding all their encoded values back to back — plus one
entry each naming the pack and its ``span`` (offset, length), they cost one
PUT for the bytes whatever their number. A reader fetches a value's span
with one ranged GET (S3 ``Range``), checks it against the entry's
``checksum`` (and, with trust, its signed ``sha256``: each member's own) and
decodes it; nothing else of the pack is read. A changed element rewrites
only its chunk and the node's list, in a new small pack: the old pack stays
for the other chunks that name it.

Policy. The tier buffers value puts bound for ``cas/`` (larger than
``INLINE_LIMIT``, at most :data:`MEMBER_LIMIT`) instead of queueing them
(:class:`Packing`), and releases the buffer to one lane as one pack job
when a record names a buffered key (the node's trace record, which follows
its value: so a map's chunks and its list travel together), when the
buffer holds :data:`PACK_LIMIT` bytes or :data:`PACK_MEMBERS` values, and
on ``flush``/``finish_run``. A buffer of one value is written as before
(its own content object). Buffered values are pending like any write:
``meta`` and ``get`` answer them at once. A tier without lanes (a worker's,
whose writes must be committed when its task returns) packs nothing.

Garbage collection needs nothing new: a member's entry names the pack as
its content (``cas``), so every run manifest row naming a member keeps the
pack, eviction removes the pack only with its last member, and a pack is
content like any other (uploaded create-only before its entries, named by
the xxh3-128 of its bytes). Rejected: an index object per pack, which
would cost one more PUT per pack and one more GET per read; the span in
each entry is the index.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import xxhash

from lazyflow.cache.remote_entries import INLINE_LIMIT
from lazyflow.cache.serialize import Encoded

__all__ = ["MEMBER_LIMIT", "PACK_LIMIT", "PACK_MEMBERS", "Pack", "Packing", "packable"]

MEMBER_LIMIT = 1 << 20
"""Values larger than this (bytes encoded) get their own content object (and dedupe)."""
PACK_LIMIT = 32 << 20
"""Bytes buffered at most before a pack is written."""
PACK_MEMBERS = 1024
"""Values buffered at most before a pack is written."""


def packable(encoded: Encoded | None) -> bool:
    """Whether a value's encoding goes into a pack rather than inline or alone."""
    return encoded is not None and INLINE_LIMIT < encoded.nbytes <= MEMBER_LIMIT


@dataclass(frozen=True, slots=True)
class Pack:
    """Encoded values back to back: the bytes of one content object, named by their
    xxh3-128 (``checksum``), and each value's ``(offset, length)`` in it."""

    members: tuple[Encoded, ...]
    spans: tuple[tuple[int, int], ...]
    checksum: str

    @classmethod
    def of(cls, members: Sequence[Encoded]) -> Pack:
        """The pack of ``members``, in order."""
        spans, offset = [], 0
        digest = xxhash.xxh3_128()
        for encoded in members:
            spans.append((offset, encoded.nbytes))
            offset += encoded.nbytes
            for chunk in encoded.chunks():
                digest.update(chunk)
        return cls(tuple(members), tuple(spans), digest.hexdigest())

    @property
    def nbytes(self) -> int:
        """Bytes of the pack."""
        return sum(length for _, length in self.spans)

    def chunks(self) -> Iterator[memoryview]:
        """The pack's bytes in order, without joining them."""
        for encoded in self.members:
            yield from encoded.chunks()


class Packing:
    """The keys whose value puts wait to be written together, in order (the tier's lock
    guards it)."""

    def __init__(self) -> None:
        self._keys: list[str] = []
        self._held: set[str] = set()
        self._nbytes = 0

    def __len__(self) -> int:
        return len(self._keys)

    def holds(self, key: str) -> bool:
        """Whether ``key``'s value waits here."""
        return key in self._held

    def add(self, key: str, nbytes: int) -> bool:
        """Hold ``key``'s value of ``nbytes``; whether the buffer is now full."""
        if key not in self._held:
            self._keys.append(key)
            self._held.add(key)
            self._nbytes += nbytes
        return self._nbytes >= PACK_LIMIT or len(self._keys) >= PACK_MEMBERS

    def take(self) -> list[str]:
        """The keys held, in order; the buffer is empty afterwards."""
        keys, self._keys = self._keys, []
        self._held.clear()
        self._nbytes = 0
        return keys
