"""The ``notebook run`` command: a notebook rerun headless in a fresh kernel, reported per
cell and node."""

from __future__ import annotations

import argparse
from pathlib import Path

from lazyflow.cli.options import export_cache_options
from lazyflow.cli.output import UsageError, dump, say


def cmd_notebook(args: argparse.Namespace) -> int:
    """Rerun a notebook headless (``lazyflow notebook run``); exit 1 if it failed or,
    with ``--check``, an output changed."""
    from lazyflow.headless import run_notebook

    export_cache_options(args)
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
        dump(report.to_dict())
    else:
        say(str(report))
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
