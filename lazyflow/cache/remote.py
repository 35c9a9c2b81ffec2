"""The remote tier: entries under any fsspec URL (``s3://``, ``gcs://``, ``file://``, ``memory://``).

Design note
-----------
Two jobs, kept apart. *Where and how objects are stored* — the layout, atomic
writes, streamed reads and the deadline around every filesystem call — is
``remote_store.py`` (:class:`RemoteStore`, whose note explains both). This
module is the *tier policy* on top: what a missing, replaced or foreign
object means, and when writes happen.

Versions. A metadata object naming an encoding this lazyflow does not read
(``serialize.readable``: a colleague's newer lazyflow wrote it) is a miss:
``meta`` answers ``None`` and remembers the key, and ``put`` does not upload
over it while it is there; ``remove_orphans`` keeps the value object it names.

State. Writes go through background *lanes*: single-thread executors, a key
always on the same lane, so successive records of one key land in order
while different keys upload in parallel (a run writes three small objects
per node, and an object store answers each after tens of milliseconds).
``pending`` maps keys being written to their metadata and frames, so this
process sees its own writes at once. ``flush`` waits for them and turns
failures into a :class:`CacheWarning`, and announces an outage a lane met
(lanes never warn themselves: one warning per outage, not one per upload): a
remote that is down never fails a run. Rejected: a write-through remote,
which would make every computed node wait for the network.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from lazyflow.cache.base import NO_VALUE, Meta, TierOfflineError
from lazyflow.cache.deadline import Outage
from lazyflow.cache.remote_store import (
    META,
    TIMEOUT_OPTION,
    RemoteStore,
    RemoteUnavailableError,
    Stored,
)
from lazyflow.cache.serialize import (
    KNOWN_ENCODINGS,
    CorruptEntryError,
    Encoded,
    ForeignEntries,
    decode,
    encode,
    encoding_of,
    readable,
    stamp,
    unknown_encoding,
)
from lazyflow.errors import CacheWarning

__all__ = ["TIMEOUT_OPTION", "RemoteTier", "RemoteUnavailableError"]


class RemoteTier(ForeignEntries):
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
        self._pending: dict[str, tuple[Meta, Encoded | None]] = {}
        self._foreign: set[str] = set()  # keys met holding an encoding this lazyflow cannot read
        self._futures: list[Future[None]] = []
        self._errors: list[str] = []
        self._lock = threading.Lock()
        self._lanes = ([ThreadPoolExecutor(1, thread_name_prefix=f"lazyflow-remote-{i}")
                        for i in range(lanes)] if background else [])

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

    @property
    def chunk_size(self) -> int:
        """Bytes read at a time from a value object."""
        return self.store.chunk_size

    # ----------------------------------------------------------------- Tier

    def contains(self, key: str) -> bool:
        """Whether the metadata object of ``key`` exists (whatever its encoding)."""
        return key in self._pending or self._read_meta(key) is not None

    def meta(self, key: str) -> Meta | None:
        """Fetch the small metadata object only; the value object is not touched.

        ``None`` also for an entry of an encoding this lazyflow does not read
        (``serialize.readable``): a miss, and ``put`` will not replace it.
        """
        pending = self._pending.get(key)
        if pending is not None:
            return pending[0]
        stored = self._read_meta(key)
        if stored is None:
            return None
        return self._screened(key, stored["meta"], f"remote cache {self.url}")

    def get(self, key: str) -> Any:
        """Stream the value object, verify its checksum, decode; ``KeyError`` if absent."""
        pending = self._pending.get(key)
        if pending is not None:
            return NO_VALUE if pending[1] is None else decode(pending[1])
        stored = self._read_meta(key)
        if stored is None:
            raise KeyError(key)
        meta = stored["meta"]
        if not readable(meta, f"remote cache {self.url}"):
            raise unknown_encoding(meta, key)
        if stored.get("object") is None:
            return NO_VALUE
        try:
            encoded = self.store.read_object(self.store.path(key, stored["object"]), meta)
        except FileNotFoundError:
            current = self._read_meta(key)
            if current is not None and current.get("object") == stored["object"]:
                raise CorruptEntryError(f"value object {stored['object']} of the entry is "
                                        "missing") from None
            raise KeyError(key) from None  # replaced or deleted meanwhile
        return decode(encoded)

    def check(self, key: str) -> Meta | None:
        """Compare the value object's bytes with their checksum; nothing is unpickled.

        Returns the metadata of an intact entry, ``None`` when the key is gone
        or holds a record (no value); raises :class:`CorruptEntryError` naming
        what is damaged (metadata, a missing value object, the bytes), and
        :class:`UnknownEncodingError` for an entry it cannot judge. Nothing
        is deleted: that is the caller's decision (``lazyflow cache verify``).
        """
        self.flush()  # pending writes are this process's own, not stored bytes yet
        stored = self.store.read_meta(key)
        if stored is None:
            return None
        meta: Meta = stored["meta"]
        if encoding_of(meta) not in KNOWN_ENCODINGS:
            raise unknown_encoding(meta, key)
        if stored.get("object") is None:
            return None
        try:
            present = self._verified(key, stored["object"], meta)
        except CorruptEntryError as e:
            e.node = meta.get("node")
            raise
        return meta if present else None

    def put(self, key: str, value: Any, meta: Meta) -> Meta | None:
        """Encode now, upload in the background (or at once without a background thread);
        returns the metadata stored."""
        self.store.check_online()  # offline: no upload is even queued
        if self._foreign and key in self._foreign and self._holds_foreign(key):
            return None  # a newer lazyflow's entry, met by ``meta``: left in place
        encoded = None if value is NO_VALUE else encode(value)
        stamped = stamp(meta, encoded)
        if not self._lanes:
            self.store.put_entry(key, stamped, encoded)
            return stamped
        with self._lock:
            self._pending[key] = (stamped, encoded)
            lane = self._lanes[hash(key) % len(self._lanes)]
            self._futures.append(lane.submit(self._upload, key, stamped, encoded))
        return stamped

    def delete(self, key: str) -> None:
        """Remove the metadata object (first: no reader then sees a hit), then the value."""
        self.flush()
        stored = self._read_meta(key)
        self.store.delete(self.store.path(key, META), what="delete metadata")
        if stored is not None and stored.get("object"):
            with contextlib.suppress(FileNotFoundError):
                self.store.delete(self.store.path(key, stored["object"]))

    def keys(self) -> Iterator[str]:
        """Every key with a metadata object (pending writes included)."""
        found = {self.store.key_of(path) for path in self.store.list_objects()
                 if path.endswith(f".{META}")}
        return iter(sorted(found | set(self._pending)))

    def clear(self) -> None:
        """Remove everything under the root."""
        self.flush()
        self.store.remove_all()

    @property
    def nbytes(self) -> int:
        """Bytes stored under the root (metadata, values and orphans)."""
        listing = self.store.list_objects(detail=True)
        return sum(int(info.get("size") or 0) for info in listing.values())

    # ----------------------------------------------------------------- background writes

    def flush(self) -> None:
        """Wait for pending uploads; each failed one becomes a :class:`CacheWarning`."""
        while True:
            with self._lock:
                futures, self._futures = self._futures, []
            if not futures:
                break
            for future in futures:
                future.exception()  # bounded: each upload's calls have deadlines
        self.store.announce_outage()
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            shown = "; ".join(errors[:3]) + (f"; and {len(errors) - 3} more" if len(errors) > 3
                                              else "")
            warnings.warn(f"{len(errors)} write(s) to the remote cache {self.url} failed "
                          f"({shown}); those results stay local and will be uploaded when "
                          "recomputed", CacheWarning, stacklevel=3)

    def remove_orphans(self) -> int:
        """Delete value objects no metadata object points at (left by racing writers)."""
        self.flush()
        listing = self.store.list_objects()
        wanted = set()
        for path in listing:
            if path.endswith(f".{META}"):
                key = self.store.key_of(path)
                stored = self._read_meta(key)
                if stored is not None and stored.get("object"):
                    wanted.add(self.store.path(key, stored["object"]))
        orphans = [p for p in listing if not p.endswith(f".{META}") and p not in wanted
                   and ".tmp-" not in p]
        for path in orphans:
            self.store.delete(path, what="delete orphan")
        return len(orphans)

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
        writes synchronous, so an entry is committed when the worker's task returns."""
        return functools.partial(_reopen, self.url, self.options, False, self.chunk_size, 1)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as its settings (a worker process opens its own connection and thread)."""
        self.flush()
        return (_reopen, (self.url, self.options, bool(self._lanes), self.chunk_size,
                          max(1, len(self._lanes))))

    # ----------------------------------------------------------------- internals

    def _upload(self, key: str, meta: Meta, encoded: Encoded | None) -> None:
        try:
            with self.store.in_background():  # the outage is announced once, by flush
                self.store.put_entry(key, meta, encoded)
        except TierOfflineError:
            pass
        except Exception as e:
            with self._lock:
                self._errors.append(f"{key[:12]}… of node {meta.get('node')!r}: "
                                    f"{type(e).__name__}: {e}")
        finally:
            with self._lock:
                if self._pending.get(key, (None,))[0] is meta:
                    del self._pending[key]

    def _verified(self, key: str, name: str, meta: Meta) -> bool:
        """Whether value object ``name`` matches its checksum; ``False`` if it was replaced
        or deleted meanwhile, :class:`CorruptEntryError` if the metadata still names it."""
        try:
            self.store.verify_object(self.store.path(key, name), meta)
        except FileNotFoundError:
            current = self.store.read_meta(key)
            if current is not None and current.get("object") == name:
                raise CorruptEntryError(f"value object {name} is missing") from None
            return False
        return True

    def _holds_foreign(self, key: str) -> bool:
        """Whether ``key`` still holds an entry of an encoding this lazyflow does not read."""
        stored = self._read_meta(key)
        if stored is not None and encoding_of(stored["meta"]) not in KNOWN_ENCODINGS:
            return True
        self._foreign.discard(key)
        return False

    def _read_meta(self, key: str) -> Stored | None:
        """The stored metadata object; an unreadable one is dropped with a warning."""
        try:
            return self.store.read_meta(key)
        except CorruptEntryError as e:
            warnings.warn(f"dropped remote cache entry {key[:12]}… with unreadable metadata "
                          f"({e}); it will be recomputed", CacheWarning, stacklevel=4)
            self.store.delete(self.store.path(key, META), what="delete metadata")
            return None


def _reopen(url: str, options: dict[str, Any], background: bool, chunk_size: int,
            lanes: int) -> RemoteTier:
    return RemoteTier(url, options, background=background, chunk_size=chunk_size, lanes=lanes)
