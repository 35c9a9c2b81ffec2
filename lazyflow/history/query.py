"""Reading the history: :func:`history` lists runs, :func:`find` picks one by id.

Both first :func:`~lazyflow.history.recorder.flush` this process's pending events,
so a run that just returned is listed.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from lazyflow.history.entries import RunEntry, Runs
from lazyflow.history.paths import FILENAME, MEMORY, default_cache_dir, location
from lazyflow.history.recorder import process_recorder
from lazyflow.history.store import Store

if TYPE_CHECKING:
    from lazyflow.api import Flow

__all__ = ["find", "history", "open_store"]


def history(flow: Flow | str | None = None, limit: int | None = 20, *,
            path: str | None = None) -> Runs:
    """The most recent runs, newest first, each with its nodes.

    >>> lf.history(flow, limit=5)                 # doctest: +SKIP
    >>> lf.history().to_frame()                   # doctest: +SKIP

    ``flow`` is a :class:`~lazyflow.Flow` (read beside its cache, its runs
    only), a flow name, or ``None`` for every flow. Without a flow object the
    histories this process has used are read, plus the one in the default
    cache directory (``LAZYFLOW_CACHE_DIR`` or ``./.lazyflow``); ``path`` names
    a history file or cache directory instead.
    """
    writer = process_recorder()
    writer.flush()
    name = flow if isinstance(flow, str) or flow is None else flow.name
    if path is not None:
        stores = [open_store(path)]
    elif flow is not None and not isinstance(flow, str):
        where = location(flow.cache)
        stores = [writer.store(where)] if where else []
    else:
        stores = [writer.store(p) for p in _default_paths()]
    found = [r for s in stores for r in s.runs(flow=name, limit=limit)]
    found.sort(key=lambda r: (r.started, r.id), reverse=True)
    return Runs(found[:limit] if limit is not None else found)


def find(run_id: str, *, path: str | None = None) -> RunEntry:
    """The run whose id is ``run_id`` or starts with it, from the histories :func:`history` reads.

    Raises :class:`~lazyflow.errors.UnknownRunError` (a ``KeyError``) when no run or
    more than one run matches.
    """
    from lazyflow.errors import UnknownRunError

    process_recorder().flush()
    paths = [path] if path is not None else _default_paths()
    found = {r.id: r for p in paths for r in open_store(p).runs(run_id=run_id, limit=None)}
    if len(found) == 1:
        return next(iter(found.values()))
    where = ", ".join(paths) or "no history file"
    if not found:
        raise UnknownRunError(f"no recorded run has id {run_id!r} (searched {where}); "
                              "list runs with `lazyflow runs` or lf.history()")
    raise UnknownRunError(f"run id {run_id!r} is ambiguous: it starts "
                          f"{', '.join(sorted(found))}; give more characters")


def open_store(path: str) -> Store:
    """The :class:`Store` of a history file or of a cache directory holding one."""
    if path != MEMORY and os.path.isdir(path):
        path = os.path.join(path, FILENAME)
    return process_recorder().store(path)


def _default_paths() -> list[str]:
    paths = process_recorder().known_paths()
    default = os.path.join(default_cache_dir(), FILENAME)
    if os.path.exists(default) and default not in paths:
        paths.append(default)
    forced = location(None)
    if forced and forced != MEMORY and forced not in paths:
        paths.append(forced)
    return paths
