"""The entry object of the remote layout: what one GET of ``ac/<ab>/<key>.json`` answers.

Design note
-----------
Format (remote layout 3, ``docs/cache-format.md``). An entry object holds
one of::

    meta + the encoded value inline (``data``)       a value of at most INLINE_LIMIT bytes
    meta + ``cas`` (a checksum)                       a value in cas/<ab>/<checksum>
    meta + ``cas`` + ``span`` (offset, length)        a value inside a pack (remote_packs.py)
    meta                                              a record
    meta with "key": K + a carried copy of K's entry  a record carrying K's entry

and, when its writer signs (``trust.py``), ``sig`` (the signatures) and,
for a value in ``cas/``, ``sha256`` (the SHA-256 of the value's bytes,
which the signature covers); a carried entry carries its own. Layout 3
stores these as a compact binary body (``remote_binary.py``) inside
``{"v": 3, "b": "<base85>"}``; layout 2 stored them as JSON fields
(``{"v": 2, "meta": {...}, "data": "<base64>"}``), which this lazyflow
still reads (:attr:`EntryObject.layout` says which: signatures cover it).

``meta`` is the entry's stamped metadata, exactly as the tier's ``meta``
answers it (the envelope every encoding keeps: a JSON object with
``"encoding"``). A value whose encoded bytes fit :data:`INLINE_LIMIT` travels
inside its entry, so a hit on it is one GET; a larger one lives in the
content object ``cas/<ab>/<checksum>``, shared by every entry with the same
bytes, or in a pack with other values written at the same moment. A record
whose metadata names another entry by ``key`` (a trace record) may carry a
copy of that entry, so a colleague resolving a target through its trace
record gets the target's entry in the same GET; the copy is only ever one
the writer held (its own write or an entry it read), and its bytes are
checked against their checksum like any other.

Why a binary body in a JSON wrapper rather than JSON fields: an 8-byte
value cost 317 bytes as JSON (field names, hex digests, base64), 172 now;
the wrapper keeps the rule that an older lazyflow meeting a newer layout
sees ``"v"`` and leaves the entry alone (a raw binary object would look
damaged to it, and be deleted). :data:`LAYOUT` changes when a reader that
ignores a new field would be wrong (a span: layout 2 readers would read the
whole pack as the value); a reader without trust configured ignores the
signatures, as an older lazyflow does; one with trust configured refuses an
entry they do not vouch for (``trust.py``).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import lazyflow.cache.remote_binary as binary
from lazyflow.cache.base import CorruptEntryError, Meta
from lazyflow.cache.serialize import Encoded, UnknownEncodingError

__all__ = ["INLINE_LIMIT", "LAYOUT", "READS", "EntryObject", "Signature", "UnknownLayoutError", "payload"]

LAYOUT = 3
"""The remote layout version this lazyflow writes (it reads 2 as well; 1:
``<ab>/<rest>.json`` beside a value object, read by ``remote_legacy.py``)."""
READS = (2, 3)
"""The entry-object layouts this lazyflow reads."""

INLINE_LIMIT = 4096
"""Encoded values up to this many bytes travel inside their entry object."""

STAMPS = frozenset({"created", "stored", "lazyflow", "encoding"})
"""Fields every write stamps afresh: two records differing only in them say the same."""


class UnknownLayoutError(UnknownEncodingError):
    """An entry object of a layout version this lazyflow does not read (a newer one wrote
    it): a miss, never a reason to replace or delete it."""

    def __init__(self, version: object) -> None:
        super().__init__(f"the entry object has remote layout version {version!r}, which this "
                         f"lazyflow does not read (it reads {' and '.join(map(str, READS))}); upgrade "
                         "lazyflow to read it")
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
    (``cas``: its checksum; with ``span``, the value's ``(offset, length)`` within a
    pack) or absent (a record), optionally with a ``carried`` entry; signed entries add
    their ``sig`` and, for content, its ``sha256``. ``layout`` is the layout it was read
    in (what its signatures cover depends on it: ``trust.message``)."""

    meta: Meta
    data: bytes | None = None
    cas: str | None = None
    carried: EntryObject | None = None
    sha256: str | None = None
    sig: tuple[Signature, ...] = ()
    span: tuple[int, int] | None = None
    layout: int = LAYOUT

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
        """The object's bytes in layout :data:`LAYOUT`: ``{"v": 3, "b": "<base85 body>"}``
        (``remote_binary.py``), never containing a raw newline."""
        body = binary.encode(self._body())
        return b'{"v":%d,"b":"%s"}' % (LAYOUT, binary.to_text(body).encode())

    def as_stored(self) -> EntryObject:
        """The entry as a reader will parse it from :meth:`to_json` (what a writer signs)."""
        return EntryObject.from_json(self.to_json())

    def _body(self) -> binary.Body:
        body: binary.Body = {"meta": self.meta}
        if self.data is not None:
            body["data"] = self.data
        if self.cas is not None:
            body["cas"] = self.cas
        if self.span is not None:
            body["span"] = self.span
        if self.sha256 is not None:
            body["sha256"] = self.sha256
        if self.sig:
            body["sig"] = [(s.key, s.alg, base64.b64decode(s.value)) for s in self.sig]
        if self.carried is not None:
            body["entry"] = self.carried._body()
        return body

    @classmethod
    def _from_body(cls, body: binary.Body) -> EntryObject:
        meta, data, cas = body["meta"], body.get("data"), body.get("cas")
        if (data is not None or cas is not None) and not (
                isinstance(meta.get("checksum"), str) and isinstance(meta.get("serializer"), str)):
            raise CorruptEntryError("entry object has a value but no checksum")
        carried = body.get("entry")
        return cls(meta, data, cas, None if carried is None else cls._from_body(carried),
                   body.get("sha256"),
                   tuple(Signature(k, a, base64.b64encode(v).decode())
                         for k, a, v in body.get("sig", ())),
                   body.get("span"), LAYOUT)

    def as_fields(self) -> dict[str, Any]:
        """The entry as the JSON fields layout 2 spelt it out (``meta``, ``data`` in
        base64, ``cas``, ``entry``, ``sha256``, ``sig``; and ``span``): for tools and
        tests that look inside an entry. :meth:`from_fields` takes them back."""
        fields: dict[str, Any] = {"meta": self.meta}
        if self.data is not None:
            fields["data"] = base64.b64encode(self.data).decode()
        if self.cas is not None:
            fields["cas"] = self.cas
        if self.span is not None:
            fields["span"] = list(self.span)
        if self.carried is not None:
            fields["entry"] = self.carried.as_fields()
        if self.sha256 is not None:
            fields["sha256"] = self.sha256
        if self.sig:
            fields["sig"] = [signature.to_json() for signature in self.sig]
        return fields

    @classmethod
    def from_fields(cls, fields: dict[str, Any], layout: int = LAYOUT) -> EntryObject:
        """The entry :meth:`as_fields` (or a layout-2 object) spells out;
        :class:`CorruptEntryError` if it is not one."""
        return cls._parse(fields, nested=False, layout=layout)

    @classmethod
    def from_json(cls, raw: bytes) -> EntryObject:
        """Parse an entry object of layout 3 or 2; :class:`CorruptEntryError` if it is not
        one, :class:`UnknownLayoutError` if a newer layout wrote it."""
        try:
            stored = json.loads(raw)
        except ValueError as e:
            raise CorruptEntryError(f"metadata is not JSON: {e}") from e
        if not isinstance(stored, dict):
            raise CorruptEntryError("metadata is not a lazyflow entry object")
        version = stored.get("v")
        if version == LAYOUT:
            return cls._from_body(binary.decode(binary.from_text(stored.get("b"))))
        if version == 2:
            return cls._parse(stored, nested=False, layout=2)
        raise UnknownLayoutError(version)

    @classmethod
    def _parse(cls, stored: dict[str, Any], *, nested: bool, layout: int) -> EntryObject:
        """An entry from its JSON fields (layout 2's object, or :meth:`as_fields`)."""
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
            entry = cls._parse(carried, nested=True, layout=layout)
        sha256 = stored.get("sha256")
        span = stored.get("span")
        if span is not None and not (isinstance(span, list) and len(span) == 2
                                     and all(type(n) is int and n >= 0 for n in span)):
            raise CorruptEntryError("entry object names its span wrongly")
        return cls(meta, decoded, cas, entry, sha256 if isinstance(sha256, str) else None,
                   _signatures(stored.get("sig")), None if span is None else tuple(span),
                   layout)


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
