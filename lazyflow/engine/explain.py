"""``explain``: a dry run — per needed node, a hit (and where) or a run, and why."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import lazyflow.keys as keys
import lazyflow.model.lazy as lazy
from lazyflow.engine.freshness import expired, has_max_age
from lazyflow.engine.prepare import Prepared, eager_edges, find_trace, prepare, resolve, scope
from lazyflow.engine.why import environment_note, why
from lazyflow.records import LazyTraceRecord
from lazyflow.run import Explanation, ExplanationRow

if TYPE_CHECKING:
    from lazyflow.api import Flow
    from lazyflow.model.graph import Plan

__all__ = ["explain"]


def explain(flow: Flow, plan: Plan) -> Explanation:
    """A dry run of ``plan``: which needed nodes would hit (and where) or run, and why."""
    cache = flow.cache
    prepared = prepare(plan, scope(cache))
    stale: dict[str, str] | None = {} if has_max_age(plan) else None
    hits, needed, _ = resolve(plan, prepared, cache, stale=stale)
    digests: dict[str, str | None] = {n: h.meta["digest"] for n, h in hits.items()}
    rows: dict[str, ExplanationRow] = {
        n: ExplanationRow(n, "hit", h.tier, "cached" + environment_note(cache, h.meta), h.key,
                          h.meta.get("size"))
        for n, h in hits.items()}
    eager_of = eager_edges(plan)
    for name in needed:
        prep = prepared[name]
        inputs = {p: digests.get(up) for p, up in eager_of[name].items()}
        key = None
        if None not in inputs.values():
            key = keys.content_key(prep.code, prep.params, inputs)  # type: ignore[arg-type]
            if lazy.lazy_params(plan.nodes[name]):  # replay its traces with what is known
                key = _explain_lazy(flow, plan, prepared, name, key, digests)
            found = cache.lookup(key) if prep.reusable and key else None
            if found is not None and stale is not None:
                why_stale = expired(found[0], plan.nodes[name].options.max_age)
                if why_stale is not None:
                    stale[name], found = why_stale, None
            if found is not None:
                digests[name] = found[0]["digest"]
                rows[name] = ExplanationRow(
                    name, "hit", found[1],
                    "cached (same inputs by value)" + environment_note(cache, found[0]), key,
                    found[0].get("size"))
                continue
        digests[name] = None
        reason = (stale and stale.get(name)) \
            or why(cache, flow.name, name, plan.nodes[name], prep, inputs)
        rows[name] = ExplanationRow(name, "run", None, reason, key)
    return Explanation(flow.name, plan.targets, tuple(rows[n] for n in plan.order if n in rows))


def _explain_lazy(flow: Flow, plan: Plan, prepared: Mapping[str, Prepared], name: str,
                  base: str, digests: Mapping[str, str | None]) -> str | None:
    """The key a lazy node's recorded trace vouches for, from digests known without running
    anything (a lazy input counts when its own trace record is a hit); ``None`` otherwise."""
    prep = prepared[name]
    record: LazyTraceRecord | None = flow.cache.find_record(lazy.trace_record_key(base))
    upstream = plan.upstream[name]

    def digest_of(param: str) -> str | None:
        up = upstream[param]
        if digests.get(up) is None and prepared[up].trace is not None:
            linked = find_trace(flow.cache, prepared[up])
            return linked["digest"] if linked else None
        return digests.get(up)

    verdict, used = lazy.replay(record["traces"] if record else (), digest_of)
    if verdict != "hit":
        return None
    eager = {p: digests[up] or "" for p, up in eager_edges(plan)[name].items()}
    return keys.content_key(prep.code, prep.params, {**eager, **used})
