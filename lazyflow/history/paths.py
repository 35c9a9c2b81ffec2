"""Where a history lives: beside the disk tier, in memory, or where ``LAZYFLOW_HISTORY`` says."""

from __future__ import annotations

import os

from lazyflow.cache.hierarchy import Cache

__all__ = ["FILENAME", "MEMORY", "default_cache_dir", "location"]

FILENAME = "history.sqlite"
"""The history file's name inside a cache directory."""
MEMORY = ":memory:"
"""The location of an in-memory history (a flow without a disk tier): this process only."""
_OFF = ("off", "0", "false", "no")


def location(cache: Cache | None) -> str | None:
    """Where the history of runs served by ``cache`` lives.

    ``<disk dir>/history.sqlite`` beside the disk tier; for a cache with no disk
    tier, an in-memory database (this process only). ``LAZYFLOW_HISTORY``
    overrides both with a file path, or ``off`` to record nothing.
    """
    forced = os.environ.get("LAZYFLOW_HISTORY")
    if forced:
        return None if forced.lower() in _OFF else forced
    directory = None if cache is None else cache.disk_directory
    return MEMORY if directory is None else os.path.join(directory, FILENAME)


def default_cache_dir() -> str:
    """Where the default disk tier lives (``LAZYFLOW_CACHE_DIR``, project file, ``./.lazyflow``)."""
    import lazyflow.cache.config as config

    return config.resolve(memory=None, remote=None).disk or os.path.abspath(config.DEFAULT_DISK)
