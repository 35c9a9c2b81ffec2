"""Garbage collection of a shared remote: mark from run manifests, sweep by listing metadata.

Design note
-----------
Policy (``docs/cache-format.md``, "Garbage collection"). An object's *last
use* is the latest of its own modification time plus the refresh interval
and the times of the run manifests (``remote_manifests.py``) that name it:
runs read and write entries without writing anything per hit, and their
manifests say which — except runs that only hit entries stored within the
refresh interval (``remote_options["lazyflow_refresh"]``, 1 day), which
write none: the interval added to the modification time is the latest such
a hit can have been. A collector must therefore use an interval at least as
long as every reader's (the default, unless a whole team changes it). A
window shorter than the interval goes by what runs recorded only.
A collection with window ``W`` (``prune(older_than=W)``; 7 days by default):

1. lists the remote once (sizes, modification times and versions, S3's
   ``LastModified`` and ``ETag``: no entry or content object is read);
2. *marks*: reads the manifests written within ``W`` (the live ones), which
   name entries and the content each names;
3. *sweeps* every entry object and every content object whose last use is
   older than ``W`` — so nothing younger than ``W`` goes (a run still going
   has not written its manifest yet; a content object is uploaded before its
   entry, and content a new entry reuses is refreshed by the writer), and
   nothing a run used within ``W`` goes, nor the content it names;
4. then, with ``max_size``, evicts the least recently used entries (never
   one modified within the last hour: a run may be writing it) until the
   entries and content left fit, each entry's content with it once no
   remaining entry names it.

Before deleting it looks once more at the manifests of the last days (runs
that ended while it marked) and spares what they name. Entries go before
content, so no entry is left naming content that is gone. Every delete is
conditional on the version listed (S3 ``If-Match``, in batches of 1,000): an
object replaced meanwhile is *kept* — a colleague's new entry, never taken
for damage — and the content its new version names is spared too. Expired
manifests (older than ``W``) go last, with leases past their expiry
(``remote_leases.py``: a holder that crashed); the statistics checkpoint is
then written from the listing (``remote_ledger.py``), leases never counted.

What stays possible: a run that was going while a collection ran, and that
used an entry nobody had used for ``W``, may miss that entry afterwards (its
manifest was not written yet): a recomputation, never a wrong value. A live
manifest this lazyflow cannot read (a newer format) stops the collection: it
might name anything.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lazyflow.cache.remote_entries import UnknownLayoutError
from lazyflow.cache.remote_inventory import Inventory, inventory
from lazyflow.cache.remote_leases import sweep as sweep_leases
from lazyflow.cache.remote_ledger import Figures, checkpoint_after, write_checkpoint
from lazyflow.cache.remote_manifests import RUNS, Manifest, ManifestName, day_of, named, read
from lazyflow.cache.remote_objects import Listed
from lazyflow.cache.serialize import CorruptEntryError
from lazyflow.errors import CacheWarning

if TYPE_CHECKING:
    from lazyflow.cache.remote_store import RemoteStore

__all__ = ["DEFAULT_WINDOW", "IN_FLIGHT", "READERS", "Collected", "collect"]

DEFAULT_WINDOW = 7 * 86400.0
"""Seconds of the window when ``prune`` is given none: what a run used within it stays."""
IN_FLIGHT = 3600.0
"""Seconds during which ``max_size`` never evicts an object just written."""
READERS = 8
"""Manifests read at a time (each one request: on S3, latency dominates)."""


@dataclass
class Collected:
    """What a collection did."""

    entries: int = 0
    content: int = 0
    freed: int = 0
    kept: int = 0
    manifests: int = 0
    left: int = 0

    def as_dict(self) -> dict[str, int]:
        """``removed`` (entry and content objects), ``freed`` and ``bytes`` (left), and
        ``entries``, ``content``, ``kept`` (replaced meanwhile), ``manifests`` (expired)."""
        return {"removed": self.entries + self.content, "freed": self.freed,
                "bytes": self.left, "entries": self.entries, "content": self.content,
                "kept": self.kept, "manifests": self.manifests}


@dataclass
class Marks:
    """What the live manifests say: each key's and each content object's last use, the
    content each key names, and the flow that used each key last."""

    used: dict[str, float] = field(default_factory=dict)
    content_used: dict[str, float] = field(default_factory=dict)
    refs: dict[str, set[str]] = field(default_factory=dict)
    flows: dict[str, tuple[float, str]] = field(default_factory=dict)
    refresh: float = 0.0  # an object counts as used this long after it was written

    def add(self, manifest: Manifest, when: float) -> None:
        """Mark what ``manifest`` (written at ``when``) names."""
        for key, cas, _ in manifest.rows:
            self.used[key] = max(self.used.get(key, 0.0), when)
            if self.flows.get(key, (-1.0, ""))[0] < when:
                self.flows[key] = (when, manifest.flow)
            if cas is not None:
                self.refs.setdefault(key, set()).add(cas)
                self.content_used[cas] = max(self.content_used.get(cas, 0.0), when)


@dataclass
class Plan:
    """The objects to delete, by kind, in the order they go."""

    entries: dict[str, Listed] = field(default_factory=dict)
    legacy: dict[str, Listed] = field(default_factory=dict)
    content: dict[str, Listed] = field(default_factory=dict)


def collect(store: RemoteStore, *, window: float = DEFAULT_WINDOW, limit: int | None = None,
            now: float | None = None) -> Collected:
    """Collect the remote under ``store``: keep what runs used within ``window`` seconds
    (``<= 0``: nothing), then evict by last use down to ``limit`` bytes."""
    now = time.time() if now is None else now
    since = now - window if window > 0 else float("inf")
    found = inventory(store, store.listing())
    # hits on entries younger than the refresh interval wrote no manifest: such an entry
    # counts as used until the interval ends; a window shorter than the interval asks for
    # what runs recorded only (older_than=0: everything goes)
    marks = Marks(refresh=store.refresh if window >= store.refresh else 0.0)
    seen = {item.path for _, item in found.manifests}
    if not _mark(store, marks, [(n, i) for n, i in found.manifests if i.modified >= since]):
        return Collected(left=found.entry_bytes)
    plan = _sweep(found, marks, since)
    if limit is not None:
        _evict(found, marks, plan, limit, now - min(max(window, 0.0), IN_FLIGHT))
    late = Marks()  # what runs that ended while this one marked used: spared
    if not _mark(store, late, [(n, i) for n, i in _recent(store, now) if i.path not in seen]):
        return Collected(left=found.entry_bytes)
    _spare(plan, late)
    done = _delete(store, found, plan, since)
    expired = [item for _, item in found.manifests if item.modified < since]
    expired += [item for item in found.temporaries if item.modified < since]
    store.delete_many(expired, what="delete run manifests")
    sweep_leases(store, found.leases, now)  # past their expiry: a holder that crashed
    done.manifests = sum(1 for _, item in found.manifests if item.modified < since)
    _record(store, found, marks, plan, since, now)
    return done


def _mark(store: RemoteStore, marks: Marks, manifests: list[tuple[ManifestName, Listed]]
          ) -> bool:
    """Read and mark the manifests (:data:`READERS` at a time); ``False`` (with a warning)
    when one is of a format this lazyflow does not read."""
    def fetched(item: Listed) -> tuple[Listed, Manifest | None, bool]:
        manifest = read(store, item.path)
        if manifest is not None:
            return item, manifest, True
        try:
            store.fetch(item.path, what="read run manifest")
        except FileNotFoundError:
            return item, None, True  # deleted meanwhile (expired, by another collection)
        return item, None, False

    with ThreadPoolExecutor(READERS, thread_name_prefix="lazyflow-collect") as pool:
        for item, manifest, readable in pool.map(fetched, [i for _, i in manifests]):
            if not readable:
                warnings.warn(f"the remote cache {store.url} holds run manifest "
                              f"{item.path!r}, which this lazyflow does not read (a newer "
                              "lazyflow wrote it); nothing was collected: upgrade lazyflow "
                              "to collect this remote", CacheWarning, stacklevel=5)
                return False
            if manifest is not None:
                marks.add(manifest, item.modified)
    return True


def _last_use(marks: Marks, key: str, item: Listed) -> float:
    """When the entry at ``item`` was last used: by a manifest naming it, or by a hit that
    wrote none (within the refresh interval after it was written)."""
    return max(item.modified + marks.refresh, marks.used.get(key, 0.0))


def _sweep(found: Inventory, marks: Marks, since: float) -> Plan:
    """Everything whose last use is before ``since``."""
    plan = Plan()
    plan.entries = {k: i for k, i in found.entries.items() if _last_use(marks, k, i) < since}
    plan.legacy = {k: i for k, i in found.legacy_entries.items()
                   if _last_use(marks, k, i) < since}
    plan.content = {c: i for c, i in found.content.items()
                    if max(i.modified + marks.refresh, marks.content_used.get(c, 0.0)) < since}
    return plan


def _evict(found: Inventory, marks: Marks, plan: Plan, limit: int, before: float) -> None:
    """Add the least recently used entries (modified before ``before``) to ``plan``, each
    with the content no remaining entry names, until what is left fits ``limit`` bytes."""
    left = _left(found, plan)
    holders = Counter(cas for key in (*found.entries, *found.legacy_entries)
                      if key not in plan.entries and key not in plan.legacy
                      for cas in marks.refs.get(key, ()))
    candidates = sorted(
        (_last_use(marks, key, item), key, item) for key, item in
        [*found.entries.items(), *found.legacy_entries.items()]
        if key not in plan.entries and key not in plan.legacy and item.modified < before)
    for _, key, item in candidates:
        if left <= limit:
            return
        (plan.legacy if key in found.legacy_entries else plan.entries)[key] = item
        left -= item.size + sum(v.size for v in found.legacy_values.get(key, []))
        for cas in marks.refs.get(key, ()):
            holders[cas] -= 1
            content = found.content.get(cas)
            if holders[cas] <= 0 and content is not None and cas not in plan.content \
                    and content.modified < before:
                plan.content[cas] = content
                left -= content.size


def _left(found: Inventory, plan: Plan) -> int:
    """Bytes of entries and content ``plan`` leaves."""
    gone = [*plan.entries.values(), *plan.legacy.values(), *plan.content.values(),
            *(v for key in plan.legacy for v in found.legacy_values.get(key, []))]
    return found.entry_bytes - sum(item.size for item in gone)


def _recent(store: RemoteStore, now: float) -> list[tuple[ManifestName, Listed]]:
    """The manifests of the last days, listed afresh."""
    days = {day_of(now - 86400), day_of(now), day_of(now + 86400)}
    found = []
    for day in sorted(days & set(store.folders(RUNS))):
        found += inventory(store, store.listing(f"{RUNS}/{day}")).manifests
    return found


def _spare(plan: Plan, late: Marks) -> None:
    """Take out of ``plan`` what the manifests read late name."""
    for key in late.used:
        plan.entries.pop(key, None)
        plan.legacy.pop(key, None)
    for cas in late.content_used:
        plan.content.pop(cas, None)


def _delete(store: RemoteStore, found: Inventory, plan: Plan, since: float) -> Collected:
    """Delete entries, then layout-1 objects, then content, each at the version listed."""
    done = Collected()
    kept = set(store.delete_many(list(plan.entries.values()), what="delete metadata"))
    for key in [k for k, i in plan.entries.items() if i.path in kept]:
        del plan.entries[key]  # replaced meanwhile: a colleague's new entry, it stays
        for cas in _names_now(store, key):  # and so does the content it names
            plan.content.pop(cas, None)
    kept_legacy = set(store.delete_many(list(plan.legacy.values()), what="delete metadata"))
    for key in [k for k, i in plan.legacy.items() if i.path in kept_legacy]:
        del plan.legacy[key]
    values = [v for key in plan.legacy for v in found.legacy_values.get(key, [])]
    values += [v for key, items in found.legacy_values.items()  # no metadata names them
               if key not in found.legacy_entries for v in items if v.modified < since]
    store.delete_many(values, what="delete value")
    kept_content = set(store.delete_many(list(plan.content.values()), what="delete value"))
    plan.content = {c: i for c, i in plan.content.items() if i.path not in kept_content}
    done.entries = len(plan.entries) + len(plan.legacy)
    done.content = len(plan.content)
    done.kept = len(kept) + len(kept_legacy) + len(kept_content)
    done.freed = sum(i.size for i in (*plan.entries.values(), *plan.legacy.values(),
                                      *plan.content.values(), *values))
    done.left = found.entry_bytes - done.freed
    return done


def _names_now(store: RemoteStore, key: str) -> list[str]:
    """The content the current entry object of ``key`` names (one read: only for entries
    replaced while the collection ran)."""
    try:
        found = store.read_entry(key)
    except (CorruptEntryError, UnknownLayoutError):
        return []
    cas = None if found is None else named(found[0])
    return [] if cas is None else [cas]


def _record(store: RemoteStore, found: Inventory, marks: Marks, plan: Plan, since: float,
            now: float) -> None:
    """Write the statistics checkpoint from what the listing holds after the collection
    (manifests that landed after the listing are left to ``stats`` to add)."""
    left_entries = {k: i for k, i in found.entries.items() if k not in plan.entries}
    left_entries.update({k: i for k, i in found.legacy_entries.items() if k not in plan.legacy})
    left_content = {c: i for c, i in found.content.items() if c not in plan.content}
    manifests = [n for n, i in found.manifests if i.modified >= since]
    if not left_entries and not left_content and not manifests:
        write_checkpoint(store, None)  # an empty remote keeps no checkpoint
        return
    total = Figures(len(left_entries), sum(i.size for i in left_entries.values())
                    + sum(i.size for i in left_content.values()))
    flows: dict[str, Figures] = {}
    counted: set[str] = set()
    for key, item in left_entries.items():
        flow = marks.flows.get(key)
        if flow is None:
            continue
        figures = flows.setdefault(flow[1], Figures())
        figures.add(1, item.size)
        for cas in marks.refs.get(key, ()):
            content = left_content.get(cas)
            if content is not None and cas not in counted:
                counted.add(cas)
                figures.add(0, content.size)
    write_checkpoint(store, checkpoint_after(manifests, total, flows, now))
