"""Why a node runs, and where a hit was computed: the words runs and ``explain`` share."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING

import lazyflow.keys as keys
import lazyflow.keys.environment as environment
from lazyflow.cache.base import Meta
from lazyflow.records import EnvironmentRecord, LatestRecord

if TYPE_CHECKING:
    from lazyflow.cache.hierarchy import Cache
    from lazyflow.engine.prepare import Prepared
    from lazyflow.model.graph import Node

__all__ = ["environment_note", "recorded_environment", "why"]


def why(cache: Cache, flow: str, name: str, node: Node, prep: Prepared,
        inputs: Mapping[str, str | None]) -> str:
    """Why ``name`` is computed rather than served: its options, or what differs from its
    last recorded computation (``inputs``: value digests, ``None`` for one still to run)."""
    if not node.cache:
        return "cache=False"
    if prep.fp.volatile:
        return prep.fp.volatile_reason
    if not prep.reusable:
        return "deterministic=False"
    previous: LatestRecord | None = cache.find_record(keys.latest_key(flow, name), local=True)
    return "; ".join(keys.reasons(previous, prep.fp.components, prep.params, inputs))


_ENVIRONMENTS_RECORDED: weakref.WeakSet[Cache] = weakref.WeakSet()


def recorded_environment(cache: Cache) -> str:
    """This process's environment digest, its description recorded in ``cache`` once, so
    ``explain`` can say what differs when a hit was computed elsewhere."""
    env = environment.current()
    if cache not in _ENVIRONMENTS_RECORDED:
        _ENVIRONMENTS_RECORDED.add(cache)
        described: EnvironmentRecord = {"environment": env.describe()}
        cache.record(keys.environment_key(env.digest), described)
    return env.digest


def environment_note(cache: Cache, meta: Meta) -> str:
    """``"; computed in another environment (numpy 1.26.4 -> 2.1.0)"`` when the entry of
    ``meta`` was computed in an environment other than this one; else ``""``."""
    produced = meta.get("env")
    here = environment.current()
    if not produced or produced == here.digest:
        return ""
    record: EnvironmentRecord | None = cache.find_record(keys.environment_key(produced))
    described = record.get("environment") if record else None
    if not isinstance(described, dict):
        return "; computed in another environment"
    changes = environment.differences(described, here.describe())
    shown = ", ".join(changes[:6]) + (f", and {len(changes) - 6} more" if len(changes) > 6
                                      else "")
    return f"; computed in another environment ({shown})" if changes \
        else "; computed in another environment"
