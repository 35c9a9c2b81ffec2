"""File inputs and outputs: ``lf.File`` and ``lf.Dir``, keyed by content.

Design note
-----------
Policy. A ``File`` is a path whose *digest is its content*: as a flow input,
a default or a global a node reads, it enters keys through the hasher
registered here, so editing the file invalidates its dependents and touching
it (new mtime, same bytes) invalidates nothing. A ``Dir`` digests the sorted
(relative path, content digest) pairs of every file below it.

State. A process-wide *stat cache*: absolute path -> (mtime_ns, ctime_ns,
size, inode, device, digest, when hashed). A file whose stat is unchanged is
not read again (the fast path that keeps warm requests cheap on big inputs).
The ctime is part of it because nobody can set it: an edit that puts the old
mtime back (``os.utime``, ``cp -p``, ``rsync -t``, unpacking an archive) or
a file deleted and recreated on a reused inode keeps mtime, size and inode
but not ctime. Following git's "racy clean" rule, an entry is trusted only
when the file's mtime and ctime are both older than the moment it was
hashed by more than the coarsest timestamp granularity (2 s): a write
landing in the same tick as our read, with the same size, would otherwise
go unseen. Rejected alternatives: trusting mtime+size alone (make's rule),
which returns stale results after quick successive edits, and mtime, size
and inode without ctime, which missed an edit that restored the mtime — a
wrong cached value, which we never allow. The price: a file touched (or
chmod-ed) is read again once, as git does.

Output files. A node may return a ``File`` (alone, or as a member of a
tuple, list or dict). When such a result is stored, :func:`capture` stores
the file's bytes as an entry of their own (keyed by content digest) and pins
the digest on the returned ``File``; when a cached result is loaded,
:func:`restore` rewrites the file (atomically: temporary name, then rename)
if it was deleted or no longer holds those bytes. Restoring happens only when
the value is loaded, so a request that never needs the file never touches
it. A returned ``Dir`` is captured file by file (a manifest of relative
paths and content digests is pinned on it) and restored the same way; files
added to it since are left in place with a warning, never deleted.

Untracked paths. A flow input that is a plain ``str`` or ``pathlib`` path is
keyed by its text, so editing the file it names keeps serving the old
result. :func:`warn_untracked_path` says so, once per node definition and
parameter, when such a value names an existing file or directory. The
engine asks only for nodes whose inputs or code changed since the previous
request (a warm request asks nothing), and it stays cheap even then: text
that does not look like a path (no separator, no extension) is never looked
up, and each (node, parameter, value) is looked up once per process. Rejected: hashing such paths by content behind the
user's back — a string is not always a file the node reads (an output path,
a label), and the key must not change meaning with what happens to exist.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import xxhash

from lazyflow.errors import CacheWarning, warn
from lazyflow.keys import Domain, domain
from lazyflow.keys.hashing import hash_value, register_hasher
from lazyflow.records import FileMeta

_DOMAIN = domain(Domain.FILE)

if TYPE_CHECKING:
    from lazyflow.cache.hierarchy import Cache

__all__ = ["PATH_TYPES", "Dir", "File", "capture", "content_digest", "paths_in", "restore",
           "warn_untracked_path", "warn_untracked_paths"]

PATH_TYPES = frozenset({str, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath,
                        pathlib.PureWindowsPath})
"""Types of flow-input values that may name a file lazyflow keys by name only."""

_RACY_NS = 2_000_000_000
_PATH_MAX = 4096
_EXTENSION = re.compile(r"\.[A-Za-z0-9_]{1,10}$")
_CHECKED_PATHS: weakref.WeakKeyDictionary[Any, dict[str, set[Any] | None]] = \
    weakref.WeakKeyDictionary()
"""Node -> parameter -> values looked up so far (``None`` once warned); dies with the node."""
_BLOCK = 1 << 20
_MISSING_DIGEST = "missing"


class File(os.PathLike):  # type: ignore[type-arg]
    """A file whose content, not its name or mtime, is what keys depend on.

    Use it as a flow input, a parameter default, or a node's return value:

    >>> data = File("data.csv")                    # doctest: +SKIP
    >>> flow.get("clean", path=data)               # doctest: +SKIP

    It is path-like (``open(f)``, ``pd.read_csv(f)`` work) and compares by
    path. A node that returns a ``File`` gets the file restored from the cache
    when it is later deleted.
    """

    __slots__ = ("_digest", "path")
    path: pathlib.Path

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = pathlib.Path(path)
        self._digest: str | None = None  # content pinned when stored as a node's output

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.path == self.path

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.path))

    def __getstate__(self) -> tuple[pathlib.Path, str | None]:
        return self.path, self._digest

    def __setstate__(self, state: tuple[pathlib.Path, str | None]) -> None:
        self.path, self._digest = state

    @property
    def digest(self) -> str:
        """The content digest now (``"missing"`` when the path does not exist)."""
        return content_digest(self.path)

    def exists(self) -> bool:
        """Whether the path exists."""
        return self.path.exists()

    def read_bytes(self) -> bytes:
        """The file's bytes."""
        return self.path.read_bytes()

    def read_text(self, encoding: str = "utf-8") -> str:
        """The file's text."""
        return self.path.read_text(encoding=encoding)


class Dir(File):
    """A directory keyed by the names and contents of every file below it.

    >>> images = Dir("images/")                    # doctest: +SKIP

    Adding, removing, renaming or editing a file below it changes its digest;
    touching files does not.
    """

    __slots__ = ("_manifest",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        # (relative path, content digest) of each file, pinned when stored as a node's output
        self._manifest: tuple[tuple[str, str], ...] | None = None

    def __getstate__(self) -> tuple[Any, ...]:
        return self.path, self._digest, self._manifest

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.path, self._digest, *manifest = state
        self._manifest = manifest[0] if manifest else None

    @property
    def digest(self) -> str:
        """The digest of every (relative path, content digest) pair below the directory."""
        return dir_digest(self.path)

    def files(self) -> list[pathlib.Path]:
        """Every file below the directory, sorted (through symbolic links to directories)."""
        return _files_below(self.path)


# --------------------------------------------------------------------------- content digests

_STAT: dict[str, tuple[tuple[int, int, int, int, int], str, int]] = {}
"""Absolute path -> ((mtime_ns, ctime_ns, size, inode, device), digest, when hashed)."""
_STAT_LOCK = threading.Lock()


def content_digest(path: str | os.PathLike[str]) -> str:
    """xxh3-128 of a file's bytes; reuses the last digest while the file's stat is unchanged."""
    absolute = os.path.abspath(path)
    try:
        st = os.stat(absolute)
    except FileNotFoundError:
        return _MISSING_DIGEST
    with _STAT_LOCK:
        known = _STAT.get(absolute)
    seen = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)
    if known is not None and known[0] == seen \
            and max(st.st_mtime_ns, st.st_ctime_ns) < known[2] - _RACY_NS:
        return known[1]
    hashed_at = time.time_ns()
    digest = _read_digest(absolute)
    with _STAT_LOCK:
        _STAT[absolute] = (seen, digest, hashed_at)
    return digest


def _read_digest(path: str) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def dir_digest(path: str | os.PathLike[str]) -> str:
    """Digest of a directory tree: sorted relative paths with their content digests."""
    root = pathlib.Path(path)
    if not root.is_dir():
        return _MISSING_DIGEST
    return _tree_digest([(p.relative_to(root).as_posix(), content_digest(p))
                         for p in _files_below(root)])


def _files_below(root: pathlib.Path) -> list[pathlib.Path]:
    """Every file below ``root``, sorted, following symbolic links to directories.

    A linked folder (a shared dataset linked into a project) is read through by the
    nodes that take the ``Dir``, so its files are part of the digest (``rglob``
    before Python 3.13 skips them: edits there went unseen). A link back to a
    directory already being walked (a cycle) is not entered again.
    """
    found: list[pathlib.Path] = []
    ancestry = {os.fspath(root): frozenset({_identity(root)})}  # directory -> ids down to it
    for top, dirs, names in os.walk(root, followlinks=True):
        above = ancestry.pop(top)
        kept = []
        for d in dirs:
            below = os.path.join(top, d)
            try:
                identity = _identity(below)
            except OSError:  # removed while walking: as if never there
                continue
            if identity not in above:
                ancestry[below] = above | {identity}
                kept.append(d)
        dirs[:] = kept
        found.extend(pathlib.Path(top, n) for n in names if os.path.isfile(os.path.join(top, n)))
    return sorted(found)


def _identity(path: str | os.PathLike[str]) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _tree_digest(entries: list[tuple[str, str]]) -> str:
    """A directory's digest from its sorted (relative path, content digest) pairs."""
    return hash_value(entries)


register_hasher(File, lambda f: (f.path.as_posix(), content_digest(f.path)))
register_hasher(Dir, lambda d: (d.path.as_posix(), dir_digest(d.path)))


# --------------------------------------------------------------------------- output files


_NO_FILES = frozenset({int, float, str, bytes, bool, type(None), complex})
"""Types that never hold a ``File``: most results, stored and loaded without a walk."""


def paths_in(value: Any) -> Iterator[File]:
    """The ``File`` objects of a value: itself, or direct members of a tuple, list or dict.

    Deeper nesting is not searched, so storing a large list costs one type
    test per element at most.
    """
    if isinstance(value, File):
        yield value
    elif isinstance(value, (tuple, list)):
        # isinstance against File (an ABC, through os.PathLike) costs ~0.3 µs: a list of
        # 20,000 numbers is ruled out by the set of its types at C speed instead
        if not set(map(type, value)).issubset(_NO_FILES):
            yield from (v for v in value if isinstance(v, File))
    elif isinstance(value, Mapping):
        yield from (v for v in value.values() if isinstance(v, File))


def _blob_key(digest: str) -> str:
    return xxhash.xxh3_128_hexdigest(f"{_DOMAIN}{digest}".encode())


def capture(value: Any, cache: Cache) -> None:
    """Store the bytes of every output file (and every file of an output directory) in ``value``.

    Pins each file's digest (a directory's manifest of files and digests) on
    the returned object. A missing output is an error: the node promised a
    file or directory it did not write.
    """
    if type(value) in _NO_FILES:
        return
    for f in paths_in(value):
        if type(f) is File:
            f._digest = _store_file(f.path, f, cache)
        elif type(f) is Dir:
            if not f.path.is_dir():
                from lazyflow.errors import OutputError

                raise OutputError(f"a node returned {f!r} but the directory does not exist; "
                                  "create it before returning it")
            f._manifest = tuple((p.relative_to(f.path).as_posix(), _store_file(p, f, cache))
                                for p in f.files())
            f._digest = _tree_digest(list(f._manifest))


def _store_file(path: pathlib.Path, output: File, cache: Cache) -> str:
    """Store one file's bytes under their content digest (once); return the digest."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        from lazyflow.errors import OutputError

        raise OutputError(f"a node returned {output!r} but {path} does not exist; write it "
                          "before returning it") from e
    digest = xxhash.xxh3_128_hexdigest(data)
    key = _blob_key(digest)
    if cache.lookup(key) is None:
        meta: FileMeta = {"digest": hash_value(data), "file": path.as_posix(), "size": len(data)}
        cache.store(key, data, meta)
    return digest


def restore(value: Any, cache: Cache, *, key: str | None = None,
            node: str | None = None) -> None:
    """Rewrite every pinned output file in ``value`` (or file of an output directory) that is
    missing or changed.

    Files added to an output directory since are left in place, with a
    warning naming the node: ``node``, else the one the entry under ``key`` says
    (looked up only then). Raises ``KeyError`` when a file's bytes are no longer
    in the cache, so the caller recomputes the node (never hand out a path to
    wrong content).
    """
    if type(value) in _NO_FILES:
        return
    for f in paths_in(value):
        if f._digest is None:
            continue
        if type(f) is Dir:
            manifest = f._manifest
            if manifest is None or dir_digest(f.path) == f._digest:
                continue
            for relative, digest in manifest:
                _restore_file(f.path / relative, digest, cache)
            _warn_extra(f, {relative for relative, _ in manifest},
                        node if node is not None else _node_of(cache, key))
        else:
            _restore_file(f.path, f._digest, cache)


def _restore_file(path: pathlib.Path, digest: str, cache: Cache) -> None:
    if content_digest(path) != digest:
        data, _ = cache.load(_blob_key(digest))
        _write_atomic(path, data)


def warn_untracked_paths(node: Any, name: str, inputs: Mapping[str, Any]) -> None:
    """Warn about each flow input of ``node`` that is a plain path naming an existing file.

    ``node`` is the node's definition (a new definition warns again), ``name``
    its name, ``inputs`` its flow-input values. See :func:`warn_untracked_path`.
    """
    for param, value in inputs.items():
        if type(value) in PATH_TYPES:
            warn_untracked_path(node, name, param, value)


def warn_untracked_path(node: Any, name: str, param: str,
                        value: str | os.PathLike[str]) -> None:
    """Warn, once per ``node`` and ``param``, if ``value`` names an existing file or directory.

    The value is keyed by its text, so lazyflow cannot see the file change:
    the warning says to pass ``lf.File``/``lf.Dir`` instead. Each (node,
    parameter, value) is looked up once per process.
    """
    params = _CHECKED_PATHS.get(node)
    if params is None:
        params = _CHECKED_PATHS.setdefault(node, {})
    seen = params.get(param, ())
    if seen is None or value in seen:
        return
    params.setdefault(param, set()).add(value)  # type: ignore[union-attr]
    text = os.fspath(value)
    if type(value) is str and (len(text) > _PATH_MAX or not _looks_like_path(text)):
        return
    try:
        mode = os.stat(text).st_mode
    except (OSError, ValueError):  # missing, not a path at all, or a NUL inside
        return
    params[param] = None
    what, wrapper = ("directory", "Dir") if stat.S_ISDIR(mode) else ("file", "File")
    warn(
        f"node {name!r} input {param!r} names an existing {what} {text!r}; lazyflow keys the "
        f"path, not the {what}'s content: pass lf.{wrapper}({text!r}) to re-run when the "
        f"{what} changes", CacheWarning)


def _looks_like_path(text: str) -> bool:
    """Whether ``text`` has a path separator or ends in an extension (``data.csv``)."""
    return "/" in text or os.sep in text or _EXTENSION.search(text) is not None


def _node_of(cache: Cache, key: str | None) -> str | None:
    """The node whose entry is stored under ``key``, as its metadata says."""
    found = cache.lookup(key) if key is not None else None
    node = found[0].get("node") if found is not None else None
    return node if isinstance(node, str) else None


def _warn_extra(output: Dir, written: set[str], node: str | None) -> None:
    extra = sorted(p.relative_to(output.path).as_posix() for p in output.files()
                   if p.relative_to(output.path).as_posix() not in written)
    if extra:
        writer = f"node {node!r}" if node is not None else "its node"
        warn(f"output directory {str(output.path)!r} holds files {writer} did not write "
             f"({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''}); they are left in "
             "place (lazyflow never deletes files it did not write): remove them if what reads "
             "the directory must not see them", CacheWarning)


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
