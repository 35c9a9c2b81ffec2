"""The cache and executor options: ``--cache-dir`` and ``--remote`` exported and turned into
a cache, ``--executor`` and ``--scheduler`` into what ``flow.run`` takes, ``--older-than``
into seconds."""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

from lazyflow.cli.output import UsageError


def parse_age(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"`` or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None:
        raise UsageError(f"malformed age {text!r}: use a number with s, m, h, d or w "
                         "(e.g. 30d)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    return float(match.group(1)) * unit


def export_cache_options(args: argparse.Namespace) -> None:
    """Export ``--cache-dir`` and ``--remote`` as ``LAZYFLOW_CACHE_DIR`` and
    ``LAZYFLOW_REMOTE``, so a flow built with the default cache, imported next, uses them."""
    cache_dir = getattr(args, "cache_dir", None)
    if cache_dir:
        if os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
            raise UsageError(f"--cache-dir {cache_dir!r} is a file, not a directory")
        os.environ["LAZYFLOW_CACHE_DIR"] = os.path.abspath(cache_dir)
    if getattr(args, "remote", None):
        os.environ["LAZYFLOW_REMOTE"] = args.remote


def cache_for(args: argparse.Namespace, *, memory: Any = None) -> Any:
    """The cache the options name; settings not given come from the usual sources."""
    from lazyflow.cache.hierarchy import Cache
    from lazyflow.history import default_cache_dir

    return Cache(memory=memory, disk=os.path.abspath(args.cache_dir or default_cache_dir()),
                 **({"remote": args.remote} if args.remote else {}))


def memory_setting(cache: Any) -> Any:
    """Keep the flow's memory budget when its cache is rebuilt for --cache-dir / --remote."""
    memory = next((t for t in cache.tiers if t.name == "memory"), None)
    return None if memory is None else getattr(memory, "max_bytes", None)


def open_executor(args: argparse.Namespace) -> Any:
    """``--executor`` as ``flow.run`` takes it; for Dask, a client connected to the scheduler
    ``--scheduler`` (or ``LAZYFLOW_DASK_SCHEDULER``) names, connected before anything runs."""
    from lazyflow.executors.dask import (
        SCHEDULER_VARIABLE,
        DaskUnavailableError,
        NoClientError,
        client_from_environment,
    )

    if args.scheduler and args.executor not in (None, "dask"):
        raise UsageError(f"--scheduler is for --executor dask, not --executor {args.executor}")
    if args.scheduler:
        os.environ[SCHEDULER_VARIABLE] = args.scheduler
    elif args.executor != "dask":
        return args.executor
    if not os.environ.get(SCHEDULER_VARIABLE):
        raise UsageError("--executor dask needs a scheduler: pass --scheduler "
                         f"tcp://HOST:8786 or set {SCHEDULER_VARIABLE}")
    try:
        return client_from_environment()
    except (DaskUnavailableError, NoClientError) as e:
        raise UsageError(str(e).replace("executor='dask'", "--executor dask")) from None


def release_executor(executor: Any) -> None:
    """Close the Dask client :func:`open_executor` opened (a name needs nothing)."""
    close = getattr(executor, "close", None)
    if callable(close):
        close()
