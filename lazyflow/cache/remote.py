"""The remote tier: entries under any fsspec URL (``s3://``, ``gcs://``, ``file://``, ``memory://``).

Design note
-----------
Jobs, kept apart. *Where and how objects are stored* — the layout (entries
in ``ac/``, content in ``cas/``), conditional writes and the deadline around
every call — is ``remote_store.py`` over ``remote_objects.py``; the entry
object's format is ``remote_entries.py``; what reads remember and how they
check bytes is ``remote_reads.py``; how values and records are written is
``remote_writes.py`` (records merged by ``remote_records.py``), and the
background lanes that write them ``remote_lanes.py`` (values written
together share one content object: ``remote_packs.py``); management from the
listing (keys, size, clearing, migrating, orphans, verifying, deleting) is
``remote_manage.py``; the old layout is ``remote_legacy.py``; the entry
that carries this process's environment description, ``remote_environment.py``. What each run
used is logged (``remote_manifests.py``) and queued at its end as the run's
*manifest*, written in the background (none when it only hit entries younger
than the refresh interval), which garbage collection (``remote_gc.py``, ``collect``) marks
from and whose ledgers the statistics (``remote_ledger.py``, ``usage``) sum
without listing; the requests each run sent are counted
(``remote_traffic.py``) and handed back by ``finish_run``. This module is
the *tier policy*: the Tier primitives on top, what an unreadable, foreign
or newer entry means, when writes happen, and the management methods, which
wait for this process's writes and delegate (``_Managed``), as the lease
methods the engine calls hand leases to ``remote_leases.py`` (``_Leasing``).

Requests. A hit costs one GET of the entry object (a small value is inline)
plus one of its content object when it is not; a miss costs one GET answered
"not found"; nothing a request does lists. What a run read, and what it
found missing, is remembered until :meth:`~RemoteTier.flush` ends it
(``remote_reads.py``), so the hierarchy's ``meta`` then ``get`` of one key
cost one GET, a key is asked at most once per run, and a trace record read
carries its target's entry, so a colleague resolving a cached target reads
one object. A key the run writes is found from the moment it is queued.

Versions. An entry naming an encoding this lazyflow does not read
(``serialize.readable``), or an entry object of a newer layout, is a miss:
``meta`` answers ``None`` and remembers the key, and ``put`` does not write
over it while it is there (create-only writes would not anyway).

State. Writes go through background *lanes* (``remote_lanes.py``), a key
always on the same one, so successive records of one key land in order
while different keys upload in parallel. ``pending`` maps keys being written
to their entry, so this process sees its own writes at once. ``flush`` waits
for them and turns failures into a :class:`CacheWarning`, and announces an
outage a lane met (lanes never warn themselves: one warning per outage, not
one per upload): a remote that is down never fails a run. Rejected: a
write-through remote, which would make every computed node wait for the
network.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import lazyflow.cache.remote_leases as leases
import lazyflow.cache.remote_ledger as ledger
import lazyflow.cache.remote_manifests as manifests
import lazyflow.cache.serialize as serialize
from lazyflow.cache.base import NO_VALUE, Meta
from lazyflow.cache.deadline import Outage
from lazyflow.cache.remote_entries import UnknownLayoutError
from lazyflow.cache.remote_environment import Carrier
from lazyflow.cache.remote_gc import DEFAULT_WINDOW, collect
from lazyflow.cache.remote_lanes import Lanes
from lazyflow.cache.remote_manage import Maintenance
from lazyflow.cache.remote_packs import Packing, packable
from lazyflow.cache.remote_reads import Read, Reads
from lazyflow.cache.remote_records import Version
from lazyflow.cache.remote_store import TIMEOUT_OPTION, RemoteStore, RemoteUnavailableError
from lazyflow.cache.remote_writes import Pending, Writes
from lazyflow.cache.serialize import (
    CorruptEntryError,
    ForeignEntries,
    decode,
    encode,
    encoding_of,
    readable,
    stamp,
    unknown_encoding,
)
from lazyflow.cache.trust import UntrustedEntryError
from lazyflow.errors import CacheWarning, warn

__all__ = ["TIMEOUT_OPTION", "RemoteTier", "RemoteUnavailableError"]

F = TypeVar("F", bound=Callable[..., Any])


def _uncharged(method: F) -> F:
    """Management's requests are not charged to the next run (``finish_run``'s figures)."""
    @functools.wraps(method)
    def managed(self: _Managed, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            self.store.traffic.take()
    return managed  # type: ignore[return-value]


class _Managed:
    """What ``Cache.stats``/``prune``/``clear`` and ``lazyflow cache verify`` ask of the
    remote tier: each waits for the tier's own pending writes, then hands the work to
    :class:`~lazyflow.cache.remote_manage.Maintenance` or the ledger and collector
    (what is managed is what is stored)."""

    store: RemoteStore
    _manage: Maintenance
    _pending: dict[str, Pending]
    _reads: Reads
    _writes: Writes
    _lock: threading.RLock

    def flush(self, *, manifests: bool = True) -> None:
        """Wait for the tier's pending writes (the tier's own)."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove the entry object (content may be shared: ``collect`` sweeps what no run
        uses), and content or a carrying record found damaged."""
        self.flush()
        self._manage.delete(key)

    @_uncharged
    def keys(self) -> Iterator[str]:
        """Every key with an entry object (layout-1 entries and pending writes included)."""
        return iter(self._manage.keys(self._pending))

    @_uncharged
    def clear(self) -> None:
        """Remove everything under the root."""
        self.flush()
        self._manage.clear()

    @_uncharged
    def check(self, key: str) -> Meta | None:
        """Compare the value's bytes with their checksum; nothing is unpickled.

        Returns the metadata of an intact entry, ``None`` when the key is gone
        or holds a record (no value); raises :class:`CorruptEntryError` naming
        what is damaged (metadata, missing content, the bytes, or the inline
        bytes of an entry a record carries), and :class:`UnknownEncodingError` for an
        entry it cannot judge. Nothing is deleted: that is the caller's
        decision (``lazyflow cache verify``).
        """
        self.flush()  # pending writes are this process's own, not stored bytes yet
        return self._manage.check(key)

    @property
    def nbytes(self) -> int:
        """Bytes stored under the root (entries, content, layout 1 and orphans), listed."""
        try:
            return self._manage.nbytes()
        finally:
            self.store.traffic.take()

    @_uncharged
    def usage(self) -> dict[str, Any]:
        """Entries and bytes held, in total and per ``flows``, without listing them: the
        statistics checkpoint plus the run manifests' ledgers since (``remote_ledger.py``)."""
        self.flush()
        return ledger.usage(self.store)

    @_uncharged
    def collect(self, max_size: int | None = None, cutoff: float | None = None
                ) -> dict[str, int]:
        """Garbage-collect by last use since ``cutoff`` (default: 7 days ago), then down to
        ``max_size`` bytes, least recently used first (``remote_gc.py`` says how)."""
        self.flush()
        now = time.time()
        window = DEFAULT_WINDOW if cutoff is None else now - cutoff
        done = collect(self.store, window=window, limit=max_size, now=now)
        with self._lock:  # what this process knew of the remote may be gone
            self._reads.end_run()
            self._reads.versions.clear()
            self._writes.forget_stored()
        return done.as_dict()

    @_uncharged
    def migrate(self, *, remove: bool = False) -> dict[str, Any]:
        """Copy every entry of remote layout 1 into the current layout (3), once after upgrading; the old
        objects stay for older lazyflows unless ``remove=True`` (``remote_legacy.py``)."""
        self.flush()
        return self._manage.migrate(remove=remove)

    @_uncharged
    def remove_orphans(self) -> int:
        """Delete content objects no entry names (left by writers cut off, or by entries
        deleted), and layout-1 value objects no layout-1 entry names."""
        self.flush()
        return self._manage.remove_orphans()


class _Leasing:
    """What the engine asks of the remote tier for a node declared with ``lease=``
    (``engine/lease.py``): take the "in progress" lease of a key, stop renewing it, and
    ask whether a colleague's entry has arrived meanwhile. The leases themselves are
    ``remote_leases.py``; these methods hand them to the tier's
    :class:`~lazyflow.cache.remote_leases.Holdings`."""

    _leases: leases.Holdings
    _reads: Reads
    _lock: threading.RLock

    def meta(self, key: str) -> Meta | None:
        """The entry's metadata (the tier's own)."""
        raise NotImplementedError

    def take_lease(self, key: str, seconds: float, holder: str, run: str
                   ) -> leases.Held | None:
        """Take the "in progress" lease of ``key`` for ``seconds`` (``remote_leases.py``):
        ``None`` when this process now holds it, or no lease can be had (compute either
        way); the live lease of someone else, to wait for, otherwise. A lease taken is
        renewed until :meth:`end_lease`, and released when the run ends, after its
        uploads."""
        return self._leases.take(key, seconds, holder, run)

    def end_lease(self, key: str) -> str | None:
        """The node computing ``key`` under this process's lease ended: stop renewing the
        lease (it is released when the run ends). Returns who took the lease over while
        the node computed, if someone did (``remote_leases.Holdings.stop``)."""
        return self._leases.stop(key)

    def arrived(self, key: str) -> bool:
        """Whether the entry of ``key`` is there now, asked again even if this run found
        it missing (a colleague holding its lease may have written it since)."""
        with self._lock:
            self._reads.missing.pop(key)
        try:
            return self.meta(key) is not None
        except Exception:  # an outage while waiting: the caller stops waiting
            return False


class RemoteTier(_Managed, _Leasing, ForeignEntries):
    """Entries under an fsspec URL, written in the background.

    ``options`` go to the fsspec filesystem, except ``lazyflow_timeout``: the
    seconds each remote operation may go unanswered (default 10) before the
    tier goes offline until :meth:`reset_outage`.

    >>> tier = RemoteTier("memory://lazyflow-doc", background=False)
    >>> stored = tier.put("ab" * 16, [1, 2], {"digest": "d"})   # the metadata, stamped
    >>> tier.get("ab" * 16), tier.meta("ab" * 16)["digest"]
    ([1, 2], 'd')
    """

    name = "remote"

    def __init__(self, url: str, options: dict[str, Any] | None = None, *,
                 background: bool = True, chunk_size: int = 64 * 2**20, lanes: int = 8) -> None:
        self.store = RemoteStore(url, options, chunk_size=chunk_size)
        self._reads = Reads(self.store)
        self._log = manifests.RunLog()  # what this run used: its manifest
        self._writes = Writes(self._reads, self._log)
        self._lock = threading.RLock()
        self._manage = Maintenance(self._reads, self._lock)  # listing, deleting, verifying
        self._pending: dict[str, Pending] = {}
        self._foreign: set[str] = set()  # keys met holding an encoding this lazyflow cannot read
        self._lanes = Lanes(self._writes, self._pending, self._lock, lanes if background else 0)
        self._packing = Packing()  # values held to be written together (remote_packs.py)
        self._carrier = Carrier()  # the entry carrying this environment's description
        self._leases = leases.Holdings(self.store)  # released as the run ends
        self._manifests = manifests.Publisher(self.store, background=background)
        _HOLDING.add(self)  # so that what is held is queued before the process exits

    # ----------------------------------------------------------------- settings (the store's)

    @property
    def url(self) -> str:
        """The fsspec URL of the cache."""
        return self.store.url

    @property
    def options(self) -> dict[str, Any]:
        """The ``remote_options`` as given, ``lazyflow_timeout`` included."""
        return self.store.options

    @property
    def timeout(self) -> float:
        """Seconds each remote operation may go unanswered."""
        return self.store.timeout

    @property
    def fs(self) -> Any:
        """The fsspec filesystem."""
        return self.store.fs

    @property
    def root(self) -> str:
        """The path under which the entries live on :attr:`fs`."""
        return self.store.root

    # ----------------------------------------------------------------- Tier

    def contains(self, key: str) -> bool:
        """Whether an entry object of ``key`` exists (whatever its encoding or layout)."""
        if key in self._pending or self._reads.memo.get(key) is not None:
            return True
        if self._reads.known_missing(key):
            return False
        try:
            return self._reads.fetch(key) is not None
        except UnknownLayoutError:
            return True
        except CorruptEntryError as e:
            self._drop_unreadable(key, e)
            return False

    def meta(self, key: str) -> Meta | None:
        """The entry's metadata, from one GET of its entry object (or remembered from this
        run); content is not touched.

        ``None`` also for an entry of an encoding this lazyflow does not read
        (``serialize.readable``): a miss, and ``put`` will not replace it.
        """
        pending = self._pending.get(key)
        if pending is not None:
            return pending.meta
        read = self._read(key)
        if read is None:
            return None
        return self._screened(key, read.entry.meta, f"remote cache {self.url}")

    def get(self, key: str) -> Any:
        """The value: inline in the entry, or its content object streamed; checksum verified
        before decoding; ``KeyError`` if absent."""
        pending = self._pending.get(key)
        if pending is not None:
            return NO_VALUE if pending.encoded is None else decode(pending.encoded)
        read = self._read(key)
        if read is None:
            raise KeyError(key)
        if not readable(read.entry.meta, f"remote cache {self.url}"):
            raise unknown_encoding(read.entry.meta, key)
        encoded = self._reads.encoded(key, read)
        return NO_VALUE if encoded is None else decode(encoded)

    def put(self, key: str, value: Any, meta: Meta) -> Meta | None:
        """Encode now, write in the background (or at once without a background thread);
        returns the metadata stored.

        A value's entry is written create-only: when one holds the key already
        (a colleague's, or this process's), it stays, as valid as this one. A
        record replaces the version this process read (``remote_records.py``).
        """
        self.store.check_online()  # offline: no upload is even queued
        self.store.check_writable()  # read-only: the hierarchy writes the local tiers only
        if self._foreign and key in self._foreign and self._holds_foreign(key):
            return None  # a newer lazyflow's entry, met by ``meta``: left in place
        self._reads.missing.pop(key)  # written by this run: found from now on
        queued = self._pending.get(key)
        if value is not NO_VALUE and queued is not None and queued.encoded is not None:
            return queued.meta  # the first entry of a key stays, here as on the remote
        encoded = None if value is NO_VALUE else encode(value)
        if encoded is not None:  # the environment's description rides on an entry
            meta = self._carrier.stamp(key, meta)  # (remote_environment.py)
        stamped = stamp(meta, encoded)
        if self._lanes:
            target = stamped.get("key") if encoded is None else None
            if isinstance(target, str) and self._packing.holds(target):
                self._release()  # a record follows its value: the pack goes first
        pending = self._writes.pending(stamped, encoded, self._pending)
        if not self._lanes:
            self._writes.write(key, pending)
            return stamped
        if packable(encoded):  # held, to be written with the values that follow it
            with self._lock:
                self._pending[key] = pending
                full = self._packing.add(key, pending.encoded.nbytes
                                         if pending.encoded is not None else 0)
            if full:
                self._release()
            return stamped
        self._lanes.submit(key, pending)
        return stamped

    def presume_missing(self, key: str) -> None:
        """The caller did not ask for ``key``, holding it for new (``Cache.lookup(local=True)``):
        it counts as missing for the rest of the run, and a write of it uploads without
        checking first (create-only still: an entry there already stays)."""
        if key in self._pending or self._reads.memo.get(key) is not None:
            return
        with self._lock:
            if self._reads.versions.get(key) is None:
                self._reads.versions.put(key, Version(None, False))
            if self._reads.remembers_misses:
                self._reads.missing.put(key, True)

    # ----------------------------------------------------------------- packs

    def _release(self) -> None:
        """Queue the values held for a pack as one write (``remote_packs.py``)."""
        with self._lock:
            members = [(key, self._pending[key]) for key in self._packing.take()
                       if key in self._pending]
        if members:
            self._lanes.submit_pack(members)

    # ----------------------------------------------------------------- runs

    writes_manifests = True
    """Its :meth:`flush` can leave run manifests being written (``Cache.flush``)."""

    def finish_run(self, flow: str, run: str, started: float
                   ) -> dict[str, dict[str, int]] | None:
        """End a run: wait for its uploads, queue its manifest when it wrote an entry or read
        one older than the refresh interval (``remote_manifests.due``; written in the
        background: :meth:`flush` waits for it), and return the requests and bytes it
        sent, per method (``None``: none), the manifest's PUT included as queued."""
        self._release()
        self._lanes.wait()
        self._leases.release(run)  # after the uploads: a colleague seeing it gone finds them
        self._reads.remembers_misses = True  # the run's workers, if any, are done
        manifest = None
        if not self.store.read_only:  # a reader that must not write leaves no manifest
            manifest = manifests.due(self.store, self._log, flow, run, started)
        if manifest is not None:
            self.store.traffic.add("PUT", len(manifest.to_json()))  # the run's, though later
            self._manifests.submit(manifest)
            if not self._manifests.background:  # written by now: its failure, if any
                self._manifests_failed()
        return self.store.traffic.take() or None

    # ----------------------------------------------------------------- background writes

    def flush(self, *, manifests: bool = True) -> None:
        """Wait for pending uploads, each failed one a :class:`CacheWarning`; then forget
        what this run read (the next run reads the remote afresh).

        ``manifests=False`` (the engine, as a run ends) leaves run manifests being
        written in the background; a failed one found written by then warns all the same.
        """
        self._release()
        self._lanes.wait()
        if manifests:
            self._manifests.wait()
        with self._lock:
            self._reads.end_run()
            self._writes.inflight.clear()
        self.store.announce_outage()
        errors = self._lanes.failures()
        if errors:
            shown = "; ".join(errors[:3]) + (f"; and {len(errors) - 3} more" if len(errors) > 3
                                              else "")
            warn(f"{len(errors)} write(s) to the remote cache {self.url} failed "
                          f"({shown}); those results stay local and will be uploaded when "
                          "recomputed", CacheWarning)
        self._manifests_failed()

    def _manifests_failed(self) -> None:
        """One :class:`CacheWarning` per run manifest that could not be written."""
        for error in self._manifests.failures():
            warn(error, CacheWarning)

    @property
    def outage(self) -> Outage | None:
        """The operation that passed its deadline and took the tier offline, if any."""
        return self.store.outage

    def reset_outage(self) -> None:
        """Forget a passed deadline: the next operation contacts the remote again."""
        self.store.reset_outage()

    def __repr__(self) -> str:
        return f"RemoteTier({self.url!r})"

    def opener(self) -> Callable[[], RemoteTier]:
        """How a worker opens this tier itself (``engine/shared.py``): same settings,
        writes synchronous, so an entry is committed when the worker's task returns.

        Until the run ends (``finish_run``), a miss may be a worker's write the next
        moment: misses are not remembered meanwhile."""
        with self._lock:
            self._reads.remembers_misses = False
            self._reads.missing.clear()
        return functools.partial(_reopen, self.url, self.options, False, self.store.chunk_size, 1)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as its settings (a worker process opens its own connection and thread)."""
        self.flush()
        return (_reopen, (self.url, self.options, bool(self._lanes), self.store.chunk_size,
                          max(1, len(self._lanes))))

    # ----------------------------------------------------------------- reads

    def _read(self, key: str) -> Read | None:
        """The entry of ``key``: remembered from this run, else one GET; an unreadable entry
        object is dropped with a warning, an untrusted one is a miss."""
        read = self._reads.memo.get(key)
        if read is None:
            if self._reads.known_missing(key):
                return None  # asked already in this run: not asked again
            try:
                read = self._reads.fetch(key)
            except UntrustedEntryError:  # trust configured: a miss, never written over
                self._foreign.add(key)
                return None
            except UnknownLayoutError as e:
                self._foreign.add(key)
                readable({"encoding": f"layout {e.version}"}, f"remote cache {self.url}")
                return None
            except CorruptEntryError as e:
                self._drop_unreadable(key, e)
                return None
        if read is not None:
            # its manifest keeps it, and says when it was used (none for a fresh one)
            self._log.read(key, read.entry, read.modified)
        return read

    def _drop_unreadable(self, key: str, error: CorruptEntryError) -> None:
        """An unreadable entry object: dropped (skipped when read-only), with a warning."""
        kept = "; it stays, the remote being read-only here" if self.store.read_only else ""
        warn(f"{'skipped' if kept else 'dropped'} remote cache entry {key[:12]}… with "
             f"unreadable metadata ({error}){kept}; it will be recomputed", CacheWarning)
        if kept:
            return
        with contextlib.suppress(FileNotFoundError):
            self.store.delete(self.store.entry_path(key), what="delete metadata")

    # ----------------------------------------------------------------- internals

    def _holds_foreign(self, key: str) -> bool:
        """Whether ``key`` still holds an entry of an encoding this lazyflow does not read."""
        try:
            read = self._reads.fetch(key)
        except UnknownLayoutError:
            return True
        except CorruptEntryError:
            read = None
        if read is not None and encoding_of(read.entry.meta) not in serialize.KNOWN_ENCODINGS:
            return True
        self._foreign.discard(key)
        return False


_HOLDING: weakref.WeakSet[RemoteTier] = weakref.WeakSet()


def _release_all() -> None:
    """At exit, queue the values tiers still hold for a pack, before the lanes' executors
    stop taking work (their own exit hook, registered earlier, runs after this one and
    waits for the uploads), as a value queued on a lane was always written."""
    for tier in list(_HOLDING):
        with contextlib.suppress(Exception):
            tier._release()


def _report_all() -> None:
    """At exit, after concurrent.futures joined the threads (which wrote what was queued),
    warn of the run manifests that could not be written."""
    for tier in list(_HOLDING):
        with contextlib.suppress(Exception):
            tier._manifests_failed()


# threading's exit hooks run before atexit's, newest first: this one before
# concurrent.futures' (registered at its import), which then joins the lanes and the
# manifests' thread; atexit's own hooks run after all of them
getattr(threading, "_register_atexit", atexit.register)(_release_all)
atexit.register(_report_all)


def _reopen(url: str, options: dict[str, Any], background: bool, chunk_size: int,
            lanes: int) -> RemoteTier:
    return RemoteTier(url, options, background=background, chunk_size=chunk_size, lanes=lanes)
