"""What the command prints: text without ANSI codes off a terminal, JSON, the progress bar,
and a usage error as one line on stderr with exit code 2."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn, TextIO

from lazyflow.errors import LazyflowError


class UsageError(LazyflowError, ValueError):
    """The command line was wrong: exit code 2 with the message."""


def fail(message: str) -> NoReturn:
    """``message`` as one ``lazyflow: error: ...`` line on stderr, then exit code 2."""
    say(f"lazyflow: error: {' '.join(message.split())}", stream=sys.stderr)
    raise SystemExit(2)


_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
"""An ANSI escape sequence: colours, bold, cursor moves (``ESC [ params final``)."""
_ANSI_IN_JSON = re.compile(r"\\u001b\[[0-?]*[ -/]*[@-~]")


def say(text: str, *, stream: TextIO | None = None) -> None:
    """Print ``text`` (on stdout unless ``stream``), without ANSI codes unless the stream
    is a terminal: piped output and log files get plain text."""
    out = sys.stdout if stream is None else stream
    print(text if is_terminal(out) else _ANSI.sub("", text), file=out)


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (a replaced or closed stream is not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def dump(data: Any) -> None:
    """One JSON document on stdout; data never carries colour codes (a kernel's traceback)."""
    sys.stdout.write(_ANSI_IN_JSON.sub("", json.dumps(data, indent=2, default=str)) + "\n")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, indent: str = "",
          right: Sequence[bool] | None = None) -> str:
    """Rows as aligned columns under ``header``: text left-aligned, numbers right-aligned
    (a column is numeric when every value in it is an ``int`` or ``float``; ``right``
    says per column instead).

    >>> print(table(("flow", "entries"), [("team", 12), ("etl", 3)]))
    flow  entries
    team       12
    etl         3
    """
    body = [list(row) for row in rows]
    numeric = list(right) if right is not None else [all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool)
                   for row in body) and bool(body) for i in range(len(header))]
    cells = [list(header), *[[str(value) for value in row] for row in body]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [indent + "  ".join(cell.rjust(width) if right else cell.ljust(width)
                                for cell, width, right in zip(row, widths, numeric, strict=True)
                                ).rstrip() for row in cells]
    return "\n".join(lines)


def short(value: Any) -> str:
    """``repr(value)``, cut to 200 characters."""
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def progress(flow: Any) -> Callable[[], None]:
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
    if tqdm is None or not is_terminal(sys.stderr):
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
