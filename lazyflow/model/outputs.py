"""Multiple outputs: one function, several addressable (and separately cached) nodes.

Design note
-----------
``@flow.node(outputs=("train", "test"))`` registers the function under its
own name and, for each output, a small *selector* node wired to it that picks
its element out of the returned tuple or dict. Because each selector is a node
of its own, each output gets its own value digest: a dependent of ``test`` is
keyed by ``test``'s value only and stays cached when just ``train`` changes
(early cutoff per output). Selectors are cheap to call and share their values
with the parent in memory; on disk an output is stored once by the parent and
once as itself (the rejected alternative, entries that point into another
entry, would make every tier understand references).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lazyflow.errors import DefinitionError, OutputError

__all__ = ["pick", "selector", "validate_fallback", "validate_outputs"]


def validate_outputs(node: str, outputs: Any) -> tuple[str, ...]:
    """Check an ``outputs=`` declaration; return it as a tuple of names."""
    if isinstance(outputs, str) or not isinstance(outputs, Sequence) or not outputs:
        raise DefinitionError(f"node {node!r}: outputs= takes a tuple of names, "
                              f"like outputs=('train', 'test'); got {outputs!r}")
    names = tuple(outputs)
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            raise DefinitionError(f"node {node!r}: output name {name!r} is not an identifier")
    if len(set(names)) != len(names) or node in names:
        raise DefinitionError(f"node {node!r}: output names must be distinct and differ from "
                              f"the node's own name; got {names!r}")
    return names


def validate_fallback(node: str, outputs: tuple[str, ...], fallback: Any) -> None:
    """Check that a node with ``outputs=`` and ``on_error="fallback"`` falls back to a value
    its outputs can be picked from: else every output would fail with an error blaming the
    node's return value, which it never returned."""
    try:
        pick(fallback, node, outputs, 0)
    except OutputError:
        raise DefinitionError(
            f"node {node!r}: on_error='fallback' with outputs={outputs!r} needs fallback= a "
            f"tuple of {len(outputs)} values or a dict with keys {list(outputs)!r}, one "
            f"for each output; got {fallback!r}") from None


def pick(value: Any, parent: str, outputs: tuple[str, ...], index: int) -> Any:
    """Element ``index`` of ``parent``'s returned value (a tuple/list or a dict by name)."""
    if isinstance(value, Mapping):
        if set(value) != set(outputs):
            raise OutputError(
                f"node {parent!r} declares outputs {outputs!r} but returned a dict with keys "
                f"{sorted(map(str, value))!r}; return exactly those keys")
        return value[outputs[index]]
    if isinstance(value, (tuple, list)) and len(value) == len(outputs):
        return value[index]
    got = f"a {type(value).__name__} of length {len(value)}" \
        if isinstance(value, (tuple, list)) else f"a {type(value).__name__}"
    raise OutputError(
        f"node {parent!r} declares outputs {outputs!r} but returned {got}; return a tuple of "
        f"{len(outputs)} values or a dict with keys {list(outputs)!r}")


def selector(parent: str, outputs: tuple[str, ...], index: int) -> Callable[[Any], Any]:
    """The function of the node that picks output ``index`` of ``parent``."""

    def select(value: Any) -> Any:
        return pick(value, parent, outputs, index)

    select.__name__ = select.__qualname__ = outputs[index]
    return select
