"""Object operations a shared cache needs: one request per read, conditional writes.

Design note
-----------
Policy. fsspec's generic calls cost more requests than a team cache can
afford on an object store, and they carry no conditions: s3fs's
``cat_file`` asks for the object's size first (a HEAD) whenever it may read
in parallel, ``exists`` and ``info`` fall back to a listing when the object
is absent, and ``pipe_file`` overwrites whatever is there. So the remote
store reaches objects through :class:`Objects`, four operations:

* :meth:`~Objects.get` — the whole object and its *version* (S3's ETag) in
  one request; ``FileNotFoundError`` when it is absent (S3: one GET answered
  404, never a HEAD or a listing);
* :meth:`~Objects.put` — write the whole object, optionally **create-only**
  (S3 ``If-None-Match: *``) or **only over the version read** (S3
  ``If-Match: <etag>``, compare-and-swap); a failed condition raises
  :class:`PreconditionFailed`, so the first writer wins and no update is
  lost;
* :meth:`~Objects.open` — stream a large object whose size is known (no HEAD);
* :meth:`~Objects.get_range` — some bytes of an object (S3: one GET with a
  ``Range`` header), for a value inside a pack;
* :meth:`~Objects.delete` — optionally **only the version listed** (S3
  ``If-Match`` on DeleteObject, or per object in a DeleteObjects batch:
  :meth:`~Objects.delete_many`), so garbage collection never deletes an
  object replaced since it listed it;
* :meth:`~Objects.listing` and :meth:`~Objects.folders` — management's
  listings, each object with its size, modification time and version (S3's
  ``LastModified`` and ``ETag``: no per-object read);
* :meth:`~Objects.touch` — refresh an object's modification time (S3: a copy
  onto itself, server-side), for content a new entry reuses.

Every request sent is counted in :attr:`Objects.traffic`
(``remote_traffic.py``).

Three implementations, chosen by filesystem (:func:`objects_for`):

* **S3** (s3fs): boto calls through s3fs's own client (its credentials,
  retries and error translation), ``get_object``/``put_object`` with the
  conditional headers; a content object large enough for a multipart upload
  goes through ``pipe_file(mode="create")``, which puts the condition on the
  completing request.
* **Local** (``file://``, a shared mount): a create-only write is a hard
  link of a finished temporary file (``link`` fails when the name exists;
  where a mount has no hard links, a check and rename under the folder's
  lock);
  a compare-and-swap renames the temporary file over the object while
  holding an ``flock`` on its folder, after checking the object's version
  (inode, modification time and size: every write is a new file, so a
  changed object has a new inode). Readers never take the lock.
* **Any other fsspec filesystem** (``memory://``, ``gcs://``...): the
  conditions are checked and the object written under a process-wide lock,
  and the version is the xxh3 of the bytes. That is exact within a process
  (``memory://`` lives in one) and a best effort across processes; stores
  with their own conditional writes get a backend here when they are needed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import io
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import xxhash

from lazyflow.cache.remote_traffic import Traffic
from lazyflow.errors import LazyflowError

__all__ = ["Buffer", "Fetched", "Listed", "Objects", "PreconditionFailed", "objects_for"]

PAGE = 1000
"""Objects per listing page (S3's ListObjectsV2 answers at most 1,000)."""

Buffer = bytes | memoryview
"""A piece of an object's bytes (``serialize.Encoded.chunks`` yields memoryviews)."""


class PreconditionFailed(LazyflowError, OSError):
    """A conditional write found the object other than assumed: it exists (create-only) or
    changed since it was read (compare-and-swap)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """An object's bytes and its version (an opaque token: S3's ETag), and its modification
    time (Unix seconds, the store's clock) where the read tells it."""

    data: bytes
    version: str | None
    modified: float | None = None


@dataclass(frozen=True, slots=True)
class Listed:
    """An object as a listing shows it: path, size, modification time (Unix seconds, the
    store's clock) and version (``None`` where a listing cannot tell it)."""

    path: str
    size: int
    modified: float
    version: str | None


class Objects:
    """Whole-object reads and conditional writes on one fsspec filesystem (the base class
    is the generic implementation, exact within one process)."""

    _lock = threading.Lock()  # one for every generic filesystem: memory:// is process-wide

    def __init__(self, fs: Any) -> None:
        self.fs = fs
        self.traffic = Traffic()

    def get(self, path: str) -> Fetched:
        """The object's bytes and version; ``FileNotFoundError`` when it is absent."""
        try:
            data = bytes(self.fs.cat_file(path))
        except FileNotFoundError:
            self.traffic.add("GET")
            raise
        self.traffic.add("GET", len(data))
        return Fetched(data, xxhash.xxh3_64_hexdigest(data))

    def get_range(self, path: str, start: int, length: int) -> bytes:
        """``length`` bytes of the object from ``start`` (one ranged request);
        ``FileNotFoundError`` when it is absent."""
        try:
            data = bytes(self.fs.cat_file(path, start, start + length))
        except FileNotFoundError:
            self.traffic.add("GET")
            raise
        self.traffic.add("GET", len(data))
        return data

    def put(self, path: str, chunks: Iterable[Buffer], *, create: bool = False,
            match: str | None = None) -> str | None:
        """Write the whole object from its ``chunks``; returns its new version.

        ``create``: only if no object has the name; ``match``: only over the
        object whose version is ``match``. Otherwise :class:`PreconditionFailed`.
        """
        data = b"".join(chunks)
        with self._lock:
            if create or match is not None:
                current = self._current(path)
                if (create and current is not None) or (match is not None and current != match):
                    raise PreconditionFailed(f"{path}: {'exists' if create else 'changed'}")
            self.traffic.add("PUT", len(data))
            self.fs.pipe_file(path, data)
        return xxhash.xxh3_64_hexdigest(data)

    def open(self, path: str, size: int, block_size: int) -> IO[bytes]:
        """A file reading the object at ``path`` of ``size`` bytes, ``block_size`` at a time."""
        self.traffic.add("GET", size)
        file: IO[bytes] = self.fs.open(path, "rb", block_size=block_size,
                                       cache_type="readahead")
        return file

    def delete(self, path: str, match: str | None = None) -> None:
        """Remove the object; ``FileNotFoundError`` when it is absent; with ``match``, only
        if its version is still ``match`` (else :class:`PreconditionFailed`)."""
        with self._lock:
            if match is not None and self._current(path) not in (match, None):
                raise PreconditionFailed(f"{path}: changed")
            self.traffic.add("DELETE")
            self.fs.rm_file(path)

    def delete_many(self, listed: Iterable[Listed]) -> list[str]:
        """Remove each listed object if still at the version listed (any version when the
        listing gave none); returns the paths kept because they changed meanwhile.
        Objects already gone count as removed."""
        kept = []
        for item in listed:
            try:
                self.delete(item.path, item.version)
            except PreconditionFailed:
                kept.append(item.path)
            except FileNotFoundError:
                pass
        return kept

    def listing(self, folder: str) -> list[Listed]:
        """Every object under ``folder`` (recursively), fresh; ``[]`` when there is none."""
        self.fs.invalidate_cache(folder)
        try:
            found = self.fs.find(folder, detail=True)
        except FileNotFoundError:
            found = {}
        self.traffic.add("LIST", requests=1 + len(found) // PAGE)
        return [Listed(path, int(info.get("size") or 0), _modified(info), None)
                for path, info in found.items()]

    def folders(self, folder: str) -> list[str]:
        """The names of the folders directly under ``folder``."""
        self.fs.invalidate_cache(folder)
        self.traffic.add("LIST")
        try:
            found = self.fs.ls(folder, detail=True)
        except FileNotFoundError:
            return []
        return sorted(info["name"].rstrip("/").rsplit("/", 1)[-1] for info in found
                      if info.get("type") == "directory")

    def touch(self, path: str) -> None:
        """Make the object's modification time now (its bytes unchanged);
        ``FileNotFoundError`` when it is absent."""
        with self._lock:
            data = bytes(self.fs.cat_file(path))
            self.traffic.add("PUT", len(data))
            self.fs.pipe_file(path, data)

    def _current(self, path: str) -> str | None:
        """The object's version now (``None``: absent); called under the lock."""
        try:
            return self.get(path).version
        except FileNotFoundError:
            return None


class LocalObjects(Objects):
    """Objects as files under a (possibly shared) folder: exclusive links and locked renames."""

    def get(self, path: str) -> Fetched:
        try:
            with open(path, "rb") as f:
                stat = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            self.traffic.add("GET")
            raise
        self.traffic.add("GET", len(data))
        return Fetched(data, _file_version(stat), stat.st_mtime)

    def get_range(self, path: str, start: int, length: int) -> bytes:
        try:
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read(length)
        except FileNotFoundError:
            self.traffic.add("GET")
            raise
        self.traffic.add("GET", len(data))
        return data

    def put(self, path: str, chunks: Iterable[Buffer], *, create: bool = False,
            match: str | None = None) -> str | None:
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            with open(temporary, "xb") as f:  # streamed: a large value is never joined
                for chunk in chunks:
                    f.write(chunk)
            version = _file_version(os.stat(temporary))
            self.traffic.add("PUT", os.stat(temporary).st_size)
            if create:
                _create(temporary, path)
            elif match is not None:
                with _locked(folder):
                    try:
                        current = _file_version(os.stat(path))
                    except FileNotFoundError:
                        current = None
                    if current != match:
                        raise PreconditionFailed(f"{path}: changed")
                    os.replace(temporary, path)
            else:
                os.replace(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        return version

    def open(self, path: str, size: int, block_size: int) -> IO[bytes]:
        self.traffic.add("GET", size)
        return open(path, "rb")  # noqa: SIM115 - the caller closes it

    def delete(self, path: str, match: str | None = None) -> None:
        self.traffic.add("DELETE")
        if match is None:
            os.unlink(path)
            return
        # under the folder's lock, as compare-and-swap writers: a create-only writer cannot
        # replace the file (its link fails while the name exists), so stat then unlink is exact
        with _locked(os.path.dirname(path)):
            if _file_version(os.stat(path)) != match:
                raise PreconditionFailed(f"{path}: changed")
            os.unlink(path)

    def listing(self, folder: str) -> list[Listed]:
        found = []
        for directory, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(directory, name)
                try:
                    stat = os.stat(path)
                except FileNotFoundError:  # removed while walking
                    continue
                found.append(Listed(path, stat.st_size, stat.st_mtime, _file_version(stat)))
        self.traffic.add("LIST", requests=1 + len(found) // PAGE)
        return found

    def folders(self, folder: str) -> list[str]:
        self.traffic.add("LIST")
        try:
            return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
        except FileNotFoundError:
            return []

    def touch(self, path: str) -> None:
        self.traffic.add("PUT")
        os.utime(path)


class S3Objects(Objects):
    """Objects on S3 through s3fs's client: one GET per read, conditional PUTs."""

    def get(self, path: str) -> Fetched:
        from fsspec.asyn import sync

        result: Fetched = sync(self.fs.loop, self._get, path)
        return result

    def get_range(self, path: str, start: int, length: int) -> bytes:
        from fsspec.asyn import sync

        if length <= 0:
            return b""
        result: Fetched = sync(self.fs.loop, self._get, path,
                               f"bytes={start}-{start + length - 1}")
        return result.data

    async def _get(self, path: str, span: str | None = None) -> Fetched:
        bucket, key, _ = self.fs.split_path(path)
        try:
            response = await self.fs._call_s3("get_object", Bucket=bucket, Key=key,
                                               **({} if span is None else {"Range": span}))
        except FileNotFoundError:
            self.traffic.add("GET")
            raise
        try:
            data = await response["Body"].read()
        finally:
            response["Body"].close()
        self.traffic.add("GET", len(data))
        modified = response.get("LastModified")
        return Fetched(data, response.get("ETag"),
                       modified.timestamp() if hasattr(modified, "timestamp") else None)

    def put(self, path: str, chunks: Iterable[Buffer], *, create: bool = False,
            match: str | None = None) -> str | None:
        data = b"".join(chunks)
        bucket, key, _ = self.fs.split_path(path)
        try:
            if create and len(data) >= 2 * 50 * 2**20:  # multipart: the condition on completion
                # create, each 50 MiB part, complete
                self.traffic.add("PUT", len(data), requests=2 + -(-len(data) // (50 * 2**20)))
                self.fs.pipe_file(path, data, mode="create")
                return None
            condition = {"IfNoneMatch": "*"} if create else \
                {} if match is None else {"IfMatch": match}
            self.traffic.add("PUT", len(data))
            response = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data,
                                       **condition)
        except OSError as e:
            if _failed_condition(e):
                raise PreconditionFailed(f"{path}: {'exists' if create else 'changed'}") from e
            raise
        finally:
            self.fs.invalidate_cache(path)
        version: str | None = response.get("ETag")
        return version

    def open(self, path: str, size: int, block_size: int) -> IO[bytes]:
        # one GET streamed (s3fs's files send a HEAD first, for the ETag they pin)
        self.traffic.add("GET", size)
        return _Body(self.fs, path)  # type: ignore[return-value]

    def delete(self, path: str, match: str | None = None) -> None:
        bucket, key, _ = self.fs.split_path(path)
        self.traffic.add("DELETE")
        try:
            self.fs.call_s3("delete_object", Bucket=bucket, Key=key,
                            **({} if match is None else {"IfMatch": match}))
        except OSError as e:
            if _failed_condition(e):
                raise PreconditionFailed(f"{path}: changed") from e
            raise
        finally:
            self.fs.invalidate_cache(path)

    def delete_many(self, listed: Iterable[Listed]) -> list[str]:
        # DeleteObjects: up to 1,000 objects per request, each conditional on its ETag
        items = list(listed)
        kept = []
        for start in range(0, len(items), PAGE):
            batch = items[start:start + PAGE]
            bucket = self.fs.split_path(batch[0].path)[0]
            paths = {self.fs.split_path(item.path)[1]: item.path for item in batch}
            objects = [{"Key": self.fs.split_path(item.path)[1],
                        **({} if item.version is None else {"ETag": item.version})}
                       for item in batch]
            self.traffic.add("DELETE")
            response = self.fs.call_s3("delete_objects", Bucket=bucket,
                                       Delete={"Objects": objects, "Quiet": True})
            for error in response.get("Errors", []):
                code = error.get("Code")
                if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                    kept.append(paths.get(error.get("Key"), error.get("Key")))
                elif code not in ("NoSuchKey", None):
                    raise OSError(f"could not delete {error.get('Key')}: {code}: "
                                  f"{error.get('Message')}")
        self.fs.invalidate_cache()
        return kept

    def listing(self, folder: str) -> list[Listed]:
        bucket, prefix, _ = self.fs.split_path(folder)
        found = []
        for page in self._pages(bucket, prefix.rstrip("/") + "/"):
            for item in page.get("Contents", []):
                found.append(Listed(f"{bucket}/{item['Key']}", int(item["Size"]),
                                    _modified({"LastModified": item["LastModified"]}),
                                    item.get("ETag")))
        return found

    def folders(self, folder: str) -> list[str]:
        bucket, prefix, _ = self.fs.split_path(folder)
        prefix = prefix.rstrip("/") + "/"
        names = []
        for page in self._pages(bucket, prefix, delimiter="/"):
            names += [common["Prefix"][len(prefix):].rstrip("/")
                      for common in page.get("CommonPrefixes", [])]
        return sorted(names)

    def touch(self, path: str) -> None:
        bucket, key, _ = self.fs.split_path(path)
        self.traffic.add("PUT")
        # a copy onto itself must change something: its (empty) user metadata is replaced
        self.fs.call_s3("copy_object", Bucket=bucket, Key=key, MetadataDirective="REPLACE",
                        CopySource={"Bucket": bucket, "Key": key})

    def _pages(self, bucket: str, prefix: str, delimiter: str = "") -> Iterator[dict[str, Any]]:
        """ListObjectsV2 pages under ``prefix``: one request each, no HEAD, no fallback."""
        token = None
        while True:
            self.traffic.add("LIST")
            response: dict[str, Any] = self.fs.call_s3(
                "list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=PAGE,
                **({"Delimiter": delimiter} if delimiter else {}),
                **({"ContinuationToken": token} if token else {}))
            yield response
            token = response.get("NextContinuationToken")
            if not response.get("IsTruncated") or not token:
                return


class _Body(io.RawIOBase):
    """The body of one S3 GET, read as a file: each ``readinto`` fills the buffer given
    (up to the end of the object) in one call onto s3fs's event loop."""

    def __init__(self, fs: Any, path: str) -> None:
        from fsspec.asyn import sync

        super().__init__()
        self._fs = fs
        self._sync = sync
        bucket, key, _ = fs.split_path(path)
        response = sync(fs.loop, fs._call_s3, "get_object", Bucket=bucket, Key=key)
        self._stream = response["Body"]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        filled: int = self._sync(self._fs.loop, _fill, self._stream, view)
        return filled

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


async def _fill(stream: Any, view: memoryview) -> int:
    """Read from an aiobotocore body until ``view`` is full or the body ends."""
    filled = 0
    while filled < len(view):
        data = await stream.read(len(view) - filled)
        if not data:
            break
        view[filled:filled + len(data)] = data
        filled += len(data)
    return filled


def objects_for(fs: Any) -> Objects:
    """The :class:`Objects` implementation for the fsspec filesystem ``fs``."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols or "local" in protocols:
        return LocalObjects(fs)
    if ("s3" in protocols or "s3a" in protocols) and hasattr(fs, "_call_s3"):
        return S3Objects(fs)
    return Objects(fs)


def _create(temporary: str, path: str) -> None:
    """Give the finished file ``temporary`` the name ``path`` only if no file has it."""
    try:
        os.link(temporary, path)  # atomic, and fails if the name exists
    except FileExistsError:
        raise PreconditionFailed(f"{path}: exists") from None
    except OSError as e:  # no hard links here (some SMB or FAT mounts): check, then rename
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        with _locked(os.path.dirname(path)):  # exact among lazyflows; not atomic otherwise
            if os.path.exists(path):
                raise PreconditionFailed(f"{path}: exists") from None
            os.replace(temporary, path)


def _file_version(stat: os.stat_result) -> str:
    return f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}"


def _modified(info: dict[str, Any]) -> float:
    """The modification time in a listing's info (Unix seconds; 0 when it has none)."""
    for name in ("LastModified", "mtime", "created"):
        value = info.get(name)
        if isinstance(value, _dt.datetime):
            return value.timestamp() if value.tzinfo else \
                value.replace(tzinfo=_dt.timezone.utc).timestamp()
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0


@contextlib.contextmanager
def _locked(folder: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (compare-and-swap writers only)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _failed_condition(error: BaseException) -> bool:
    """Whether an s3fs error is S3's answer to a failed condition (412, or 409 for a
    concurrent conditional write)."""
    if isinstance(error, FileExistsError):  # s3fs's translation of If-None-Match's 412
        return True
    cause = error.__cause__
    response = getattr(cause, "response", None)
    if not isinstance(response, dict):
        return False
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)
