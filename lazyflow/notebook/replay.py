"""What a ``%%flow`` cell showed: recorded while it runs, shown again on a cache hit.

Design note
-----------
Policy. While a cell runs, what it prints is teed (shown live and recorded)
and every rich output it publishes through IPython's display publisher
(``display(...)``, an HTML table, an image, a matplotlib figure) is passed on
and recorded, all in one ordered list, so a hit shows text and pictures again
in the order the first run showed them. Figures that matplotlib's inline
backend would draw only after the cell (no ``plt.show()``) are flushed inside
the recording, so they are recorded too. Updates of an earlier display
(``update_display``) are shown but not recorded: on a hit the display they
would update is not there.

State. A recording is a plain list of items, ``{"stdout": text}`` or
``{"data": {mime: payload}, "metadata": {...}}``, kept JSON-safe (bytes as
base64 under a marker key) because it is stored as a cache record, which
every tier keeps as JSON.

Rejected: IPython's ``capture_output``, which swallows outputs instead of
showing them while the cell runs.
"""

from __future__ import annotations

import base64
import contextlib
import io
import sys
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["Item", "recording", "replay"]

Item = dict[str, Any]
"""One recorded output: ``{"stdout": text}`` or ``{"data": ..., "metadata": ...}``."""

_BYTES = "__lazyflow_base64__"


@contextlib.contextmanager
def recording() -> Iterator[list[Item]]:
    """Record what the block prints and displays, while still showing it; yield the list."""
    items: list[Item] = []
    tee = _Tee(sys.stdout, items)
    publisher = _publisher()
    patched = publisher is not None and "publish" not in vars(publisher)
    if patched:
        original = publisher.publish

        def publish(data: Mapping[str, Any], metadata: Mapping[str, Any] | None = None,
                    *args: Any, **kwargs: Any) -> Any:
            if not kwargs.get("update"):
                items.append({"data": _encode(dict(data)),
                              "metadata": _encode(dict(metadata or {}))})
            tee.recording = False  # a terminal shows a display as text: not the cell's stdout
            try:
                return original(data, metadata, *args, **kwargs)
            finally:
                tee.recording = True

        publisher.publish = publish
    try:
        with contextlib.redirect_stdout(tee):
            yield items
            _flush_inline_figures()
    finally:
        if patched:
            del publisher.publish


def replay(items: list[Item]) -> None:
    """Show recorded outputs again, in order: text on stdout, rich outputs as displays."""
    for item in items:
        if "stdout" in item:
            print(item["stdout"], end="")
            continue
        publisher = _publisher()
        if publisher is not None:
            sys.stdout.flush()  # text printed before a display stays before it
            publisher.publish(_decode(item["data"]), _decode(item["metadata"]))


def _publisher() -> Any:
    """The running IPython shell's display publisher, if any."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return getattr(shell, "display_pub", None)


def _flush_inline_figures() -> None:
    """Draw figures matplotlib's inline backend holds for the end of the cell, now."""
    backend = sys.modules.get("matplotlib_inline.backend_inline")
    matplotlib = sys.modules.get("matplotlib")
    if backend is None or matplotlib is None or "inline" not in matplotlib.get_backend():
        return
    backend.flush_figures()


def _encode(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_BYTES: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _BYTES in value:
            return base64.b64decode(value[_BYTES])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class _Tee(io.TextIOBase):
    """Write to the real stdout and to the recording (consecutive writes share one item)."""

    def __init__(self, stream: Any, items: list[Item]) -> None:
        self.stream = stream
        self.items = items
        self.recording = True

    def write(self, text: str) -> int:
        if not self.recording:
            pass
        elif self.items and "stdout" in self.items[-1]:
            self.items[-1]["stdout"] += text
        else:
            self.items.append({"stdout": text})
        return int(self.stream.write(text))

    def flush(self) -> None:
        self.stream.flush()
