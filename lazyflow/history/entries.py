"""What the history gives back: a recorded run (:class:`RunEntry`), its nodes
(:class:`NodeEntry`), the list :func:`~lazyflow.history.history` returns (:class:`Runs`),
and how each reads as text or a table. Plain data: no SQL, no files.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from lazyflow.run import _seconds, _table

__all__ = ["NodeEntry", "RunEntry", "Runs"]


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One node of a recorded run (the stored form of a :class:`~lazyflow.NodeRecord`).

    ``status`` is the record's final status, or ``"interrupted"`` when the run's
    process died before the node finished.
    """

    name: str
    status: str
    tier: str | None = None
    key: str | None = None
    digest: str | None = None
    duration: float = 0.0
    size: int | None = None
    saved: float = 0.0
    started: float | None = None
    ended: float | None = None
    reason: str = ""
    error_type: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class RunEntry:
    """One recorded run: what was asked, how it ended, where, and every node it touched.

    ``inputs`` maps each flow input to its value digest; ``environment`` holds
    the Python version, platform, lazyflow version and the versions of the
    packages the nodes' code uses.
    """

    id: str
    flow: str
    targets: tuple[str, ...]
    inputs: dict[str, str]
    status: str
    started: float
    ended: float | None
    executor: str | None
    host: str | None
    pid: int | None
    environment: dict[str, Any]
    error_type: str | None = None
    error_message: str | None = None
    nodes: tuple[NodeEntry, ...] = ()
    path: str = field(default="", compare=False)

    @property
    def duration(self) -> float | None:
        """Wall-clock seconds, or ``None`` when the run never ended."""
        return None if self.ended is None else self.ended - self.started

    def counts(self) -> dict[str, int]:
        """How many nodes ended in each status."""
        out: dict[str, int] = {}
        for node in self.nodes:
            out[node.status] = out.get(node.status, 0) + 1
        return out

    def node(self, name: str) -> NodeEntry:
        """The entry of node ``name``; ``KeyError`` listing the recorded ones otherwise."""
        for entry in self.nodes:
            if entry.name == name:
                return entry
        raise KeyError(f"run {self.id} recorded no node {name!r}; it has "
                       f"{', '.join(n.name for n in self.nodes) or 'none'}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (what ``lazyflow show --json`` prints)."""
        out = asdict(self)
        out["targets"] = list(self.targets)
        out["duration"] = self.duration
        return out

    def summary(self) -> str:
        """A readable report: the run's facts, then one row per node."""
        when = _timestamp(self.started)
        took = "-" if self.duration is None else _seconds(self.duration)
        lines = [f"run {self.id}  flow {self.flow!r}  targets {', '.join(self.targets)}",
                 f"status {self.status}  started {when}  took {took}  "
                 f"executor {self.executor or '-'}  host {self.host}  pid {self.pid}"]
        if self.error_type:
            lines.append(f"error {self.error_type}: {self.error_message}")
        if self.inputs:
            lines.append("inputs " + ", ".join(f"{k}={v[:12]}" for k, v in self.inputs.items()))
        env = self.environment
        if env:
            packages = ", ".join(f"{k}=={v}" for k, v in env.get("packages", {}).items())
            lines.append(f"python {env.get('python')}  {env.get('platform')}  "
                         f"lazyflow {env.get('lazyflow')}" + (f"  {packages}" if packages else ""))
        rows: list[tuple[str, ...]] = [("node", "status", "tier", "time", "key", "why")]
        for n in self.nodes:
            rows.append((n.name, n.status, n.tier or "-",
                         _seconds(n.duration) if n.status in ("completed", "failed") else "-",
                         (n.key or "")[:12],
                         n.reason if not n.error_type else f"{n.error_type}: {n.error_message}"))
        return "\n".join(lines) + "\n" + _table(rows)


class Runs(list[RunEntry]):
    """The list :func:`~lazyflow.history.history` returns: newest first, with a table view."""

    def to_frame(self) -> Any:
        """One row per run as a pandas ``DataFrame`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("Runs.to_frame() needs pandas: pip install pandas") from e
        rows = [{"id": r.id, "flow": r.flow, "targets": ",".join(r.targets),
                 "status": r.status, "started": pd.Timestamp(r.started, unit="s"),
                 "duration": r.duration, "executor": r.executor,
                 **{f"n_{s}": c for s, c in r.counts().items()}} for r in self]
        frame = pd.DataFrame(rows)
        count_columns = [c for c in frame.columns if c.startswith("n_")]
        frame[count_columns] = frame[count_columns].fillna(0).astype(int)
        return frame

    def __str__(self) -> str:
        rows: list[tuple[str, ...]] = [("id", "flow", "targets", "status", "started", "took", "nodes")]
        for r in self:
            rows.append((r.id, r.flow, ",".join(r.targets), r.status, _timestamp(r.started),
                         "-" if r.duration is None else _seconds(r.duration),
                         ", ".join(f"{c} {s}" for s, c in r.counts().items())))
        return _table(rows)


def _timestamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
