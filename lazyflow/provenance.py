"""Provenance: what produced a cached value (lineage), and whether it reproduces (verify).

Design note
-----------
Policy. Lineage is read, never recomputed: every stored entry's metadata
already names the content keys of its inputs, its code fingerprint's
components, its parameter digests and its inputs' value digests (written by
``engine/``). :func:`lineage` finds the target's entry the way a request
would (``explain``, so it is lazy and reads metadata only), then follows the
input keys tier by tier. Because a remote entry carries the same metadata, the
lineage of a value a colleague computed is as complete as one's own.

:func:`verify` recomputes the target's ancestry through the engine
(``engine.execute``), the path every request takes, so lazy inputs (only the
branch taken is recomputed), map nodes, ``outputs=``, ``lf.Skip``, output files,
policies and executors behave as in a run. The run answers from a *scratch*
cache: memory only, with the flow cache's key scope, so nothing is served
from the flow's cache and nothing is stored in it; and it is not published
(``RunOptions.publish``: no history row, ``flow.last_run`` unchanged). Then
each node's recomputed digest is compared with the *reference*: the lineage
of the target's stored value (the key and digest it gives each node, an
input's digest being the one its dependent recorded). Keys cover code,
parameters and input digests, so a node recomputed under its reference key
had the very same inputs: a different digest means the node does not
reproduce (``differs``). A node recomputed under another key is ``inputs
differ`` (an upstream node diverged, or changed where it could not be
compared; it is not blamed). A node the lineage does not reach is compared
with the entry under its recomputed key, else ``unverified``.
Rejected: comparing only with the entry under the recomputed key, which
called a stored value "reproduced" when an ancestor's entry had been evicted
or computed again to another value (the target's recomputed key then names
no entry, so nothing was compared). If the target
has never been computed, the reference is computed first (a normal run).

Nodes declared ``deterministic=False`` are not compared. Their stored value is
fed downstream so the rest can still be checked: the scratch cache has a
second, read-only tier (:class:`_Reference`) that shows the flow cache's value
entries of those nodes only, and the run is made with
:func:`reuse_nondeterministic`, so such a node whose recomputed inputs match
the stored ones is a hit there. Rejected: recomputing them, which makes every
node below a sample ``inputs differ``; and copying their entries into the
scratch cache up front, which loads values whose inputs may not reproduce.

The cache audit (``cache/audit.py``) checks storage, not reproducibility: each tier that
stores bytes compares an entry's bytes with the checksum stored with it
(``check``), unpickling nothing. Rejected: loading and re-hashing each value,
which deleted intact entries whose classes the auditing process could not
import, or whose digest it computed differently — on a shared remote, a
colleague's work. Damage is reported; deleting it is the caller's choice.

State. None kept: the functions build plain result objects
(:class:`Lineage`, :class:`Verification`) with ``to_dict`` for JSON; verify's
scratch cache lives for one call.

Rejected: storing lineage in the run history. History is local to a
machine; cache metadata travels with the value, which is what makes a
colleague's result explainable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import lazyflow.engine as engine
from lazyflow.cache.base import Meta, Tier
from lazyflow.cache.hierarchy import Cache, default_memory_budget
from lazyflow.cache.memory import MemoryTier
from lazyflow.errors import NotCachedError
from lazyflow.keys.hashing import hash_value
from lazyflow.model.shown import REDACTED, is_redacted, printed, shown
from lazyflow.run import NodeRecord, Run, _seconds, _table
from lazyflow.run import has_value as run_has_value

if TYPE_CHECKING:
    from lazyflow.api import Flow
    from lazyflow.engine.cancel import CancelToken
    from lazyflow.model.graph import Plan
    from lazyflow.model.resources import Resources

__all__ = ["Check", "Lineage", "Verification", "lineage", "reuse_nondeterministic", "verify"]


@contextlib.contextmanager
def reuse_nondeterministic() -> Iterator[None]:
    """Serve ``deterministic=False`` nodes from the cache inside this block.

    >>> with lf.reuse_nondeterministic():          # doctest: +SKIP
    ...     flow.get("sample", n=100)              # the stored sample, if any
    """
    token = engine.REUSE_NONDETERMINISTIC.set(True)
    try:
        yield
    finally:
        engine.REUSE_NONDETERMINISTIC.reset(token)


# --------------------------------------------------------------------------- lineage


@dataclass(eq=False)
class Lineage:
    """The tree that produced a cached value: one node, its entry's facts, its inputs' trees.

    ``found`` is false when the entry has left every tier (evicted or cleared):
    then only its key and the digest its dependent recorded are known.
    ``params`` maps each flow input to its value digest; ``inputs`` maps each
    edge parameter to the upstream :class:`Lineage` (shared ancestors are the
    same object).
    """

    node: str
    key: str
    digest: str | None
    found: bool
    tier: str | None = None
    flow: str | None = None
    created: float | None = None
    duration: float | None = None
    fingerprint: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    input_digests: Mapping[str, str] = field(default_factory=dict)
    inputs: dict[str, Lineage] = field(default_factory=dict)
    values: Mapping[str, str] = field(default_factory=dict, repr=False)
    environment: str = ""
    """What differs from this process's environment when the entry was computed in another
    (``"computed in another environment (numpy 1.26.4 -> 2.1.0)"``), else ``""``."""
    replaced_by: str | None = None
    """The digest the entry under :attr:`key` holds now, when it is not :attr:`digest`, the
    one its dependent was computed from: the node was computed again (its entry had been
    evicted) and gave another value, so it does not reproduce; else ``None``."""

    def walk(self) -> Iterator[Lineage]:
        """Every node of the tree once, the target first (depth first)."""
        seen: set[str] = set()
        stack = [self]
        while stack:
            item = stack.pop()
            if item.key in seen:
                continue
            seen.add(item.key)
            yield item
            stack.extend(reversed(list(item.inputs.values())))

    def __getitem__(self, node: str) -> Lineage:
        for item in self.walk():
            if item.node == node:
                return item
        raise KeyError(f"node {node!r} is not in the lineage of {self.node!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: a tree of dicts keyed by parameter."""
        return {"node": self.node, "key": self.key, "digest": self.digest, "found": self.found,
                "tier": self.tier, "flow": self.flow, "created": self.created,
                "duration": self.duration, "fingerprint": dict(self.fingerprint),
                "params": dict(self.params), "input_digests": dict(self.input_digests),
                "environment": self.environment, "replaced_by": self.replaced_by,
                "inputs": {p: up.to_dict() for p, up in self.inputs.items()}}

    def __str__(self) -> str:
        lines: list[str] = []
        stack: list[tuple[Lineage, str, str]] = [(self, "", "")]
        shown: set[str] = set()
        while stack:
            item, prefix, label = stack.pop()
            lines.append(prefix + label + item._line(repeat=item.key in shown))
            if item.key in shown:
                continue
            shown.add(item.key)
            children = list(item.inputs.items())
            indent = prefix.replace("├─ ", "│  ").replace("└─ ", "   ")
            for i, (param, up) in reversed(list(enumerate(children))):
                branch = "└─ " if i == len(children) - 1 else "├─ "
                stack.append((up, indent + branch, f"{param}: " if param != up.node else ""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _line(self, *, repeat: bool) -> str:
        head = f"{self.node} [{(self.digest or '?')[:12]}]"
        if repeat:
            return head + " (shown above)"
        if not self.found:
            return head + " entry no longer cached"
        if self.replaced_by is not None:
            return (head + f" entry since replaced by another value [{self.replaced_by[:12]}]:"
                    " computed again, it did not reproduce")
        params = ", ".join(f"{p}={_param_text(p, d, self.values)}"
                           for p, d in self.params.items())
        code = self.fingerprint.get(f"code:{self.node}")
        facts = [f"{self.tier}", f"computed {_seconds(self.duration or 0.0)}"]
        if self.flow:
            facts.append(f"flow {self.flow!r}")
        if code:
            facts.append(f"code {code[:8]}")
        if self.environment:
            facts.append(self.environment)
        return head + (f"({params})" if params else "") + "  " + ", ".join(facts)


def _param_text(param: str, digest: str, values: Mapping[str, str]) -> str:
    """A flow input in a lineage line: as this request's value reads, else its digest;
    redacted by name whatever it is."""
    return REDACTED if is_redacted(param) else printed(values.get(digest), digest)


def lineage(flow: Flow, target: str, /, **inputs: Any) -> Lineage:
    """The tree that produced ``target``'s cached value for these inputs; computes nothing.

    Raises :class:`~lazyflow.NotCachedError` when the value is not cached.
    """
    plan = flow.plan(target, inputs)
    return _lineage(flow, plan, target)


def _lineage(flow: Flow, plan: Plan, target: str) -> Lineage:
    key = _cached_key(flow, plan, target)
    if key is None:
        with reuse_nondeterministic():
            reason = engine.explain(flow, plan)[target].reason
        raise NotCachedError(
            f"node {target!r} of flow {flow.name!r} has no cached value for these inputs "
            f"({reason}); compute it first with flow.get({target!r}, ...)")
    return _tree(flow, plan, target, key)


def _cached_key(flow: Flow, plan: Plan, target: str) -> str | None:
    """The key of ``target``'s cached value for this plan (as a request finds it), or
    ``None`` when it is not cached."""
    with reuse_nondeterministic():
        row = engine.explain(flow, plan)[target]
    return row.key if row.action == "hit" else None


def _tree(flow: Flow, plan: Plan, target: str, key: str) -> Lineage:
    """The lineage of the entry stored under ``key``, read from the cache's metadata.

    An input's digest is the one its dependent recorded, which is what the dependent
    was computed from: the entry now under the input's key may hold another value
    (``Lineage.replaced_by``).
    """
    values = _known_values(plan)
    cache = flow.cache
    built: dict[str, Lineage] = {}
    # iterative post-order walk over input keys (chains of thousands of nodes)
    stack: list[tuple[str, str, str | None]] = [(key, target, None)]
    while stack:
        at, name, recorded = stack[-1]
        if at in built:
            stack.pop()
            continue
        found = cache.lookup(at)
        meta = found[0] if found else {}
        pending = [(k, _upstream_name(plan, meta.get("node", name), p), meta.get(
            "input_digests", {}).get(p)) for p, k in meta.get("inputs", {}).items()
            if k not in built]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        stored = meta.get("digest")
        built[at] = Lineage(
            node=meta.get("node", name), key=at,
            digest=stored if recorded is None else recorded,
            found=found is not None, tier=found[1] if found else None, flow=meta.get("flow"),
            created=meta.get("created"), duration=meta.get("duration"),
            fingerprint=meta.get("fingerprint", {}), params=meta.get("params", {}),
            input_digests=meta.get("input_digests", {}),
            inputs={p: built[k] for p, k in meta.get("inputs", {}).items()}, values=values,
            environment=engine.environment_note(cache, meta).removeprefix("; "),
            replaced_by=stored if found and recorded not in (None, stored) else None)
    return built[key]


def _upstream_name(plan: Plan, node: str, param: str) -> str:
    return plan.upstream.get(node, {}).get(param, param)


def _known_values(plan: Plan) -> dict[str, str]:
    """How this request's flow inputs read (``model/shown.py``), by digest, to show ``n=10``
    in a tree. A value that any redacted parameter takes reads as redacted everywhere:
    the tree looks values up by digest."""
    texts: dict[str, str] = {}
    for params in plan.params.values():
        for param, value in params.items():
            with contextlib.suppress(Exception):
                digest = hash_value(value)
                if texts.get(digest) != REDACTED:
                    texts[digest] = shown(param, value)
    return texts


# --------------------------------------------------------------------------- verify

Outcome = Literal["same", "differs", "inputs differ", "skipped", "unverified"]

_DIVERGED = ("differs", "inputs differ")


@dataclass(frozen=True, slots=True)
class Check:
    """One node of a verification.

    ``status``: ``"same"`` (the recomputed value has the digest stored under
    the same key), ``"differs"`` (same key, so same code, parameters and
    inputs, but another value: the node does not reproduce), ``"inputs
    differ"`` (recomputed from other inputs than the stored value was, because
    an upstream node diverged first or changed uncompared), ``"skipped"`` (not compared: declared
    ``deterministic=False``, or skipped by ``lf.Skip``; ``reason`` says which),
    ``"unverified"`` (no stored entry to compare with: evicted, ``cache=False``,
    or a node that failed under a non-raising error policy).

    ``expected`` is the digest the stored value's lineage gives the node (its
    entry's, or for an entry evicted or computed again since, the one its
    dependent was computed from), else the digest stored under the node's
    recomputed key; ``actual`` the recomputed one; ``recomputed`` is false for a node whose
    value verify did not compute (a ``deterministic=False`` node whose stored
    value was used, a node skipped because its input was).
    """

    node: str
    status: Outcome
    expected: str | None
    actual: str | None
    duration: float = 0.0
    recomputed: bool = False
    reason: str = ""


@dataclass(frozen=True)
class Verification:
    """The result of :func:`verify`: one :class:`Check` per node, ancestors first.

    Nodes behind a lazy input that the recomputation did not call (an untaken
    branch) are not checked: they are not part of the value.
    """

    flow: str
    target: str
    checks: tuple[Check, ...]
    reference_computed: bool = False

    @property
    def ok(self) -> bool:
        """True when no node diverged."""
        return all(c.status in ("same", "skipped", "unverified") for c in self.checks)

    @property
    def nondeterministic(self) -> list[str]:
        """Nodes that gave a different value from the same inputs."""
        return [c.node for c in self.checks if c.status == "differs"]

    @property
    def first_divergence(self) -> str | None:
        """The first node (in dependency order) whose value diverged, or ``None``."""
        return next((c.node for c in self.checks if c.status == "differs"), None)

    @property
    def recomputed(self) -> list[str]:
        """Nodes whose function verify called (in dependency order)."""
        return [c.node for c in self.checks if c.recomputed]

    def __getitem__(self, node: str) -> Check:
        for check in self.checks:
            if check.node == node:
                return check
        raise KeyError(f"node {node!r} was not verified; checked "
                       f"{', '.join(c.node for c in self.checks)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (what ``lazyflow verify --json`` prints)."""
        return {"flow": self.flow, "target": self.target, "ok": self.ok,
                "nondeterministic": self.nondeterministic,
                "first_divergence": self.first_divergence,
                "reference_computed": self.reference_computed,
                "recomputed": self.recomputed,
                "checks": [{"node": c.node, "status": c.status, "expected": c.expected,
                            "actual": c.actual, "duration": c.duration,
                            "recomputed": c.recomputed, "reason": c.reason}
                           for c in self.checks]}

    def __str__(self) -> str:
        rows: list[tuple[str, ...]] = [("node", "result", "expected", "recomputed", "time",
                                        "note")]
        for c in self.checks:
            rows.append((c.node, c.status, (c.expected or "-")[:12], (c.actual or "-")[:12],
                         _seconds(c.duration) if c.recomputed else "-", c.reason))
        return _table(rows) + "\n" + self._verdict()

    def _verdict(self) -> str:
        count = len(self.recomputed)
        recomputed = f"{count} node{'' if count == 1 else 's'} recomputed"
        target = next((c for c in self.checks if c.node == self.target), None)
        if self.ok and target is not None and target.status == "unverified":
            return f"{self.target}: nothing stored to compare it with ({recomputed})"
        if self.ok:
            return f"{self.target}: reproduced ({recomputed})"
        if self.first_divergence is None:  # only "inputs differ": see _MOVED
            moved = next(c.node for c in self.checks if c.status == "inputs differ")
            return (f"{self.target}: NOT reproduced; {moved!r} was recomputed from other "
                    "inputs than its stored value was")
        return (f"{self.target}: NOT reproduced; first divergence at "
                f"{self.first_divergence!r}; nondeterministic: "
                f"{', '.join(self.nondeterministic)}")

    def __repr__(self) -> str:
        return str(self)


def verify(flow: Flow, target: str, /, *, executor: Any = None, max_workers: int | None = None,
           cancel: CancelToken | None = None,
           overrides: Mapping[str, Mapping[str, Any]] | None = None,
           observers: Iterable[Callable[[Any], Any]] = (), resources: Resources | None = None,
           inputs: Mapping[str, Any] | None = None, **kw_inputs: Any) -> Verification:
    """Recompute ``target``'s ancestry through the engine, on a scratch cache; compare digests.

    Takes ``flow.run``'s options (``executor``, ``max_workers``, ...). Each
    recomputed node's digest is compared with the digest stored in the flow's
    cache under the same key. Nothing is read from the flow's cache but
    those digests and the stored values of ``deterministic=False`` nodes, and
    nothing is written to it; the recomputation is not a run of the flow (no
    history row, ``flow.last_run`` unchanged). If the target was never
    computed, it is computed first by a normal run (the reference).

    >>> result = flow.verify("model", path="a.csv")   # doctest: +SKIP
    >>> result.ok, result.nondeterministic             # doctest: +SKIP
    """
    values = {**(inputs or {}), **kw_inputs}
    plan = flow.plan(target, values)
    run_options: dict[str, Any] = {
        "executor": executor, "max_workers": max_workers, "cancel": cancel,
        "overrides": overrides, "observers": tuple(observers), "resources": resources}
    key = _cached_key(flow, plan, target)
    computed = key is None
    if computed:
        key = flow.run(target, inputs=values, **run_options).nodes[target].key
    reference = _reference(flow, plan, target, key)
    declared = frozenset(n for n in plan.order
                         if not plan.nodes[n].options.deterministic)
    options = engine.RunOptions(**run_options, cache=_scratch(flow.cache, declared),
                                publish=False)
    with reuse_nondeterministic():  # served by the scratch cache's _Reference tier
        run = engine.execute(flow, plan, options)
    return Verification(flow.name, target, _checks(plan, run, flow.cache, reference), computed)


def _reference(flow: Flow, plan: Plan, target: str,
               key: str | None) -> dict[str, tuple[str, str | None]]:
    """Per node of the stored value's lineage: the key and the digest the value under
    ``key`` was computed from (what verify compares with; ``lineage``'s rule: an input's
    digest is the one its dependent recorded, so an ancestor whose entry was evicted, or
    computed again to another value, is still compared with what the value came from).
    The node nearest the target wins should one node show twice."""
    if key is None:  # a target that is not stored (cache=False): nothing to compare with
        return {}
    reference: dict[str, tuple[str, str | None]] = {}
    for item in _tree(flow, plan, target, key).walk():
        reference.setdefault(item.node, (item.key, item.digest))
    return reference


def _scratch(cache: Cache, declared: frozenset[str]) -> Cache:
    """A memory-only cache for verify's recomputation, with ``cache``'s key scope (so keys
    compare) and memory budget; plus a read-only view of the stored values of the
    ``declared`` (``deterministic=False``) nodes when there are any."""
    budget = next((int(t.max_bytes) for t in cache.tiers if isinstance(t, MemoryTier)),
                  default_memory_budget())
    tiers: list[Tier] = [MemoryTier(budget)]
    if declared:
        tiers.append(_Reference(cache, declared))
    return Cache(tiers=tiers, scope=cache.scope)


class _Reference:
    """A read-only tier over the flow's cache that holds only the value entries of the
    ``deterministic=False`` nodes: in verify's scratch cache, it feeds their stored value
    downstream (when their recomputed inputs match the stored ones, so the key does),
    and the nodes they feed can still be checked.

    Records (trace index, lazy traces) are not shown: a trace hit would settle a node
    without recomputing its ancestors. Values are read straight from the flow's tiers,
    never promoted between them: verify writes nothing to the flow's cache.
    """

    name = "stored"

    def __init__(self, cache: Cache, nodes: frozenset[str]) -> None:
        self._cache = cache
        self._nodes = nodes

    def meta(self, key: str) -> Meta | None:
        found = self._cache.lookup(key)
        if found is None:
            return None
        meta = found[0]
        is_value = "input_digests" in meta and "element" not in meta
        return meta if is_value and meta.get("node") in self._nodes else None

    def contains(self, key: str) -> bool:
        return self.meta(key) is not None

    def get(self, key: str) -> Any:
        if self.meta(key) is not None:
            for tier in self._cache.tiers:
                if tier.meta(key) is not None:
                    return tier.get(key)
        raise KeyError(key)

    def put(self, key: str, value: Any, meta: Meta) -> Meta | None:
        return None  # read-only: verify's results never reach the flow's cache

    def delete(self, key: str) -> None:
        return None  # an entry the scratch cache finds damaged stays for the flow to judge

    def keys(self) -> Iterator[str]:
        return iter(())

    def clear(self) -> None:
        return None


def _checks(plan: Plan, run: Run, cache: Cache,
            reference: Mapping[str, tuple[str, str | None]]) -> tuple[Check, ...]:
    """One check per node the recomputation settled, in dependency order."""
    checks: dict[str, Check] = {}
    for name in plan.order:
        record = run.nodes.get(name)
        if record is None or (record.status == "skipped" and record.reason == engine.NOT_NEEDED):
            continue
        diverged = any(checks[up].status in _DIVERGED
                       for up in set(plan.upstream[name].values()) if up in checks)
        declared = not plan.nodes[name].options.deterministic
        check = _check(record, _stored(record, cache, reference.get(name)),
                       diverged=diverged, declared=declared)
        inner = getattr(plan.nodes[name].func, "__lazyflow_subflow__", None)
        if inner is not None and check.status == "same":  # its flow served it from its cache
            check = replace(check, status="unverified", reason=(
                f"a flow run as a node: flow {inner.flow.name!r} answered from its own cache; "
                f"verify it there, {inner.flow.name}.verify({inner.target!r})"))
        checks[name] = check
    return tuple(checks.values())


def _stored(record: NodeRecord, cache: Cache,
            reference: tuple[str, str | None] | None) -> tuple[str | None, bool]:
    """The digest to compare a recomputed node with, and whether it was recomputed under
    another key than the stored value's lineage names (from other inputs).

    The lineage's digest first: it is what the stored value was computed from, also when
    the node's entry was evicted or computed again since. Else the entry under the
    recomputed key (a node the lineage does not reach)."""
    if reference is not None:
        key, digest = reference
        if record.key is not None and record.key != key:
            return digest, True
        if digest is not None:
            return digest, False
    found = cache.lookup(record.key) if record.key is not None else None
    return (found[0].get("digest") if found is not None else None), False


_MOVED = ("recomputed from other inputs than its stored value was; an input that could "
          "not be compared changed")


def _check(record: NodeRecord, stored: tuple[str | None, bool], *, diverged: bool,
           declared: bool) -> Check:
    """Compare one node's recomputed digest with the stored one (``_stored``)."""
    name, duration = record.name, record.duration
    recomputed = record.status == "completed" or record.attempts > 0
    if record.status == "cached" and record.tier == _Reference.name:
        return Check(name, "skipped", record.digest, record.digest, 0.0, False,
                     "deterministic=False: its stored value was used")
    expected, moved = stored
    has_value = run_has_value(record.status)
    actual = record.digest if has_value else None
    status: Outcome
    reason = ""
    if not has_value:  # skipped (lf.Skip, or an input was) or failed (a non-raising policy)
        reason = f"{record.status}: {record.reason}"
        if expected is not None and not moved:  # the stored value came from these inputs
            status = "differs"
        elif diverged or moved:
            status = "inputs differ"
        else:
            status = "skipped" if record.status == "skipped" else "unverified"
    elif declared:
        status, reason = "skipped", "deterministic=False: recomputed, not compared"
    elif diverged:
        status = "inputs differ"
    elif moved:  # the inputs that changed were not compared (deterministic=False, ...)
        status, reason = "inputs differ", _MOVED
    elif expected is None:
        status, reason = "unverified", "no stored entry under its key"
    else:
        status = "same" if expected == actual else "differs"
    return Check(name, status, expected, actual, duration, recomputed, reason)
