"""A listing of a remote cache sorted by what each object is, from its name alone.

Design note
-----------
Garbage collection and the first statistics of a remote list it once and
need to know what each object is without reading it: an entry object
(``ac/``), a content object (``cas/``), a run manifest (``runs/``), the
statistics checkpoint, a lease (``remote_leases.py``), an unfinished
temporary file, or an object of layout 1
(whose value objects are named after their entry's key, so each is paired
with its entry by name). :func:`inventory` sorts a listing so; anything else
under the root (a colleague's newer layout, files a person put there) is
left out, never touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lazyflow.cache.remote_leases import LEASES
from lazyflow.cache.remote_manifests import ManifestName, parse
from lazyflow.cache.remote_objects import Listed

if TYPE_CHECKING:
    from lazyflow.cache.remote_store import RemoteStore

__all__ = ["CHECKPOINT", "Inventory", "inventory"]

CHECKPOINT = "stats.json"
"""The statistics checkpoint's name under the root (``remote_ledger.py``)."""

_LEGACY_ENTRY = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{30})\.json$")
_LEGACY_VALUE = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{30})\.[0-9a-f]{16}$")


@dataclass
class Inventory:
    """The objects of one listing, by kind."""

    entries: dict[str, Listed] = field(default_factory=dict)
    """key -> its entry object (layouts 2 and 3)."""
    content: dict[str, Listed] = field(default_factory=dict)
    """checksum -> its content object."""
    manifests: list[tuple[ManifestName, Listed]] = field(default_factory=list)
    legacy_entries: dict[str, Listed] = field(default_factory=dict)
    """key -> its layout-1 metadata object."""
    legacy_values: dict[str, list[Listed]] = field(default_factory=dict)
    """key -> its layout-1 value objects (normally one)."""
    temporaries: list[Listed] = field(default_factory=list)
    """Files a writer on a folder had not finished (``.tmp-``)."""
    checkpoint: Listed | None = None
    leases: list[Listed] = field(default_factory=list)
    """Lease objects (``remote_leases.py``): never counted as stored entries."""

    @property
    def entry_bytes(self) -> int:
        """Bytes of every entry and content object, of both layouts."""
        return sum(item.size for item in self._stored())

    @property
    def entry_count(self) -> int:
        """Entry objects of both layouts."""
        return len(self.entries) + len(self.legacy_entries)

    def _stored(self) -> list[Listed]:
        return [*self.entries.values(), *self.content.values(),
                *self.legacy_entries.values(),
                *(item for items in self.legacy_values.values() for item in items)]


def inventory(store: RemoteStore, listing: list[Listed]) -> Inventory:
    """Sort ``listing`` (objects under the store's root) by kind."""
    found = Inventory()
    prefix = store.root.rstrip("/") + "/"
    for item in listing:
        if not item.path.startswith(prefix):
            continue
        relative = item.path[len(prefix):]
        if ".tmp-" in relative.rsplit("/", 1)[-1]:
            found.temporaries.append(item)
            continue
        key = store.key_of(item.path)
        if key is not None:
            found.entries[key] = item
            continue
        checksum = store.checksum_of(item.path)
        if checksum is not None:
            found.content[checksum] = item
            continue
        name = parse(relative)
        if name is not None:
            found.manifests.append((name, item))
            continue
        if relative.startswith(LEASES + "/"):
            found.leases.append(item)
            continue
        if relative == CHECKPOINT:
            found.checkpoint = item
            continue
        legacy = _LEGACY_ENTRY.match(relative)
        if legacy:
            found.legacy_entries[legacy[1] + legacy[2]] = item
            continue
        legacy = _LEGACY_VALUE.match(relative)
        if legacy:
            found.legacy_values.setdefault(legacy[1] + legacy[2], []).append(item)
    return found
