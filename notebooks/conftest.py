"""The tutorials run under nbval; their kernels inherit this process's environment.

A notebook using the default cache would write ``notebooks/.lazyflow``: point
the default disk tier at a fresh temporary directory instead, so runs of the
suite neither litter the repository nor see each other's entries.

Display updates. nbval (0.11) compares a cell's outputs as soon as the cell
ran, and ignores ``update_display_data``. nbclient, which wrote the stored
outputs (``jupyter nbconvert --execute``), applies each update to the outputs
displayed with that display id, in whichever cell they are. The live widget
is such an output: its saved picture (``text/html``) is replaced when a run
finishes, often in a later cell. So nbval is taught here to do what nbclient
does — record each cell's displays and updates (of that cell's own request,
as nbclient does), apply the updates to the outputs they name — and to
compare a cell whose outputs carry a display id once the notebook's last
collected cell has run, when no later cell can update them any more. A
difference is reported by that last cell, naming the cell that differs.
Rejected: masking the widget's picture in the sanitizer — nbval would then
compare nothing of what a saved notebook shows.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import pytest

try:
    from nbval.kernel import RunningKernel
    from nbval.plugin import IPyNbCell
except ImportError:  # pragma: no cover - nbval is part of the test extra
    RunningKernel = IPyNbCell = None


def pytest_configure(config: pytest.Config) -> None:
    os.environ["LAZYFLOW_CACHE_DIR"] = tempfile.mkdtemp(prefix="lazyflow-nbval-")


class _Displays:
    """What one notebook's kernel displayed with a display id, and the cells still to
    compare. Kept on the kernel: nbval starts one per notebook."""

    def __init__(self) -> None:
        self.request: str | None = None  # the msg_id of the cell being executed
        self.events: list[tuple[str | None, dict[str, Any] | None]] = []
        """This cell's displays ``(display_id, None)`` and updates ``(display_id, content)``,
        in the order they came."""
        self.outputs: dict[str, list[Any]] = {}  # display id -> nbval's outputs showing it
        self.deferred: list[tuple[Any, list[Any], list[Any]]] = []  # (cell, test, reference)

    def record(self, msg: dict[str, Any]) -> None:
        if msg["parent_header"].get("msg_id") != self.request:
            return  # nbclient and nbval both ignore another request's messages
        content = msg["content"]
        display_id = (content.get("transient") or {}).get("display_id")
        if msg["msg_type"] in ("display_data", "execute_result"):
            self.events.append((display_id, None))
        elif msg["msg_type"] == "update_display_data" and display_id:
            self.events.append((display_id, content))

    def replay(self, outputs: list[Any]) -> bool:
        """Apply this cell's events to ``outputs`` (nbval's, in the order it kept them) and
        to earlier cells' outputs; whether any of this cell's outputs has a display id."""
        shown = iter([o for o in outputs
                      if o.get("output_type") in ("display_data", "execute_result")])
        held = False
        for display_id, update in self.events:
            if update is None:
                out = next(shown, None)
                if out is not None and display_id:
                    self.outputs.setdefault(display_id, []).append(out)
                    held = True
            else:
                for out in self.outputs.get(display_id, ()):
                    out["data"], out["metadata"] = update["data"], update.get("metadata", {})
        self.events.clear()
        return held


def _displays(kernel: Any) -> _Displays:
    if not hasattr(kernel, "_lazyflow_displays"):
        kernel._lazyflow_displays = _Displays()
    return kernel._lazyflow_displays


def _teach_nbval_display_updates() -> None:
    execute, receive = RunningKernel.execute_cell_input, RunningKernel.get_message
    compare, runtest = IPyNbCell.compare_outputs, IPyNbCell.runtest

    def execute_cell_input(self: Any, *args: Any, **kwargs: Any) -> str:
        displays = _displays(self)
        displays.events.clear()  # a cell that failed leaves events no output matches
        displays.request = execute(self, *args, **kwargs)
        return displays.request

    def get_message(self: Any, *args: Any, **kwargs: Any) -> Any:
        msg = receive(self, *args, **kwargs)
        _displays(self).record(msg)
        return msg

    def compare_outputs(self: Any, test: list[Any], ref: list[Any],
                        skip_compare: Any = None) -> bool:
        displays = _displays(self.parent.kernel)
        if displays.replay(test):  # later cells may still update it: compare at the end
            displays.deferred.append((self, test, ref))
            return True
        return bool(compare(self, test, ref, skip_compare))

    def run_cell(self: Any) -> None:
        runtest(self)
        displays = _displays(self.parent.kernel)
        displays.replay(self.test_outputs or [])  # a cell nbval did not compare
        mine = [item for item in self.session.items if item.parent is self.parent]
        if self is mine[-1]:
            _compare_deferred(self, displays)

    RunningKernel.execute_cell_input = execute_cell_input
    RunningKernel.get_message = get_message
    IPyNbCell.compare_outputs = compare_outputs
    IPyNbCell.runtest = run_cell

    def _compare_deferred(last: Any, displays: _Displays) -> None:
        failures = []
        for cell, test, ref in displays.deferred:
            if not compare(cell, test, ref):
                failures.append(f"Cell {cell.cell_num}, with the updates later cells made:\n"
                                + "\n".join(cell.comparison_traceback))
        displays.deferred.clear()
        if failures:
            last.raise_cell_error("Cell outputs differ", "\n".join(failures))


if IPyNbCell is not None:
    _teach_nbval_display_updates()
