"""``check=`` as an engine feature: a result is checked before it is stored.

Design note
-----------
A node's checks are callables that receive its result and return true when
it is good. They run in this process on every computed result, after the
call (and after a map's elements are gathered, a lazy node's trace
unwrapped), before anything is stored: a falsy return or an exception fails
the node with :class:`~lazyflow.errors.CheckError`, and nothing computed
from the failed result is stored, since the node has no value.

Checks are not part of the key: adding a check to a node that ran three
hours must not recompute it. An entry remembers the digest of the checks it
passed (``EntryMeta.checks``, the checks' code as ``lf.hash_value`` sees it).
A hit whose node's checks changed since runs the new ones once on the stored
value (``settle_hit``): passed, a ``CheckedRecord`` says so and later hits
skip them; failed, the entry is dropped and the node fails with
``CheckError`` — recomputing would give the same value and fail the same
way. Unchanged checks never run on a hit.

A node with checks runs by value (never as a worker step on a shared tier),
so its result is always here to be checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lazyflow.keys as keys
from lazyflow.engine.hooks import Feature
from lazyflow.engine.prepare import Hit
from lazyflow.engine.settle import mark_cached, settle
from lazyflow.engine.step import load
from lazyflow.errors import CheckError
from lazyflow.executors.base import Outcome
from lazyflow.model.policies import policy_for
from lazyflow.records import CheckedRecord

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState

__all__ = ["CHECKED", "failed_check", "settle_hit"]


class Checked(Feature):
    """Hooks of a node with ``check=``."""

    __slots__ = ()

    def outcome(self, s: RunState, name: str, outcome: Outcome) -> Outcome | None:
        """Fail the outcome when its value does not pass the node's checks."""
        if outcome.error is None:
            error = failed_check(name, s.plan.nodes[name].options.check, outcome.value)
            if error is not None:
                outcome.error, outcome.value, outcome.digest = error, None, None
        return outcome


CHECKED = Checked()


def failed_check(name: str, checks: tuple[Callable[[Any], Any], ...],
                 value: Any) -> CheckError | None:
    """The :class:`CheckError` of the first check ``value`` fails, or ``None``."""
    for check in checks:
        label = _label(check)
        try:
            passed = check(value)
        except Exception as e:  # a check that raises is a failed check, named as such
            error = CheckError(name, label, f"raised {type(e).__name__}: {e}")
            error.__cause__ = e
            return error
        if not passed:
            return CheckError(name, label, f"returned {passed!r}")
    return None


def settle_hit(s: RunState, name: str, hit: Hit) -> None:
    """Settle ``name`` as a hit, first running its checks on the stored value when they
    changed since it was stored."""
    digest = s.prepared[name].checks
    if digest is None or hit.meta.get("checks") == digest \
            or s.cache.find_record(keys.checked_key(hit.key, digest)) is not None:
        mark_cached(s, name, hit)
        return
    try:
        value = load(s.cache, hit.key, hit.meta.get("digest"))
    except KeyError:  # vanished: the reader that needs it computes it again (vanished.py)
        mark_cached(s, name, hit)
        return
    error = failed_check(name, s.plan.nodes[name].options.check, value)
    if error is None:
        record: CheckedRecord = {"key": hit.key, "checks": digest}
        s.cache.record(keys.checked_key(hit.key, digest), record)
        mark_cached(s, name, hit)
        return
    s.cache.delete(hit.key)
    s.run.nodes[name].key = hit.key
    if name not in s.policies:  # a hit of the resolve step: never scheduled, so no policy yet
        s.policies[name] = policy_for(name, s.plan.nodes[name].options, s.options.overrides)
    now = time.time()
    settle(s, name, Outcome(error=error, attempts=1, started=now, ended=now))


def _label(check: Callable[[Any], Any]) -> str:
    """How a message names a check: its name, and where a lambda was written."""
    name = getattr(check, "__qualname__", None) or type(check).__name__
    code = getattr(check, "__code__", None)
    if name.endswith("<lambda>") and code is not None:
        return f"<lambda> ({code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})"
    return repr(name)
