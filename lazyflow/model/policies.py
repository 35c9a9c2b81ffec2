"""Per-node execution policies: retries with backoff, timeouts, error handling.

Design note
-----------
Policies are ``@flow.node`` options (``retries=2, timeout=30, on_error="skip"``)
registered with the graph, and can be overridden per run with
``flow.run(..., overrides={"fit": {"timeout": 60}, "*": {"retries": 1}})``
(``"*"`` applies to every node). They are validated when declared, so a typo
fails at definition time, not hours into a run.

Retries happen *inside* the task (see ``executors/base.py``), so every
executor — threads, processes, a Dask worker — retries the same way, with
exponential backoff and full jitter: attempt ``k`` waits a random time in
``[0, retry_delay * 2**k]``. A timeout bounds the node's whole time, retries
included, and is never retried; its clock starts when the task starts running
(not while it waits for a free worker). ``resources=`` says what the node
needs while it runs (``resources.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lazyflow.errors import DefinitionError
from lazyflow.model.resources import parse_needs

if TYPE_CHECKING:
    from lazyflow.model.options import NodeOptions

__all__ = ["Policy", "policy_for", "validate_policy_options"]

_ON_ERROR = ("raise", "skip", "fallback")


@dataclass(frozen=True, slots=True)
class Policy:
    """How one node is executed: retries, backoff, timeout and what to do on error."""

    retries: int = 0
    retry_delay: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    timeout: float | None = None
    on_error: str = "raise"
    fallback: Any = None
    resources: Mapping[str, float] = field(default_factory=dict)
    """What the node needs while it runs (memory in bytes): see ``resources.py``."""
    profile_memory: bool = False
    """Measure the call's peak memory with tracemalloc (``executors/profile.py``)."""
    priority: int = 0
    """Among ready nodes, higher starts first; Dask gets it as the task's priority."""


DEFAULTS = Policy()
OPTION_NAMES = ("retries", "retry_delay", "retry_on", "timeout", "on_error", "fallback",
                "resources", "profile_memory", "priority")


def validate_policy_options(node: str, options: Mapping[str, Any]) -> None:
    """Raise :class:`DefinitionError` naming the node and option for a bad policy value."""
    retries = options.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise DefinitionError(f"node {node!r}: retries= must be a whole number >= 0, "
                              f"got {retries!r}")
    delay = options.get("retry_delay", 0.1)
    if not isinstance(delay, (int, float)) or delay < 0:
        raise DefinitionError(f"node {node!r}: retry_delay= must be seconds >= 0, got {delay!r}")
    retry_on = options.get("retry_on", (Exception,))
    classes = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if not all(isinstance(c, type) and issubclass(c, BaseException) for c in classes):
        raise DefinitionError(f"node {node!r}: retry_on= takes exception classes, "
                              f"got {retry_on!r}")
    timeout = options.get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise DefinitionError(f"node {node!r}: timeout= must be seconds > 0 or None, "
                              f"got {timeout!r}")
    on_error = options.get("on_error", "raise")
    if on_error not in _ON_ERROR:
        raise DefinitionError(f"node {node!r}: on_error= must be one of "
                              f"{', '.join(map(repr, _ON_ERROR))}, got {on_error!r}")
    parse_needs(node, options.get("resources"))
    if not isinstance(options.get("profile_memory", False), bool):
        raise DefinitionError(f"node {node!r}: profile_memory= must be True or False, got "
                              f"{options['profile_memory']!r}")


def policy_for(node: str, options: NodeOptions,
               overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Policy:
    """The policy of ``node``: its declared options, then run overrides (``"*"`` first)."""
    merged = {k: getattr(options, k) for k in OPTION_NAMES}
    if not merged.get("resources"):  # None (the option's default) and {} both mean "none"
        merged.pop("resources", None)
    if overrides:
        for scope in ("*", node):
            merged.update(overrides.get(scope, {}))
    if not merged or all(merged.get(k) == getattr(DEFAULTS, k) for k in merged):
        return DEFAULTS
    validate_policy_options(node, merged)
    retry_on = merged.get("retry_on", DEFAULTS.retry_on)
    return Policy(
        retries=merged.get("retries", 0),
        retry_delay=float(merged.get("retry_delay", DEFAULTS.retry_delay)),
        retry_on=retry_on if isinstance(retry_on, tuple) else (retry_on,),
        timeout=merged.get("timeout"),
        on_error=merged.get("on_error", "raise"),
        fallback=merged.get("fallback"),
        resources=parse_needs(node, merged.get("resources")),
        profile_memory=bool(merged.get("profile_memory", False)),
        priority=int(merged.get("priority", 0)),
    )
