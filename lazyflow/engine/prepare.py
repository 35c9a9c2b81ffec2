"""Prepare and resolve a plan: per-node facts that need no cache, then hits and misses.

1. **Prepare** every node of the plan: its code fingerprint, the digests of
   its flow inputs, and its *trace key* (``keys.py``) — pure CPU, no cache.
2. **Resolve** backwards from the targets: a node whose trace record points to
   a stored entry is a hit and its ancestors are not even looked at (a node
   without upstream nodes has no trace record: its entry is looked up by its
   content key, which covers the same code and parameters); any
   other node is *needed*, and so are its upstream nodes. This is what makes
   a request lazy: a cached target loads no ancestor value and reads no
   ancestor entry.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lazyflow.keys as keys
import lazyflow.keys.environment as environment
import lazyflow.model.files as files
import lazyflow.model.lazy as lazy
from lazyflow.engine.freshness import expired
from lazyflow.errors import HashingError
from lazyflow.keys.fingerprint import Fingerprint
from lazyflow.keys.hashing import hash_value
from lazyflow.records import EntryMeta, TraceRecord

if TYPE_CHECKING:
    from lazyflow.cache.hierarchy import Cache
    from lazyflow.model.graph import Node, Plan

__all__ = ["REUSE_NONDETERMINISTIC", "Hit", "Prepared", "eager_edges", "find_trace",
           "lazy_params", "prepare", "resolve", "scope"]

REUSE_NONDETERMINISTIC: ContextVar[bool] = ContextVar("lazyflow_reuse_nondeterministic",
                                                      default=False)
"""When true, ``deterministic=False`` nodes may be served from the cache (see provenance.py)."""


@dataclass(slots=True)
class Prepared:
    """Per-node facts of one request that need no cache."""

    fp: Fingerprint
    code: str  # what keys take for the code: the fingerprint, scoped to the environment or not
    params: dict[str, str]
    trace: str | None
    cacheable: bool  # its result is stored
    reusable: bool  # a stored result may be served (false for deterministic=False nodes)
    checks: str | None = None  # the digest of its check= callables (``checks.py``), if any
    direct: bool = False  # no upstream node: found by its content key, no trace record


@dataclass(slots=True)
class Hit:
    """Where a settled node's value is stored, and the entry's metadata."""

    key: str
    meta: EntryMeta
    tier: str
    expires: float | None = None  # the earliest max_age expiry in its ancestry (freshness.py)


def prepare(plan: Plan, environment_digest: str = "") -> dict[str, Prepared]:
    """Fingerprint, parameter digests and trace key of every node of ``plan``.

    ``environment_digest``: the environment digest keys are scoped to
    (``lf.Cache(scope="environment")``), or ``""`` when they are not.

    The previous request's results live in ``plan.memo``; a node whose
    fingerprint is the very same (still valid) object, whose parameter
    digests are equal and none of whose ancestors changed keeps its entry,
    so a repeated request pays one fingerprint validation per node.
    """
    previous: dict[str, Prepared] = plan.memo.get("prepared") or {}
    prepared: dict[str, Prepared] = {}
    changed: set[str] = set()
    input_digests: dict[int, str] = {}
    for name in plan.order:
        node = plan.nodes[name]
        fp = node.fingerprint()
        params: dict[str, str] = {}
        for param, value in plan.params[name].items():
            digest = input_digests.get(id(value))
            if digest is None:
                try:
                    digest = hash_value(value)
                except HashingError as e:
                    raise e.located(name, param) from e
                input_digests[id(value)] = digest
            params[param] = digest
        edges = plan.upstream[name]
        cacheable = node.cache and not fp.volatile
        reusable = cacheable and (node.options.deterministic
                                  or REUSE_NONDETERMINISTIC.get())
        code = keys.scoped(fp.digest, environment_digest) if environment_digest else fp.digest
        checks = hash_value(node.options.check) if node.options.check else None
        old = previous.get(name)
        if old is not None and old.fp is fp and old.code == code and old.params == params \
                and old.reusable == reusable and old.checks == checks \
                and (not changed or changed.isdisjoint(edges.values())):
            prepared[name] = old
            continue
        files.warn_untracked_paths(node, name, plan.params[name])  # a reused node was checked
        changed.add(name)
        trace: str | None = None
        if reusable:
            upstream = {p: prepared[up].trace for p, up in edges.items()}
            if None not in upstream.values():
                trace = keys.trace_key(code, _traced_params(node, params, checks),
                                       upstream)  # type: ignore[arg-type]
        prepared[name] = Prepared(fp, code, params, trace, cacheable, reusable, checks,
                                  direct=not edges)
    plan.memo["prepared"] = prepared
    return prepared


def _traced_params(node: Node, params: dict[str, str], checks: str | None) -> dict[str, str]:
    """The parameters a trace key takes: the node's, its ``max_age`` and the digest of its
    checks. A trace hit serves a result without looking at its ancestors, so it must not
    outlive what the reader declares of them: a trace record carries the expiry its writer
    worked out from the ``max_age`` of each node of the ancestry (``freshness.py``), and
    its ancestors' values passed the writer's checks. A reader declaring another
    ``max_age`` or other checks (a colleague on a shared remote, a re-run cell) reads
    other records, so its ancestors are looked up: under its own ``max_age``, their
    changed checks run once on the stored values (``checks.py``). Content keys take
    neither: early cutoff still finds every entry whose inputs pass."""
    max_age = node.options.max_age
    if max_age is None and checks is None:
        return params
    traced = dict(params)  # no parameter is named with a NUL: these cannot collide
    if max_age is not None:
        traced["\0max_age"] = repr(float(max_age))
    if checks is not None:
        traced["\0checks"] = checks
    return traced


def find_trace(cache: Cache, prep: Prepared) -> TraceRecord | None:
    """What the trace record of a node says: read under its trace key, or for a node
    without upstream nodes (``direct``) made from its entry, read under its content key.

    Such a node's two keys cover the same code and parameters, so it writes no trace
    record: one object (its entry) is read and written where two were. Its trace key
    still enters its dependents' trace keys, which are as they were.
    """
    if prep.trace is None:
        return None
    if not prep.direct:
        found: TraceRecord | None = cache.find_record(prep.trace)
        return found
    key = content_key(prep)
    entry = cache.lookup(key)
    if entry is None:
        return None
    return {"key": key, "digest": entry[0]["digest"], "node": entry[0].get("node", "")}


def content_key(prep: Prepared) -> str:
    """The content key of a node without upstream nodes."""
    return keys.content_key(prep.code, prep.params, {})


def scope(cache: Cache) -> str:
    """The environment digest keys are scoped to, or ``""`` (``lf.Cache(scope=...)``)."""
    return environment.current().digest if cache.scope == "environment" else ""


def eager_edges(plan: Plan) -> dict[str, dict[str, str]]:
    """Every node's edges the scheduler waits for: all but its lazy inputs (``lazy.py``).

    A node without lazy inputs has its upstream dict itself; like the lazy
    parameters they depend on the nodes alone: computed once per plan structure.
    """
    found: dict[str, dict[str, str]] | None = plan.memo.get("eager")
    if found is None:
        lazy_of, upstream = lazy_params(plan), plan.upstream
        found = plan.memo["eager"] = {
            n: {p: up for p, up in upstream[n].items() if p not in lazy_of[n]} if lazy_of[n]
            else upstream[n] for n in plan.order}
    return found


def lazy_params(plan: Plan) -> dict[str, frozenset[str]]:
    """Each node's lazy parameters; they depend on the nodes alone, so once per plan structure."""
    found: dict[str, frozenset[str]] | None = plan.memo.get("lazy")
    if found is None:
        found = plan.memo["lazy"] = {n: lazy.lazy_params(plan.nodes[n]) for n in plan.order}
    return found


def resolve(plan: Plan, prepared: Mapping[str, Prepared], cache: Cache,
            roots: Sequence[str] | None = None, seen: set[str] | None = None,
            stale: dict[str, str] | None = None, cold: set[str] | None = None,
            ) -> tuple[dict[str, Hit], list[str], set[str]]:
    """Walk back from ``roots`` (default: the targets) through ``cache``.

    Return the hits, the needed nodes in plan order, and the nodes behind lazy
    inputs that may be needed (``maybe``). Names in ``seen`` are skipped. When
    ``stale`` is given (the plan has ``max_age`` nodes), an expired entry is no hit
    and ``stale`` says why (``freshness.py``). ``cold`` collects the needed nodes whose
    trace record no tier holds (``start.py`` asks the remote less about them).
    """
    now = time.time() if stale is not None else 0.0
    hits: dict[str, Hit] = {}
    needed: set[str] = set()
    seen = set() if seen is None else seen
    behind_lazy: list[str] = []
    stack = list(plan.targets if roots is None else roots)
    eager_of = eager_edges(plan)
    expected = roots is not None  # a lazy input's branch (schedule.need): one by one
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        trace = prepared[name].trace
        if trace is not None:
            record = find_trace(cache, prepared[name])
            if record is None and not expected:  # the walk goes on: ask for the rest together
                expected = True
                cache.expect(content_key(p) if p.direct else p.trace
                             for n, p in prepared.items() if p.trace is not None and n not in seen)
            if record is not None:
                found = cache.lookup(record["key"])
                why_stale = None if found is None or stale is None else expired(
                    found[0], plan.nodes[name].options.max_age, record.get("expires"), now)
                if found is not None and why_stale is None:
                    hits[name] = Hit(record["key"], found[0], found[1], record.get("expires"))
                    continue
                if why_stale is not None and stale is not None:
                    stale[name] = why_stale
            elif cold is not None:
                cold.add(name)
        needed.add(name)
        eager = eager_of[name]
        stack.extend(eager.values())
        if eager is not plan.upstream[name]:
            behind_lazy.extend(up for p, up in plan.upstream[name].items() if p not in eager)
    maybe: set[str] = set()
    while behind_lazy:
        name = behind_lazy.pop()
        if name not in seen and name not in maybe:
            maybe.add(name)
            behind_lazy.extend(plan.upstream[name].values())
    return hits, [n for n in plan.order if n in needed], maybe
