"""Cache tiers and the hierarchy that stacks them (see ``hierarchy.py``)."""

from lazyflow.cache.base import NO_VALUE, Meta, Tier, TierOfflineError
from lazyflow.cache.hierarchy import Cache
from lazyflow.cache.memory import MemoryTier

__all__ = ["NO_VALUE", "Cache", "Meta", "MemoryTier", "Tier", "TierOfflineError"]
