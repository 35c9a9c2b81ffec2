"""Cache tiers and the hierarchy that stacks them.

Design note
-----------
Two jobs, kept apart as diskcache keeps ``Disk`` from ``Cache``: *where bytes
live* — one small :class:`Tier` protocol (``get``, ``put``, ``contains``,
``meta``, ``delete``) with memory, disk (diskcache) and remote (fsspec)
implementations — and *how a value becomes bytes* (``serialize.py``: pickle
frames with out-of-band buffers, a checksum verified on every read, an encoding
version). The hierarchy (``hierarchy.py``) is built only on the protocol: reads
walk down and promote, writes go to every tier, a tier that fails or passes its
deadline is skipped, never trusted. What the stored entries and records mean is
written down in ``docs/cache-format.md`` (``records.py`` types them); the
memory tier hands out copies (``snapshot.py``) and sizes what values hold
(``sizes.py``). This package knows nothing of graphs or runs.
"""

from lazyflow.cache.base import NO_VALUE, Meta, Tier, TierOfflineError
from lazyflow.cache.hierarchy import Cache
from lazyflow.cache.memory import MemoryTier

__all__ = ["NO_VALUE", "Cache", "Meta", "MemoryTier", "Tier", "TierOfflineError"]
