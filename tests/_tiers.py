"""A dict-backed tier for tests that need a tier by name (a colleague's "remote", a "disk")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lazyflow.cache.base import Meta


class DictTier:
    """Holds entries in a dict; ``directory`` is reported like a disk tier's folder."""

    def __init__(self, name: str, directory: str | None = None) -> None:
        self.name = name
        self.directory = directory
        self.entries: dict[str, tuple[Any, Meta]] = {}

    def contains(self, key: str) -> bool:
        return key in self.entries

    def meta(self, key: str) -> Meta | None:
        entry = self.entries.get(key)
        return None if entry is None else entry[1]

    def get(self, key: str) -> Any:
        return self.entries[key][0]

    def put(self, key: str, value: Any, meta: Meta) -> None:
        self.entries[key] = (value, meta)

    def delete(self, key: str) -> None:
        self.entries.pop(key, None)

    def keys(self) -> Iterator[str]:
        return iter(list(self.entries))

    def clear(self) -> None:
        self.entries.clear()
