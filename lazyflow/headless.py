"""Run a notebook headless in a fresh kernel; report per cell and node; check its outputs.

Design note
-----------
Policy. ``lazyflow notebook run`` executes every code cell with nbclient,
exactly as Jupyter would (the kernel starts in the notebook's folder, so its
relative paths and its ``./.lazyflow`` cache are the notebook's). To learn
what each cell did, one hidden cell first subscribes a collector to
:data:`lazyflow.engine.events.GLOBAL` inside the kernel, and after every user cell a
hidden cell hands over (as one JSON line) the node events of that cell.
Hidden cells do not count as executions, so execution counts match a normal
run. With ``check``, each cell's new outputs are compared with the outputs
stored in the file, ignoring what legitimately varies (execution counts,
metadata, how a stream was split into chunks, and the line a ``%%flow`` cell
prints when it is restored from the cache instead of run: the cell's own
stdout is replayed after it, so what the cell printed is still compared).

State. The kernel-side collector is a module-level list in this module;
:class:`NotebookReport` holds the outcome.

Rejected: reading per-cell results back from the run history (it would need
a disk tier, and mapping runs to cells by time is fragile).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lazyflow.run import _seconds, _table

__all__ = ["CellReport", "NotebookReport", "collect", "report", "run_notebook"]

_MARK = "__lazyflow_cell_report__"
_SETUP = "import lazyflow.headless as _lazyflow_headless; _lazyflow_headless.collect()"
_PROBE = "_lazyflow_headless.report()"

# --------------------------------------------------------------------------- inside the kernel

_EVENTS: list[dict[str, Any]] = []
_SUBSCRIBED: list[Any] = []


def collect() -> None:
    """(In the kernel.) Start collecting every flow's finished nodes."""
    from lazyflow.engine.events import GLOBAL, NodeFinished

    def on_event(event: Any) -> None:
        if isinstance(event, NodeFinished):
            r = event.record
            _EVENTS.append({"flow": event.run.flow, "node": r.name, "status": r.status,
                            "tier": r.tier, "duration": r.duration, "saved": r.saved,
                            "saved_from": r.saved_from})

    if not _SUBSCRIBED:
        _SUBSCRIBED.append(GLOBAL.subscribe(on_event))


def report() -> None:
    """(In the kernel.) Print the nodes finished since the last report as one JSON line."""
    print(_MARK + json.dumps(_EVENTS))
    _EVENTS.clear()


# --------------------------------------------------------------------------- outside


@dataclass
class CellReport:
    """One code cell: time taken, its nodes' outcomes, and whether its outputs changed."""

    index: int
    seconds: float
    nodes: list[dict[str, Any]] = field(default_factory=list)
    changed: bool = False
    error: str | None = None

    def count(self, status: str) -> int:
        """How many of the cell's nodes ended with ``status``."""
        return sum(1 for n in self.nodes if n["status"] == status)


@dataclass
class NotebookReport:
    """The outcome of :func:`run_notebook`."""

    path: str
    cells: list[CellReport]
    checked: bool
    seconds: float

    @property
    def cached(self) -> int:
        """Nodes served from the cache."""
        return sum(c.count("cached") for c in self.cells)

    @property
    def computed(self) -> int:
        """Nodes computed (cache misses)."""
        return sum(c.count("completed") for c in self.cells)

    @property
    def hit_rate(self) -> float | None:
        """Cached nodes over cached plus computed ones (``None`` when no node ran)."""
        total = self.cached + self.computed
        return None if total == 0 else self.cached / total

    @property
    def saved(self) -> float:
        """Compute seconds the cache hits avoided, each node's counted once over the whole
        notebook (cells share ancestors) and not at all when a cell computed it."""
        union: dict[tuple[str, str], float] = {}
        extra = 0.0
        nodes = [(c, n) for c in self.cells for n in c.nodes]
        for _, n in nodes:
            if n["status"] == "cached":
                if n.get("saved_from") is None:
                    extra += n["saved"]
                else:
                    union.update({(n["flow"], node): cost[0]
                                  for node, cost in n["saved_from"].items()})
        for _, n in nodes:
            if n["status"] == "completed":
                union.pop((n["flow"], n["node"]), None)
        return float(extra + sum(union.values()))

    @property
    def changed(self) -> list[int]:
        """Indexes of cells whose outputs differ from the stored ones (with ``check``)."""
        return [c.index for c in self.cells if c.changed]

    @property
    def error(self) -> str | None:
        """The error that stopped the notebook, if any."""
        return next((c.error for c in self.cells if c.error), None)

    @property
    def ok(self) -> bool:
        """No cell failed and (with ``check``) no output changed."""
        return self.error is None and not self.changed

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (``lazyflow notebook run --json``)."""
        return {"notebook": self.path, "ok": self.ok, "seconds": self.seconds,
                "cached": self.cached, "computed": self.computed, "hit_rate": self.hit_rate,
                "saved": self.saved, "checked": self.checked, "changed": self.changed,
                "error": self.error,
                "cells": [{"index": c.index, "seconds": c.seconds, "nodes": c.nodes,
                           "changed": c.changed, "error": c.error} for c in self.cells]}

    def __str__(self) -> str:
        rows: list[tuple[str, ...]] = [("cell", "time", "node", "result", "tier", "node time", "saved")]
        for c in self.cells:
            mark = " *changed*" if c.changed else ""
            if not c.nodes:
                rows.append((f"[{c.index}]{mark}", _seconds(c.seconds), "-", "", "", "", ""))
            for i, n in enumerate(c.nodes):
                rows.append((f"[{c.index}]{mark}" if i == 0 else "",
                             _seconds(c.seconds) if i == 0 else "", n["node"],
                             "cached" if n["status"] == "cached" else
                             "run" if n["status"] == "completed" else n["status"],
                             n["tier"] or "-",
                             _seconds(n["duration"]) if n["status"] == "completed" else "-",
                             _seconds(n["saved"]) if n["status"] == "cached" else "-"))
        rate = "no lazyflow node ran" if self.hit_rate is None else (
            f"{self.cached} cached, {self.computed} run ({self.hit_rate:.0%} cache hits)")
        lines = [_table(rows), f"{self.path}: {len(self.cells)} cells in "
                 f"{_seconds(self.seconds)}; {rate}; cache saved {_seconds(self.saved)}"]
        if self.checked:
            lines.append("outputs identical to the stored ones" if not self.changed else
                         f"outputs differ in cells {', '.join(map(str, self.changed))}")
        if self.error:
            lines.append(f"stopped: {self.error}")
        return "\n".join(lines)


def run_notebook(path: str | Path, *, check: bool = False, output: str | Path | None = None,
                 timeout: float = 600, kernel_name: str | None = None) -> NotebookReport:
    """Execute ``path`` in a fresh kernel and report per cell and node.

    ``check`` compares every code cell's outputs with those stored in the
    file; ``output`` writes the executed notebook (may be ``path`` itself).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    stored = {i: _normalise(c.get("outputs", [])) for i, c in enumerate(nb.cells)
              if c.cell_type == "code"}
    kernel = kernel_name or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    cells: list[CellReport] = []
    t_start = time.perf_counter()
    with client.setup_kernel():
        _hidden(client, nb, _SETUP)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            t0 = time.perf_counter()
            error = None
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as e:
                error = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
            report_cell = CellReport(index, time.perf_counter() - t0,
                                     _probe(_hidden(client, nb, _PROBE)), error=error)
            report_cell.changed = check and _normalise(cell.outputs) != stored[index]
            cells.append(report_cell)
            if error is not None:
                break
    if output is not None:
        nbformat.write(nb, str(output))
    return NotebookReport(str(path), cells, check, time.perf_counter() - t_start)


def _hidden(client: Any, nb: Any, source: str) -> Any:
    """Execute ``source`` as a cell that is not part of the notebook; return that cell."""
    import nbformat

    cell = nbformat.v4.new_code_cell(source)
    nb.cells.append(cell)  # nbclient routes outputs by cell index
    try:
        client.execute_cell(cell, len(nb.cells) - 1, store_history=False)
    finally:
        nb.cells.pop()
    return cell


def _probe(probe: Any) -> list[dict[str, Any]]:
    for out in probe.outputs:
        text = out.get("text", "")
        if _MARK in text:
            return list(json.loads(text.split(_MARK, 1)[1]))
    return []


def _normalise(outputs: list[Any]) -> list[tuple[Any, ...]]:
    """Outputs reduced to what must reproduce: streams merged, no counts, no metadata."""
    from lazyflow.notebook.magics import RESTORED_NOTICE  # IPython: only with nbclient here

    out: list[tuple[Any, ...]] = []
    for o in outputs:
        kind = o.get("output_type")
        if kind == "stream":
            if out and out[-1][0] == "stream" and out[-1][1] == o.get("name"):
                out[-1] = ("stream", o.get("name"), out[-1][2] + o.get("text", ""))
            else:
                out.append(("stream", o.get("name"), o.get("text", "")))
        elif kind in ("execute_result", "display_data"):
            data = o.get("data", {})
            out.append(("data", tuple(sorted((k, json.dumps(v, sort_keys=True))
                                             for k, v in data.items()))))
        elif kind == "error":
            out.append(("error", o.get("ename"), o.get("evalue")))
    streams = [(o[0], o[1], RESTORED_NOTICE.sub("", o[2])) if o[0] == "stream" else o
               for o in out]
    return [o for o in streams if o[0] != "stream" or o[2]]
