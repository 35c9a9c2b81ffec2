"""The ``lazyflow`` command: run, explain, lineage, verify, runs, show, cache, notebook, graph.

Design note
-----------
A thin layer over the public API: each command parses its arguments, loads
what it needs, calls one library function and prints either a readable table
or, with ``--json``, one JSON document on stdout. Nothing here computes
anything the library cannot.

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
import importlib
import importlib.util
import inspect
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from lazyflow._version import __version__
from lazyflow.cache.config import ConfigError
from lazyflow.errors import (
    ConfirmationError,
    LazyflowError,
    MissingInputError,
    UnknownInputError,
    UnknownNodeError,
    UnknownRunError,
)
from lazyflow.model.convert import ConversionError, annotation_of, convert

__all__ = ["main"]


class UsageError(LazyflowError, ValueError):
    """The command line was wrong: exit code 2 with the message."""


class _Parser(argparse.ArgumentParser):
    """argparse whose own errors (an unknown option, a missing argument) are one line on
    stderr with exit code 2, like every other usage error."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see {self.prog} --help)")


# --------------------------------------------------------------------------- argument helpers


CLI_SPELLING = "-p {name}=..."
"""How messages about inputs tell a command-line user to pass one."""


def parse_param(text: str) -> tuple[str, str]:
    """``name=value`` -> (name, value text); the value is converted once the flow is known.

    >>> parse_param("n=10"), parse_param("path=a=b.csv")
    (('n', '10'), ('path', 'a=b.csv'))
    """
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise UsageError(f"malformed parameter {text!r}: write -p name=value "
                         "(e.g. -p n=10 or -p path=data.csv)")
    return name, raw


def parse_age(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"`` or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None:
        raise UsageError(f"malformed age {text!r}: use a number with s, m, h, d or w "
                         "(e.g. 30d)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    return float(match.group(1)) * unit


def load_flow(spec: str) -> Any:
    """Import ``MODULE[:FLOW]`` and return the flow; :class:`UsageError` says what is wrong."""
    from lazyflow.api import Flow

    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise UsageError(f"bad flow {spec!r}: write MODULE:FLOW, e.g. analysis:flow "
                         "or path/to/analysis.py:flow")
    module = _import(module_name)
    if attr:
        flow = getattr(module, attr, None)
        if not isinstance(flow, Flow):
            found = [n for n, v in vars(module).items() if isinstance(v, Flow)]
            raise UsageError(f"{module_name} has no flow named {attr!r}; flows there: "
                             f"{', '.join(found) or 'none'}")
        return flow
    flows = {n: v for n, v in vars(module).items() if isinstance(v, Flow)}
    if len(flows) != 1:
        raise UsageError(f"{module_name} holds {len(flows)} flows"
                         f"{' (' + ', '.join(flows) + ')' if flows else ''}; "
                         "name one as MODULE:FLOW")
    return next(iter(flows.values()))


def _import(name: str) -> Any:
    if name.endswith(".py") or os.sep in name or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise UsageError(f"no such file {name!r}: give a path to a .py file or a dotted "
                             "module name importable from the current directory")
        sys.path.insert(0, str(path.resolve().parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the user's module failed: one line, where and why
            raise UsageError(_import_failure(name, e)) from None
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            raise UsageError(f"no module named {name!r} (looked in {os.getcwd()} and on "
                             "sys.path); give a dotted module name or a path to a .py file"
                             ) from None
        raise UsageError(_import_failure(name, e)) from None
    except Exception as e:
        raise UsageError(_import_failure(name, e)) from None


def _import_failure(name: str, error: Exception) -> str:
    """One line saying why importing the flow's module failed, and where."""
    if isinstance(error, SyntaxError):
        return (f"cannot import {name}: {error.msg} ({error.filename}, line {error.lineno})")
    frames = traceback.extract_tb(error.__traceback__)
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return f"importing {name} failed: {type(error).__name__}: {error}{where}"


# --------------------------------------------------------------------------- commands


def _flow_and_inputs(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    texts = dict(parse_param(p) for p in args.param)
    _export_cache_options(args)
    flow = load_flow(args.flow)
    if args.cache_dir or args.remote:
        flow.cache = _cache(args, memory=_memory_setting(flow.cache))
    targets = getattr(args, "targets", None) or [args.target]
    for target in targets:
        flow[target]  # unknown targets fail before anything runs
    flow.check_inputs(targets, texts)  # so do unknown -p names, before values are judged
    return flow, _converted(flow, targets, texts)


def _converted(flow: Any, targets: Sequence[str], texts: dict[str, str]) -> dict[str, Any]:
    """Each ``-p`` text converted by the annotation of the first planned node taking it
    (of any node of the flow, for an input this request does not need)."""
    planned = flow.flow_inputs(targets)
    values = {}
    for name, text in texts.items():
        node, annotation = _annotation(flow, planned.get(name) or flow.flow_inputs()[name], name)
        try:
            values[name] = convert(text, annotation)
        except ConversionError as e:
            raise UsageError(f"bad value for -p {name}: {text!r} is not {e.expected} "
                             f"(parameter {name!r} of node {node!r})") from None
    return values


def _annotation(flow: Any, owners: Sequence[str], name: str) -> tuple[str, Any]:
    """The first of ``owners`` (nodes taking ``name``) that annotates it, with the annotation;
    else the first owner and no annotation."""
    for owner in owners:
        annotation = annotation_of(flow[owner].func, name)
        if annotation is not _EMPTY:
            return owner, annotation
    return owners[0], _EMPTY


_EMPTY = inspect.Parameter.empty


def _memory_setting(cache: Any) -> Any:
    """Keep the flow's memory budget when its cache is rebuilt for --cache-dir / --remote."""
    memory = next((t for t in cache.tiers if t.name == "memory"), None)
    return None if memory is None else getattr(memory, "max_bytes", None)


def _export_cache_options(args: argparse.Namespace) -> None:
    cache_dir = getattr(args, "cache_dir", None)
    if cache_dir:
        if os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
            raise UsageError(f"--cache-dir {cache_dir!r} is a file, not a directory")
        os.environ["LAZYFLOW_CACHE_DIR"] = os.path.abspath(cache_dir)
    if getattr(args, "remote", None):
        os.environ["LAZYFLOW_REMOTE"] = args.remote


def _executor(args: argparse.Namespace) -> Any:
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


def _release(executor: Any) -> None:
    """Close the Dask client :func:`_executor` opened (a name needs nothing)."""
    close = getattr(executor, "close", None)
    if callable(close):
        close()


def _cache(args: argparse.Namespace, *, memory: Any = None) -> Any:
    """The cache the options name; settings not given come from the usual sources."""
    from lazyflow.cache.hierarchy import Cache
    from lazyflow.history import default_cache_dir

    return Cache(memory=memory, disk=os.path.abspath(args.cache_dir or default_cache_dir()),
                 **({"remote": args.remote} if args.remote else {}))


def cmd_run(args: argparse.Namespace) -> int:
    flow, inputs = _flow_and_inputs(args)
    options: dict[str, Any] = {"inputs": inputs}
    executor = _executor(args)
    if executor is not None:
        options["executor"] = executor
    unsubscribe = (_progress(flow) if not args.json and not args.no_progress
                   else (lambda: None))
    try:
        run = flow.run(args.targets, **options)
    except (UnknownNodeError, MissingInputError, UnknownInputError):
        raise
    except Exception as e:
        run = flow.last_run
        if run is None or not run.nodes:
            raise UsageError(f"{type(e).__name__}: {e}") from None
        _print_run(run, args, error=e)
        return 1
    finally:
        unsubscribe()
        _release(executor)
    _print_run(run, args, error=run.error)
    return 0 if run.status == "completed" else 1


def _print_run(run: Any, args: argparse.Namespace, error: BaseException | None = None) -> None:
    from lazyflow.history import flush

    flush()
    if args.json:
        _dump({"id": run.id, "flow": run.flow, "targets": list(run.targets),
               "status": run.status, "duration": run.duration, "time_saved": run.time_saved,
               "counts": run.counts(),
               "values": {t: _short(run.values[t]) for t in run.targets if t in run.values},
               "error": None if error is None else f"{type(error).__name__}: {error}",
               "nodes": [{"node": r.name, "status": r.status, "tier": r.tier,
                          "duration": r.duration, "key": r.key, "reason": r.reason}
                         for r in run.nodes.values()]})
        return
    for target in run.targets:
        if target in run.values:
            _say(f"{target} = {_short(run.values[target])}")
    _say(run.summary())
    _say(f"run id {run.id}")
    if error is not None:
        _say(f"lazyflow: {type(error).__name__}: {error}", stream=sys.stderr)


def _progress(flow: Any) -> Callable[[], None]:
    """Draw a progress bar on stderr from the flow's events; returns the unsubscribe."""
    from lazyflow.engine.events import NodeFinished, RunFinished, RunStarted

    state: dict[str, Any] = {}

    def on_event(event: Any) -> None:
        if isinstance(event, RunStarted):
            state["bar"] = _bar(len(event.run.nodes))
        elif isinstance(event, NodeFinished) and "bar" in state:
            state["bar"](f"{event.record.name} {event.record.status}")
        elif isinstance(event, RunFinished) and "bar" in state:
            state.pop("bar")(None)

    unsubscribe: Callable[[], None] = flow.events.subscribe(on_event)
    return unsubscribe


def _bar(total: int) -> Callable[[str | None], None]:
    """tqdm's bar on a terminal; elsewhere (a pipe, a log file) one plain line per node."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or not _is_terminal(sys.stderr):
        done = [0]

        def plain(label: str | None) -> None:
            if label is not None:
                done[0] += 1
                print(f"[{done[0]}/{total}] {label}", file=sys.stderr)

        return plain
    bar = tqdm(total=total, unit="node", file=sys.stderr)

    def fancy(label: str | None) -> None:
        if label is None:
            bar.close()
        else:
            bar.set_postfix_str(label, refresh=False)
            bar.update(1)

    return fancy


def cmd_explain(args: argparse.Namespace) -> int:
    flow, inputs = _flow_and_inputs(args)
    explanation = flow.explain(args.target, **inputs)
    if args.json:
        _dump({"flow": explanation.flow, "targets": list(explanation.targets),
               "nodes": [{"node": r.node, "action": r.action, "tier": r.tier,
                          "reason": r.reason, "key": r.key, "size": r.size}
                         for r in explanation.rows]})
    else:
        _say(str(explanation))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    flow, inputs = _flow_and_inputs(args)
    tree = flow.lineage(args.target, **inputs)
    if args.json:
        _dump(tree.to_dict())
    else:
        _say(str(tree))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    flow, inputs = _flow_and_inputs(args)
    executor = _executor(args)
    try:
        result = flow.verify(args.target, executor=executor, inputs=inputs)
    finally:
        _release(executor)
    if args.json:
        _dump(result.to_dict())
    else:
        _say(str(result))
    return 0 if result.ok else 1


def cmd_runs(args: argparse.Namespace) -> int:
    from lazyflow.history import history

    runs = history(args.flow, limit=args.limit, path=_history_path(args))
    if args.json:
        _dump([r.to_dict() for r in runs])
    elif not runs:
        _say(f"no runs recorded in {_history_path(args)}")
    else:
        _say(str(runs))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from lazyflow.history import find

    run = find(args.run_id, path=_history_path(args))
    if args.json:
        _dump(run.to_dict())
    else:
        _say(run.summary())
    return 0


def _history_path(args: argparse.Namespace) -> str:
    from lazyflow.history import FILENAME, default_cache_dir, location

    forced = location(None)
    if not args.cache_dir and forced not in (None, ":memory:"):
        return str(forced)
    return os.path.join(os.path.abspath(args.cache_dir or default_cache_dir()), FILENAME)


def cmd_cache(args: argparse.Namespace) -> int:
    from lazyflow.cache.sizes import format_size, parse_size

    cache = _cache(args)
    chosen = _tiers(cache, args)
    status = 0
    if args.action == "stats":
        report: Any = cache.stats()
        text = "\n".join(f"{tier:<8} " + "  ".join(
            f"{k} {format_size(v) if k == 'bytes' else v}" for k, v in facts.items())
            for tier, facts in report.items())
    elif args.action == "prune":
        if args.max_size is None and args.older_than is None:
            raise UsageError("cache prune needs --max-size and/or --older-than")
        try:
            max_size = None if args.max_size is None else parse_size(args.max_size,
                                                                      what="--max-size")
        except ValueError as e:
            raise UsageError(str(e)) from None
        older = None if args.older_than is None else parse_age(args.older_than)
        report = cache.prune(max_size=max_size, older_than=older, tier=args.tier,
                             confirm=args.yes)
        text = f"pruned: {report}"
    elif args.action == "clear":
        cache.clear(tier=args.tier, confirm=args.yes)
        report = {"cleared": args.tier or "all"}
        text = f"cleared {args.tier or 'every'} tier: {', '.join(map(_named, chosen))}"
    else:
        from lazyflow.provenance import verify_cache

        report = verify_cache(cache, tier=args.tier, drop=args.drop)
        text = _verification(report)
        if any(r["damaged"] or r["unreadable"] for r in report.values()):
            status = 1
    if args.json:
        _dump(report)
    else:
        _say(text)
    return status


def _tiers(cache: Any, args: argparse.Namespace) -> list[Any]:
    """The tiers ``--tier`` names (all without it); a tier the cache lacks is a usage error."""
    name = getattr(args, "tier", None)
    try:
        return list(cache.tiers) if name is None else [cache.tier(name)]
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None


def _named(tier: Any) -> str:
    """A tier as ``cache clear`` reports it: the remote with its URL, the disk with its path."""
    where = getattr(tier, "url", None) or getattr(tier, "directory", None)
    return f"{tier.name} ({where})" if where else str(tier.name)


def _verification(report: dict[str, dict[str, Any]]) -> str:
    """``cache verify``'s report: a line per tier, then a line per damaged or unreadable entry."""
    lines = []
    for tier, r in report.items():
        if r["skipped"]:
            lines.append(f"{tier:<8} {r['skipped']} live objects, no stored bytes: not checked")
            continue
        summary = f"{tier:<8} checked {r['checked']}: {r['intact']} intact"
        summary += f", {len(r['damaged'])} damaged"
        if r["unreadable"]:
            summary += f", {len(r['unreadable'])} unreadable (kept)"
        if r["dropped"]:
            summary += f", {len(r['dropped'])} dropped"
        elif r["damaged"]:
            summary += " (kept: rerun with --drop to delete them)"
        lines.append(summary)
        for finding in r["damaged"]:
            lines.append(_finding_line("damaged", finding))
        for finding in r["unreadable"]:
            lines.append(_finding_line("unreadable", finding))
    return "\n".join(lines)


def _finding_line(kind: str, finding: dict[str, Any]) -> str:
    node = f"node {finding['node']!r}: " if finding["node"] else ""
    return f"  {kind:<10} {finding['key']}  {node}{finding['problem']}"


def cmd_graph(args: argparse.Namespace) -> int:
    spec = args.file if args.flow is None else f"{args.file}:{args.flow}"
    try:
        flow = load_flow(spec)
    except UsageError:
        raise
    except Exception as e:  # the script itself is broken: say so in one line
        raise UsageError(f"cannot load {args.file!r}: {type(e).__name__}: {e}") from None
    svg = flow.to_svg()
    if args.out is None:
        sys.stdout.write(svg + "\n")
        return 0
    try:
        Path(args.out).write_text(svg, encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot write {args.out!r}: {e.strerror or e}") from None
    nodes, inputs = len(flow), len(flow.flow_inputs())
    print(f"wrote {args.out}: flow {flow.name!r}, {nodes} node{'s' * (nodes != 1)}, "
          f"{inputs} input{'s' * (inputs != 1)}")
    return 0


def cmd_notebook(args: argparse.Namespace) -> int:
    from lazyflow.headless import run_notebook

    _export_cache_options(args)
    path = _readable_notebook(args.notebook)
    if args.output is not None and not Path(args.output).resolve().parent.is_dir():
        raise UsageError(f"--output {args.output!r}: no such directory "
                         f"{str(Path(args.output).parent)!r}")
    try:
        report = run_notebook(path, check=args.check, output=args.output, timeout=args.timeout)
    except Exception as e:
        if type(e).__name__ != "NoSuchKernel":  # the notebook names a kernel not installed
            raise
        raise UsageError(f"{args.notebook}: {e}; install that kernel or change the notebook's "
                         "kernelspec") from None
    if args.json:
        _dump(report.to_dict())
    else:
        _say(str(report))
    return 0 if report.ok else 1


def _readable_notebook(name: str) -> Path:
    """The notebook file ``name``, read and validated once: :class:`UsageError` in one line
    if it is missing or not a valid notebook (no jsonschema traceback)."""
    import nbformat

    path = Path(name)
    if not path.is_file():
        raise UsageError(f"no such notebook {name!r}")
    try:
        nbformat.validate(nbformat.read(path, as_version=4))  # type: ignore[no-untyped-call]
    # nbformat raises NotJSONError, jsonschema's ValidationError, and AttributeError or
    # KeyError for JSON of another shape; reading may fail with OSError or UnicodeError
    except Exception as e:
        message = getattr(e, "message", None) or str(e) or type(e).__name__
        raise UsageError(f"{name} is not a valid notebook: {message.strip().splitlines()[0]}"
                         ) from None
    return path


# --------------------------------------------------------------------------- parser


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
        _fail(str(e.respelled(CLI_SPELLING)))
    except ConfirmationError as e:
        _fail(str(e.respelled(f"lazyflow cache {args.action}", "--yes", "--tier {tier}")))
    except UnknownInputError as e:  # the command line takes no run option through -p
        _fail(str(e.respelled(CLI_SPELLING, options=False)))
    except (UsageError, UnknownNodeError, UnknownRunError, ConfigError) as e:
        _fail(str(e))
    except LazyflowError as e:
        _say(f"lazyflow: {type(e).__name__}: {e}", stream=sys.stderr)
        return 1


def _fail(message: str) -> NoReturn:
    _say(f"lazyflow: error: {' '.join(message.split())}", stream=sys.stderr)
    raise SystemExit(2)


_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
"""An ANSI escape sequence: colours, bold, cursor moves (``ESC [ params final``)."""
_ANSI_IN_JSON = re.compile(r"\\u001b\[[0-?]*[ -/]*[@-~]")


def _say(text: str, *, stream: TextIO | None = None) -> None:
    """Print ``text`` (on stdout unless ``stream``), without ANSI codes unless the stream
    is a terminal: piped output and log files get plain text."""
    out = sys.stdout if stream is None else stream
    print(text if _is_terminal(out) else _ANSI.sub("", text), file=out)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def _dump(data: Any) -> None:
    """One JSON document on stdout; data never carries colour codes (a kernel's traceback)."""
    sys.stdout.write(_ANSI_IN_JSON.sub("", json.dumps(data, indent=2, default=str)) + "\n")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
