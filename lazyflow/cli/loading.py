"""Finding and importing the flow a command names (``MODULE:FLOW``), and its ``-p`` inputs:
parsed, checked against the request and converted by the annotations of the nodes taking
them."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lazyflow.cli.options import cache_for, export_cache_options, memory_setting
from lazyflow.cli.output import UsageError
from lazyflow.model.convert import ConversionError, annotation_of, convert

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
    """The module ``name`` (a dotted name or a path to a ``.py`` file), imported."""
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


def flow_and_inputs(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The flow the command names and its ``-p`` inputs, converted; an unknown target or
    ``-p`` name is a :class:`UsageError` before anything runs."""
    texts = dict(parse_param(p) for p in args.param)
    export_cache_options(args)
    flow = load_flow(args.flow)
    if args.cache_dir or args.remote:
        flow.cache = cache_for(args, memory=memory_setting(flow.cache))
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
