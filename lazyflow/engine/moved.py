"""What a node was keyed by and has changed while it ran: then its value is not stored.

A node is keyed before it runs, by its code (with the globals, helpers and files it
reads) and its flow inputs' digests; another thread may rebind a global, edit a file or
change a flow input in place before or while the node reads it. The value it returns is
then one its key does not describe: stored, a later request made in the keyed state
would be served it. ``settle.py`` does not store such a value, nor ``maps.py`` the
manifest of such a map node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lazyflow.cache.snapshot import immutable
from lazyflow.errors import HashingError
from lazyflow.keys.hashing import hash_value

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState

__all__ = ["moved_since_keyed"]


def moved_since_keyed(s: RunState, name: str) -> str | None:
    """Why ``name``'s value must not be stored under its key, or ``None``: its code
    (one fingerprint validation) or a flow input that can change in place (one digest
    each) is not what it was keyed by. A node that changes its own flow input in place
    is not told apart from another thread doing so: it is computed every time, never
    served wrong."""
    prep = s.prepared[name]
    if s.plan.nodes[name].fingerprint().digest != prep.fp.digest:
        return "its code, or a value its code reads, changed while it ran"
    for param, value in s.plan.params[name].items():
        if immutable(value):
            continue
        try:
            same = hash_value(value) == prep.params[param]
        except HashingError:
            same = False
        if not same:
            return (f"its input {param!r} changed while it ran (a file edited, or a value "
                    "changed in place by the node or another thread); pass a value nobody "
                    "changes, or a copy")
    return None
