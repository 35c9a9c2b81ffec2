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
* :meth:`~Objects.delete`.

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

from lazyflow.errors import LazyflowError

__all__ = ["Buffer", "Fetched", "Objects", "PreconditionFailed", "objects_for"]

Buffer = bytes | memoryview
"""A piece of an object's bytes (``serialize.Encoded.chunks`` yields memoryviews)."""


class PreconditionFailed(LazyflowError, OSError):
    """A conditional write found the object other than assumed: it exists (create-only) or
    changed since it was read (compare-and-swap)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """An object's bytes and its version (an opaque token: S3's ETag)."""

    data: bytes
    version: str | None


class Objects:
    """Whole-object reads and conditional writes on one fsspec filesystem (the base class
    is the generic implementation, exact within one process)."""

    _lock = threading.Lock()  # one for every generic filesystem: memory:// is process-wide

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def get(self, path: str) -> Fetched:
        """The object's bytes and version; ``FileNotFoundError`` when it is absent."""
        data = bytes(self.fs.cat_file(path))
        return Fetched(data, xxhash.xxh3_64_hexdigest(data))

    def put(self, path: str, chunks: Iterable[Buffer], *, create: bool = False,
            match: str | None = None) -> str | None:
        """Write the whole object from its ``chunks``; returns its new version.

        ``create``: only if no object has the name; ``match``: only over the
        object whose version is ``match``. Otherwise :class:`PreconditionFailed`.
        """
        data = b"".join(chunks)
        with self._lock:
            if create or match is not None:
                try:
                    current: str | None = self.get(path).version
                except FileNotFoundError:
                    current = None
                if (create and current is not None) or (match is not None and current != match):
                    raise PreconditionFailed(f"{path}: {'exists' if create else 'changed'}")
            self.fs.pipe_file(path, data)
        return xxhash.xxh3_64_hexdigest(data)

    def open(self, path: str, size: int, block_size: int) -> IO[bytes]:
        """A file reading the object at ``path`` of ``size`` bytes, ``block_size`` at a time."""
        file: IO[bytes] = self.fs.open(path, "rb", block_size=block_size,
                                       cache_type="readahead")
        return file

    def delete(self, path: str) -> None:
        """Remove the object; ``FileNotFoundError`` when it is absent."""
        self.fs.rm_file(path)


class LocalObjects(Objects):
    """Objects as files under a (possibly shared) folder: exclusive links and locked renames."""

    def get(self, path: str) -> Fetched:
        with open(path, "rb") as f:
            version = _file_version(os.fstat(f.fileno()))
            return Fetched(f.read(), version)

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
        return open(path, "rb")  # noqa: SIM115 - the caller closes it

    def delete(self, path: str) -> None:
        os.unlink(path)


class S3Objects(Objects):
    """Objects on S3 through s3fs's client: one GET per read, conditional PUTs."""

    def get(self, path: str) -> Fetched:
        from fsspec.asyn import sync

        result: Fetched = sync(self.fs.loop, self._get, path)
        return result

    async def _get(self, path: str) -> Fetched:
        bucket, key, _ = self.fs.split_path(path)
        response = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
        try:
            data = await response["Body"].read()
        finally:
            response["Body"].close()
        return Fetched(data, response.get("ETag"))

    def put(self, path: str, chunks: Iterable[Buffer], *, create: bool = False,
            match: str | None = None) -> str | None:
        data = b"".join(chunks)
        bucket, key, _ = self.fs.split_path(path)
        try:
            if create and len(data) >= 2 * 50 * 2**20:  # multipart: the condition on completion
                self.fs.pipe_file(path, data, mode="create")
                return None
            condition = {"IfNoneMatch": "*"} if create else \
                {} if match is None else {"IfMatch": match}
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
        return _Body(self.fs, path)  # type: ignore[return-value]


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
