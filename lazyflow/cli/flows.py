"""The commands on a flow's targets: ``run``, ``explain``, ``lineage`` and ``verify``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lazyflow.cli.loading import flow_and_inputs
from lazyflow.cli.options import open_executor, release_executor
from lazyflow.cli.output import UsageError, dump, progress, say, short
from lazyflow.errors import MissingInputError, UnknownInputError, UnknownNodeError


def cmd_run(args: argparse.Namespace) -> int:
    """Compute the targets (``lazyflow run``); exit 1 if a node failed."""
    flow, inputs = flow_and_inputs(args)
    options: dict[str, Any] = {"inputs": inputs}
    executor = open_executor(args)
    if executor is not None:
        options["executor"] = executor
    unsubscribe = (progress(flow) if not args.json and not args.no_progress
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
        release_executor(executor)
    _print_run(run, args, error=run.error)
    return 0 if run.status == "completed" else 1


def _print_run(run: Any, args: argparse.Namespace, error: BaseException | None = None) -> None:
    """The run's values and summary, or with ``--json`` one document; the error on stderr."""
    from lazyflow.history import flush

    flush()
    if args.json:
        dump({"id": run.id, "flow": run.flow, "targets": list(run.targets),
               "status": run.status, "duration": run.duration, "time_saved": run.time_saved,
               "counts": run.counts(),
               "values": {t: short(run.values[t]) for t in run.targets if t in run.values},
               "error": None if error is None else f"{type(error).__name__}: {error}",
               "nodes": [{"node": r.name, "status": r.status, "tier": r.tier,
                          "duration": r.duration, "key": r.key, "reason": r.reason}
                         for r in run.nodes.values()]})
        return
    for target in run.targets:
        if target in run.values:
            say(f"{target} = {short(run.values[target])}")
    say(run.summary())
    say(f"run id {run.id}")
    if error is not None:
        say(f"lazyflow: {type(error).__name__}: {error}", stream=sys.stderr)


def cmd_explain(args: argparse.Namespace) -> int:
    """What would hit, what would run, and why (``lazyflow explain``)."""
    flow, inputs = flow_and_inputs(args)
    explanation = flow.explain(args.target, **inputs)
    if args.json:
        dump({"flow": explanation.flow, "targets": list(explanation.targets),
               "nodes": [{"node": r.node, "action": r.action, "tier": r.tier,
                          "reason": r.reason, "key": r.key, "size": r.size}
                         for r in explanation.rows]})
    else:
        say(str(explanation))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    """The tree behind a cached value (``lazyflow lineage``)."""
    flow, inputs = flow_and_inputs(args)
    tree = flow.lineage(args.target, **inputs)
    if args.json:
        dump(tree.to_dict())
    else:
        say(str(tree))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Recompute a value without the cache and compare (``lazyflow verify``); exit 1 if
    it does not reproduce."""
    flow, inputs = flow_and_inputs(args)
    executor = open_executor(args)
    try:
        result = flow.verify(args.target, executor=executor, inputs=inputs)
    finally:
        release_executor(executor)
    if args.json:
        dump(result.to_dict())
    else:
        say(str(result))
    return 0 if result.ok else 1
