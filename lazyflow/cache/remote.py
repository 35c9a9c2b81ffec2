"""The remote tier: entries under any fsspec URL (``s3://``, ``gcs://``, ``file://``, ``memory://``).

Design note
-----------
Layout. Content-addressed and sharded by the key's first two hex digits::

    <root>/ab/cdef….json            the entry's metadata (small; decides a hit)
    <root>/ab/cdef….<checksum16>    the encoded value (``serialize.py`` frames)

The metadata object is written *last* and names the value object it
describes, so it is the commit point: a reader that finds it also finds a
complete value object. Value objects are named by their checksum, so two
processes racing on one key never overwrite each other's bytes; the metadata
written last wins and always matches its object (the loser's object is an
orphan that ``clear`` or ``prune`` removes). Object stores make each put
atomic; on a local filesystem every object is written under a temporary name
and renamed. Reads stream a value in chunks into the buffers the decoded
arrays then own, and verify its checksum before unpickling.

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
failures into a :class:`CacheWarning`: a remote that is down never fails a
run. Rejected: a write-through remote, which would make every computed node
wait for the network.

Deadlines. Every filesystem call goes through ``_remote``, which waits for it
at most ``remote_options["lazyflow_timeout"]`` seconds (default 10; the key is
taken out before the options reach fsspec), on a worker thread
(``deadline.py``: backends spell timeouts differently and a hung mount has
none). The first call past its deadline takes the tier offline: one
:class:`CacheWarning` naming the URL, the operation and the deadline (given
by the caller's thread; for a background upload, by ``flush``), then every
call raises :class:`TierOfflineError` at once, which the hierarchy skips, so
the run goes on with the faster tiers. ``reset_outage`` (``Cache.flush``
calls it at the end of every run) lets the next run try again. An abandoned
upload never commits a wrong entry: the metadata object is written only
after the value object's put has returned, so an upload cut off at the value
leaves at most an orphan object (or a ``.tmp-`` file), and a metadata object
that lands late names a value object already complete.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from lazyflow.cache.base import NO_VALUE, Meta, TierOfflineError
from lazyflow.cache.config import ConfigError
from lazyflow.cache.deadline import DEFAULT_SECONDS, Deadline, Outage
from lazyflow.cache.serialize import (
    KNOWN_ENCODINGS,
    CorruptEntryError,
    Encoded,
    ForeignEntries,
    decode,
    dump_meta,
    encode,
    encoding_of,
    read_encoded,
    readable,
    stamp,
    unknown_encoding,
    verify_stream,
)
from lazyflow.errors import CacheWarning, LazyflowError

__all__ = ["TIMEOUT_OPTION", "RemoteTier", "RemoteUnavailableError"]

T = TypeVar("T")

TIMEOUT_OPTION = "lazyflow_timeout"
"""The ``remote_options`` key for the deadline in seconds; lazyflow's own, never fsspec's."""

_INSTALL_HINTS = {"s3": "lazyflow[s3]", "s3a": "lazyflow[s3]", "gcs": "gcsfs", "gs": "gcsfs",
                  "az": "adlfs", "abfs": "adlfs"}


class RemoteUnavailableError(LazyflowError, ImportError):
    """The filesystem for a remote cache URL is not installed."""


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
        import fsspec

        self.url = url
        self.options = dict(options or {})
        self.timeout = _timeout(url, self.options)
        fs_options = {k: v for k, v in self.options.items() if k != TIMEOUT_OPTION}
        try:
            # builds a client and contacts nothing (s3fs connects on the first call)
            self.fs, root = fsspec.core.url_to_fs(url, **fs_options)
        except ImportError as e:
            protocol = url.partition("://")[0]
            hint = _INSTALL_HINTS.get(protocol, f"the fsspec backend for {protocol}://")
            raise RemoteUnavailableError(
                f"cannot open remote cache {url!r}: {e}; install {hint} to use "
                f"{protocol}:// caches") from e
        except ValueError as e:
            raise ConfigError(f"remote cache URL {url!r} cannot be used: {e}; give an fsspec "
                              "URL such as s3://bucket/prefix or file:///shared/folder") from e
        self.root = root.rstrip("/")
        self.chunk_size = chunk_size
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self._local = "file" in protocols or "local" in protocols
        self._pending: dict[str, tuple[Meta, Encoded | None]] = {}
        self._foreign: set[str] = set()  # keys met holding an encoding this lazyflow cannot read
        self._futures: list[Future[None]] = []
        self._errors: list[str] = []
        self._lock = threading.Lock()
        self._deadline = Deadline(self.timeout, url)
        self._announced: Outage | None = None
        self._lane = threading.local()  # marks lane threads: they leave warnings to flush
        self._lanes = ([ThreadPoolExecutor(1, thread_name_prefix=f"lazyflow-remote-{i}")
                        for i in range(lanes)] if background else [])

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
            encoded = self._remote("read value",
                                   functools.partial(self._read_value, key, stored),
                                   nbytes=int(meta.get("size") or 0))
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
        stored = self._load_meta(key)
        if stored is None:
            return None
        meta: Meta = stored["meta"]
        if encoding_of(meta) not in KNOWN_ENCODINGS:
            raise unknown_encoding(meta, key)
        if stored.get("object") is None:
            return None
        try:
            present = self._verify_object(key, stored["object"], meta)
        except CorruptEntryError as e:
            e.node = meta.get("node")
            raise
        return meta if present else None

    def put(self, key: str, value: Any, meta: Meta) -> Meta | None:
        """Encode now, upload in the background (or at once without a background thread);
        returns the metadata stored."""
        with self._announcing():
            self._deadline.check()  # offline: no upload is even queued
        if self._foreign and key in self._foreign and self._holds_foreign(key):
            return None  # a newer lazyflow's entry, met by ``meta``: left in place
        encoded = None if value is NO_VALUE else encode(value)
        stamped = stamp(meta, encoded)
        if not self._lanes:
            self._write(key, stamped, encoded)
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
        self._remote("delete metadata",
                     functools.partial(self.fs.rm_file, self._path(key, "json")))
        if stored is not None and stored.get("object"):
            with contextlib.suppress(FileNotFoundError):
                self._remote("delete value", functools.partial(
                    self.fs.rm_file, self._path(key, stored["object"])))

    def keys(self) -> Iterator[str]:
        """Every key with a metadata object (pending writes included)."""
        found = {self._key_of(path) for path in self._listing() if path.endswith(".json")}
        return iter(sorted(found | set(self._pending)))

    def clear(self) -> None:
        """Remove everything under the root."""
        self.flush()
        self._remote("clear", self._remove_root, whole_tree=True)

    @property
    def nbytes(self) -> int:
        """Bytes stored under the root (metadata, values and orphans)."""
        return sum(int(info.get("size") or 0) for info in self._listing(detail=True).values())

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
        self._announce_outage()
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
        listing = self._listing()
        wanted = set()
        for path in listing:
            if path.endswith(".json"):
                stored = self._read_meta(self._key_of(path))
                if stored is not None and stored.get("object"):
                    wanted.add(self._path(self._key_of(path), stored["object"]))
        orphans = [p for p in listing if not p.endswith(".json") and p not in wanted
                   and ".tmp-" not in p]
        for path in orphans:
            self._remote("delete orphan", functools.partial(self.fs.rm_file, path))
        return len(orphans)

    @property
    def outage(self) -> Outage | None:
        """The operation that passed its deadline and took the tier offline, if any."""
        return self._deadline.outage

    def reset_outage(self) -> None:
        """Forget a passed deadline: the next operation contacts the remote again."""
        with self._lock:
            self._announced = None
        self._deadline.reset()

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
        self._lane.active = True
        try:
            self._write(key, meta, encoded)
        except TierOfflineError:
            pass  # the outage is announced once, by flush; not one failure per upload
        except Exception as e:
            with self._lock:
                self._errors.append(f"{key[:12]}… of node {meta.get('node')!r}: "
                                    f"{type(e).__name__}: {e}")
        finally:
            with self._lock:
                if self._pending.get(key, (None,))[0] is meta:
                    del self._pending[key]

    def _write(self, key: str, meta: Meta, encoded: Encoded | None) -> None:
        stored: dict[str, Any] = {"meta": meta, "object": None}
        if encoded is not None:
            stored["object"] = meta["checksum"][:16]
            # returns only once the value object is whole: then the metadata may name it
            self._put_object("value", self._path(key, stored["object"]), encoded.chunks(),
                             encoded.nbytes)
        self._put_object("metadata", self._path(key, "json"),
                         iter([memoryview(dump_meta(stored))]), 0)

    def _put_object(self, what: str, path: str, chunks: Iterator[memoryview],
                    nbytes: int) -> None:
        if not self._local:  # object stores: one put is atomic
            data = b"".join(chunks)
            self._remote(f"upload {what}", functools.partial(self.fs.pipe_file, path, data),
                         nbytes=nbytes)
            return
        self._remote(f"write {what}", functools.partial(self._write_file, path, chunks),
                     nbytes=nbytes)

    def _write_file(self, path: str, chunks: Iterator[memoryview]) -> None:
        """Write under a temporary name, then rename: a reader never sees a partial file."""
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        self.fs.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            with self.fs.open(temporary, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
            self.fs.mv(temporary, path)
        finally:
            if self.fs.exists(temporary):
                self.fs.rm_file(temporary)

    def _verify_object(self, key: str, name: str, meta: Meta) -> bool:
        """Stream the value object through its checksum; ``False`` if replaced meanwhile."""
        def verify() -> None:
            with self.fs.open(self._path(key, name), "rb", block_size=self.chunk_size,
                              cache_type="readahead") as f:
                verify_stream(f, meta["checksum"], size=meta.get("size"), chunk=self.chunk_size)

        try:
            self._remote("verify value", verify, nbytes=int(meta.get("size") or 0))
        except FileNotFoundError:
            current = self._load_meta(key)
            if current is not None and current.get("object") == name:
                raise CorruptEntryError(f"value object {name} is missing") from None
            return False  # replaced or deleted meanwhile
        return True

    def _read_value(self, key: str, stored: dict[str, Any]) -> Encoded:
        meta = stored["meta"]
        # readahead: the small header reads come out of the first block fetched
        with self.fs.open(self._path(key, stored["object"]), "rb",
                          block_size=self.chunk_size, cache_type="readahead") as f:
            return read_encoded(f, meta["serializer"], meta["checksum"], chunk=self.chunk_size)

    def _holds_foreign(self, key: str) -> bool:
        """Whether ``key`` still holds an entry of an encoding this lazyflow does not read."""
        stored = self._read_meta(key)
        if stored is not None and encoding_of(stored["meta"]) not in KNOWN_ENCODINGS:
            return True
        self._foreign.discard(key)
        return False

    def _read_meta(self, key: str) -> dict[str, Any] | None:
        """The stored metadata object; an unreadable one is dropped with a warning."""
        try:
            return self._load_meta(key)
        except CorruptEntryError as e:
            warnings.warn(f"dropped remote cache entry {key[:12]}… with unreadable metadata "
                          f"({e}); it will be recomputed", CacheWarning, stacklevel=4)
            self._remote("delete metadata",
                         functools.partial(self.fs.rm_file, self._path(key, "json")))
            return None

    def _load_meta(self, key: str) -> dict[str, Any] | None:
        """The stored metadata object, ``None`` if absent; :class:`CorruptEntryError` if unreadable."""
        path = self._path(key, "json")
        try:
            raw = self._remote("read metadata", functools.partial(self.fs.cat_file, path))
        except FileNotFoundError:
            return None
        try:
            stored = json.loads(raw)
        except ValueError as e:
            raise CorruptEntryError(f"metadata is not JSON: {e}") from e
        if not isinstance(stored, dict) or not isinstance(stored.get("meta"), dict):
            raise CorruptEntryError("metadata is not a lazyflow metadata object")
        return stored

    def _path(self, key: str, suffix: str) -> str:
        return f"{self.root}/{key[:2]}/{key[2:]}.{suffix}"

    def _key_of(self, path: str) -> str:
        shard, name = path.rstrip("/").split("/")[-2:]
        return shard + name.partition(".")[0]

    def _listing(self, detail: bool = False) -> Any:
        return self._remote("list", functools.partial(self._find, detail), whole_tree=True)

    def _find(self, detail: bool) -> Any:
        self.fs.invalidate_cache(self.root)
        if not self.fs.exists(self.root):
            return {} if detail else []
        return self.fs.find(self.root, detail=detail)

    def _remove_root(self) -> None:
        if self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)
        self.fs.invalidate_cache(self.root)

    # ----------------------------------------------------------------- deadlines

    def _remote(self, operation: str, call: Callable[[], T], *, nbytes: int = 0,
                whole_tree: bool = False) -> T:
        """``call()`` within the deadline; raises :class:`TierOfflineError` past it."""
        with self._announcing():
            return self._deadline.call(operation, call, nbytes=nbytes, whole_tree=whole_tree)

    @contextlib.contextmanager
    def _announcing(self) -> Iterator[None]:
        """Warn of the outage when an offline error passes through a caller's thread."""
        try:
            yield
        except TierOfflineError:
            if not getattr(self._lane, "active", False):
                self._announce_outage()
            raise

    def _announce_outage(self) -> None:
        """One :class:`CacheWarning` per outage, whichever thread notices it first."""
        outage = self._deadline.outage
        with self._lock:
            if outage is None or outage is self._announced:
                return
            self._announced = outage
        warnings.warn(f"the remote cache {outage}; it is skipped for the rest of this run, "
                      "which goes on with the memory and disk tiers (set remote_options="
                      f"{{{TIMEOUT_OPTION!r}: seconds}} to wait longer)", CacheWarning,
                      stacklevel=5)


def _timeout(url: str, options: dict[str, Any]) -> float:
    seconds = options.get(TIMEOUT_OPTION, DEFAULT_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not 0 < seconds < math.inf:
        raise ConfigError(f"remote cache {url!r}: remote_options[{TIMEOUT_OPTION!r}] must be a "
                          f"positive number of seconds, such as 5; got {seconds!r}")
    return float(seconds)


def _reopen(url: str, options: dict[str, Any], background: bool, chunk_size: int,
            lanes: int) -> RemoteTier:
    return RemoteTier(url, options, background=background, chunk_size=chunk_size, lanes=lanes)
