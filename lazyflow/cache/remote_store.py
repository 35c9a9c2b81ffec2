"""The objects of a remote cache: one fsspec filesystem, a root, every call under a deadline.

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

Deadlines. Every filesystem call goes through ``_call``, which waits for it
at most ``remote_options["lazyflow_timeout"]`` seconds (default 10; the key is
taken out before the options reach fsspec), on a worker thread
(``deadline.py``: backends spell timeouts differently and a hung mount has
none). The first call past its deadline takes the store offline: one
:class:`CacheWarning` naming the URL, the operation and the deadline (given
by the caller's thread; for a call made :meth:`~RemoteStore.in_background`,
by whoever calls :meth:`~RemoteStore.announce_outage`: the tier's ``flush``),
then every call raises :class:`TierOfflineError` at once, which the
hierarchy skips, so the run goes on with the faster tiers. ``reset_outage``
(``Cache.flush`` calls it at the end of every run) lets the next run try
again. An abandoned upload never commits a wrong entry: the metadata object
is written only after the value object's put has returned, so an upload cut
off at the value leaves at most an orphan object (or a ``.tmp-`` file), and a
metadata object that lands late names a value object already complete.

Interface. The tier (``remote.py``) reaches the remote only through a few
methods, each one step under its deadline: :meth:`~RemoteStore.put_entry`
and :meth:`~RemoteStore.put_object` write, :meth:`~RemoteStore.read_meta`,
:meth:`~RemoteStore.read_object` and :meth:`~RemoteStore.verify_object`
read, :meth:`~RemoteStore.delete`, :meth:`~RemoteStore.list_objects` and
:meth:`~RemoteStore.remove_all` manage. Objects are addressed by path, built
with :meth:`~RemoteStore.path` (fsspec's own vocabulary); what a missing or
replaced object *means* is the tier's decision, not the store's. Kept small
because this is where conditional writes belong (a create-only put, a delete
only of an unchanged object) when colleagues share one cache.
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
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from lazyflow.cache.base import Meta, TierOfflineError
from lazyflow.cache.config import ConfigError
from lazyflow.cache.deadline import DEFAULT_SECONDS, Deadline, Outage
from lazyflow.cache.serialize import (
    CorruptEntryError,
    Encoded,
    dump_meta,
    read_encoded,
    verify_stream,
)
from lazyflow.errors import CacheWarning, LazyflowError

__all__ = ["META", "TIMEOUT_OPTION", "RemoteStore", "RemoteUnavailableError", "Stored"]

T = TypeVar("T")

TIMEOUT_OPTION = "lazyflow_timeout"
"""The ``remote_options`` key for the deadline in seconds; lazyflow's own, never fsspec's."""

META = "json"
"""The name of an entry's metadata object; a value object is named by its checksum."""

Stored = dict[str, Any]
"""A metadata object as stored: ``{"meta": the entry's Meta, "object": the value object's
name, or None for a record without a value}``."""

_INSTALL_HINTS = {"s3": "lazyflow[s3]", "s3a": "lazyflow[s3]", "gcs": "gcsfs", "gs": "gcsfs",
                  "az": "adlfs", "abfs": "adlfs"}


class RemoteUnavailableError(LazyflowError, ImportError):
    """The filesystem for a remote cache URL is not installed."""


class RemoteStore:
    """The objects under an fsspec URL: their layout, atomic writes, streamed reads, each
    filesystem call waited for at most its deadline (``options["lazyflow_timeout"]``).

    >>> store = RemoteStore("memory://lazyflow-store-doc")
    >>> store.put_entry("ab" * 16, {"digest": "d"}, None)   # a record: metadata only
    >>> store.read_meta("ab" * 16)
    {'meta': {'digest': 'd'}, 'object': None}
    >>> store.key_of(store.path("ab" * 16, META)) == "ab" * 16
    True
    """

    def __init__(self, url: str, options: dict[str, Any] | None = None, *,
                 chunk_size: int = 64 * 2**20) -> None:
        self.url = url
        self.options = dict(options or {})
        self.timeout = _timeout(url, self.options)
        self.fs, root = _filesystem(url, self.options)
        self.root = root.rstrip("/")
        self.chunk_size = chunk_size
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self._local = "file" in protocols or "local" in protocols
        self._deadline = Deadline(self.timeout, url)
        self._announced: Outage | None = None
        self._lock = threading.Lock()
        self._background = threading.local()  # marks threads that leave warnings to flush

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r})"

    # ----------------------------------------------------------------- layout

    def path(self, key: str, name: str) -> str:
        """Where object ``name`` of ``key`` lives: :data:`META` or a value object's name."""
        return f"{self.root}/{key[:2]}/{key[2:]}.{name}"

    @staticmethod
    def key_of(path: str) -> str:
        """The key an object's path belongs to."""
        shard, name = path.rstrip("/").split("/")[-2:]
        return shard + name.partition(".")[0]

    # ----------------------------------------------------------------- writes

    def put_entry(self, key: str, meta: Meta, encoded: Encoded | None) -> None:
        """Write an entry: its value object (named by its checksum), then the metadata
        object naming it, the commit point; ``encoded=None`` writes a record (no value)."""
        stored: Stored = {"meta": meta, "object": None}
        if encoded is not None:
            stored["object"] = meta["checksum"][:16]
            # returns only once the value object is whole: then the metadata may name it
            self.put_object(self.path(key, stored["object"]), encoded.chunks(),
                            nbytes=encoded.nbytes, what="value")
        self.put_object(self.path(key, META), [memoryview(dump_meta(stored))], what="metadata")

    def put_object(self, path: str, chunks: Iterable[memoryview], *, nbytes: int = 0,
                   what: str = "value") -> None:
        """Write one object whole or not at all; a reader never sees part of it.

        ``nbytes`` (the size, if large) lengthens the deadline; ``what`` names
        the object in an outage warning.
        """
        if not self._local:  # object stores: one put is atomic
            data = b"".join(chunks)
            self._call(f"upload {what}", functools.partial(self.fs.pipe_file, path, data),
                       nbytes=nbytes)
            return
        self._call(f"write {what}", functools.partial(self._write_file, path, chunks),
                   nbytes=nbytes)

    # ----------------------------------------------------------------- reads

    def read_meta(self, key: str) -> Stored | None:
        """The metadata object of ``key``, ``None`` if absent; :class:`CorruptEntryError` if
        unreadable."""
        path = self.path(key, META)
        try:
            raw = self._call("read metadata", functools.partial(self.fs.cat_file, path))
        except FileNotFoundError:
            return None
        try:
            stored = json.loads(raw)
        except ValueError as e:
            raise CorruptEntryError(f"metadata is not JSON: {e}") from e
        if not isinstance(stored, dict) or not isinstance(stored.get("meta"), dict):
            raise CorruptEntryError("metadata is not a lazyflow metadata object")
        return stored

    def read_object(self, path: str, meta: Meta) -> Encoded:
        """Stream the value object at ``path`` into fresh buffers, its checksum verified
        (:class:`CorruptEntryError` if wrong); ``FileNotFoundError`` if it is gone."""
        def read() -> Encoded:
            # readahead: the small header reads come out of the first block fetched
            with self.fs.open(path, "rb", block_size=self.chunk_size,
                              cache_type="readahead") as f:
                return read_encoded(f, meta["serializer"], meta["checksum"],
                                    chunk=self.chunk_size)

        return self._call("read value", read, nbytes=int(meta.get("size") or 0))

    def verify_object(self, path: str, meta: Meta) -> None:
        """Stream the value object at ``path`` through its checksum, decoding nothing:
        :class:`CorruptEntryError` if the bytes are wrong, ``FileNotFoundError`` if gone."""
        def verify() -> None:
            with self.fs.open(path, "rb", block_size=self.chunk_size,
                              cache_type="readahead") as f:
                verify_stream(f, meta["checksum"], size=meta.get("size"), chunk=self.chunk_size)

        self._call("verify value", verify, nbytes=int(meta.get("size") or 0))

    # ----------------------------------------------------------------- management

    def delete(self, path: str, *, what: str = "delete value") -> None:
        """Remove one object; ``FileNotFoundError`` if it is absent. ``what`` names the
        operation in an outage warning."""
        self._call(what, functools.partial(self.fs.rm_file, path))

    def list_objects(self, *, detail: bool = False) -> Any:
        """Every object's path under the root (with ``detail``: a dict of path to fsspec
        info, ``size`` included), unfinished ``.tmp-`` writes too; fresh, never cached."""
        return self._call("list", functools.partial(self._find, detail), whole_tree=True)

    def remove_all(self) -> None:
        """Remove the root and everything under it."""
        self._call("clear", self._remove_root, whole_tree=True)

    # ----------------------------------------------------------------- deadlines

    @property
    def outage(self) -> Outage | None:
        """The operation that passed its deadline and took the store offline, if any."""
        return self._deadline.outage

    def check_online(self) -> None:
        """Raise :class:`TierOfflineError` (announced) if a call has passed its deadline."""
        with self._announcing():
            self._deadline.check()

    def reset_outage(self) -> None:
        """Forget a passed deadline: the next operation contacts the remote again."""
        with self._lock:
            self._announced = None
        self._deadline.reset()

    @contextlib.contextmanager
    def in_background(self) -> Iterator[None]:
        """Calls made within leave the outage warning to :meth:`announce_outage`: one
        warning per outage, not one per background upload."""
        self._background.active = True
        try:
            yield
        finally:
            self._background.active = False

    def announce_outage(self) -> None:
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

    # ----------------------------------------------------------------- internals

    def _call(self, operation: str, call: Callable[[], T], *, nbytes: int = 0,
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
            if not getattr(self._background, "active", False):
                self.announce_outage()
            raise

    def _write_file(self, path: str, chunks: Iterable[memoryview]) -> None:
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

    def _find(self, detail: bool) -> Any:
        self.fs.invalidate_cache(self.root)
        if not self.fs.exists(self.root):
            return {} if detail else []
        return self.fs.find(self.root, detail=detail)

    def _remove_root(self) -> None:
        if self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)
        self.fs.invalidate_cache(self.root)


def _timeout(url: str, options: dict[str, Any]) -> float:
    seconds = options.get(TIMEOUT_OPTION, DEFAULT_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not 0 < seconds < math.inf:
        raise ConfigError(f"remote cache {url!r}: remote_options[{TIMEOUT_OPTION!r}] must be a "
                          f"positive number of seconds, such as 5; got {seconds!r}")
    return float(seconds)


def _filesystem(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    """The fsspec filesystem and root path of ``url``; contacts nothing (s3fs connects on
    the first call)."""
    import fsspec

    fs_options = {k: v for k, v in options.items() if k != TIMEOUT_OPTION}
    try:
        fs, root = fsspec.core.url_to_fs(url, **fs_options)
    except ImportError as e:
        protocol = url.partition("://")[0]
        hint = _INSTALL_HINTS.get(protocol, f"the fsspec backend for {protocol}://")
        raise RemoteUnavailableError(
            f"cannot open remote cache {url!r}: {e}; install {hint} to use "
            f"{protocol}:// caches") from e
    except ValueError as e:
        raise ConfigError(f"remote cache URL {url!r} cannot be used: {e}; give an fsspec "
                          "URL such as s3://bucket/prefix or file:///shared/folder") from e
    return fs, root
