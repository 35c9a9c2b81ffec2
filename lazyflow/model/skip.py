"""Early exit: a node raises ``lf.Skip("reason")``; it and its dependents are skipped.

Design note
-----------
Policy. ``Skip`` is control flow, not failure: the run goes on, the node
that raised it and every node that needs its value end with status
``"skipped"`` and a reason naming where the skip came from, and the other
branches still run. A skip is *not cached*: the node runs again on the next
request, because whatever made it skip (a missing file, an empty batch) is
usually outside its inputs, and a cached "nothing" would outlive the cause.
Skips should be raised early and cheaply.

Requesting a skipped target: ``flow.get`` returns ``None`` with a
:class:`~lazyflow.errors.SkippedWarning`, or raises
:class:`~lazyflow.errors.SkippedError` with ``strict=True``. Rejected
alternative: returning a sentinel object, which flows silently into user
code that does not test for it.

State: none; the engine records skips itself (a raised ``Skip`` settles the
node as skipped; a node whose upstream is skipped inherits the reason).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lazyflow.errors import OutputError

if TYPE_CHECKING:
    from lazyflow.run import NodeRecord

__all__ = ["Skip", "inherited_reason", "returned_skip"]


class Skip(Exception):  # noqa: N818 - named for what the user means, like StopIteration
    """Raise inside a node to skip it and its dependents, with a reason.

    >>> @flow.node                                             # doctest: +SKIP
    ... def latest(folder):
    ...     if not folder.files():
    ...         raise lf.Skip("no new files today")
    ...     ...
    """

    def __init__(self, reason: str = "skipped") -> None:
        self.reason = reason
        super().__init__(reason)


def inherited_reason(upstream: str, record: NodeRecord) -> str:
    """Why a node is skipped because ``upstream`` failed or was skipped: the root cause.

    A chain of skips names where it started (``upstream 'batch' skipped: no
    rows today``), not every link in between.
    """
    if record.status != "skipped":
        return f"upstream {upstream!r} {record.status}"
    if record.reason.startswith("upstream "):
        return record.reason
    return f"upstream {upstream!r} skipped: {record.reason}"


def returned_skip(node: str, value: Any) -> OutputError | None:
    """The error for a node that *returned* an ``lf.Skip`` instead of raising it, else
    ``None``.

    A returned ``Skip`` is a value like any other to the cache: stored, handed to
    dependents and served on every later request, although the node meant to skip
    (which is never cached). So it is refused, and the message says to raise it.
    """
    if not isinstance(value, Skip):
        return None
    return OutputError(f"node {node!r} returned lf.Skip({value.reason!r}) instead of raising "
                       "it; write `raise lf.Skip(...)` to skip the node (a skip is never "
                       "cached)")
