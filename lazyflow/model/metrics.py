"""``lf.report(tokens=812, cost=0.013)``: a node reports numbers about its own call.

Design note
-----------
A running node's call happens inside :class:`~lazyflow.executors.base.Task`,
on whichever worker runs it; the task opens a collection (``collecting``)
around the call, ``report`` adds into it, and the task returns the sums with
the outcome — so it works the same under threads, processes and Dask, where
the call is in another thread or process. Repeated reports of one name
within a call add up; every attempt of a retried call counts (a failed
attempt's tokens were spent too). The engine keeps the numbers on the
node's record (``NodeRecord.metrics``), stores them with its entry, and a hit
shows the stored numbers as saved.

The collection is a context variable holding ``None`` until the first report
of a call, so a call that reports nothing costs one ``set`` and one ``reset``.
"""

from __future__ import annotations

import numbers
from contextvars import ContextVar
from typing import Final

from lazyflow.errors import ReportError

__all__ = ["OUTSIDE", "collected", "report", "start_collecting"]

OUTSIDE: Final = "outside"
"""The collection's value when no node is running in this context."""

_COLLECTED: ContextVar[dict[str, float] | str | None] = ContextVar("lazyflow_metrics",
                                                                  default=OUTSIDE)


def report(**metrics: float) -> None:
    """Record numbers about the running node's call (``lf.report(tokens=812)``).

    They add up per name within the call, appear as ``run.nodes[name].metrics``,
    are summed by ``run.metrics()`` and are shown as saved on a cache hit.
    Raises :class:`~lazyflow.errors.ReportError` outside a running node, or for a
    value that is not a number.
    """
    current = _COLLECTED.get()
    if current is OUTSIDE:
        raise ReportError("lf.report() records metrics of the running node's call, but no node "
                          "is running here; call it inside a node's function")
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ReportError(f"lf.report({name}={value!r}): metrics are numbers (int or "
                              f"float), got a {type(value).__name__}")
    if current is None or isinstance(current, str):
        current = {}
        _COLLECTED.set(current)
    for name, value in metrics.items():
        current[name] = current.get(name, 0) + value


def start_collecting() -> object:
    """Open a collection for one call; pass what it returns to :func:`collected`."""
    return _COLLECTED.set(None)


def collected(token: object) -> dict[str, float] | None:
    """The numbers reported since :func:`start_collecting` (``None``: none); closes it."""
    found = _COLLECTED.get()
    _COLLECTED.reset(token)  # type: ignore[arg-type]
    return found if isinstance(found, dict) else None
