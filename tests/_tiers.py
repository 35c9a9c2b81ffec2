"""A dict-backed tier for tests that need a tier by name (a colleague's "remote", a "disk")."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import cloudpickle

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


class FolderTier(DictTier):
    """Entries pickled to files in ``directory``: survives the process, like a disk tier.

    Stands in for the disk tier in tests of cross-process behaviour (history
    beside it, notebooks rerun in a fresh kernel).
    """

    def __init__(self, directory: str, name: str = "disk") -> None:
        super().__init__(name, directory)
        os.makedirs(directory, exist_ok=True)

    def _file(self, key: str) -> str:
        return os.path.join(str(self.directory), key + ".entry")

    def contains(self, key: str) -> bool:
        return os.path.exists(self._file(key))

    def meta(self, key: str) -> Meta | None:
        try:
            with open(self._file(key), "rb") as f:
                return cloudpickle.load(f)[1]
        except FileNotFoundError:
            return None

    def get(self, key: str) -> Any:
        try:
            with open(self._file(key), "rb") as f:
                return cloudpickle.load(f)[0]
        except FileNotFoundError:
            raise KeyError(key) from None

    def put(self, key: str, value: Any, meta: Meta) -> None:
        tmp = self._file(key) + f".{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            cloudpickle.dump((value, meta), f)
        os.replace(tmp, self._file(key))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._file(key))

    def keys(self) -> Iterator[str]:
        return iter([f[:-6] for f in os.listdir(str(self.directory)) if f.endswith(".entry")])

    def clear(self) -> None:
        for key in list(self.keys()):
            self.delete(key)
