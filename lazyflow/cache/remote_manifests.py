"""Run manifests: one object per run naming what it read and wrote on the remote.

Design note
-----------
Format (``docs/cache-format.md``, "Run manifests"). At the end of every run
that read or wrote an entry on the remote, the tier writes one JSON object
(in the background: :class:`Publisher`; the run does not wait for it, the
tier's flush and the process's exit do)::

    <root>/runs/<yyyy-mm-dd>/<flow>/<run-id>.e<entries>.b<bytes>.json

    {"v": 1, "flow": ..., "run": ..., "started": t, "ended": t, "lazyflow": ...,
     "read":  [[key, checksum or null, size], ...],
     "wrote": [[key, checksum or null, size], ...],
     "added": {"entries": n, "bytes": b}}

dated by the writer's clock (UTC) when it is written, the flow name
percent-encoded (dots too, so no name is ``.`` or ``..``). Each row names an
entry object (``ac/``) by key and the content object (``cas/``) its value
or its carried copy names, if any: so a manifest is enough to keep an entry
*and* its content. ``added`` is the run's ledger: the entry objects and
bytes (entry and content objects) its writes created — not those a
colleague had created first.

Three uses, no write per hit: the manifests of the last days are the roots
of garbage collection and its record of last use (``remote_gc.py``), and
their ledgers are what ``stats`` sums (``remote_ledger.py``).

Manifest-free hits. A run that wrote nothing and read only entries (and
records) stored within the *refresh interval* :data:`REFRESH` (1 day;
``remote_options["lazyflow_refresh"]``) writes no manifest: a colleague's
hit on a fresh entry is one GET and nothing else. Garbage collection counts
every entry and content object as used :data:`REFRESH` after it was
written (``remote_gc.py``), which is the latest such a hit can have been,
so it still keeps everything used within its window — exactly, not "far
inside it". A hit on an older entry writes the manifest as before: its use
is recorded, and the entry stays a window past it. An entry's age is
from the earlier of its object's modification time (as the GET tells it,
the store's clock, which garbage collection also reads) and its ``stored``
stamp, and its carried copy's (the writer's clock when the write was
queued: before its entry and content objects were written, so neither is
older); an entry without a stamp is old.
Rejected: a window shortened by the interval (``W - R`` for unrecorded
hits), which breaks the promise for every window; and a touch of the entry
per old hit (a copy in place: one request like the manifest's, but one per
entry, not one per run). The ledger is
also in the object's name, so summing a day's ledgers is one listing, not a
read per run. Written create-only: a run id taken already (two processes
starting runs in the same second with the same counter) gets a suffix.

Folders are by day first: garbage collection and statistics look at the
manifests of a span of days, one listing per day whatever the number of
flows. Rejected: a manifest per flow folder first (``runs/<flow>/<day>/``),
which costs a listing per flow and per day.

State. :class:`RunLog` is what the tier saw since the last run ended (keys
read and written, objects created), bounded so that a process that never
ends a run (a worker) holds at most :data:`LOG_SIZE` rows of each kind.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from lazyflow._version import __version__
from lazyflow.cache.base import TierOfflineError
from lazyflow.cache.remote_objects import PreconditionFailed

if TYPE_CHECKING:
    from lazyflow.cache.remote_entries import EntryObject
    from lazyflow.cache.remote_store import RemoteStore

__all__ = ["FORMAT", "LOG_SIZE", "REFRESH", "RUNS", "Manifest", "ManifestName", "Publisher", "Row",
           "RunLog", "day_of", "due", "named", "parse", "read", "stored", "write"]

RUNS = "runs"
"""The folder of run manifests, under the root."""
FORMAT = 1
"""The manifest format version (``"v"``)."""
LOG_SIZE = 65536
"""Rows of each kind (read, written) a run's log keeps at most (the most recent)."""
REFRESH = 86400.0
"""Seconds after it was stored during which a hit on an entry needs no manifest (the
default of ``remote_options["lazyflow_refresh"]``; garbage collection counts every object
as used this long after it was written)."""

Row = tuple[str, str | None, int]
"""One entry a run used: its key, the checksum of the content it names (or ``None``), and
its value's size."""

_NAME = re.compile(r"^(?P<run>[^/]+?)\.e(?P<entries>\d+)\.b(?P<nbytes>\d+)\.json$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def day_of(when: float) -> str:
    """The UTC day ``yyyy-mm-dd`` of Unix time ``when`` (manifests' folders).

    >>> day_of(0.0)
    '1970-01-01'
    """
    return time.strftime("%Y-%m-%d", time.gmtime(when))


@dataclass(frozen=True, slots=True)
class ManifestName:
    """What a manifest's path says: its day, flow and run, and its ledger."""

    day: str
    flow: str
    run: str
    entries: int
    nbytes: int


@dataclass(frozen=True)
class Manifest:
    """One run's manifest: what it read and wrote on the remote, and what it added."""

    flow: str
    run: str
    started: float
    ended: float
    read: tuple[Row, ...] = ()
    wrote: tuple[Row, ...] = ()
    entries: int = 0
    nbytes: int = 0

    @property
    def rows(self) -> tuple[Row, ...]:
        """Every entry named, read or written."""
        return self.read + self.wrote

    def folder(self) -> str:
        """The manifest's folder under the root: ``runs/<day>/<flow>``."""
        return f"{RUNS}/{day_of(self.ended)}/{_segment(self.flow)}"

    def name(self, run: str | None = None) -> str:
        """The manifest's path under the root (``run``: another run id to write it under)."""
        return f"{self.folder()}/{run or self.run}.e{self.entries}.b{self.nbytes}.json"

    def to_json(self) -> bytes:
        """The object's bytes (compact JSON)."""
        return json.dumps({
            "v": FORMAT, "flow": self.flow, "run": self.run, "started": self.started,
            "ended": self.ended, "lazyflow": __version__,
            "read": [list(row) for row in self.read], "wrote": [list(row) for row in self.wrote],
            "added": {"entries": self.entries, "bytes": self.nbytes}},
            separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest | None:
        """Parse a manifest; ``None`` when it is not one this lazyflow reads."""
        try:
            stored = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(stored, dict) or stored.get("v") != FORMAT:
            return None
        added = stored.get("added")
        added = added if isinstance(added, dict) else {}
        return cls(str(stored.get("flow", "")), str(stored.get("run", "")),
                   _number(stored.get("started")), _number(stored.get("ended")),
                   _rows(stored.get("read")), _rows(stored.get("wrote")),
                   int(_number(added.get("entries"))), int(_number(added.get("bytes"))))


def parse(relative: str) -> ManifestName | None:
    """The name of a manifest at ``relative`` (a path under the root); ``None`` for any
    other object.

    >>> parse("runs/2026-11-25/team/20261125-165012-3f9a1c.e3.b512.json").entries
    3
    """
    parts = relative.split("/")
    if len(parts) != 4 or parts[0] != RUNS or not _DAY.match(parts[1]):
        return None
    match = _NAME.match(parts[3])
    if match is None:
        return None
    return ManifestName(parts[1], unquote(parts[2]), match["run"], int(match["entries"]),
                        int(match["nbytes"]))


def write(store: RemoteStore, manifest: Manifest) -> str:
    """Write ``manifest`` create-only; returns its path under the root (a taken run id gets
    a suffix)."""
    data = manifest.to_json()
    name = manifest.name()
    try:
        store.put(f"{store.root}/{name}", [data], create=True, what="upload run manifest")
    except PreconditionFailed:  # another process's run has this id: keep both
        name = manifest.name(f"{manifest.run}-{uuid.uuid4().hex[:6]}")
        store.put(f"{store.root}/{name}", [data], create=True, what="upload run manifest")
    return name


def due(store: RemoteStore, log: RunLog, flow: str, run: str, started: float
        ) -> Manifest | None:
    """The manifest run ``run`` of ``flow`` ends with, from what ``log`` holds (taken: the
    next run starts a new log): ``None`` unless the run wrote, or read an entry stored
    longer than ``store.refresh`` seconds ago, and during an outage (the flush that ends
    the run announces it)."""
    usage = log.take()
    if usage is None or store.outage is not None:
        return None
    now = time.time()
    if usage.fresh(now - store.refresh):
        return None  # garbage collection counts these entries as used until now anyway
    return usage.manifest(flow, run, started, now)


class Publisher:
    """Writes run manifests in the background, one at a time, in the order runs ended.

    A run's end does not wait for its manifest: :meth:`wait` does (the tier's
    ``flush``), and at exit the thread finishes what is queued before the process
    ends (``concurrent.futures`` joins its threads). A failed write is kept for
    :meth:`failures` — the tier's flush warns, never the thread — and an outage
    is silent here, announced once by the store. ``background=False`` (a tier that
    writes at once): written by :meth:`submit` itself.
    """

    def __init__(self, store: RemoteStore, *, background: bool = True) -> None:
        self.store = store
        self.background = background
        self._futures: list[Future[None]] = []
        self._errors: list[str] = []
        self._lock = threading.Lock()
        self._thread: ThreadPoolExecutor | None = None  # started by the first manifest

    def submit(self, manifest: Manifest) -> None:
        """Queue ``manifest`` to be written (write it, without a background thread)."""
        if not self.background:
            self._write(manifest)
            return
        with self._lock:
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="lazyflow-manifests")
            self._futures.append(self._thread.submit(self._write, manifest))

    def wait(self) -> None:
        """Wait for every manifest queued so far."""
        with self._lock:
            futures, self._futures = self._futures, []
        for future in futures:
            future.exception()  # bounded: the write's calls have deadlines

    def failures(self) -> list[str]:
        """The manifests that could not be written since the last call, each a sentence."""
        with self._lock:
            errors, self._errors = self._errors, []
        return errors

    def _write(self, manifest: Manifest) -> None:
        try:  # charged to its run as it was queued (RemoteTier.finish_run), not again
            with self.store.in_background(), self.store.traffic.elsewhere():
                write(self.store, manifest)
        except TierOfflineError:
            pass
        except Exception as e:
            with self._lock:
                self._errors.append(
                    f"the manifest of run {manifest.run} could not be written to the remote "
                    f"cache {self.store.url} ({type(e).__name__}: {e}); the entries it used "
                    "count as unused after the collection window unless another run uses them")


def read(store: RemoteStore, path: str) -> Manifest | None:
    """The manifest at ``path`` (a full path on the store); ``None`` when it is gone or not
    a manifest this lazyflow reads."""
    try:
        fetched = store.fetch(path, what="read run manifest")
    except FileNotFoundError:
        return None
    return Manifest.from_json(fetched.data)


@dataclass
class Usage:
    """What a run's log holds when it is taken: entries read and written (key -> content
    checksum and size) and what the writes created."""

    read: dict[str, tuple[str | None, int]] = field(default_factory=dict)
    wrote: dict[str, tuple[str | None, int]] = field(default_factory=dict)
    entries: int = 0
    nbytes: int = 0
    oldest: float = 0.0  # the earliest ``stored`` stamp among the entries read

    def fresh(self, since: float) -> bool:
        """Whether the run only read, and only entries stored at ``since`` or later."""
        return not (self.wrote or self.entries or self.nbytes) and self.oldest >= since

    def manifest(self, flow: str, run: str, started: float, ended: float) -> Manifest:
        """The manifest of this usage for run ``run`` of ``flow``."""
        return Manifest(flow, run, started, ended,
                        tuple((k, c, s) for k, (c, s) in self.read.items()),
                        tuple((k, c, s) for k, (c, s) in self.wrote.items()),
                        self.entries, self.nbytes)


class RunLog:
    """What the remote tier read and wrote since the last run ended (thread-safe, bounded).

    >>> from lazyflow.cache.remote_entries import EntryObject
    >>> log = RunLog()
    >>> log.wrote("ab" * 16, EntryObject({"digest": "d"}))
    >>> log.added(1, 180)
    >>> usage = log.take()
    >>> (list(usage.wrote), usage.entries, usage.nbytes, log.take())
    (['abababababababababababababababab'], 1, 180, None)
    """

    def __init__(self, size: int = LOG_SIZE) -> None:
        self.size = size
        self._read: OrderedDict[str, tuple[str | None, int]] = OrderedDict()
        self._wrote: OrderedDict[str, tuple[str | None, int]] = OrderedDict()
        self._entries = 0
        self._nbytes = 0
        self._oldest = float("inf")
        self._lock = threading.Lock()

    def read(self, key: str, entry: EntryObject, modified: float | None = None) -> None:
        """An entry (or record) of ``key`` was read and used; ``modified``: its object's
        modification time (the store's clock), if the read told it."""
        self._note(self._read, key, entry)
        when = stored(entry) if modified is None else min(stored(entry), modified)
        with self._lock:
            self._oldest = min(self._oldest, when)

    def wrote(self, key: str, entry: EntryObject) -> None:
        """An entry (or record) of ``key`` was written, or found written by a colleague."""
        self._note(self._wrote, key, entry)

    def added(self, entries: int, nbytes: int) -> None:
        """A write created ``entries`` entry objects and objects of ``nbytes`` bytes."""
        with self._lock:
            self._entries += entries
            self._nbytes += nbytes

    def take(self) -> Usage | None:
        """What was logged (``None`` when nothing was read or written); then start again."""
        with self._lock:
            if not (self._read or self._wrote or self._entries or self._nbytes):
                return None
            usage = Usage(dict(self._read), dict(self._wrote), self._entries, self._nbytes,
                          self._oldest)
            self._read.clear()
            self._wrote.clear()
            self._entries = self._nbytes = 0
            self._oldest = float("inf")
        return usage

    def _note(self, rows: OrderedDict[str, tuple[str | None, int]], key: str,
              entry: EntryObject) -> None:
        with self._lock:
            rows[key] = (named(entry), int(entry.meta.get("size") or 0))
            rows.move_to_end(key)
            while len(rows) > self.size:
                rows.popitem(last=False)


def stored(entry: EntryObject) -> float:
    """When ``entry`` (and the copy it carries) was stored, by its ``stored`` stamps: the
    earlier of the two; ``0.0`` (long ago) for an entry without one.

    >>> from lazyflow.cache.remote_entries import EntryObject
    >>> stored(EntryObject({"stored": 5.0}, carried=EntryObject({"stored": 3.0})))
    3.0
    """
    when = _number(entry.meta.get("stored"))
    if entry.carried is not None:
        when = min(when, _number(entry.carried.meta.get("stored")))
    return when


def named(entry: EntryObject) -> str | None:
    """The content object an entry object keeps alive: its own, or its carried copy's."""
    if entry.cas is not None:
        return entry.cas
    return entry.carried.cas if entry.carried is not None else None


def _segment(flow: str) -> str:
    """A flow name as one path segment: percent-encoded, dots included."""
    return quote(flow, safe="").replace(".", "%2E") or "%2E"


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else 0.0


def _rows(value: Any) -> tuple[Row, ...]:
    """The well-formed rows of a stored list (others are skipped)."""
    if not isinstance(value, list):
        return ()
    rows = []
    for row in value:
        if isinstance(row, list) and len(row) >= 2 and isinstance(row[0], str) \
                and (row[1] is None or isinstance(row[1], str)):
            size = row[2] if len(row) > 2 and isinstance(row[2], int) else 0
            rows.append((row[0], row[1], size))
    return tuple(rows)
