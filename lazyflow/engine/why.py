"""Why a node runs, and where a hit was computed: the words runs and ``explain`` share."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import lazyflow.keys as keys
import lazyflow.keys.environment as environment
from lazyflow.cache.base import Meta
from lazyflow.cache.remote_environment import POINTER, carried
from lazyflow.records import EnvironmentRecord, LatestRecord

if TYPE_CHECKING:
    from lazyflow.cache.hierarchy import Cache
    from lazyflow.engine.prepare import Prepared
    from lazyflow.model.graph import Node
    from lazyflow.run import NodeRecord

__all__ = ["environment_note", "note_environment", "recorded_environment", "why"]


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
    """This process's environment digest, its description recorded once in ``cache``'s
    memory and disk tiers, so ``explain`` can say what differs when a hit was computed
    elsewhere. On a remote, the first entry this process writes carries the description
    instead of a record of its own (``cache/remote_environment.py``)."""
    env = environment.current()
    if cache not in _ENVIRONMENTS_RECORDED:
        _ENVIRONMENTS_RECORDED.add(cache)
        described: EnvironmentRecord = {"environment": env.describe()}
        cache.record(keys.environment_key(env.digest), described, local=True)
    return env.digest


def environment_note(cache: Cache, meta: Meta) -> str:
    """``"; computed in another environment (numpy 1.26.4 -> 2.1.0)"`` when the entry of
    ``meta`` was computed in an environment other than this one; else ``""``."""
    produced = meta.get("env")
    here = environment.current()
    if not produced or produced == here.digest:
        return ""
    described = _description(cache, meta, produced)
    if described is None:
        return "; computed in another environment"
    changes = environment.differences(described, here.describe())
    shown = ", ".join(changes[:6]) + (f", and {len(changes) - 6} more" if len(changes) > 6
                                      else "")
    return f"; computed in another environment ({shown})" if changes \
        else "; computed in another environment"


def note_environment(record: NodeRecord, cache: Cache, meta: Meta) -> None:
    """Add to the reason of the hit ``record`` (of the entry of ``meta``) that it was
    computed in another environment, and what differs, when it was (:func:`environment_note`).

    At once when this process has read its environment. A new process has not (that
    reads every installed distribution's folder, ~3 ms with 200 installed, more than
    the rest of a small hit): it leaves the note to the first reading of the reason,
    so a request whose reasons nobody reads (a script's ``flow.get``) does not pay
    it, and the history's writer works it out off the request's thread.
    """
    produced = meta.get("env")
    if not produced:
        return  # written by a lazyflow that did not record environments: nothing to say
    if environment.known():
        if produced != environment.current().digest:  # the common hit: one comparison
            record.reason = _with_note(cache, meta, record.reason)
    else:
        record.revise_reason_later(functools.partial(_with_note, cache, meta))


def _with_note(cache: Cache, meta: Meta, reason: str) -> str:
    """``reason`` ("cached" when empty) with the note of :func:`environment_note`; ``reason``
    itself when there is nothing to note."""
    note = environment_note(cache, meta)
    return (reason or "cached") + note if note else reason


def _description(cache: Cache, meta: Meta, produced: str) -> dict[str, Any] | None:
    """The description of environment ``produced``: carried by the entry itself, recorded
    locally, carried by the entry it names (``env_at``: a remote's carrier, one read), or
    recorded under its key (by earlier versions, or when the carrier was not created)."""
    described = carried(meta)
    if described is not None:
        return described
    where = keys.environment_key(produced)
    record: EnvironmentRecord | None = cache.find_record(where, local=True)
    carrier = meta.get(POINTER)
    if record is None and isinstance(carrier, str):
        found = cache.lookup(carrier)
        if found is not None and found[0].get("env") == produced:
            described = carried(found[0])
            if described is not None:
                return described
    if record is None:
        record = cache.find_record(where)
    recorded = record.get("environment") if record else None
    return dict(recorded) if isinstance(recorded, dict) else None
