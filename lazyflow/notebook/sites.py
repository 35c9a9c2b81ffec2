"""Where a node is defined (a file and line, or a notebook cell), and the notebook's name.

Design note
-----------
Defining a node again under its name replaces it (``shared/API.md``):
notebook cells are re-run all the time. A replacement from a *different*
place -- another cell, another file or line -- is more often two things given
one name (two ``%%flow`` cells whose first output is ``summary``), so the
``Flow`` façade warns when a node's definition site changes. A :class:`Site`
is what stays the same when the same definition simply runs again:

- a function from a file: the file and the line of its ``def``;
- a function from a notebook cell, or a ``%%flow`` cell: the cell's id, which
  Jupyter front ends send with every execution request and ipykernel passes
  on to IPython as ``cell_id``.

Not the cell's text (it gets edited), its execution count (it changes on
every run) nor the file name IPython gives the cell's code (ipykernel names it
after a hash of the text, so an edit would look like another cell): those
were the rejected keys. Where the cell's id is unknown (a terminal IPython, a
front end that sends none) or the code has no file (``exec`` of a string,
lazyflow's own wrappers), the site is unknown and nothing is warned: a
warning must not be wrong.

State. The current cell's id comes from IPython's ``pre_run_cell`` event
(``info.cell_id``), listened to from ``%load_ext lazyflow`` or from the
first site asked for in a shell (so later cells are known), else from the
kernel's current request (ipykernel's ``get_parent()``). IPython is never
imported here: it is used only when the process already runs it.

The notebook's name (for the notebook's own flow, ``lf.default_flow()``)
comes from what front ends leave in the kernel: VS Code's
``__vsc_ipynb_file__``, ipykernel's ``__session__`` or Jupyter's
``JPY_SESSION_NAME`` (the notebook's path).
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Site", "current_cell", "definition_site", "notebook_name", "watch_cells"]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_NOTEBOOK_PATHS = ("__vsc_ipynb_file__", "__session__")
"""Names front ends bind in the kernel's namespace to the notebook's path, most exact first."""


@dataclass(frozen=True, slots=True)
class Site:
    """A place where a node is defined: ``identity`` is equal for the same place,
    ``label`` names it in a message (``"analysis.py:12"``, ``"cell In[3]"``)."""

    identity: tuple[str, ...]
    label: str


@dataclass(slots=True)
class _Cell:
    """The cell the shell is running now (set by ``pre_run_cell``, cleared after it)."""

    id: str | None = None
    count: int = 0


_RUNNING = _Cell()


def definition_site(func: Callable[..., Any]) -> Site | None:
    """Where ``func`` was defined: its file and line, or the notebook cell running now when
    it comes from a cell; ``None`` when that cannot be told for sure."""
    try:
        code = inspect.unwrap(func).__code__
    except (AttributeError, ValueError):  # a callable object or a partial: no code of its own
        return None
    filename = code.co_filename
    if filename.startswith(_PACKAGE):  # lazyflow's own wrappers (sub-flows, selectors)
        return None
    if _is_cell_code(filename):
        return current_cell()
    if filename.startswith("<"):  # exec'd text: no place to come back to
        return None
    path, shown = _place(filename)
    return Site(("file", path, str(code.co_firstlineno)), f"{shown}:{code.co_firstlineno}")


def current_cell() -> Site | None:
    """The notebook cell being run now, when the front end says which it is; else ``None``."""
    shell = _shell()
    if shell is None:
        return None
    watch_cells(shell)
    cell_id, count = (_RUNNING.id, _RUNNING.count) if _RUNNING.id else _kernel_cell(shell)
    if not cell_id:
        return None
    return Site(("cell", cell_id), f"cell In[{count}]")


def watch_cells(shell: Any) -> None:
    """Follow which cell ``shell`` runs (idempotent): ``%load_ext lazyflow`` calls it."""
    callbacks = shell.events.callbacks
    if _on_pre_run_cell not in callbacks.get("pre_run_cell", ()):
        shell.events.register("pre_run_cell", _on_pre_run_cell)
        shell.events.register("post_run_cell", _on_post_run_cell)


def notebook_name() -> str | None:
    """The running notebook's file name without ``.ipynb``, when the front end tells it."""
    shell = _shell()
    main = sys.modules.get("__main__")
    namespace = shell.user_ns if shell is not None else vars(main) if main is not None else {}
    candidates = [namespace.get(name) for name in _NOTEBOOK_PATHS]
    candidates.append(os.environ.get("JPY_SESSION_NAME"))
    for path in candidates:
        if isinstance(path, str) and path.endswith(".ipynb"):
            return Path(path).stem
    return None


# --------------------------------------------------------------------------- internals


def _on_pre_run_cell(info: Any) -> None:
    shell = _shell()
    count = 0 if shell is None else shell.execution_count
    # a cell stored in the history has already counted itself when the event fires
    _RUNNING.id = getattr(info, "cell_id", None)
    _RUNNING.count = count - 1 if getattr(info, "store_history", False) else count


def _on_post_run_cell(result: Any) -> None:
    _RUNNING.id = None


def _kernel_cell(shell: Any) -> tuple[str | None, int]:
    """The cell id of the kernel's current execute request (ipykernel), if any."""
    get_parent = getattr(shell, "get_parent", None)
    if not callable(get_parent):
        return None, 0
    try:
        metadata = get_parent().get("metadata") or {}
    except Exception:  # an ipykernel without that request at hand: no id
        return None, 0
    cell_id = metadata.get("cellId")
    return (str(cell_id) if cell_id else None), shell.execution_count - 1


def _is_cell_code(filename: str) -> bool:
    """Whether IPython compiled ``filename`` from a cell (``<ipython-input-...>``, or the
    file name ipykernel gives a cell)."""
    shell = _shell()
    compiler = getattr(shell, "compile", None)
    format_code_name = getattr(compiler, "format_code_name", None)
    return callable(format_code_name) and format_code_name(filename) is not None


def _shell() -> Any:
    """The running IPython shell, without importing IPython where it does not run."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    return get_ipython() if callable(get_ipython) else None


_PLACES: dict[tuple[str, str], tuple[str, str]] = {}
"""(file name, working directory) -> (absolute path, as shown): every node of a module
shares its file, whose ``abspath`` and ``relpath`` took half of building a graph (~6 µs
a node); keyed by the working directory too, on which both depend."""


def _place(filename: str) -> tuple[str, str]:
    """The absolute path of a code's file, and how a message shows it."""
    where = (filename, os.getcwd())
    found = _PLACES.get(where)
    if found is None:
        if len(_PLACES) >= 4096:  # files, not nodes: a bound that real use never meets
            _PLACES.clear()
        found = _PLACES[where] = (os.path.abspath(filename), _shown(filename))
    return found


def _shown(filename: str) -> str:
    """A file as a message names it: relative to the working directory when under it."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        return filename
    return filename if relative.startswith("..") else relative
