"""The ``lazyflow`` command: run, explain, lineage, verify, runs, show, cache, notebook, graph.

Design note
-----------
A thin layer over the public API: each command parses its arguments, loads
what it needs, calls one library function and prints either a readable table
or, with ``--json``, one JSON document on stdout. Nothing here computes
anything the library cannot.

Layout. One module per job, each importing only those below it:
``output.py`` what is printed (plain text off a terminal, JSON, the progress
bar) and a usage error as one line; ``options.py`` the cache and executor
options; ``loading.py`` the flow a command names and its ``-p`` inputs; then
one module per group of commands: ``flows.py`` (run, explain, lineage,
verify), ``history.py`` (runs, show), ``cache.py``, ``graph.py``,
``notebook.py``. This module builds the parser and maps errors to exit codes
(:func:`main`); it re-exports the names the command line always offered
(:func:`load_flow`, :func:`parse_param`, ...).

Exit codes: 0 success; 1 the work itself failed (a node raised, verify found
a divergence, ``cache verify`` found a damaged or unreadable entry, a
notebook's outputs changed); 2 the command was wrong — a bad argument, a bad
``MODULE:FLOW`` path or a module that does not import, unknown target,
malformed ``-p`` parameter, a ``-p`` that no node takes or whose value does
not convert, missing input, a bad ``lazyflow.toml``, a file that is no
notebook, a Dask scheduler that does not answer, a delete of a remote cache
without ``--yes`` — always with one line on stderr (``lazyflow: error:
...``), never a traceback, argparse's own errors included. Messages about
inputs are spelled for the command line (``pass -p path=...``), not for
Python.

Deleting (``cache clear``, ``cache prune``) from a remote cache, however it
is configured (``--remote``, ``LAZYFLOW_REMOTE``, ``lazyflow.toml``), needs
``--yes``; without it the command names the remote and exits 2 having
deleted nothing, not even the local tiers (``Cache.clear(confirm=...)``
decides, so Python and ``%flow cache clear`` follow the same rule).

Output is plain text: what lazyflow prints carries no ANSI colour or cursor
codes unless the stream is a terminal (a kernel's coloured traceback in a
notebook report is stripped when piped), and the progress bar is tqdm's only
on a terminal, one line per node otherwise.

``-p name=value`` values are text until the flow is loaded: then each is
checked against the request (an unknown name exits 2 before anything runs)
and converted by :func:`lazyflow.model.convert.convert` following the
annotation of the first planned node taking it (``n: int``, ``verbose:
bool``, ``mode: Literal["fast", "slow"]``, an ``Enum`` by name...).

Flows are named ``MODULE:FLOW`` where MODULE is a dotted module name
(importable from the current directory) or a path to a ``.py`` file, and
FLOW the name of a :class:`~lazyflow.Flow` in it (optional when the module
holds exactly one). ``--cache-dir`` and ``--remote`` are exported as
``LAZYFLOW_CACHE_DIR`` / ``LAZYFLOW_REMOTE`` before the module is imported,
so flows built with the default cache pick them up; a flow built with an
explicit cache is given ``lf.Cache(disk=..., remote=...)`` instead.
``--scheduler tcp://host:8786`` is exported as ``LAZYFLOW_DASK_SCHEDULER``
(and implies ``--executor dask``): the Dask executor connects there.

Rejected: click. argparse is in the standard library and gives ``--help``
on every subcommand; the CLI adds no dependency to ``import lazyflow``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from lazyflow._version import __version__
from lazyflow.cache.config import ConfigError
from lazyflow.cli.cache import cmd_cache as cmd_cache
from lazyflow.cli.flows import cmd_explain as cmd_explain
from lazyflow.cli.flows import cmd_lineage as cmd_lineage
from lazyflow.cli.flows import cmd_run as cmd_run
from lazyflow.cli.flows import cmd_verify as cmd_verify
from lazyflow.cli.graph import cmd_graph as cmd_graph
from lazyflow.cli.history import cmd_runs as cmd_runs
from lazyflow.cli.history import cmd_show as cmd_show
from lazyflow.cli.loading import CLI_SPELLING as CLI_SPELLING
from lazyflow.cli.loading import load_flow as load_flow
from lazyflow.cli.loading import parse_param as parse_param
from lazyflow.cli.notebook import cmd_notebook as cmd_notebook
from lazyflow.cli.options import parse_age as parse_age
from lazyflow.cli.output import UsageError as UsageError
from lazyflow.cli.output import fail, say
from lazyflow.errors import (
    ConfirmationError,
    LazyflowError,
    MissingInputError,
    UnknownInputError,
    UnknownNodeError,
    UnknownRunError,
)

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse whose own errors (an unknown option, a missing argument) are one line on
    stderr with exit code 2, like every other usage error."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render ``--help``)."""
    parser = _Parser(
        prog="lazyflow", description="Run, explain, trace and verify lazyflow flows; "
        "inspect run history and the cache; rerun notebooks headless.")
    parser.add_argument("--version", action="version", version=f"lazyflow {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def flow_command(name: str, help: str, *, many: bool = False) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help, description=help)
        p.add_argument("flow", metavar="MODULE:FLOW",
                       help="module (dotted name or path/to/file.py) and flow variable")
        if many:
            p.add_argument("targets", metavar="TARGET", nargs="+", help="nodes to compute")
        else:
            p.add_argument("target", metavar="TARGET", help="the node")
        p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                       help="a flow input (repeatable); VALUE is converted to the parameter's "
                       "annotated type (int, float, bool, Path, Literal, Enum by name...), "
                       "else read as a Python literal or a string")
        _cache_options(p)
        p.add_argument("--json", action="store_true", help="print JSON instead of tables")
        return p

    run = flow_command("run", "compute targets (cached nodes are not recomputed)", many=True)
    _executor_options(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(handler=cmd_run)
    flow_command("explain", "dry run: what would hit, what would run, and why"
                 ).set_defaults(handler=cmd_explain)
    flow_command("lineage", "the tree of inputs, code and parameters behind a cached value"
                 ).set_defaults(handler=cmd_lineage)
    verify = flow_command("verify", "recompute a value's ancestry without the cache and "
                          "compare (exit 1 if it does not reproduce)")
    _executor_options(verify)
    verify.set_defaults(handler=cmd_verify)

    runs = commands.add_parser("runs", help="list recorded runs, newest first",
                               description="list recorded runs, newest first")
    runs.add_argument("--flow", default=None, help="only runs of this flow")
    runs.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    _cache_options(runs, remote=False)
    runs.add_argument("--json", action="store_true", help="print JSON")
    runs.set_defaults(handler=cmd_runs)

    show = commands.add_parser("show", help="one recorded run with its nodes",
                               description="one recorded run with its nodes")
    show.add_argument("run_id", metavar="RUN_ID", help="a run id or a unique prefix of one")
    _cache_options(show, remote=False)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=cmd_show)

    cache = commands.add_parser("cache", help="cache stats, prune, clear, verify",
                                description="inspect and manage the cache")
    actions = cache.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help in (("stats", "entries, bytes and hits per tier"),
                       ("prune", "evict entries by size and age"),
                       ("clear", "remove every entry (of one tier)"),
                       ("verify", "check stored bytes against their checksums; report damage "
                        "(exit 1), delete it only with --drop")):
        p = actions.add_parser(name, help=help, description=_DESCRIPTIONS.get(name, help))
        _cache_options(p)
        p.add_argument("--json", action="store_true", help="print JSON")
        if name == "prune":
            p.add_argument("--max-size", default=None, help="e.g. 10GB")
            p.add_argument("--older-than", default=None, help="e.g. 30d, 12h")
        if name in ("prune", "clear"):
            p.add_argument("--yes", action="store_true",
                           help="confirm deleting from the remote cache (shared with everyone "
                           "who uses it); without it a remote is never touched and the command "
                           "exits 2 having deleted nothing")
        if name in ("prune", "clear", "verify"):
            p.add_argument("--tier", default=None, help="memory, disk or remote")
        if name == "verify":
            p.add_argument("--drop", action="store_true",
                           help="delete the damaged entries (never those that are only "
                           "unreadable, e.g. for want of permissions)")
        p.set_defaults(handler=cmd_cache)

    help = "draw a flow's DAG as SVG (flow inputs dashed, return annotations shown)"
    graph = commands.add_parser("graph", help=help, description=help)
    graph.add_argument("file", metavar="FILE", help="path/to/script.py or a dotted module")
    graph.add_argument("--flow", metavar="NAME", help="the flow, if FILE holds several")
    graph.add_argument("--out", metavar="PATH", help="write the SVG here, e.g. dag.svg")
    graph.set_defaults(handler=cmd_graph)

    notebook = commands.add_parser("notebook", help="run a notebook headless",
                                   description="run notebooks headless")
    nb_actions = notebook.add_subparsers(dest="action", metavar="ACTION", required=True)
    nb_run = nb_actions.add_parser(
        "run", help="execute a notebook in a fresh kernel; report per cell and node",
        description="execute a notebook in a fresh kernel and report, per cell and node, "
        "what was cached or run, the time taken and the time saved")
    nb_run.add_argument("notebook", metavar="NOTEBOOK.ipynb")
    nb_run.add_argument("--check", action="store_true",
                        help="exit 1 if any output differs from the one stored in the file")
    nb_run.add_argument("--output", default=None,
                        help="write the executed notebook here (may be the same file)")
    nb_run.add_argument("--timeout", type=float, default=600, help="seconds per cell")
    _cache_options(nb_run)
    nb_run.add_argument("--json", action="store_true", help="print JSON")
    nb_run.set_defaults(handler=cmd_notebook)
    return parser


_DESCRIPTIONS = {
    "verify": "Check every stored entry's bytes against the checksum stored with it. Nothing "
    "is unpickled, so an entry whose value is of a class this process cannot import (a "
    "colleague's project module) is checked like any other and kept when intact. Prints a "
    "line per tier and one per damaged entry (bytes changed, value file or object missing, "
    "metadata unreadable); exit code 1 when any entry is damaged or could not be read. "
    "Damaged entries are kept unless --drop is given.",
}


def _executor_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", default=None,
                   help="sync (default), threads, processes or dask")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="the Dask scheduler to run on, e.g. tcp://host:8786 (implies --executor "
                   "dask; default: $LAZYFLOW_DASK_SCHEDULER)")


def _cache_options(p: argparse.ArgumentParser, *, remote: bool = True) -> None:
    p.add_argument("--cache-dir", default=None,
                   help="disk cache directory (default: $LAZYFLOW_CACHE_DIR or ./.lazyflow)")
    if remote:
        p.add_argument("--remote", default=None, help="remote cache URL, e.g. s3://bucket/lf")
    else:
        p.set_defaults(remote=None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lazyflow`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except BrokenPipeError:  # `lazyflow runs | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except MissingInputError as e:
        fail(str(e.respelled(CLI_SPELLING)))
    except ConfirmationError as e:
        fail(str(e.respelled(f"lazyflow cache {args.action}", "--yes", "--tier {tier}")))
    except UnknownInputError as e:  # the command line takes no run option through -p
        fail(str(e.respelled(CLI_SPELLING, options=False)))
    except (UsageError, UnknownNodeError, UnknownRunError, ConfigError) as e:
        fail(str(e))
    except LazyflowError as e:
        say(f"lazyflow: {type(e).__name__}: {e}", stream=sys.stderr)
        return 1
