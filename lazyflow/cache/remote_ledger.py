"""What a remote holds, without listing it: a checkpoint plus the ledgers of recent runs.

Design note
-----------
Policy. Listing a bucket costs a request per 1,000 objects: 20,000 requests
at 10 million entries. So ``stats`` never lists entries or content. It sums
a *checkpoint* and the *ledgers* of the run manifests written since
(``remote_manifests.py``: each manifest's name carries the entries and bytes
its run created)::

    <root>/stats.json   {"v": 1, "closed": "yyyy-mm-dd", "at": t,
                         "total": {"entries": n, "bytes": b},
                         "flows": {"<flow>": {"entries": n, "bytes": b}, ...}}

The checkpoint holds the figures *as if no manifest dated after ``closed``
existed*: ``stats`` adds the ledgers of the days after ``closed`` — one
listing of ``runs/`` for the days there are, then one listing per such day
(per 1,000 runs of that day), whatever the number of entries. When a day is
two days old (no manifest lands there any more, clock skew aside) ``stats``
folds it into the checkpoint, written over the version it read (S3
``If-Match``: two colleagues folding at once cannot both add a day; the one
that loses leaves it to the next ``stats``). So a ``stats`` costs one GET,
one listing of the days and about three day listings: a handful of
requests at any size.

Where the figures come from. Garbage collection (``remote_gc.py``) lists
everything anyway, so it writes the checkpoint from its listing: exact
entries and bytes, per flow for the entries a live manifest names (the flow
of the latest run that used each). The first ``stats`` of a remote that has
no checkpoint lists it once to make one (a one-time cost, as a migration);
per flow it then counts what each flow's runs add from there on. Between
collections the figures are the ledgers': entries and bytes runs created
(content a second key reuses counts once), not what a record rewritten in
place changed, nor what entries written outside a run (a Dask worker's own
uploads) added. The next collection corrects them.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lazyflow.cache.remote_inventory import CHECKPOINT, inventory
from lazyflow.cache.remote_manifests import RUNS, ManifestName, day_of, parse, read
from lazyflow.cache.remote_objects import Listed, PreconditionFailed

if TYPE_CHECKING:
    from lazyflow.cache.remote_store import RemoteStore

__all__ = ["OPEN_DAYS", "Checkpoint", "Figures", "checkpoint_after", "usage",
           "write_checkpoint"]

OPEN_DAYS = 2
"""Days after which a day's manifests are folded into the checkpoint."""
_DAY = 86400.0


@dataclass
class Figures:
    """Entries and bytes (of a flow, or of the whole remote)."""

    entries: int = 0
    nbytes: int = 0

    def add(self, entries: int, nbytes: int, sign: int = 1) -> None:
        """Add (``sign=-1``: take away) ``entries`` and ``nbytes``."""
        self.entries += sign * entries
        self.nbytes += sign * nbytes

    def as_dict(self) -> dict[str, int]:
        """``{"entries": n, "bytes": b}``, never below zero."""
        return {"entries": max(0, self.entries), "bytes": max(0, self.nbytes)}


@dataclass
class Checkpoint:
    """The figures as if no manifest dated after ``closed`` existed."""

    closed: str
    total: Figures = field(default_factory=Figures)
    flows: dict[str, Figures] = field(default_factory=dict)
    at: float = 0.0

    def add(self, name: ManifestName, sign: int = 1) -> None:
        """Add (or take away) one manifest's ledger."""
        self.total.add(name.entries, name.nbytes, sign)
        self.flows.setdefault(name.flow, Figures()).add(name.entries, name.nbytes, sign)

    def report(self) -> dict[str, Any]:
        """``{"entries": n, "bytes": b, "flows": {flow: {"entries", "bytes"}}}``."""
        flows = {flow: figures.as_dict() for flow, figures in sorted(self.flows.items())}
        return {**self.total.as_dict(),
                "flows": {flow: f for flow, f in flows.items() if f["entries"] or f["bytes"]}}

    def to_json(self) -> bytes:
        """The checkpoint object's bytes."""
        return json.dumps({"v": 1, "closed": self.closed, "at": self.at,
                           "total": _figures(self.total),
                           "flows": {f: _figures(v) for f, v in sorted(self.flows.items())}},
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Checkpoint | None:
        """Parse a checkpoint; ``None`` when it is not one this lazyflow reads."""
        try:
            stored = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(stored, dict) or stored.get("v") != 1 \
                or not isinstance(stored.get("closed"), str):
            return None
        flows = stored.get("flows")
        flows = flows if isinstance(flows, dict) else {}
        return cls(stored["closed"], _parsed(stored.get("total")),
                   {str(f): _parsed(v) for f, v in flows.items()},
                   float(stored.get("at") or 0.0))

    def copy(self) -> Checkpoint:
        """An independent copy."""
        return Checkpoint(self.closed, Figures(self.total.entries, self.total.nbytes),
                          {f: Figures(v.entries, v.nbytes) for f, v in self.flows.items()},
                          self.at)


def usage(store: RemoteStore, now: float | None = None) -> dict[str, Any]:
    """Entries and bytes the remote holds, in total and per flow, from the checkpoint and
    the ledgers since (``Checkpoint.report``'s shape)."""
    now = time.time() if now is None else now
    found = _read(store)
    if found is None:
        found = _baseline(store, now)
    checkpoint, version = found
    figures = checkpoint.copy()
    folded = checkpoint.copy()
    closing = day_of(now - OPEN_DAYS * _DAY)
    days = [d for d in store.folders(RUNS) if d > checkpoint.closed]
    for day in days:
        for name in _ledgers(store, store.listing(f"{RUNS}/{day}")):
            figures.add(name)
            if day <= closing:
                folded.add(name)
    if closing > checkpoint.closed:  # fold the days no manifest lands in any more
        folded.closed, folded.at = closing, now
        # a colleague folded them meanwhile: the next stats reads theirs
        with contextlib.suppress(PreconditionFailed):
            store.put(_path(store), [folded.to_json()], create=version is None, match=version,
                      what="upload statistics")
    return figures.report()


def checkpoint_after(manifests: Iterable[ManifestName], total: Figures,
                     flows: dict[str, Figures], now: float) -> Checkpoint:
    """The checkpoint of a remote that holds ``total`` (per flow: ``flows``) beside
    ``manifests``: less the ledgers of those of open days, which ``usage`` adds back."""
    checkpoint = Checkpoint(day_of(now - OPEN_DAYS * _DAY), total, flows, now)
    for name in manifests:
        if name.day > checkpoint.closed:
            checkpoint.add(name, -1)
    return checkpoint


def write_checkpoint(store: RemoteStore, checkpoint: Checkpoint | None) -> None:
    """Replace the checkpoint with ``checkpoint`` whatever it holds now (a collection's
    figures are the latest); ``None`` removes it (an empty remote has none)."""
    for _ in range(3):
        found = _read(store)
        version = None if found is None else found[1]
        try:
            if checkpoint is None:
                if found is not None:
                    store.delete(_path(store), match=version, what="delete statistics")
                return
            store.put(_path(store), [checkpoint.to_json()], create=found is None, match=version,
                      what="upload statistics")
            return
        except FileNotFoundError:
            return
        except PreconditionFailed:
            continue  # a stats folded days meanwhile: ours are newer, write over theirs


def _baseline(store: RemoteStore, now: float) -> tuple[Checkpoint, str | None]:
    """A first checkpoint, from one listing of the whole remote."""
    found = inventory(store, store.listing())
    total = Figures(found.entry_count, found.entry_bytes)
    flows: dict[str, Figures] = {}  # per flow: the ledgers of the manifests there are
    for name, _ in found.manifests:
        flows.setdefault(name.flow, Figures()).add(name.entries, name.nbytes)
    checkpoint = checkpoint_after((name for name, _ in found.manifests), total, flows, now)
    try:
        version = store.put(_path(store), [checkpoint.to_json()], create=True,
                            what="upload statistics")
    except PreconditionFailed:  # a colleague made one meanwhile: use theirs
        return _read(store) or (checkpoint, None)
    return checkpoint, version


def _read(store: RemoteStore) -> tuple[Checkpoint, str | None] | None:
    try:
        fetched = store.fetch(_path(store), what="read statistics")
    except FileNotFoundError:
        return None
    checkpoint = Checkpoint.from_json(fetched.data)
    return None if checkpoint is None else (checkpoint, fetched.version)


def _ledgers(store: RemoteStore, listing: Iterable[Listed]) -> list[ManifestName]:
    """The ledgers of the listed manifests: from their names, or read (a name without one)."""
    names = []
    prefix = store.root.rstrip("/") + "/"
    for item in listing:
        relative = item.path[len(prefix):] if item.path.startswith(prefix) else item.path
        name = parse(relative)
        if name is None and relative.endswith(".json") and ".tmp-" not in relative:
            manifest = read(store, item.path)
            if manifest is not None:
                name = ManifestName(relative.split("/")[1], manifest.flow, manifest.run,
                                    manifest.entries, manifest.nbytes)
        if name is not None:
            names.append(name)
    return names


def _path(store: RemoteStore) -> str:
    return f"{store.root}/{CHECKPOINT}"


def _figures(figures: Figures) -> dict[str, int]:
    return {"entries": figures.entries, "bytes": figures.nbytes}


def _parsed(value: Any) -> Figures:
    if not isinstance(value, dict):
        return Figures()
    return Figures(int(value.get("entries") or 0), int(value.get("bytes") or 0))
