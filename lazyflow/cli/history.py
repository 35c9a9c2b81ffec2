"""The commands on the run history: ``runs`` lists recorded runs, ``show`` prints one."""

from __future__ import annotations

import argparse
import os

from lazyflow.cli.output import dump, say


def cmd_runs(args: argparse.Namespace) -> int:
    """List recorded runs, newest first (``lazyflow runs``)."""
    from lazyflow.history import history

    runs = history(args.flow, limit=args.limit, path=_history_path(args))
    if args.json:
        dump([r.to_dict() for r in runs])
    elif not runs:
        say(f"no runs recorded in {_history_path(args)}")
    else:
        say(str(runs))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """One recorded run with its nodes (``lazyflow show``)."""
    from lazyflow.history import find

    run = find(args.run_id, path=_history_path(args))
    if args.json:
        dump(run.to_dict())
    else:
        say(run.summary())
    return 0


def _history_path(args: argparse.Namespace) -> str:
    """The history file in ``--cache-dir``; without it, ``LAZYFLOW_HISTORY``'s file or the
    one in the default cache directory."""
    from lazyflow.history import FILENAME, default_cache_dir, location

    forced = location(None)
    if not args.cache_dir and forced not in (None, ":memory:"):
        return str(forced)
    return os.path.join(os.path.abspath(args.cache_dir or default_cache_dir()), FILENAME)
