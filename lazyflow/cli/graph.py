"""The ``graph`` command: a flow's DAG as SVG, on stdout or in a file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lazyflow.cli.loading import load_flow
from lazyflow.cli.output import UsageError


def cmd_graph(args: argparse.Namespace) -> int:
    """The flow's DAG as SVG (``lazyflow graph``), on stdout or in ``--out``."""
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
