"""Provenance: what produced a cached value (lineage), and whether it reproduces (verify).

Design note
-----------
Policy. Lineage is read, never recomputed: every stored entry's metadata
already names the content keys of its inputs, its code fingerprint's
components, its parameter digests and its inputs' value digests (written by
``engine.py``). :func:`lineage` finds the target's entry the way a request
would (``explain``, so it is lazy and reads metadata only), then follows the
input keys tier by tier. Because a remote entry carries the same metadata, the
lineage of a value a colleague computed is as complete as one's own.

:func:`verify` recomputes the target's whole ancestry *without reading the
cache* and compares each node's value digest with the digest its dependent
was computed from (the reference). A node whose recomputed inputs equal the
reference inputs but whose output differs is *nondeterministic*; nodes below
it differ only because their inputs did, and are reported so rather than
blamed. Nodes declared ``deterministic=False`` are skipped: their stored value
is fed downstream so the rest can still be checked. If the target has never
been computed, the reference is computed first (a normal run).

:func:`verify_cache` audits storage, not reproducibility: each tier that
stores bytes compares an entry's bytes with the checksum stored with it
(``check``), unpickling nothing. Rejected: loading and re-hashing each value,
which deleted intact entries whose classes the auditing process could not
import, or whose digest it computed differently — on a shared remote, a
colleague's work. Damage is reported; deleting it is the caller's choice.

State. None kept: both functions build plain result objects
(:class:`Lineage`, :class:`Verification`) with ``to_dict`` for JSON.

Rejected: storing lineage in the run history. History is local to a
machine; cache metadata travels with the value, which is what makes a
colleague's result explainable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import lazyflow.engine as engine
from lazyflow.cache.base import NO_VALUE
from lazyflow.cache.serialize import CorruptEntryError
from lazyflow.errors import NotCachedError
from lazyflow.graph import NODE_OPTIONS
from lazyflow.hashing import hash_value
from lazyflow.run import _seconds, _table

if TYPE_CHECKING:
    from lazyflow.api import Flow
    from lazyflow.cache.hierarchy import Cache
    from lazyflow.graph import Plan

__all__ = ["Check", "Lineage", "Verification", "lineage", "reuse_nondeterministic", "verify",
           "verify_cache"]

NODE_OPTIONS["deterministic"] = True


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
                "environment": self.environment, "inputs": {p: up.to_dict() for p, up in self.inputs.items()}}

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
        params = ", ".join(f"{p}={self.values.get(d, d[:12])}" for p, d in self.params.items())
        code = self.fingerprint.get(f"code:{self.node}")
        facts = [f"{self.tier}", f"computed {_seconds(self.duration or 0.0)}"]
        if self.flow:
            facts.append(f"flow {self.flow!r}")
        if code:
            facts.append(f"code {code[:8]}")
        if self.environment:
            facts.append(self.environment)
        return head + (f"({params})" if params else "") + "  " + ", ".join(facts)


def lineage(flow: Flow, target: str, /, **inputs: Any) -> Lineage:
    """The tree that produced ``target``'s cached value for these inputs; computes nothing.

    Raises :class:`~lazyflow.NotCachedError` when the value is not cached.
    """
    plan = flow.plan(target, inputs)
    return _lineage(flow, plan, target)


def _lineage(flow: Flow, plan: Plan, target: str) -> Lineage:
    with reuse_nondeterministic():
        row = engine.explain(flow, plan)[target]
    if row.action != "hit" or row.key is None:
        raise NotCachedError(
            f"node {target!r} of flow {flow.name!r} has no cached value for these inputs "
            f"({row.reason}); compute it first with flow.get({target!r}, ...)")
    values = _known_values(plan)
    cache = flow.cache
    built: dict[str, Lineage] = {}
    # iterative post-order walk over input keys (chains of thousands of nodes)
    stack: list[tuple[str, str, str | None]] = [(row.key, target, None)]
    while stack:
        key, name, recorded = stack[-1]
        if key in built:
            stack.pop()
            continue
        found = cache.lookup(key)
        meta = found[0] if found else {}
        pending = [(k, _upstream_name(plan, meta.get("node", name), p), meta.get(
            "input_digests", {}).get(p)) for p, k in meta.get("inputs", {}).items()
            if k not in built]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        built[key] = Lineage(
            node=meta.get("node", name), key=key, digest=meta.get("digest", recorded),
            found=found is not None, tier=found[1] if found else None, flow=meta.get("flow"),
            created=meta.get("created"), duration=meta.get("duration"),
            fingerprint=meta.get("fingerprint", {}), params=meta.get("params", {}),
            input_digests=meta.get("input_digests", {}),
            inputs={p: built[k] for p, k in meta.get("inputs", {}).items()}, values=values,
            environment=engine.environment_note(cache, meta).removeprefix("; "))
    return built[row.key]


def _upstream_name(plan: Plan, node: str, param: str) -> str:
    return plan.upstream.get(node, {}).get(param, param)


def _known_values(plan: Plan) -> dict[str, str]:
    """Short reprs of this request's flow inputs by digest, to show ``n=10`` in a tree."""
    shown: dict[str, str] = {}
    for params in plan.params.values():
        for value in params.values():
            with contextlib.suppress(Exception):
                text = repr(value)
                shown[hash_value(value)] = text if len(text) <= 40 else text[:37] + "..."
    return shown


# --------------------------------------------------------------------------- verify

Outcome = Literal["same", "differs", "inputs differ", "skipped", "unverified"]


@dataclass(frozen=True, slots=True)
class Check:
    """One node of a verification.

    ``status``: ``"same"`` (recomputed value has the reference digest),
    ``"differs"`` (same inputs, different value: the node is nondeterministic),
    ``"inputs differ"`` (an upstream node diverged first), ``"skipped"``
    (``deterministic=False``: its stored value was used), ``"unverified"`` (no
    reference digest survives for it).
    """

    node: str
    status: Outcome
    expected: str | None
    actual: str | None
    duration: float = 0.0


@dataclass(frozen=True)
class Verification:
    """The result of :func:`verify`: one :class:`Check` per node, ancestors first."""

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
                "checks": [{"node": c.node, "status": c.status, "expected": c.expected,
                            "actual": c.actual, "duration": c.duration} for c in self.checks]}

    def __str__(self) -> str:
        rows: list[tuple[str, ...]] = [("node", "result", "expected", "recomputed", "time")]
        for c in self.checks:
            rows.append((c.node, c.status, (c.expected or "-")[:12], (c.actual or "-")[:12],
                         _seconds(c.duration)))
        if self.ok:
            verdict = f"{self.target}: reproduced ({len(self.checks)} nodes recomputed)"
        else:
            verdict = (f"{self.target}: NOT reproduced; first divergence at "
                       f"{self.first_divergence!r}; nondeterministic: "
                       f"{', '.join(self.nondeterministic)}")
        return _table(rows) + "\n" + verdict

    def __repr__(self) -> str:
        return str(self)


def verify(flow: Flow, target: str, /, **inputs: Any) -> Verification:
    """Recompute ``target``'s ancestry without the cache; compare digests node by node.

    >>> result = flow.verify("model", path="a.csv")   # doctest: +SKIP
    >>> result.ok, result.nondeterministic             # doctest: +SKIP
    """
    import time

    plan = flow.plan(target, inputs)
    computed = False
    try:
        tree = _lineage(flow, plan, target)
    except NotCachedError:
        flow.run(target, **inputs)
        tree, computed = _lineage(flow, plan, target), True
    expected, stored_keys = _reference(plan, target, tree)
    consumers = {n: len(plan.downstream[n]) for n in plan.order}
    values: dict[str, Any] = {}
    actual: dict[str, str] = {}
    checks: list[Check] = []
    for name in plan.order:
        node = plan.nodes[name]
        upstream = plan.upstream[name]
        kwargs = dict(plan.params[name])
        kwargs.update({p: values[up] for p, up in upstream.items()})
        for up in set(upstream.values()):
            consumers[up] -= 1
            if consumers[up] == 0:
                del values[up]
        if not node.options.get("deterministic", True) and name in stored_keys:
            with contextlib.suppress(KeyError):
                values[name], _ = flow.cache.load(stored_keys[name])
                actual[name] = expected[name] or hash_value(values[name])
                checks.append(Check(name, "skipped", expected[name], actual[name]))
                continue
        t0 = time.perf_counter()
        value = node.call(**kwargs)
        duration = time.perf_counter() - t0
        values[name] = value
        actual[name] = digest = hash_value(value)
        reference = expected.get(name)
        if not node.options.get("deterministic", True):
            status: Outcome = "skipped"
        elif reference is None:
            status = "unverified"
        elif digest == reference:
            status = "same"
        elif all(actual[up] == expected.get(up) for up in upstream.values()):
            status = "differs"
        else:
            status = "inputs differ"
        checks.append(Check(name, status, reference, digest, duration))
    return Verification(flow.name, target, tuple(checks), computed)


def _reference(plan: Plan, target: str, tree: Lineage
               ) -> tuple[dict[str, str | None], dict[str, str]]:
    """Per plan node: the digest its dependents were computed from, and its stored key."""
    expected: dict[str, str | None] = {target: tree.digest}
    keys: dict[str, str] = {target: tree.key}
    at: dict[str, Lineage] = {target: tree}
    for name in reversed(plan.order):
        item = at.get(name)
        if item is None:
            continue
        for param, up in plan.upstream[name].items():
            if up in at:
                continue
            child = item.inputs.get(param)
            expected[up] = item.input_digests.get(param) or (child.digest if child else None)
            if child is not None:
                at[up] = child
                keys[up] = child.key
    for name in plan.order:
        expected.setdefault(name, None)
    return expected, keys


# --------------------------------------------------------------------------- cache audit


def verify_cache(cache: Cache, *, tier: str | None = None,
                 drop: bool = False) -> dict[str, dict[str, Any]]:
    """Check every stored entry's bytes against the checksum stored with it.

    Nothing is unpickled or re-hashed: an entry whose value is an instance of
    a class this process cannot import, or whose digest this process would
    compute differently, is intact when its bytes are. An entry is *damaged*
    when its bytes no longer match their checksum, its value file or object is
    missing, or its metadata is unreadable; damaged entries are deleted only
    with ``drop=True``. An entry that cannot be read at all (permissions, a
    network error) is reported as *unreadable* and never deleted.

    Returns, per tier: ``checked`` (entries holding a value), ``intact``,
    ``damaged`` and ``unreadable`` (one ``{"key", "node", "problem"}`` each),
    ``dropped`` (keys deleted) and ``skipped`` (entries of a tier that holds
    live objects rather than bytes, such as memory: nothing to check).

    >>> verify_cache(flow.cache)["disk"]["damaged"]         # doctest: +SKIP
    [{'key': '3f2a…', 'node': 'raw', 'problem': 'entry checksum … does not match …'}]
    """
    return {t.name: _verify_tier(t, drop=drop)
            for t in (cache.tiers if tier is None else [cache.tier(tier)])}


def _verify_tier(tier: Any, *, drop: bool) -> dict[str, Any]:
    report: dict[str, Any] = {"checked": 0, "intact": 0, "damaged": [], "unreadable": [],
                              "dropped": [], "skipped": 0}
    check = getattr(tier, "check", None)
    if check is None:  # live objects (memory): no stored bytes to compare
        report["skipped"] = sum(1 for key in list(tier.keys()) if _holds_value(tier, key))
        return report
    for key in list(tier.keys()):
        try:
            meta = check(key)
        except CorruptEntryError as e:
            report["checked"] += 1
            report["damaged"].append(_finding(key, str(e), e.node))
            if drop:
                tier.delete(key)
                report["dropped"].append(key)
            continue
        except Exception as e:  # unreachable, not damaged: a colleague's entry is kept
            report["checked"] += 1
            report["unreadable"].append(_finding(key, f"{type(e).__name__}: {e}"))
            continue
        if meta is not None:
            report["checked"] += 1
            report["intact"] += 1
    return report


def _holds_value(tier: Any, key: str) -> bool:
    """Whether the entry is a value, not a record (metadata only)."""
    try:
        return tier.get(key) is not NO_VALUE
    except KeyError:  # evicted meanwhile
        return False


def _finding(key: str, problem: str, node: str | None = None) -> dict[str, Any]:
    """One reported entry: its key, its node (when its metadata still says), the problem."""
    return {"key": key, "node": node, "problem": problem}
