"""The ``Tier`` protocol: the few primitives every cache tier implements.

Design note
-----------
Following fsspec's ``AbstractFileSystem``, a tier offers a handful of
primitives and everything else (the hierarchy, promotion, statistics) is built
on them in ``hierarchy.py``. A tier stores an *entry* under a key: a value and
a small metadata dict. ``meta`` must answer without loading or unpickling the
value, which is what keeps requests lazy on every tier.

Metadata is a JSON-serialisable mapping, one of the record types of
``lazyflow/records.py`` (which type, the key's domain says); tiers store it
without interpreting it, besides the fields they stamp themselves
(``serialize.stamp``: ``size``, ``stored``, ``serializer``, ``checksum``,
``encoding``...). A *record* is an entry with no value at all (``value is
NO_VALUE``): the hierarchy uses records for its small index of trace keys.

A tier that stops answering (a remote past its deadline) raises
:class:`TierOfflineError` from then on, at once, having warned once itself;
the hierarchy skips it without a further word.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from lazyflow.errors import LazyflowError

__all__ = ["NO_VALUE", "CorruptEntryError", "Meta", "Stored", "Tier", "TierOfflineError"]

Meta = Mapping[str, Any]
"""An entry's metadata: a record type of ``lazyflow/records.py``, read-only once stored."""

Stored = Any
"""Metadata as the hierarchy hands it back (``Cache.lookup``, ``Cache.find_record``).

It is one of the record types of ``lazyflow/records.py``, which the key's domain
decides, typed like the result of ``json.loads`` so that a reader annotates it
with that type at no cost (a ``typing.cast`` is a call, on the path of every
warm request): ``record: TraceRecord | None = cache.find_record(trace)``.
"""


class _NoValue:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_VALUE"

    def __reduce__(self) -> str:
        return "NO_VALUE"


NO_VALUE: Any = _NoValue()
"""Stands for "no value stored": records that carry metadata only."""


class CorruptEntryError(LazyflowError, ValueError):
    """A stored entry does not read back as written (truncated, torn, tampered with,
    changed in place): ``Tier.get`` raises it, and the hierarchy drops the entry."""

    node: str | None = None
    """The entry's node, when its metadata is readable and the tier says (``check``)."""


class TierOfflineError(LazyflowError, OSError):
    """A tier does not answer for now: an operation passed its deadline.

    The tier warned once when it went offline; every later call fails at once
    with this error, so the hierarchy skips the tier (keeping its entries)
    until the tier is asked to try again.
    """


@runtime_checkable
class Tier(Protocol):
    """One level of the cache: memory, local disk or a remote filesystem.

    Implementations must be safe to call from several threads; ``put`` must
    never leave an entry that reads back wrong if it is interrupted. A tier whose
    entry another process may replace between a ``meta`` and a ``get`` also offers
    ``entry(key) -> (value, meta)``, both from one read, which the hierarchy's
    loads prefer (the disk and memory tiers do; a remote entry object names the
    exact content it describes).
    """

    name: str
    """``"memory"``, ``"disk"`` or ``"remote"``: reported as ``NodeRecord.tier``."""

    def contains(self, key: str) -> bool:
        """Whether an entry is stored under ``key``."""
        ...

    def meta(self, key: str) -> Meta | None:
        """The entry's metadata, or ``None``; never loads the value."""
        ...

    def get(self, key: str) -> Any:
        """The entry's value; raises ``KeyError`` when absent, :class:`CorruptEntryError`
        when it does not read back as written."""
        ...

    def put(self, key: str, value: Any, meta: Meta) -> Meta | None:
        """Store ``value`` with ``meta`` under ``key``, atomically.

        Returns the metadata as stored (what ``meta(key)`` now answers, with
        the ``size`` the tier accounts), or ``None`` when the tier kept
        nothing or does not say; the hierarchy then asks ``meta``.
        """
        ...

    def delete(self, key: str) -> None:
        """Remove the entry, if any."""
        ...

    def keys(self) -> Iterator[str]:
        """Every key stored (used by stats, prune and clear)."""
        ...

    def clear(self) -> None:
        """Remove every entry."""
        ...
