"""The environment description on a remote: carried by an entry written anyway.

Design note
-----------
Policy. Every entry names the environment that computed it (``"env"``, a
digest: ``keys/environment.py``), and ``explain`` says what differs when a
colleague's hit was computed in another one, from that environment's full
description. On the memory and disk tiers the description is a record of its
own (``environment`` key), written once per process at no request's cost. On
the remote that record was one more PUT per process, a fifth of a small map's
first run. So the remote tier writes no such record: the first value entry a
process puts there with its own ``env`` *carries* the description (metadata
field ``environment``), and every later entry of that process names the
carrier by key (``env_at``: 32 hex digits). A reader holding the carrier has
the description at no request; one holding another entry reads the carrier,
one GET, as it read the record before (``engine/why.py``: ``environment_note``).

Lost carriers. The carrier is chosen when it is put, before it is known to
land. When its entry is not created — a colleague's entry holds the key (that
entry stays: create-only), or it is found there before writing — the writer
falls back to the environment record under the ``environment`` key, as
before, so every entry naming the carrier still finds the description (the
reader tries the record when the carrier does not carry it). A carrier
collected later (``prune``) leaves the entries naming it with the generic
note, "computed in another environment"; so does a reader older than this,
which looks for the record only. Nothing is ever served wrong for it: the
description only explains.

Rejected: the description in the run manifest, which a reader could find only
by listing (a manifest's name holds its ledger, known when the run ends,
after its entries are written); in every entry (5 KB each); and the record
written only when the remote lacks it, which a process cannot know without a
request (a first run on a fresh remote writes it anyway).
"""

from __future__ import annotations

import threading
from typing import Any

import lazyflow.keys.environment as environment
from lazyflow.cache.base import Meta

__all__ = ["CARRIED", "POINTER", "Carrier", "carried"]

CARRIED = "environment"
"""The metadata field of the entry carrying its environment's description."""
POINTER = "env_at"
"""The metadata field naming the entry that carries the description (its key)."""


class Carrier:
    """Which entry carries this process's environment description on one remote."""

    def __init__(self) -> None:
        self._key: str | None = None
        self._lock = threading.Lock()

    def stamp(self, key: str, meta: Meta) -> Meta:
        """``meta`` of a value about to be put under ``key``: the first entry of this
        environment carries its description, later ones name that entry."""
        here = environment.current()
        if meta.get("env") != here.digest or CARRIED in meta or POINTER in meta:
            return meta  # another environment's entry (copied), or stamped already
        with self._lock:
            if self._key is None or self._key == key:
                self._key = key
                return {**meta, CARRIED: here.describe()}
            return {**meta, POINTER: self._key}


def carried(meta: Meta) -> dict[str, Any] | None:
    """The description an entry's metadata carries, if it is a carrier."""
    described = meta.get(CARRIED)
    return described if isinstance(described, dict) else None
