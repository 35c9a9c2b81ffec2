"""Per-item map: ``@flow.node(map="items")`` calls the function once per element.

Design note
-----------
Policy. A map node is one node of the graph whose value is the list of its
function's results, one per element of the mapped input, in order. Each
element is also cached on its own, under an *element key*: the node's code,
parameters and other inputs, plus that element's value digest. When the
node's key misses (some element changed), the engine looks every element up
and calls the function only for the elements that miss — change one element
of 1,000 and one call runs. A map over a map's output is element-wise for the
same reason: the changed element is the only one whose digest changed.

Elements are submitted to the run's executor as separate tasks (parallel
under threads or processes), each with the node's retry policy; their
futures are gathered into one future (``engine/maps.py``), so the scheduler
sees one node in flight. A failing element fails the node with its own exception plus a note
naming its index; the elements that succeeded are stored, so the next
request computes only the ones that failed.

Rejected alternative: expanding a map into one graph node per element at
planning time. It makes the plan's size depend on data (a 1,000,000-element
list would be a 1,000,000-node graph before anything is known to have
changed) and needs the data before planning, which breaks lazy requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import xxhash

from lazyflow.errors import DefinitionError, MapError
from lazyflow.keys import Domain, domain

_DOMAIN = domain(Domain.ELEMENT)

__all__ = ["element_key", "elements", "validate_map"]


def validate_map(node: str, params: Sequence[str], option: Any, lazy: Any) -> None:
    """Check a ``map=`` option: one parameter name of the function, not a lazy one."""
    if option is None:
        return
    if not isinstance(option, str) or option not in params:
        raise DefinitionError(f"node {node!r}: map= names the parameter whose elements the "
                              f"function is applied to, one of {', '.join(params) or 'none'}; "
                              f"got {option!r}")
    if lazy:
        raise DefinitionError(f"node {node!r}: a map node cannot take lazy inputs "
                              f"(lazy={tuple(lazy)!r}); compute the choice in an upstream node")


def elements(value: Any, node: str, param: str) -> list[Any]:
    """The elements of a mapped input, as a list."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise MapError(f"node {node!r} maps over {param!r}, which must be a list or another "
                       f"iterable of elements, got a {type(value).__name__}")
    return list(value)


def element_key(base_key: str, param: str, digest: str) -> str:
    """Where one element's result is stored: the node's key without the mapped input, plus
    the element's digest."""
    return xxhash.xxh3_128_hexdigest(
        f"{_DOMAIN}{base_key}\0{len(param)}:{param}\0{digest}".encode())
