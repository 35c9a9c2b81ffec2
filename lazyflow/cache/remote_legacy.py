"""Remote layout 1, kept readable: found by listing, migrated once into the current layout.

Design note
-----------
Layout 1 (lazyflow before the remote layout was versioned) stored each entry
as two objects beside each other, sharded by the key's first two hex digits::

    <root>/ab/<rest of the key>.json               {"meta": {...}, "object": "<checksum[:16]>" or null}
    <root>/ab/<rest of the key>.<checksum[:16]>    the encoded value

Policy. A request never looks for these: probing the old name on every miss
would double the cost of every miss for every team, forever. Instead they
are reached by what lists the remote anyway: :func:`migrate` (run once after
upgrading: ``RemoteTier.migrate``) copies each into
the current layout (the content create-only, then the entry create-only, records last
so that a trace record carries its target's entry), checking every value's
checksum on the way; ``keys``, ``prune``, ``stats`` and ``verify`` see them
(the tier remembers the keys its listing found in layout 1 and reads,
verifies and deletes those through here), so old entries age out like any
other. A migrating process that signs (``trust.py``) signs the copies: it
vouches for what it copied, each value's checksum verified. Migration keeps
the old objects by default: colleagues still on an
older lazyflow read only those. Rejected: a marker object naming the
layout, which every process would have to read before its first miss (one
more request per process) and which older writers would never update.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lazyflow.cache.base import CorruptEntryError, Meta
from lazyflow.cache.remote_entries import EntryObject
from lazyflow.cache.serialize import KNOWN_ENCODINGS, Encoded, encoding_of
from lazyflow.cache.trust import content_sha256

if TYPE_CHECKING:
    from lazyflow.cache.remote_store import RemoteStore

__all__ = ["LegacyEntry", "Migration", "delete", "entry_path", "keys_in", "migrate", "orphans",
           "read", "value_path"]

_ENTRY = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{30})\.json$")


@dataclass(frozen=True, slots=True)
class LegacyEntry:
    """A layout-1 entry: its metadata and the path of its value object (``None``: a record)."""

    meta: Meta
    value: str | None


@dataclass(slots=True)
class Migration:
    """What :func:`migrate` did, entry by entry."""

    migrated: int = 0
    present: int = 0
    skipped: int = 0
    removed: int = 0
    damaged: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The counts (``damaged``: the keys whose value failed its checksum)."""
        return {"migrated": self.migrated, "present": self.present, "skipped": self.skipped,
                "removed": self.removed, "damaged": list(self.damaged)}


def entry_path(store: RemoteStore, key: str) -> str:
    """Where layout 1 keeps the metadata object of ``key``."""
    return f"{store.root}/{key[:2]}/{key[2:]}.json"


def value_path(store: RemoteStore, key: str, name: str) -> str:
    """Where layout 1 keeps value object ``name`` (a checksum prefix) of ``key``."""
    return f"{store.root}/{key[:2]}/{key[2:]}.{name}"


def keys_in(store: RemoteStore, listing: Iterable[str]) -> set[str]:
    """The keys of the layout-1 metadata objects among the listed paths."""
    found = set()
    prefix = store.root.rstrip("/") + "/"
    for path in listing:
        match = _ENTRY.match(path[len(prefix):]) if path.startswith(prefix) else None
        if match:
            found.add(match.group(1) + match.group(2))
    return found


def read(store: RemoteStore, key: str) -> LegacyEntry | None:
    """The layout-1 entry of ``key``; ``None`` when gone; :class:`CorruptEntryError` when
    its metadata object is not one."""
    try:
        fetched = store.fetch(entry_path(store, key))
    except FileNotFoundError:
        return None
    try:
        stored = json.loads(fetched.data)
    except ValueError as e:
        raise CorruptEntryError(f"metadata is not JSON: {e}") from e
    if not isinstance(stored, dict) or not isinstance(stored.get("meta"), dict):
        raise CorruptEntryError("metadata is not a lazyflow metadata object")
    name = stored.get("object")
    return LegacyEntry(stored["meta"], value_path(store, key, name) if name else None)


def delete(store: RemoteStore, key: str, entry: LegacyEntry | None) -> None:
    """Remove a layout-1 entry: its metadata object first (no reader then sees a hit)."""
    with contextlib.suppress(FileNotFoundError):
        store.delete(entry_path(store, key), what="delete metadata")
    if entry is not None and entry.value is not None:
        with contextlib.suppress(FileNotFoundError):
            store.delete(entry.value)


def orphans(store: RemoteStore, listing: Iterable[str], legacy: set[str]) -> list[str]:
    """Layout-1 value objects that no layout-1 metadata object names (left by the racing
    writers of that layout); ``legacy`` are the keys found in layout 1."""
    paths = list(listing)
    wanted = set()
    for key in legacy:
        try:
            entry = read(store, key)
        except CorruptEntryError:
            continue
        if entry is not None and entry.value is not None:
            wanted.add(entry.value)
    prefix = store.root.rstrip("/") + "/"
    values = [p for p in paths if p.startswith(prefix) and re.match(
        r"^[0-9a-f]{2}/[0-9a-f]{30}\.[0-9a-f]{16}$", p[len(prefix):])]
    return [p for p in values if p not in wanted]


def migrate(store: RemoteStore, legacy: set[str], *, remove: bool = False) -> Migration:
    """Copy the layout-1 entries of ``legacy`` keys into the current layout (values first, records
    last, each create-only); ``remove`` deletes each old entry once its copy is in place."""
    done = Migration()
    copied: dict[str, EntryObject] = {}
    entries = {key: _read_quietly(store, key) for key in sorted(legacy)}
    values = [k for k, e in entries.items() if e is not None and e.value is not None]
    records = [k for k, e in entries.items() if e is not None and e.value is None]
    for key in [*values, *records]:
        entry = entries[key]
        assert entry is not None
        if encoding_of(entry.meta) not in KNOWN_ENCODINGS:
            done.skipped += 1  # a newer lazyflow's: copied by that lazyflow, not guessed at
            continue
        try:
            copy = _copy(store, key, entry, copied)
        except (CorruptEntryError, FileNotFoundError):  # wrong bytes, or the value is gone
            done.damaged.append(key)
            continue
        if copy is None:
            done.present += 1
        else:
            copied[key] = copy
            done.migrated += 1
        if remove:
            delete(store, key, entry)
            done.removed += 1
    done.skipped += sum(1 for e in entries.values() if e is None)
    return done


def _read_quietly(store: RemoteStore, key: str) -> LegacyEntry | None:
    try:
        return read(store, key)
    except CorruptEntryError:
        return None


def _copy(store: RemoteStore, key: str, entry: LegacyEntry,
          copied: dict[str, EntryObject]) -> EntryObject | None:
    """Write one layout-1 entry in the current layout; ``None`` when it holds the key already."""
    from lazyflow.cache.remote_objects import PreconditionFailed

    meta = entry.meta
    if entry.value is None:
        target = meta.get("key")
        carried = copied.get(target) if isinstance(target, str) else None
        copy = EntryObject(meta, carried=carried if carried and not carried.is_record else None)
    else:
        encoded: Encoded = store.read_stream(entry.value, meta)  # checksum verified
        copy = EntryObject.for_value(meta, encoded)
        if copy.cas is not None:
            store.write_content(copy.cas, encoded)
            if _signs(store):  # the signature covers the content's SHA-256
                copy = replace(copy, sha256=content_sha256(encoded))
    copy = _signed(store, key, copy)
    try:
        store.write_entry(key, copy, create=True)
    except PreconditionFailed:
        return None
    return copy


def _signs(store: RemoteStore) -> bool:
    return store.trust is not None and store.trust.signer is not None


def _signed(store: RemoteStore, key: str, copy: EntryObject) -> EntryObject:
    """``copy`` signed as the entry of ``key`` when the migrating process signs: it
    vouches for what it copies (each value's checksum was verified on the way), so
    that readers trusting its key hit the migrated entries. A carried copy is one this
    migration wrote, signed already under its own key."""
    if not _signs(store) or store.trust is None:
        return copy
    return store.trust.sign(key, copy)
