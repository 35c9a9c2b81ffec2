"""Results of a request: ``Run`` with one ``NodeRecord`` per node, and ``Explanation``.

Design note
-----------
A run is plain, inspectable data: the engine fills ``NodeRecord`` objects as
nodes finish, and everything a user or a view wants (values, statuses,
timings, time saved, a summary table) is read off them. Values of targets are
held by the run; any other node's value is fetched from the cache on demand
through ``run[name]``, so a run never pins intermediates in memory.

A run's rich HTML (its DAG and table) is drawn by the notebook layer, which
sits above this module: ``notebook/display.py`` registers its renderer with
:func:`register_html` when imported (the ``Flow`` façade imports it), and a
run drawn before that shows its summary as preformatted text.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from html import escape
from typing import Any, Literal

from lazyflow.cache.sizes import format_size

__all__ = ["EARLIER", "STATUSES", "Explanation", "ExplanationRow", "NodeRecord", "Run", "StatusInfo",
           "format_duration", "has_value", "new_run_id", "register_html", "remote_line"]

EARLIER = "[earlier elements]"
"""Suffix of the name under which a ``map=`` node computed now counts the earlier
elements' results it reused (``NodeRecord.saved_from``): no node name contains ``[``."""

Status = Literal["pending", "running", "completed", "cached", "fallback", "failed", "skipped",
                 "cancelled"]


@dataclass(frozen=True, slots=True)
class StatusInfo:
    """What a node status means wherever it is shown or tested."""

    has_value: bool
    """The node has a value in the run (its consumers ran with it)."""
    ran: bool
    """Its function was called in this run (its duration and cpu are this run's)."""
    colour: str
    """Its fill in the DAG drawings (cached nodes: by tier, ``render/svg.py``)."""


STATUSES: dict[str, StatusInfo] = {
    "pending": StatusInfo(False, False, "#eceff1"),
    "running": StatusInfo(False, True, "#ffca28"),
    "completed": StatusInfo(True, True, "#66bb6a"),
    "cached": StatusInfo(True, False, "#64b5f6"),
    "fallback": StatusInfo(True, True, "#ffa726"),  # it raised; fallback= stands in for it
    "failed": StatusInfo(False, True, "#ef5350"),
    "skipped": StatusInfo(False, False, "#cfd8dc"),
    "cancelled": StatusInfo(False, False, "#ffab91"),
}
"""Every status: whether it has a value, whether it ran now, and its colour."""


def has_value(status: str) -> bool:
    """Whether a node of ``status`` has a value in its run (completed, cached, fallback)."""
    info = STATUSES.get(status)
    return info is not None and info.has_value


@dataclass(slots=True)
class NodeRecord:
    """What happened to one node in a run.

    ``status`` is ``"completed"`` (ran now), ``"cached"``, ``"fallback"`` (it raised
    and its ``fallback=`` value stands in), ``"failed"``, ``"skipped"`` or
    ``"cancelled"`` once the run is over (:data:`STATUSES` says which have a value) (``"pending"`` or
    ``"running"`` while it goes). ``tier`` names the cache tier that served a
    hit. ``duration`` is seconds spent computing (hits: ``0.0``) and
    ``saved`` the compute time a hit avoided (the node's and its ancestors'). ``reason`` says why the node ran,
    or why it was skipped (set it after construction: it is a property, see
    :meth:`revise_reason_later`).
    """

    name: str
    status: Status = "pending"
    tier: str | None = None
    duration: float = 0.0
    key: str | None = None
    started: float | None = None
    ended: float | None = None
    digest: str | None = None
    size: int | None = None
    saved: float = 0.0
    _reason: str = field(default="", init=False)
    _later: Callable[[str], str] | None = field(default=None, init=False, repr=False)
    error: BaseException | None = None
    attempts: int = 0
    caught: bool = False
    """It failed, and every consumer in the request caught the failure (``catch=``)."""
    metrics: dict[str, float] | None = None
    """What its call reported with ``lf.report`` (for a hit: when it was computed)."""
    cpu: float | None = None
    """CPU seconds of the thread that ran its call (computed nodes)."""
    peak_memory: int | None = None
    """Peak bytes during its call, where measured: always in a worker process of the
    processes executor, with ``profile_memory=True`` elsewhere."""
    saved_from: dict[str, list[Any]] | None = None
    """For a hit: what its value cost node by node, itself and its ancestors (node ->
    ``[seconds]`` or ``[seconds, {metric: value}]``); ``None`` when not recorded. For a
    ``map=`` node computed now: what the earlier elements it reused cost, under
    ``name + EARLIER``."""

    @property
    def done(self) -> bool:
        """Whether the node reached a final status."""
        return self.status not in ("pending", "running")

    @property
    def reason(self) -> str:
        """Why the node ran, or why it was skipped; for a hit, where it was computed when
        that was not here. A revision left for later (:meth:`revise_reason_later`) is
        applied by the first reading, on whichever thread."""
        if self._later is not None:
            self._revise()
        return self._reason

    @reason.setter
    def reason(self, text: str) -> None:
        if self._later is None:
            self._reason = text
            return
        with _REVISING:  # a new text replaces the revision too (the revised text would)
            self._reason, self._later = text, None

    def revise_reason_later(self, revise: Callable[[str], str]) -> None:
        """Make the reason ``revise(reason)``, worked out when the reason is first read.

        For a revision that costs more than a request should pay unread: a hit's note
        on where it was computed reads this process's environment, ~200 files
        (``engine/why.py``). ``revise`` may run on any thread (the history's writer);
        it must not raise.
        """
        if self._later is not None:
            self._revise()
        self._later = _Later(revise)

    def settled_reason(self) -> str | None:
        """The reason, or ``None`` while a revision is left for its first reading (what
        the history's request-thread rows check, so as not to work it out there)."""
        return self._reason if self._later is None else None

    def _revise(self) -> None:
        later = self._later
        if later is None:
            return
        revised = later(self._reason)  # outside the lock: it may read files
        with _REVISING:  # once, even when two threads read at once
            if self._later is later:
                self._reason, self._later = revised, None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled and copied with its reason worked out: a revision left for later may
        hold what does not travel (the cache it reads)."""
        if self._later is not None:
            self._revise()
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        # the dataclass's, but the reason as it reads (with any revision left for later)
        shown = (f"reason={self.reason!r}" if f.name == "_reason"
                 else f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return f"NodeRecord({', '.join(shown)})"


_REVISING = threading.Lock()
"""Held while a record's deferred reason revision is applied or dropped."""


class _Later:
    """A revision left for later, which deep copies share (``dataclasses.asdict`` copies
    each field: the revision may hold the cache, which cannot be copied)."""

    __slots__ = ("revise",)

    def __init__(self, revise: Callable[[str], str]) -> None:
        self.revise = revise

    def __call__(self, reason: str) -> str:
        return self.revise(reason)

    def __deepcopy__(self, memo: dict[int, Any]) -> _Later:
        return self


@dataclass
class Run:
    """One request's results: values of the targets and a record per node.

    ``id`` names the run in the history (``lazyflow show ID``); ``code`` holds
    each touched node's code-fingerprint components and ``cache`` the cache
    that served the run, so observers (history) need nothing else.

    >>> run = flow.run(["model"], path="a.csv")      # doctest: +SKIP
    >>> run["model"], run.nodes["clean"].status       # doctest: +SKIP

    ``edges`` lists the (upstream, downstream) pairs among the run's nodes, for
    drawing it; in a notebook a run shows as its DAG and a results table.
    ``remote`` counts the requests and bytes the run sent to the remote cache.
    """

    flow: str
    targets: tuple[str, ...]
    nodes: dict[str, NodeRecord]
    inputs: dict[str, str] = field(default_factory=dict)
    status: Literal["running", "completed", "failed", "cancelled"] = "running"
    started: float = field(default_factory=time.time)
    ended: float | None = None
    executor: str = "sync"
    id: str = field(default_factory=lambda: new_run_id())
    code: dict[str, Mapping[str, str]] = field(default_factory=dict, repr=False)
    cache: Any = field(default=None, repr=False)
    values: dict[str, Any] = field(default_factory=dict, repr=False)
    error: BaseException | None = field(default=None, repr=False)
    edges: list[tuple[str, str]] = field(default_factory=list, repr=False)
    remote: dict[str, dict[str, int]] | None = field(default=None, repr=False)
    """What the run cost on the remote cache, per HTTP method: ``{"GET": {"requests": 1,
    "bytes": 412}, "PUT": {...}}`` (``None``: it sent no request). Runs overlapping in
    one process each count what was sent since the previous one ended."""
    _loader: Callable[[str, str | None], Any] | None = field(default=None, repr=False)

    def __getitem__(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        record = self.nodes.get(name)
        if record is None:
            raise KeyError(f"node {name!r} was not part of this run; it covered "
                           f"{', '.join(sorted(self.nodes))}")
        if record.key is None or not has_value(record.status) \
                or self._loader is None:
            raise KeyError(f"node {name!r} has no value in this run (status {record.status!r}"
                           f"{': ' + record.reason if record.reason else ''})")
        return self._loader(record.key, record.digest)

    def __iter__(self) -> Iterator[str]:
        return iter(self.targets)

    @property
    def duration(self) -> float:
        """Wall-clock seconds of the run (so far, if it is still going)."""
        return (self.ended or time.time()) - self.started

    @property
    def time_saved(self) -> float:
        """Compute seconds avoided by cache hits (as recorded when they were computed).

        A hit saves its own compute time and that of its ancestors. Each node is
        counted once, however many hits share it, and not at all when this run
        computed it. (A hit recorded without its ancestry — over 128 nodes, or
        written by an older lazyflow — counts its per-path total.)
        """
        union, extra = self._saved()
        return extra + sum(float(cost[0]) for cost in union.values())

    def saved_metrics(self) -> dict[str, float]:
        """The ``lf.report`` figures cache hits saved, each node's counted once (as
        :attr:`time_saved` counts seconds)."""
        union, _ = self._saved()
        return _summed(cost[1] if len(cost) > 1 else None for cost in union.values())

    def _saved(self) -> tuple[dict[str, list[Any]], float]:
        """The union of the hits' ancestries, less the nodes computed now; and the seconds
        of hits recorded without one."""
        union: dict[str, list[Any]] = {}
        extra = 0.0
        for record in self.nodes.values():
            if record.status == "cached":
                if record.saved_from is None:
                    extra += record.saved
                else:
                    union.update(record.saved_from)
        ran = [(name, record) for name, record in self.nodes.items()
               if STATUSES[record.status].ran]
        for name, _ in ran:
            union.pop(name, None)
        for _, record in ran:  # a map computed now that reused earlier elements' results
            if record.saved_from:
                union.update(record.saved_from)
        return union, extra

    def metrics(self) -> dict[str, float]:
        """The ``lf.report`` figures of the calls made in this run, summed per name."""
        return _summed(r.metrics for r in self.nodes.values() if r.status != "cached")

    def by_status(self, status: str) -> list[str]:
        """Names of the nodes with ``status``, in run order."""
        return [name for name, r in self.nodes.items() if r.status == status]

    @property
    def completed(self) -> list[str]:
        """Nodes computed in this run."""
        return self.by_status("completed")

    @property
    def cached(self) -> list[str]:
        """Nodes served from the cache."""
        return self.by_status("cached")

    @property
    def failed(self) -> list[str]:
        """Nodes that raised."""
        return self.by_status("failed")

    @property
    def skipped(self) -> list[str]:
        """Nodes not run, each with its reason in ``nodes[name].reason``."""
        return self.by_status("skipped")

    def counts(self) -> dict[str, int]:
        """How many nodes ended in each status."""
        out: dict[str, int] = {}
        for record in self.nodes.values():
            out[record.status] = out.get(record.status, 0) + 1
        return out

    def summary(self) -> str:
        """A readable table: one row per node, then totals and time saved."""
        rows = [("node", "status", "tier", "time", "key", "why")]
        for record in self.nodes.values():
            rows.append((record.name, record.status, record.tier or "-",
                         _seconds(record.duration) if record.status in ("completed", "fallback")
                         else "-",
                         (record.key or "")[:12], record.reason))
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items())
        footer = (f"{self.flow}: {counts} in {_seconds(self.duration)}"
                  f"; cache saved {_seconds(self.time_saved)}")
        spent, saved = self.metrics(), self.saved_metrics()
        if spent:
            footer += f"\nreported: {_figures(spent)}"
        if saved:
            footer += f"\nsaved: {_figures(saved)}"
        if self.remote:
            footer += f"\n{remote_line(self.remote)}"
        return _table(rows) + "\n" + footer

    def _repr_html_(self) -> str:
        render = _HTML.get("run")
        return render(self) if render is not None else f"<pre>{escape(self.summary())}</pre>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {"text/plain": self.summary(), "text/html": self._repr_html_()}

    def __repr__(self) -> str:
        return (f"<Run {self.flow!r} {list(self.targets)} {self.status}: "
                f"{', '.join(f'{n} {s}' for s, n in self.counts().items())}>")


@dataclass(frozen=True, slots=True)
class ExplanationRow:
    """One needed node in a dry run: would it hit (and where) or run, and why."""

    node: str
    action: Literal["hit", "run"]
    tier: str | None
    reason: str
    key: str | None
    size: int | None = None


@dataclass(frozen=True)
class Explanation:
    """A dry run of a request: what would be served from which tier, what would run and why."""

    flow: str
    targets: tuple[str, ...]
    rows: tuple[ExplanationRow, ...]

    def __getitem__(self, node: str) -> ExplanationRow:
        for row in self.rows:
            if row.node == node:
                return row
        raise KeyError(f"node {node!r} is not needed for {list(self.targets)}")

    @property
    def to_run(self) -> list[str]:
        """Nodes that would be computed."""
        return [r.node for r in self.rows if r.action == "run"]

    def __str__(self) -> str:
        rows = [("node", "action", "tier", "size", "why")]
        for r in self.rows:
            rows.append((r.node, r.action, r.tier or "-",
                         format_size(r.size) if r.size else "-", r.reason))
        return _table(rows)

    def __repr__(self) -> str:
        return str(self)


_HTML: dict[str, Callable[[Run], str]] = {}  # "run": the notebook layer's renderer


def register_html(render: Callable[[Run], str]) -> None:
    """Draw every :class:`Run` as ``render(run)`` in rich displays (``notebook/display.py``)."""
    _HTML["run"] = render


def new_run_id() -> str:
    """A run id that sorts by start time: ``20261125-165012-3f9a1c``.

    The suffix counts up from a random start drawn once per process (and again in a
    forked child), so one process never makes the same id twice: a fresh random suffix
    per run repeated about once per thousand runs started in the same second (warm runs
    start ~15,000 a second), and the history kept only the first of two runs sharing an
    id. Two processes share an id only if their counts overlap within one second. The
    start comes from ``random``, not ``os.urandom``: a getrandom call can cost most of a
    millisecond on a VM, more than a warm run.
    """
    return time.strftime("%Y%m%d-%H%M%S") + f"-{next(_SUFFIXES) & 0xFFFFFF:06x}"


def _new_suffixes() -> None:
    global _SUFFIXES
    _SUFFIXES = itertools.count(random.getrandbits(24))  # next() is atomic: thread-safe


_SUFFIXES: itertools.count[int]
_new_suffixes()
os.register_at_fork(after_in_child=_new_suffixes)  # after random's own reseed (registered first)


def remote_line(cost: Mapping[str, Mapping[str, int]]) -> str:
    """``remote: 3 requests (2 GET, 1 PUT), 4.1 KB``: what a run cost on the remote.

    >>> remote_line({"GET": {"requests": 2, "bytes": 3700}, "PUT": {"requests": 1, "bytes": 400}})
    'remote: 3 requests (2 GET, 1 PUT), 4.1 KB'
    """
    count = sum(c.get("requests", 0) for c in cost.values())
    methods = ", ".join(f"{c.get('requests', 0)} {m}" for m, c in cost.items()
                        if c.get("requests"))
    moved = sum(c.get("bytes", 0) for c in cost.values())
    return (f"remote: {count} request{'s' if count != 1 else ''} ({methods}), "
            f"{format_size(moved)}")


def _seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f}µs"
    if s < 1:
        return f"{s * 1e3:.1f}ms"
    return f"{s:.2f}s"


format_duration = _seconds
"""A duration for people: ``'64µs'``, ``'12.5ms'``, ``'1.50s'`` (for the notebook layer)."""


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _summed(parts: Iterable[dict[str, float] | None]) -> dict[str, float]:
    total: dict[str, float] = {}
    for part in parts:
        for name, value in (part or {}).items():
            total[name] = total.get(name, 0) + value
    return total


def _figures(metrics: dict[str, float]) -> str:
    """``812 tokens, 0.013 cost``: figures as a sentence names them."""
    return ", ".join(f"{value:g} {name}" for name, value in metrics.items())
