"""Catch nodes: ``@flow.node(catch=("model",))`` receives ``lf.Failed`` when ``model`` fails.

Design note
-----------
Policy. A node that names an input in ``catch=`` is handed, when that input
failed, an :class:`Failed` in its place — which node failed and with what —
and decides what to do (report the error, fall back to a simpler model).
The failed node keeps status ``"failed"``; its failure is *caught* when it
is not a requested target and every consumer of it in the request catches
it: then the run goes on and ends ``"completed"`` if nothing else failed.
Otherwise the failed node's own ``on_error=`` applies as without catching
(with the default ``"raise"`` the run raises; with ``"skip"`` the consumers
that catch still get their ``Failed``, the others are skipped).

An input that was *skipped* because something above it failed is caught the
same way: the ``Failed`` names the node that actually failed. An input
skipped by ``lf.Skip`` (a decision, not a failure) skips the catching node
as it skips any consumer.

Nothing computed from a ``Failed`` is cached — neither the catching node's
result nor anything computed from it — since the failure may not happen
next time: the next request computes them again, and retries the failed
node. A ``Failed`` has no stable digest (each run's is unique), so no key
built from it can ever match a stored entry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lazyflow.errors import DefinitionError
from lazyflow.keys.hashing import register_hasher

__all__ = ["Failed", "normalized_catch", "validate_catch"]


@dataclass(frozen=True)
class Failed:
    """What a catching node receives in place of an input that failed.

    >>> Failed(node="model", error=ValueError("singular matrix"))
    Failed(node='model', error=ValueError('singular matrix'))
    """

    node: str
    """The node that failed (for an input skipped because of it, the one above it)."""
    error: BaseException
    """The exception it raised."""
    token: str = field(default_factory=lambda: os.urandom(16).hex(), repr=False, compare=False)
    """Unique to this failure: its digest, so nothing keyed by it matches a stored entry."""


register_hasher(Failed, lambda failed: failed.token)


def normalized_catch(node: str, option: Any) -> tuple[str, ...]:
    """``catch=`` as a tuple of node names: one name, or a tuple or list of them."""
    names = (option,) if isinstance(option, str) else tuple(option) \
        if isinstance(option, (tuple, list)) else None
    if names is None or not all(isinstance(n, str) and n for n in names):
        raise DefinitionError(f"node {node!r}: catch= names the input nodes whose failure this "
                              f"node receives as lf.Failed, e.g. catch=('model',); got {option!r}")
    return names


def validate_catch(node: str, catch: Sequence[str], inputs: Sequence[str],
                   uncatchable: Mapping[str, str] | None = None) -> None:
    """Check at plan time that every name in ``catch=`` is an input node of ``node``, and
    none of the ``uncatchable`` ones (input node -> why: a mapped or a lazy input, whose
    failure has no place to go)."""
    for name in catch:
        if name not in inputs:
            raise DefinitionError(f"node {node!r}: catch= names {name!r}, which is not one of "
                                  f"its input nodes ({', '.join(inputs) or 'none'}); name the "
                                  "node whose failure it should receive")
        if uncatchable and name in uncatchable:
            raise DefinitionError(f"node {node!r}: catch= names {name!r}, {uncatchable[name]}; "
                                  f"catch its failure in a node between the two (one that "
                                  f"takes {name!r} and catch=({name!r},)) instead")
