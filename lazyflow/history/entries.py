"""What the history gives back: a recorded run (:class:`RunEntry`), its nodes
(:class:`NodeEntry`), the list :func:`~lazyflow.history.history` returns (:class:`Runs`),
and how each reads as text or a table. Plain data: no SQL, no files.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from lazyflow.cache.sizes import format_size
from lazyflow.model.shown import printed
from lazyflow.run import _figures, _seconds, _summed, _table

__all__ = ["NodeEntry", "RunEntry", "Runs"]


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One node of a recorded run (the stored form of a :class:`~lazyflow.NodeRecord`).

    ``status`` is the record's final status, or ``"interrupted"`` when the run's
    process died before the node finished. ``cpu`` (seconds of the thread that ran
    the call), ``peak_memory`` (bytes, where measured) and ``metrics`` (what the call
    reported with ``lf.report``; for a hit, what it saved) are ``None`` when not
    recorded: a hit, or a run recorded before lazyflow kept them.
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
    cpu: float | None = None
    peak_memory: int | None = None
    metrics: dict[str, float] | None = None


@dataclass(frozen=True)
class RunEntry:
    """One recorded run: what was asked, how it ended, where, and every node it touched.

    ``inputs`` maps each flow input to its value digest; ``input_values`` to how
    its value reads: its ``repr`` when small (``'3'``, ``"'a.csv'"``), ``'<redacted>'``
    for an ``lf.Secret`` or a parameter named like ``*token*``, ``*password*``,
    ``*key*`` or ``*secret*``, else its type and shape (``'<ndarray float64 (1000,
    3)>'``) — empty for runs recorded before lazyflow kept them.
    ``environment`` holds the Python version, platform, lazyflow version and the
    versions of the packages the nodes' code uses. ``saved_metrics`` sums the
    ``lf.report`` figures the run's hits saved, each node counted once.
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
    input_values: dict[str, str] = field(default_factory=dict)
    saved_metrics: dict[str, float] = field(default_factory=dict)
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

    def metrics(self) -> dict[str, float]:
        """The ``lf.report`` figures of the calls made in the run, summed per name (as
        ``Run.metrics``: hits' figures are in :attr:`saved_metrics`)."""
        return _summed(n.metrics for n in self.nodes if n.status != "cached")

    def inputs_text(self) -> str:
        """``n=3, path='a.csv', frame=<DataFrame (10, 2)> 5be2c1a0d3f4``: each flow input's
        value where it was kept, with the digest when only its type and shape were."""
        return ", ".join(f"{name}={printed(self.input_values.get(name), digest)}"
                         for name, digest in self.inputs.items())

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
            lines.append("inputs " + self.inputs_text())
        env = self.environment
        if env:
            packages = ", ".join(f"{k}=={v}" for k, v in env.get("packages", {}).items())
            lines.append(f"python {env.get('python')}  {env.get('platform')}  "
                         f"lazyflow {env.get('lazyflow')}" + (f"  {packages}" if packages else ""))
        return "\n".join(lines) + "\n" + _table(self._node_rows()) + self._footer()

    def _node_rows(self) -> list[tuple[str, ...]]:
        """The node table: cpu, peak memory and metrics columns only when a node has them."""
        profiled = [f for f in ("cpu", "peak_memory", "metrics")
                    if any(getattr(n, f) is not None for n in self.nodes)]
        rows: list[tuple[str, ...]] = [("node", "status", "tier", "time",
                                        *(_HEADS[f] for f in profiled), "key", "why")]
        for n in self.nodes:
            rows.append((n.name, n.status, n.tier or "-",
                         _seconds(n.duration) if n.status in _RAN else "-",
                         *(_profile(n, f) for f in profiled),
                         (n.key or "")[:12],
                         n.reason if not n.error_type else f"{n.error_type}: {n.error_message}"))
        return rows

    def _footer(self) -> str:
        """The run's metrics lines, as ``Run.summary`` ends: reported, then saved."""
        spent = self.metrics()
        return (("\nreported: " + _figures(spent) if spent else "")
                + ("\nsaved: " + _figures(self.saved_metrics) if self.saved_metrics else ""))


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
        rows: list[tuple[str, ...]] = [("id", "flow", "targets", "status", "started", "took",
                                        "nodes", "inputs")]
        for r in self:
            rows.append((r.id, r.flow, ",".join(r.targets), r.status, _timestamp(r.started),
                         "-" if r.duration is None else _seconds(r.duration),
                         ", ".join(f"{c} {s}" for s, c in r.counts().items()),
                         _cut(r.inputs_text(), _INPUTS_SHOWN)))
        return _table(rows)


_RAN = ("completed", "failed", "fallback")
_HEADS = {"cpu": "cpu", "peak_memory": "peak", "metrics": "metrics"}
_INPUTS_SHOWN = 60  # characters of the inputs in `lazyflow runs`' table


def _timestamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _profile(node: NodeEntry, field_name: str) -> str:
    """A node's cpu, peak memory or metrics for the table; ``-`` when not recorded."""
    value = getattr(node, field_name)
    if value is None:
        return "-"
    if field_name == "cpu":
        return _seconds(value)
    if field_name == "peak_memory":
        return format_size(value)
    figures = " ".join(f"{k}={v:g}" for k, v in value.items())
    return f"saved {figures}" if node.status == "cached" else figures  # a hit spent nothing


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"
