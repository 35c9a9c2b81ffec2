"""The objects of a remote cache: one fsspec filesystem, a root, every call under a deadline.

Design note
-----------
Layout (remote layout 3; ``docs/cache-format.md``). Entries apart from content::

    <root>/ac/ab/<key>.json          the entry object: metadata, and a small value inline
                                     or the checksum of its content (``remote_entries.py``)
    <root>/cas/ab/<checksum>         a content object: an encoded value (``serialize.py``
                                     frames), or a pack of them (``remote_packs.py``),
                                     named by the xxh3-128 of its bytes

both sharded by the first two hex digits. A content object is shared by
every entry whose value has the same bytes (deduplication), and is written
*first*; the entry object is written *last*, so it is the commit point: a
reader that finds an entry also finds complete content. Both are written
create-only (``remote_objects.py``): content that exists already has the
same bytes (its name is their checksum), and an entry that exists already
is a colleague's equally valid answer for the same key, which stays. No
read or write lists anything: a hit is one GET of the entry (plus one of its
content when it is not inline), a miss is one GET answered "not found".
Layout 1 (``<root>/ab/<rest>.json`` beside its value object) is read by
``remote_legacy.py``, which migrates it.

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
again. An abandoned upload never commits a wrong entry: the entry object is
written only after the content's put has returned, so an upload cut off at
the content leaves at most an unreferenced content object (or a ``.tmp-``
file), and an entry object that lands late names content already complete.

Interface. The tier (``remote.py``) reaches the remote only through a few
methods, each one step under its deadline: :meth:`~RemoteStore.read_entry`,
:meth:`~RemoteStore.read_content`, :meth:`~RemoteStore.read_span` (a value in a
pack, one ranged GET) and :meth:`~RemoteStore.verify_content` read, :meth:`~RemoteStore.write_entry` and :meth:`~RemoteStore.write_content`
write (conditionally), :meth:`~RemoteStore.delete`,
:meth:`~RemoteStore.list_objects` and :meth:`~RemoteStore.remove_all`
manage (and :meth:`~RemoteStore.listing`, :meth:`~RemoteStore.folders`,
:meth:`~RemoteStore.delete_many` for garbage collection and statistics).
The requests sent are counted in :attr:`~RemoteStore.traffic`. What a missing, replaced or foreign object *means* is the tier's
decision, not the store's.

Trust. ``remote_options["lazyflow_trust"]`` (set by ``lf.Cache`` from
``sign_with``, ``trusted_keys`` and ``read_only``; taken out before fsspec
sees the options, like the deadline) is the store's :class:`~lazyflow.cache.trust.Trust`:
the tier's reads verify and its writes sign with it (``trust.py``), and
a read-only store refuses :meth:`~RemoteStore.put`, :meth:`~RemoteStore.delete`
and :meth:`~RemoteStore.remove_all` before any request is made.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from lazyflow.cache.base import Meta, TierOfflineError
from lazyflow.cache.config import ConfigError
from lazyflow.cache.deadline import DEFAULT_SECONDS, Deadline, Outage
from lazyflow.cache.remote_entries import EntryObject
from lazyflow.cache.remote_manifests import REFRESH
from lazyflow.cache.remote_objects import (
    Buffer,
    Fetched,
    Listed,
    Objects,
    PreconditionFailed,
    objects_for,
)
from lazyflow.cache.remote_traffic import Traffic
from lazyflow.cache.serialize import (
    CorruptEntryError,
    Encoded,
    decode_bytes,
    read_encoded,
    verify_stream,
)
from lazyflow.cache.trust import TRUST_OPTION, ReadOnlyRemoteError, Trust
from lazyflow.errors import CacheWarning, LazyflowError, warn

__all__ = ["ENTRIES", "CONTENT", "REFRESH_OPTION", "TIMEOUT_OPTION", "PreconditionFailed",
           "RemoteStore", "RemoteUnavailableError"]

T = TypeVar("T")

TIMEOUT_OPTION = "lazyflow_timeout"
"""The ``remote_options`` key for the deadline in seconds; lazyflow's own, never fsspec's."""
REFRESH_OPTION = "lazyflow_refresh"
"""The ``remote_options`` key for the refresh interval in seconds (``remote_manifests.py``:
hits on entries stored more recently write no manifest); lazyflow's own, never fsspec's."""

ENTRIES = "ac"
"""The folder of entry objects (the "action cache" of Bazel's remote protocol)."""
CONTENT = "cas"
"""The folder of content objects (content-addressed storage)."""

_INSTALL_HINTS = {"s3": "lazyflow[s3]", "s3a": "lazyflow[s3]", "gcs": "gcsfs", "gs": "gcsfs",
                  "az": "adlfs", "abfs": "adlfs"}


class RemoteUnavailableError(LazyflowError, ImportError):
    """The filesystem for a remote cache URL is not installed."""


class RemoteStore:
    """The objects under an fsspec URL: their layout, conditional writes, single-request
    reads, each filesystem call waited for at most its deadline
    (``options["lazyflow_timeout"]``).

    >>> store = RemoteStore("memory://lazyflow-store-doc")
    >>> version = store.write_entry("ab" * 16, EntryObject({"digest": "d"}), create=True)
    >>> store.read_entry("ab" * 16)[0].meta
    {'digest': 'd'}
    >>> store.key_of(store.entry_path("ab" * 16)) == "ab" * 16
    True
    """

    def __init__(self, url: str, options: dict[str, Any] | None = None, *,
                 chunk_size: int = 64 * 2**20) -> None:
        self.url = url
        self.options = dict(options or {})
        self.timeout = _timeout(url, self.options)
        self.refresh = _seconds(url, self.options, REFRESH_OPTION, REFRESH, zero=True)
        self.trust = _trust(url, self.options)
        self.fs, root = _filesystem(url, self.options)
        self.root = root.rstrip("/")
        self.chunk_size = chunk_size
        self.objects: Objects = objects_for(self.fs)
        self._deadline = Deadline(self.timeout, url)
        self._announced: Outage | None = None
        self._lock = threading.Lock()
        self._background = threading.local()  # marks threads that leave warnings to flush

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r})"

    @property
    def read_only(self) -> bool:
        """Whether nothing may be written or deleted here (``trust.py``)."""
        return self.trust is not None and self.trust.read_only

    def check_writable(self, what: str = "write") -> None:
        """Raise :class:`ReadOnlyRemoteError` if the store is read-only."""
        if self.read_only:
            raise ReadOnlyRemoteError(
                f"the remote cache {self.url} is read-only here (read_only=True, or trusted "
                f"keys without a key to sign with): {what} refused; writes go to the local "
                "tiers only")

    @property
    def traffic(self) -> Traffic:
        """The requests and bytes sent so far (``Traffic.take`` resets them)."""
        return self.objects.traffic

    # ----------------------------------------------------------------- layout

    def entry_path(self, key: str) -> str:
        """Where the entry object of ``key`` lives."""
        return f"{self.root}/{ENTRIES}/{key[:2]}/{key}.json"

    def content_path(self, checksum: str) -> str:
        """Where the content object of bytes with ``checksum`` lives."""
        return f"{self.root}/{CONTENT}/{checksum[:2]}/{checksum}"

    def key_of(self, path: str) -> str | None:
        """The key of an entry object's path; ``None`` for any other object."""
        return _named(path, ENTRIES, ".json")

    def checksum_of(self, path: str) -> str | None:
        """The checksum a content object's path names; ``None`` for any other object."""
        return _named(path, CONTENT, "")

    # ----------------------------------------------------------------- reads

    def read_entry(self, key: str) -> tuple[EntryObject, str | None] | None:
        """The entry object of ``key`` and its version, in one request; ``None`` when there
        is none; :class:`CorruptEntryError` when it is not one."""
        found = self.fetch_entry(key)
        return None if found is None else (found[0], found[1].version)

    def fetch_entry(self, key: str) -> tuple[EntryObject, Fetched] | None:
        """:meth:`read_entry`, with the object as fetched (its modification time too)."""
        try:
            fetched = self.fetch(self.entry_path(key), what="read metadata")
        except FileNotFoundError:
            return None
        return EntryObject.from_json(fetched.data), fetched

    def fetch(self, path: str, *, what: str = "read metadata") -> Fetched:
        """One whole (small) object and its version; ``FileNotFoundError`` when absent."""
        return self._call(what, functools.partial(self.objects.get, path))

    def read_content(self, checksum: str, meta: Meta) -> Encoded:
        """Stream the content object into fresh buffers, its checksum verified
        (:class:`CorruptEntryError` if wrong); ``FileNotFoundError`` if it is gone."""
        return self.read_stream(self.content_path(checksum), meta)

    def read_stream(self, path: str, meta: Meta) -> Encoded:
        """Stream the encoded value at ``path`` (``meta`` gives its size and checksum)."""
        size = int(meta.get("size") or 0)

        def read() -> Encoded:
            # readahead: the small header reads come out of the first block fetched
            with self.objects.open(path, size, self.chunk_size) as f:
                return read_encoded(f, meta["serializer"], meta["checksum"],
                                    chunk=self.chunk_size)

        return self._call("read value", read, nbytes=size)

    def read_span(self, checksum: str, span: tuple[int, int], meta: Meta) -> Encoded:
        """The encoded value at ``span`` (offset, length) of the content object (a pack),
        in one ranged request, its checksum verified (:class:`CorruptEntryError` if
        wrong); ``FileNotFoundError`` if the object is gone."""
        offset, length = span
        data = self._call("read value", functools.partial(
            self.objects.get_range, self.content_path(checksum), offset, length), nbytes=length)
        if len(data) != length:
            raise CorruptEntryError(f"content object {checksum[:16]}… is shorter than the "
                                    "span its entry names")
        return decode_bytes(data, meta["serializer"], meta["checksum"])

    def verify_content(self, checksum: str, meta: Meta) -> None:
        """Stream the content object through its checksum, decoding nothing:
        :class:`CorruptEntryError` if the bytes are wrong, ``FileNotFoundError`` if gone."""
        self.verify_stream(self.content_path(checksum), meta)

    def verify_stream(self, path: str, meta: Meta) -> None:
        """:meth:`verify_content` of the object at ``path``."""
        size = int(meta.get("size") or 0)

        def verify() -> None:
            with self.objects.open(path, size, self.chunk_size) as f:
                verify_stream(f, meta["checksum"], size=meta.get("size"), chunk=self.chunk_size)

        self._call("verify value", verify, nbytes=size)

    # ----------------------------------------------------------------- writes

    def write_entry(self, key: str, entry: EntryObject, *, create: bool = False,
                    match: str | None = None) -> str | None:
        """Write the entry object of ``key`` (create-only, or over version ``match``); returns
        its version. :class:`PreconditionFailed` when the condition does not hold."""
        data = entry.to_json()
        return self.put(self.entry_path(key), [data], create=create, match=match,
                        what="upload metadata")

    def write_content(self, checksum: str, encoded: Blob) -> bool:
        """Write a content object create-only; ``False`` when it existed (same name, same
        bytes: nothing to do). Returns only once the object is whole."""
        try:
            self.put(self.content_path(checksum), encoded.chunks(), nbytes=encoded.nbytes,
                     create=True, what="upload value")
        except PreconditionFailed:
            return False
        return True

    def put(self, path: str, chunks: Any, *, nbytes: int = 0, create: bool = False,
            match: str | None = None, what: str = "upload value") -> str | None:
        """Write one object whole or not at all (a reader never sees part of it), under its
        deadline; ``nbytes`` (the size, if large) lengthens the deadline."""
        pieces: list[Buffer] = list(chunks)
        return self._call(what, functools.partial(self.objects.put, path, pieces,
                                                  create=create, match=match), nbytes=nbytes)

    # ----------------------------------------------------------------- management

    def delete(self, path: str, *, what: str = "delete value", match: str | None = None) -> None:
        """Remove one object; ``FileNotFoundError`` if it is absent. ``what`` names the
        operation in an outage warning; ``match``: only if its version is still that
        (else :class:`PreconditionFailed`)."""
        self.check_writable(what)
        self._call(what, functools.partial(self.objects.delete, path, match))

    def delete_many(self, listed: list[Listed], *, what: str = "delete") -> list[str]:
        """Remove the listed objects, each only at the version listed; the paths kept
        because they changed meanwhile."""
        if not listed:
            return []
        self.check_writable(what)
        return self._call(what, functools.partial(self.objects.delete_many, listed),
                          whole_tree=len(listed) > 1)

    def listing(self, folder: str = "") -> list[Listed]:
        """Every object under ``<root>/<folder>`` with its size, modification time and
        version, fresh (one request per 1,000 objects on S3)."""
        path = f"{self.root}/{folder}".rstrip("/")
        return self._call("list", functools.partial(self.objects.listing, path), whole_tree=True)

    def folders(self, folder: str) -> list[str]:
        """The names of the folders directly under ``<root>/<folder>``."""
        return self._call("list", functools.partial(self.objects.folders,
                                                    f"{self.root}/{folder}".rstrip("/")))

    def touch(self, path: str) -> None:
        """Make the object's modification time now; ``FileNotFoundError`` if it is absent."""
        self.check_writable("refresh value")
        self._call("refresh value", functools.partial(self.objects.touch, path))

    def list_objects(self, *, detail: bool = False) -> Any:
        """Every object's path under the root (with ``detail``: a dict of path to fsspec
        info, ``size`` included), unfinished ``.tmp-`` writes too; fresh, never cached."""
        return self._call("list", functools.partial(self._find, detail), whole_tree=True)

    def remove_all(self) -> None:
        """Remove the root and everything under it."""
        self.check_writable("clear")
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
        warn(f"the remote cache {outage}; it is skipped for the rest of this run, "
                      "which goes on with the memory and disk tiers (set remote_options="
                      f"{{{TIMEOUT_OPTION!r}: seconds}} to wait longer)", CacheWarning)

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

    def _find(self, detail: bool) -> Any:
        self.fs.invalidate_cache(self.root)
        if not self.fs.exists(self.root):
            return {} if detail else []
        return self.fs.find(self.root, detail=detail)

    def _remove_root(self) -> None:
        if self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)
        self.fs.invalidate_cache(self.root)


class Blob(Protocol):
    """Bytes to upload in pieces: an encoded value, or a pack of them."""

    @property
    def nbytes(self) -> int:
        """Bytes in all."""
        ...

    def chunks(self) -> Iterator[memoryview]:
        """The bytes in order."""
        ...


def _named(path: str, folder: str, suffix: str) -> str | None:
    """The 32-hex name of ``<folder>/<ab>/<name><suffix>`` at the end of ``path``, else
    ``None`` (a layout-1 object, a ``.tmp-`` file, anything else)."""
    parts = path.rstrip("/").split("/")
    if len(parts) < 3 or parts[-3] != folder or not parts[-1].endswith(suffix):
        return None
    name = parts[-1][:len(parts[-1]) - len(suffix)]
    if len(name) != 32 or name[:2] != parts[-2] or not all(c in _HEX for c in name):
        return None
    return name


_HEX = frozenset("0123456789abcdef")


def _timeout(url: str, options: dict[str, Any]) -> float:
    return _seconds(url, options, TIMEOUT_OPTION, DEFAULT_SECONDS)


def _seconds(url: str, options: dict[str, Any], option: str, default: float, *,
             zero: bool = False) -> float:
    """``options[option]``: a positive (``zero``: or zero) finite number of seconds."""
    seconds = options.get(option, default)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not (seconds >= 0 if zero else seconds > 0) or not seconds < math.inf:
        raise ConfigError(f"remote cache {url!r}: remote_options[{option!r}] must be a "
                          f"{'non-negative' if zero else 'positive'} number of seconds, such "
                          f"as 5; got {seconds!r}")
    return float(seconds)


def _trust(url: str, options: dict[str, Any]) -> Trust | None:
    trust = options.get(TRUST_OPTION)
    if trust is not None and not isinstance(trust, Trust):
        raise ConfigError(f"remote cache {url!r}: remote_options[{TRUST_OPTION!r}] is lazyflow's "
                          "own, set from lf.Cache(sign_with=..., trusted_keys=..., read_only=...) "
                          f"or their lazyflow.toml keys; remove it from remote_options")
    return trust


def _filesystem(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    """The fsspec filesystem and root path of ``url``; contacts nothing (s3fs connects on
    the first call)."""
    import fsspec

    fs_options = {k: v for k, v in options.items()
                  if k not in (TIMEOUT_OPTION, REFRESH_OPTION, TRUST_OPTION)}
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
