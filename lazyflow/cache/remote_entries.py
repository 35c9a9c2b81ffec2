"""The entry object of the remote layout: what one GET of ``ac/<ab>/<key>.json`` answers.

Design note
-----------
Format (remote layout 2, ``docs/cache-format.md``). An entry object is one
compact JSON object::

    {"v": 2, "meta": {...}, "data": "<base64 of the encoded value>"}   a small value, inline
    {"v": 2, "meta": {...}, "cas": "<checksum>"}                        a value in cas/
    {"v": 2, "meta": {...}}                                             a record
    {"v": 2, "meta": {..., "key": K}, "entry": {"meta": {...}, ...}}    a record carrying K's entry

and, when its writer signs (``trust.py``), ``"sig"`` (the signatures) and,
for a value in ``cas/``, ``"sha256"`` (the content's SHA-256, which the
signature covers) beside ``"meta"``; a carried entry carries its own.

``meta`` is the entry's stamped metadata, exactly as the tier's ``meta``
answers it (the envelope every encoding keeps: a JSON object with
``"encoding"``). A value whose encoded bytes fit :data:`INLINE_LIMIT` travels
inside its entry, so a hit on it is one GET; a larger one lives in the
content object ``cas/<ab>/<checksum>``, shared by every entry with the same
bytes. A record whose metadata names another entry by ``key`` (a trace
record) may carry a copy of that entry, so a colleague resolving a target
through its trace record gets the target's entry in the same GET; the copy
is only ever one the writer held (its own write or an entry it read), and
its bytes are checked against their checksum like any other.

Why JSON with base64 rather than a binary frame: the entry stays readable
by any tool (``aws s3 cp - | jq``), older readers ignore fields they do not
know, and inline values are small by definition (the 33% of base64 on 4 KiB
is 1.3 KiB). Later fields (the signatures were the first; a ``last_used``
kept in run manifests, not here) are added beside ``meta`` without a
version bump; :data:`LAYOUT` changes only when a reader that ignores a new
field would be wrong. A reader without trust configured ignores the
signatures, as an older lazyflow does; one with trust configured refuses an
entry they do not vouch for (``trust.py``).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from lazyflow.cache.base import CorruptEntryError, Meta
from lazyflow.cache.serialize import Encoded, UnknownEncodingError

__all__ = ["INLINE_LIMIT", "LAYOUT", "EntryObject", "Signature", "UnknownLayoutError", "payload"]

LAYOUT = 2
"""The remote layout version this lazyflow writes and reads (1: ``<ab>/<rest>.json`` beside
a value object, read by ``remote_legacy.py``)."""

INLINE_LIMIT = 4096
"""Encoded values up to this many bytes travel inside their entry object."""

STAMPS = frozenset({"created", "stored", "lazyflow", "encoding"})
"""Fields every write stamps afresh: two records differing only in them say the same."""


class UnknownLayoutError(UnknownEncodingError):
    """An entry object of a layout version this lazyflow does not read (a newer one wrote
    it): a miss, never a reason to replace or delete it."""

    def __init__(self, version: object) -> None:
        super().__init__(f"the entry object has remote layout version {version!r}, which this "
                         f"lazyflow does not read (it reads {LAYOUT}); upgrade lazyflow to read it")
        self.version = version


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature of an entry: the signing key's id, its algorithm and the signature
    bytes in standard base64 (``trust.py`` says what is signed)."""

    key: str
    alg: str
    value: str

    def to_json(self) -> dict[str, str]:
        """The signature as stored: ``{"key", "alg", "value"}``."""
        return {"key": self.key, "alg": self.alg, "value": self.value}


@dataclass(frozen=True, slots=True)
class EntryObject:
    """One entry as stored: metadata, and the value inline (``data``), by content
    (``cas``: its checksum) or absent (a record), optionally with a ``carried`` entry;
    signed entries add their ``sig`` and, for content, its ``sha256``."""

    meta: Meta
    data: bytes | None = None
    cas: str | None = None
    carried: EntryObject | None = None
    sha256: str | None = None
    sig: tuple[Signature, ...] = ()

    @classmethod
    def for_value(cls, meta: Meta, encoded: Encoded) -> EntryObject:
        """The entry of a value with stamped ``meta``: inline when its bytes are few
        (:data:`INLINE_LIMIT`), else naming its content object by checksum."""
        if encoded.nbytes <= INLINE_LIMIT:
            return cls(meta, data=encoded.tobytes())
        return cls(meta, cas=meta["checksum"])

    @property
    def is_record(self) -> bool:
        """Whether it stores no value (metadata only)."""
        return self.data is None and self.cas is None

    def carried_key(self) -> str | None:
        """The key of the entry carried, if any (the record's ``key`` field)."""
        key = self.meta.get("key")
        return key if self.carried is not None and isinstance(key, str) else None

    def to_json(self) -> bytes:
        """The object's bytes: compact JSON, never containing a raw newline."""
        return json.dumps({"v": LAYOUT, **self._fields()}, separators=(",", ":"),
                          default=repr).encode()

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"meta": self.meta}
        if self.data is not None:
            fields["data"] = base64.b64encode(self.data).decode()
        if self.cas is not None:
            fields["cas"] = self.cas
        if self.carried is not None:
            fields["entry"] = self.carried._fields()
        if self.sha256 is not None:
            fields["sha256"] = self.sha256
        if self.sig:
            fields["sig"] = [signature.to_json() for signature in self.sig]
        return fields

    @classmethod
    def from_json(cls, raw: bytes) -> EntryObject:
        """Parse an entry object; :class:`CorruptEntryError` if it is not one,
        :class:`UnknownLayoutError` if a newer layout wrote it."""
        try:
            stored = json.loads(raw)
        except ValueError as e:
            raise CorruptEntryError(f"metadata is not JSON: {e}") from e
        if not isinstance(stored, dict):
            raise CorruptEntryError("metadata is not a lazyflow entry object")
        if stored.get("v") != LAYOUT:
            raise UnknownLayoutError(stored.get("v"))
        return cls._parse(stored, nested=False)

    @classmethod
    def _parse(cls, stored: dict[str, Any], *, nested: bool) -> EntryObject:
        meta = stored.get("meta")
        if not isinstance(meta, dict):
            raise CorruptEntryError("metadata is not a lazyflow entry object")
        data = stored.get("data")
        cas = stored.get("cas")
        carried = stored.get("entry")
        if (data is not None and not isinstance(data, str)) or \
                (cas is not None and not isinstance(cas, str)):
            raise CorruptEntryError("entry object names its value wrongly")
        if (data is not None or cas is not None) and not (
                isinstance(meta.get("checksum"), str) and isinstance(meta.get("serializer"), str)):
            raise CorruptEntryError("entry object has a value but no checksum")
        try:
            decoded = None if data is None else base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as e:
            raise CorruptEntryError(f"inline value is not base64: {e}") from e
        entry = None
        if isinstance(carried, dict) and not nested:
            entry = cls._parse(carried, nested=True)
        sha256 = stored.get("sha256")
        return cls(meta, decoded, cas, entry, sha256 if isinstance(sha256, str) else None,
                   _signatures(stored.get("sig")))


def _signatures(stored: Any) -> tuple[Signature, ...]:
    """The well-formed signatures of a stored ``"sig"``; anything else is no signature (an
    entry it leaves unsigned is refused where trust is configured, ignored elsewhere)."""
    if not isinstance(stored, list):
        return ()
    return tuple(Signature(item["key"], item["alg"], item["value"]) for item in stored
                 if isinstance(item, dict)
                 and all(isinstance(item.get(name), str) for name in ("key", "alg", "value")))


def payload(meta: Meta | None) -> dict[str, Any] | None:
    """What a record says, without the fields every write stamps afresh."""
    return None if meta is None else {k: v for k, v in meta.items() if k not in STAMPS}
