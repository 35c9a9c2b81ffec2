"""A memo keyed by object identity that forgets an entry when its object dies."""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ["WeakMemo"]


class _Entry(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to a memoised object that carries its memo key and value."""

    __slots__ = ("key", "value")
    key: int
    value: Any


class WeakMemo:
    """A memo keyed by object identity that forgets an entry when its object dies.

    ``weakref.WeakKeyDictionary`` builds a weak reference on every lookup, which
    cost more than the rest of a warm fingerprint check; here a lookup is one
    dict access and an identity test, and an entry is one object (a weak
    reference carrying key and value, as ``WeakValueDictionary``'s ``KeyedRef``),
    which matters because every object added is one more for the cyclic GC to
    walk. Objects that cannot be weakly referenced are simply not memoised.
    """

    __slots__ = ("_entries", "_forget")

    def __init__(self) -> None:
        entries: dict[int, _Entry] = {}

        def forget(entry: _Entry) -> None:
            if entries.get(entry.key) is entry:
                del entries[entry.key]

        self._entries = entries
        self._forget = forget

    def get(self, obj: Any) -> Any:
        entry = self._entries.get(id(obj))
        return entry.value if entry is not None and entry() is obj else None

    def set(self, obj: Any, value: Any) -> None:
        try:
            entry = _Entry(obj, self._forget)
        except TypeError:  # not weak-referenceable (a builtin): computed afresh each time
            return
        entry.key, entry.value = id(obj), value
        self._entries[entry.key] = entry
