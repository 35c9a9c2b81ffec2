"""The stored form of a run: a :class:`~lazyflow.Run` as a ``runs`` row and back.

A run is one row of the ``runs`` table (:data:`RUN_COLUMNS`); its nodes are one
JSON array in the row's ``nodes`` column, each node a list of
:data:`NODE_FIELDS`. Rows are built from the run's records on the writer
thread, and read back as :class:`~lazyflow.history.entries.RunEntry`.
"""

from __future__ import annotations

import json
from typing import Any

from lazyflow.history.entries import NodeEntry, RunEntry
from lazyflow.history.processes import this_process
from lazyflow.history.versions import environment
from lazyflow.run import NodeRecord, Run

__all__ = ["NODE_FIELDS", "RUN_COLUMNS", "end_row", "node_row", "pending_row", "run_entry",
           "run_row"]

NODE_FIELDS = ("name", "status", "tier", "key", "digest", "duration", "size", "saved",
               "started", "ended", "reason", "error_type", "error_message")
"""A node's stored fields, in order (the fields of :class:`NodeEntry`)."""
RUN_COLUMNS = ("id", "flow", "targets", "inputs", "status", "started", "ended", "executor",
               "host", "pid", "pid_start", "environment", "error_type", "error_message", "nodes")
"""The ``runs`` table's columns, in order."""


def run_row(run: Run, nodes: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The ``runs`` row of a run that has just started, with its node rows so far."""
    host, pid, start = this_process()
    return (run.id, run.flow, json.dumps(list(run.targets)), json.dumps(run.inputs), "running",
            run.started, None, run.executor, host, pid, start,
            json.dumps(environment(run.code)), None, None, json.dumps(nodes))


def end_row(run: Run) -> tuple[Any, ...]:
    """(status, ended, error type, error message, id): how a run ended."""
    error = run.error
    return (run.status, run.ended, None if error is None else type(error).__name__,
            None if error is None else str(error), run.id)


def node_row(r: NodeRecord) -> tuple[Any, ...]:
    """A node's record as it stands, in :data:`NODE_FIELDS` order."""
    # a tuple of plain values: the cyclic GC stops tracking it (a list it would walk)
    error = r.error
    return (r.name, r.status, r.tier, r.key, r.digest, r.duration, r.size, r.saved, r.started,
            r.ended, r.reason, None if error is None else type(error).__name__,
            None if error is None else str(error))


def pending_row(name: str) -> tuple[Any, ...]:
    """The row of a node the run has not reached yet."""
    return (name, "pending", None, None, None, 0.0, None, 0.0, None, None, "", None, None)


def run_entry(row: tuple[Any, ...], path: str) -> RunEntry:
    """A ``runs`` row (:data:`RUN_COLUMNS`) read from the history at ``path``."""
    (run_id, flow, targets, inputs, status, started, ended, executor, host, pid, _start,
     env, error_type, error_message, nodes) = row
    return RunEntry(run_id, flow, tuple(json.loads(targets)), json.loads(inputs), status,
                    started, ended, executor, host, pid, json.loads(env or "{}"),
                    error_type, error_message,
                    tuple(NodeEntry(*n) for n in json.loads(nodes)), path)
