"""The stored form of a run: a :class:`~lazyflow.Run` as a ``runs`` row and back.

A run is one row of the ``runs`` table (:data:`RUN_COLUMNS`). Its nodes are
stored one of two ways:

* ``nodes``: a JSON array, each node a list of :data:`NODE_FIELDS` — a run in
  progress, and a finished run with any node that ran, failed, was skipped, or
  was a hit with something to say (a reason, a duration);
* for a finished run whose every node was a plain cache hit (a warm request),
  ``nodes`` is ``[]`` and the nodes are a *node set* (:func:`node_set`: names,
  tiers, keys, digests, sizes and saved times, one blob in table
  ``node_sets``, named by its content hash in ``runs.node_set``) plus the run's
  own ``node_times`` (:func:`node_times`: when each hit was served).
  Consecutive warm requests of one shape share their node set: it is encoded
  and hashed once, stored once per file, and each run adds 8 bytes a node.

Beside them, three columns schema 3 added, read by this version and ignored by
earlier ones (which select the columns they know, so they still list every run):

* ``input_values``: how each flow input reads (``model/shown.py``: ``3``,
  ``'a.csv'``, ``<redacted>``, ``<ndarray float64 (1000, 3)>``), JSON. The text
  depends only on the inputs' names and digests, so it is built once per
  request shape (:func:`shape_of`), not per run: a warm run pays nothing for it;
* ``node_extras``: per node, what :data:`NODE_FIELDS` lacks — ``cpu``,
  ``peak_memory`` and ``metrics`` (``lf.report``) — for the nodes that have
  any, JSON ``{name: {field: value}}``; ``NULL`` when none has. Kept apart from
  ``nodes`` so an earlier lazyflow still reads every node row;
* ``saved_metrics``: what the run's hits saved in ``lf.report`` figures, each
  node counted once (``Run.saved_metrics``), JSON; ``NULL`` when none.

A plain run's node extras (its hits' stored metrics) and saved metrics follow
from its node set, so they are built with it and shared by the runs alike.

JSON costs ~2.5 µs a node (each float's ``repr`` alone ~0.4 µs), which doubled
a warm request of 100 memory hits; a plain run costs ~0.25 µs a node to read
and compare, and its values read back exactly (floats as IEEE doubles).

A plain run's row holds its values as SQLite binds them at once: :data:`NULL` for
``None``, blobs as ``bytearray``. The ``sqlite3`` module passes only ``int``,
``float``, ``str`` and ``bytearray`` straight through; for ``None`` and ``bytes``
it first looks for an adapter, raising and formatting an ``AttributeError`` each
time (~0.2-0.3 µs a value; profiled: 6 a warm run's row, two fifths of its insert).
And a plain run's row comes in two parts (:func:`plain_parts`): 13 columns shared
by the runs of its request shape and node set, one tuple the store binds once per
statement, and 7 of its own; binding each value costs the SQLite mutex and, for
text, a copy (measured: a row's insert 1.8 µs with every value bound, 1.0 µs so).

A *repeat* is a plain run that completed without an error, whose nodes are the
very ones of the last plain run of its request shape (:func:`repeated`): every
warm request after the first. Its row is that run's shared columns and 4 of its
own (:data:`REPEAT_OWN`: status and error are the same for every repeat, bound
as literals; ~0.25 µs a row less), built by the writer a batch at a time
(:func:`repeated_owns`): the request's thread only compares its nodes and reads
when each hit was served.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from lazyflow.history.entries import NodeEntry, RunEntry
from lazyflow.history.processes import this_process
from lazyflow.history.versions import environment
from lazyflow.model.shown import shown_inputs
from lazyflow.run import NodeRecord, Run

__all__ = ["EXTRA_FIELDS", "NODE_FIELDS", "NULL", "PLAIN_OWN", "PLAIN_SHARED", "REPEAT_OWN",
           "REPEAT_SAME", "RUN_COLUMNS",
           "NodeSet", "Plain", "PlainParts", "Repeat", "Shape", "end_row", "expand",
           "finished_row", "joined", "node_extras", "node_row", "node_set", "node_times",
           "nodes_json", "plain_parts", "plain_row", "repeat_row", "repeated", "repeated_owns",
           "run_entry",
           "shape_of", "started_row"]

NODE_FIELDS = ("name", "status", "tier", "key", "digest", "duration", "size", "saved",
               "started", "ended", "reason", "error_type", "error_message")
"""A node's stored fields, in order (the fields of :class:`NodeEntry`)."""
EXTRA_FIELDS = ("cpu", "peak_memory", "metrics")
"""A node's fields stored in ``runs.node_extras`` (the rest of :class:`NodeEntry`)."""
RUN_COLUMNS = ("id", "flow", "targets", "inputs", "status", "started", "ended", "executor",
               "host", "pid", "pid_start", "environment", "error_type", "error_message", "nodes",
               "node_set", "node_times", "input_values", "node_extras", "saved_metrics")
"""The ``runs`` table's columns, in order."""
PLAIN_OWN = ("id", "status", "started", "ended", "error_type", "error_message", "node_times")
"""The columns of a plain run's row that are its own (:func:`plain_parts`)."""
PLAIN_SHARED = tuple(c for c in RUN_COLUMNS if c not in PLAIN_OWN)
"""The columns of a plain run's row that the runs of its request shape and node set share:
one tuple for them all, so the store binds it once per statement (:func:`plain_parts`)."""
REPEAT_OWN = ("id", "started", "ended", "node_times")
"""The columns of a repeat's row that are its own (:func:`repeated_owns`); a repeat
completed without an error (:data:`REPEAT_SAME`), so it binds three values fewer."""
REPEAT_SAME = {"status": "completed", "error_type": None, "error_message": None}
"""The columns of :data:`PLAIN_OWN` every repeat has alike."""

NULL = float("nan")
"""SQL ``NULL`` in a row, bound without the adapter lookup ``None`` costs (SQLite binds a
NaN as ``NULL``; it reads back as ``None``)."""
NodeSet = tuple[bytes, bytes]
"""(content hash, blob) of a :func:`node_set`: ``runs.node_set`` holds the hash."""
Params = Mapping[str, Mapping[str, Any]]
"""A request's flow-input values: node -> parameter -> value (``RunStarted.params``)."""
PlainParts = tuple[tuple[Any, ...], tuple[Any, ...], NodeSet]
"""A plain run's row as :func:`plain_parts` gives it: its :data:`PLAIN_SHARED` columns,
its :data:`PLAIN_OWN` columns, and the node set it names."""
_NO_PARAMS: Params = {}

# --------------------------------------------------------------------------- writing


def started_row(run: Run, nodes: list[tuple[Any, ...]],
                params: Params = _NO_PARAMS) -> tuple[Any, ...]:
    """The ``runs`` row of a run still going, with its node rows so far (:func:`node_row`);
    ``params`` are the request's flow-input values (``RunStarted.params``)."""
    shape = shape_of(run, params)
    return ((run.id, run.flow) + shape.asked + ("running", run.started, None) + shape.where
            + (None, None, nodes_json(nodes), None, None, shape.values, node_extras(nodes),
               None))


def finished_row(run: Run, params: Params = _NO_PARAMS, shape: Shape | None = None
                 ) -> tuple[tuple[Any, ...], NodeSet | None]:
    """The ``runs`` row of a run that has ended, and the node set it names (if any);
    ``shape``: its request's (:func:`shape_of`), when already known."""
    if shape is None:
        shape = shape_of(run, params)
    plain = plain_parts(run, params, shape)
    if plain is not None:
        return joined(plain[0], plain[1]), plain[2]
    rows = [node_row(r) for r in run.nodes.values()]
    return ((run.id, run.flow) + shape.asked + (run.status, run.started, run.ended)
            + shape.where + _error(run.error)
            + (nodes_json(rows), None, None, shape.values, node_extras(rows),
               _metrics_json(run.saved_metrics()))), None


def plain_row(run: Run, params: Params = _NO_PARAMS
              ) -> tuple[tuple[Any, ...], NodeSet] | None:
    """The ``runs`` row of a run that has ended with every node a plain cache hit, and the
    node set it names; ``None`` for any other run (:func:`plain_parts`, joined)."""
    parts = plain_parts(run, params)
    if parts is None:
        return None
    shared, own, named = parts
    return joined(shared, own), named


def plain_parts(run: Run, params: Params = _NO_PARAMS, shape: Shape | None = None
                ) -> PlainParts | None:
    """The ``runs`` row of a run that has ended with every node a plain cache hit, as its
    :data:`PLAIN_SHARED` columns (one tuple, the same object for the runs alike), its
    :data:`PLAIN_OWN` columns, and the node set it names; ``None`` for any other run.
    ``shape``: its request's (:func:`shape_of`), when already known.

    A plain hit has status ``cached``, no reason, no error, no duration and
    ``started == ended``: all it has of its own is name, tier, key, digest, size,
    saved time, the metrics stored with its entry and the time it was served.
    """
    records = run.nodes.values()
    if not records or next(iter(records)).status != "cached":
        return None  # a run that computed its first node (a cold one): no pass over 10,000
    try:
        nodes = _hits(records)
        if shape is None:
            shape = shape_of(run, params)
        last = shape.last  # one read: requests on other threads may replace it
        if last is None or nodes != last.nodes:
            last = _plain_set(run, shape, nodes)
            if last is None:
                return None
            shape.last = last
        stamps = _stamps(records)
    except (TypeError, struct.error):  # a field of an unexpected type: JSON rows instead
        return None
    error = run.error
    return (last.shared, (run.id, run.status, run.started, run.ended,
                          *(_NO_ERROR if error is None else _error(error)), stamps),
            last.node_set)


Repeat = tuple[str, float, float | None, bytes]
"""What a run alike the last plain run of its shape stores of its own (:func:`repeated`):
its id, start and end, and when each hit was served (:func:`node_times`: bytes, which
the cyclic GC does not track, where a list of floats kept them alive too)."""


def repeated(run: Run, shape: Shape) -> tuple[Plain, bytes] | None:
    """The last plain run of ``run``'s request shape (:func:`plain_parts`) and when each
    hit of ``run`` was served, when ``run`` completed without an error and its nodes are
    the very ones of that run (a *repeat*); else ``None``.

    What a warm run alike the one before needs of the request's thread: one pass over its
    records, compared at once; its row is built later, a batch of runs at a time
    (:func:`repeated_owns`), and nothing is kept of the records.
    """
    last = shape.last  # one read: other threads may replace it
    records = run.nodes.values()
    if last is None or run.status != "completed" or run.error is not None \
            or len(records) != len(last.nodes):
        return None
    if len(records) == 1:  # the usual warm request: one target, found at once
        (record,) = records
        if [_hit(record)] != last.nodes:
            return None
        return last, _ONE_TIME(record.started)
    if _hits(records) != last.nodes:
        return None
    return last, node_times([r.started for r in records])  # type: ignore[misc]


_ONE_TIME = struct.Struct("<d").pack  # node_times of one hit, in one C call


def repeated_owns(runs: Sequence[Repeat]) -> list[tuple[Any, ...]]:
    """The :data:`REPEAT_OWN` columns of repeats of one plain run (:func:`repeated`); the
    times as bytearrays, which SQLite binds as they are (bytes would make ``sqlite3`` look
    for an adapter)."""
    return [(run[0], run[1], run[2], bytearray(run[3])) for run in runs]


def repeat_row(plain: Plain, run: Repeat) -> tuple[Any, ...]:
    """The ``runs`` row of a repeat of ``plain`` (:func:`repeated`)."""
    run_id, started, ended, stamps = repeated_owns([run])[0]
    return joined(plain.shared, (run_id, "completed", started, ended, *_NO_ERROR, stamps))


def _hits(records: Iterable[NodeRecord]) -> list[tuple[Any, ...]]:
    """Per record, what must be plain, then what a plain hit stores (:func:`_hit`): one
    pass; the nodes of a warm run alike the last one hold the very same values (identity
    tests). The reason as settled: a hit's note left for later (``NodeRecord.reason``) is
    not worked out here, on the request's thread; such a run is not plain, and the writer
    reads its rows."""
    return [(r.status, r.settled_reason(), r.error, r.duration, r.started == r.ended, r.name, r.tier,
             r.key, r.digest, r.size, r.saved, r.metrics) for r in records]


def _hit(r: NodeRecord) -> tuple[Any, ...]:
    """One record as :func:`_hits` reads each (a comprehension is a Python call of its own:
    a run of one node is read without one)."""
    return (r.status, r.settled_reason(), r.error, r.duration, r.started == r.ended, r.name,
            r.tier, r.key, r.digest, r.size, r.saved, r.metrics)


def _stamps(records: Iterable[NodeRecord]) -> bytearray:
    """When each hit was served (:func:`node_times`), as a ``bytearray``: SQLite binds it as
    it is (``bytes`` would make ``sqlite3`` look for an adapter)."""
    return bytearray(node_times([r.started for r in records]))  # type: ignore[misc]


def joined(shared: tuple[Any, ...], own: tuple[Any, ...]) -> tuple[Any, ...]:
    """The ``runs`` row of a plain run's :data:`PLAIN_SHARED` and :data:`PLAIN_OWN` columns."""
    return tuple(own[i] if mine else shared[i] for mine, i in _JOIN)


# where each column of RUN_COLUMNS is in a plain run's parts: (its own?, index)
_JOIN = tuple((c in PLAIN_OWN, (PLAIN_OWN if c in PLAIN_OWN else PLAIN_SHARED).index(c))
              for c in RUN_COLUMNS)


def end_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """(status, ended, error type, error message, nodes, node set, node times, node extras,
    saved metrics, id) of a finished row: how a run already written as going ended (its
    input values were written with it)."""
    return (row[4], row[6], *row[12:17], *row[18:20], row[0])


def node_row(r: NodeRecord) -> tuple[Any, ...]:
    """A node's record as it stands: :data:`NODE_FIELDS`, then :data:`EXTRA_FIELDS`."""
    return (r.name, r.status, r.tier, r.key, r.digest, r.duration, r.size, r.saved, r.started,
            r.ended, r.reason, *_error(r.error), r.cpu, r.peak_memory, r.metrics)


def nodes_json(rows: Sequence[tuple[Any, ...]]) -> str:
    """The ``nodes`` column of :func:`node_row` rows: their :data:`NODE_FIELDS`."""
    width = len(NODE_FIELDS)
    return json.dumps([row[:width] for row in rows])


def node_extras(rows: Sequence[tuple[Any, ...]]) -> str | None:
    """The ``node_extras`` column of :func:`node_row` rows: their :data:`EXTRA_FIELDS`
    that are set, by node name; ``None`` when no node has any."""
    width = len(NODE_FIELDS)
    extras: dict[str, dict[str, Any]] = {}
    for row in rows:
        cpu, peak, metrics = row[width:]
        if peak is None and metrics is None:  # the usual node: its cpu alone, no dict built
            if cpu is not None:
                extras[row[0]] = {"cpu": cpu}
            continue
        fields = {f: v for f, v in zip(EXTRA_FIELDS, row[width:], strict=True)
                  if v is not None}
        extras[row[0]] = fields
    return json.dumps(extras) if extras else None


def _metrics_json(metrics: Mapping[str, float]) -> str | None:
    return json.dumps(metrics) if metrics else None


def _error(error: BaseException | None) -> tuple[str | None, str | None]:
    return (None, None) if error is None else (type(error).__name__, str(error))


_NO_ERROR = (NULL, NULL)  # a plain run's usual error type and message


# --------------------------------------------------------------------------- request shapes


@dataclass(frozen=True, slots=True)
class Plain:
    """A plain run's nodes (as :func:`plain_parts` reads them) and what follows from them:
    their node set, and the :data:`PLAIN_SHARED` columns of the runs alike (with the node
    set's hash, node extras: the hits' stored metrics, and saved metrics)."""

    nodes: list[tuple[Any, ...]]
    node_set: NodeSet
    shared: tuple[Any, ...]


@dataclass(slots=True)
class Shape:
    """What runs of one request shape share: the fingerprint components of the last one,
    the columns encoded for them, and the last plain run's nodes with their node set."""

    code: tuple[Mapping[str, str], ...]
    asked: tuple[str, str]  # targets, inputs (JSON)
    where: tuple[str, str, int, str | float, str]  # executor, host, pid, its start, environment
    values: str  # input values (JSON)
    last: Plain | None = None


# (flow, targets, inputs, executor): warm requests repeat them, so each is encoded once.
# The same components again compare equal at the cost of an identity test each.
_SHAPES: dict[tuple[Any, ...], Shape] = {}
_SHAPES_KEPT = 256  # each may hold a node set and its hits: bounded
os.register_at_fork(after_in_child=_SHAPES.clear)  # a forked child has its own pid


def shape_of(run: Run, params: Params) -> Shape:
    """The shape of ``run``'s request. Its input values are built with it: their text
    depends only on the inputs' names and digests (``model/shown.py``), which the key
    holds. A request whose values were not seen (``params`` empty) has a shape of its own."""
    # a tuple of the components: compared item by item, each the very same object for a
    # warm request (comparing the mappings looks each name up: 3x the cost for 100 nodes)
    code = tuple(run.code.values())
    try:
        key = (run.flow, run.targets, tuple(run.inputs.items()), run.executor, not params)
        found = _SHAPES.get(key)
    except TypeError:  # an input recorded as an unhashable value: nothing is kept
        return _new_shape(run, code, params)
    if found is None or found.code != code:
        if len(_SHAPES) >= _SHAPES_KEPT:
            _SHAPES.clear()
        found = _SHAPES[key] = _new_shape(run, code, params)
    return found


def _new_shape(run: Run, code: tuple[Mapping[str, str], ...], params: Params) -> Shape:
    values = {name: text for name, text in shown_inputs(params).items() if name in run.inputs}
    host, pid, start = this_process()
    return Shape(code, (json.dumps(list(run.targets)), json.dumps(run.inputs)),
                 (run.executor, host, pid, NULL if start is None else start,
                  json.dumps(environment(run.code))), json.dumps(values))


# --------------------------------------------------------------------------- node sets

_FORMAT = 1


def _plain_set(run: Run, shape: Shape, nodes: list[tuple[Any, ...]]) -> Plain | None:
    """The node set of ``nodes`` (as :func:`plain_row` reads them) and what follows from
    it, or ``None`` when one is not a plain hit or cannot be stored so."""
    n = len(nodes)
    status, reason, error, duration, served, *hits, metrics = zip(*nodes, strict=True)
    if status.count("cached") != n or reason.count("") != n or error.count(None) != n \
            or duration.count(0.0) != n or served.count(True) != n:
        return None
    blob = node_set(list(zip(*hits, strict=True)))
    if blob is None:
        return None
    extras = {name: {"metrics": m} for name, m in zip(hits[0], metrics, strict=True) if m}
    named = hashlib.blake2b(blob, digest_size=16).digest()
    saved = _metrics_json(run.saved_metrics())
    shared = (run.flow, *shape.asked, *shape.where, "[]", bytearray(named), shape.values,
              json.dumps(extras) if extras else NULL, NULL if saved is None else saved)
    return Plain(nodes, (named, blob), shared)


def node_set(hits: Sequence[tuple[Any, ...]]) -> bytes | None:
    """Plain hits (name, tier, key, digest, size, saved) as one blob; ``None`` when one
    cannot be stored so (a separator in a name, a value of an unexpected type).

    Little-endian: format (1 byte, 1), node count ``n`` (4 bytes), ``n`` doubles saved,
    ``n`` int64 sizes (-1: none), then UTF-8 text: names, tiers, keys and digests, each
    ``\\n``-joined, the four ``\\t``-joined.
    """
    n = len(hits)
    try:
        names, tiers, keys, digests, sizes, saved = zip(*hits, strict=True)
        text = "\t".join(("\n".join(names), "\n".join(tiers), "\n".join(keys),
                          "\n".join(digests)))
        if text.count("\n") != 4 * (n - 1) or text.count("\t") != 3:
            return None
        if None in sizes:
            sizes = tuple(-1 if s is None else s for s in sizes)
        return _layout(f"<BI{n}d{n}q").pack(_FORMAT, n, *saved, *sizes) + text.encode()
    except (TypeError, ValueError, struct.error):
        return None


def node_times(times: Sequence[float]) -> bytes:
    """When each hit of a plain run was served, as little-endian doubles."""
    n = len(times)
    layout = _TIMES.get(n)
    if layout is None:
        layout = _TIMES[n] = _layout(f"<{n}d")
    return layout.pack(*times)


def expand(node_set: bytes, node_times: bytes) -> tuple[NodeEntry, ...]:
    """The node entries of a plain run: its :func:`node_set` and :func:`node_times`."""
    version, n = struct.unpack_from("<BI", node_set)
    if version != _FORMAT:
        raise ValueError(f"run history node set in format {version}, written by a newer "
                         f"lazyflow; this one reads format {_FORMAT}: upgrade lazyflow")
    layout = _layout(f"<BI{n}d{n}q")
    numbers = layout.unpack_from(node_set)
    saved, sizes = numbers[2:2 + n], numbers[2 + n:]
    times = _layout(f"<{n}d").unpack(node_times)
    names, tiers, keys, digests = (part.split("\n")
                                   for part in node_set[layout.size:].decode().split("\t"))
    return tuple(NodeEntry(names[i], "cached", tiers[i], keys[i], digests[i], 0.0,
                           None if sizes[i] < 0 else sizes[i], saved[i], times[i], times[i])
                 for i in range(n))


_LAYOUTS: dict[str, struct.Struct] = {}
_TIMES: dict[int, struct.Struct] = {}  # by node count: no format string to build


def _layout(spec: str) -> struct.Struct:
    found = _LAYOUTS.get(spec)
    if found is None:
        if len(_LAYOUTS) >= 1024:
            _LAYOUTS.clear()
            _TIMES.clear()
        found = _LAYOUTS[spec] = struct.Struct(spec)
    return found


# --------------------------------------------------------------------------- reading


def run_entry(row: Sequence[Any], path: str) -> RunEntry:
    """A ``runs`` row (:data:`RUN_COLUMNS`, its node set's blob in place of its hash) read
    from the history at ``path``. Columns an earlier schema lacked read as ``NULL``."""
    (run_id, flow, targets, inputs, status, started, ended, executor, host, pid, _start,
     env, error_type, error_message, nodes, hits, times, values, extras, saved) = row
    entries = expand(hits, times) if hits is not None \
        else tuple(NodeEntry(*n) for n in json.loads(nodes))
    if extras:
        found = json.loads(extras)
        entries = tuple(replace(e, **found[e.name]) if e.name in found else e
                        for e in entries)
    return RunEntry(run_id, flow, tuple(json.loads(targets)), json.loads(inputs), status,
                    started, ended, executor, host, pid, json.loads(env or "{}"),
                    error_type, error_message, entries,
                    input_values=json.loads(values) if values else {},
                    saved_metrics=json.loads(saved) if saved else {}, path=path)
