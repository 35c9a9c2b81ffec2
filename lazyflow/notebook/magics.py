"""The IPython extension: ``%%flow`` cells as cached nodes, and the ``%flow`` line magic.

Design note
-----------
``%%flow`` turns the cell into a node of the notebook's flow (``cells.py``
says how reads and writes are found), adds it (replacing the cell's previous
definition, as re-running a cell does; a node another cell defined is
replaced with a warning naming both cells, ``sites.py``) and requests it. On a miss the cell
runs and prints as usual, and what it printed and displayed (``replay.py``)
is kept in a cache *record* next to the entry (so it lives in the same tiers, survives a restart with the disk
tier, and is never part of the value or the DAG). On a hit nothing runs: the
outputs are copied into the user namespace, one line says which tier served
them and how much compute that saved, and the recorded outputs (text,
tables, figures) are shown again in their order.

The cell is requested by its own node, not its output selectors: one load
restores every output, and the cell's record (tier, key) is in the run.
``import``/``def``/``class`` statements of the cell are re-executed in the
user namespace either way, since modules and functions are code, not data.

A cell with IPython syntax is analysed and run as the Python IPython makes
of it. Shell commands (``!ls``, ``x = !ls``, ``%sx``, ``%%bash``) and magics
that touch files, the environment or the working directory (``%run``,
``%env``, ``%cd``, ...) make the cell's result depend on the outside world;
any other magic but the timing ones is opaque to lazyflow. Either way the
cell runs uncached, with one ``CacheWarning`` naming the cell and the
construct: a hit must be what the cell would compute now, and lazyflow
cannot tell that for those. Rejected: caching them and keying the command
text, which would serve yesterday's ``!ls`` today.

``%flow cache clear`` deletes from a remote tier only with ``--yes``
(``Cache.clear(confirm=...)`` decides, as for Python and the CLI).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shlex
import types
from collections.abc import Mapping
from typing import Any

import xxhash
from IPython.core.alias import Alias
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

import lazyflow.keys as keys
from lazyflow.api import Flow, default_flow
from lazyflow.errors import CacheWarning, ConfirmationError, HashingError, warn
from lazyflow.keys.hashing import hash_value
from lazyflow.model.graph import Node
from lazyflow.notebook import replay
from lazyflow.notebook.cells import CellAnalysis, CellFunction, Magic, analyse
from lazyflow.notebook.sites import current_cell, watch_cells
from lazyflow.records import ShownRecord
from lazyflow.run import NodeRecord, format_duration

__all__ = ["RESTORED_NOTICE", "FlowMagics", "cell_node", "load", "shown_key"]

_SHOWN_DOMAIN = keys.domain(keys.Domain.SHOWN)  # the record of what a cell printed and displayed
RESTORED_NOTICE = re.compile(
    r"^lazyflow: .* restored from the \w+ cache \(.*; saved .* of compute\)\n", re.MULTILINE)
"""The line a hit prints before replaying the cell's outputs (a rerun's check ignores it)."""
_SHELL_MAGICS = frozenset({"!", "sx", "system", "sc", "bash", "sh", "script"})
"""Magics that run a shell command (aliases such as ``%ls`` do too)."""
_OUTSIDE_MAGICS = frozenset({
    "run", "env", "set_env", "cd", "pushd", "popd", "bookmark", "load", "loadpy", "save",
    "store", "writefile", "file", "pip", "conda", "mamba", "micromamba", "uv", "python",
    "python2", "python3", "pypy", "perl", "ruby", "killbgscripts"})
"""Other magics that read or change files, the environment, the working directory or
other processes."""
_HISTORY = frozenset({"In", "Out", "_ih", "_oh", "_dh"})
"""IPython's input, output and directory history: the shell's own names, changed by every
cell run behind the analysis' back (a cell reading one is not cached)."""
_LINE_USAGE = ("usage: %flow show | explain NAME [k=v ...] | get NAME [k=v ...] | "
               "watch NAME [k=v ...] | cache stats | cache clear [--tier NAME] [--yes]   "
               "[--flow VAR]")


def load(shell: Any) -> None:
    """Register the magics with an IPython shell (what ``%load_ext lazyflow`` calls)."""
    shell.register_magics(FlowMagics)
    watch_cells(shell)  # which cell defines a node: a replacement from another cell warns


def cell_node(name: str, source: str, analysis: CellAnalysis, namespace: Mapping[str, Any],
              hidden: Mapping[str, Any], flow: Flow, outputs: tuple[str, ...],
              cache: bool = True, shell: Any = None) -> Node:
    """The node of a cell: edges for names that are nodes, inputs for values, code as defined.

    ``shell`` is the IPython shell that runs the cell's magics, if it has any.
    """
    params: dict[str, str] = {}
    defaults: dict[str, Any] = {}
    code: dict[str, Any] = {}
    unbound: list[str] = []
    for var in analysis.reads:
        if var in flow and var not in outputs:
            params[var] = var
            continue
        if var not in namespace:
            unbound.append(var)  # a builtin, or unbound: the cell itself will say NameError
            continue
        if var in hidden and namespace[var] is hidden[var]:
            continue
        value = namespace[var]
        if isinstance(value, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
                              type)):
            code[var] = value  # code: run as defined, keyed by its fingerprint (cells.py)
            continue
        # a name the cell also assigns must not wire to the cell's own output node
        param = f"{var}__prev" if var in outputs else var
        params[param] = var
        defaults[param] = value
    func = CellFunction(name, source, namespace, params, defaults, outputs,
                        python=analysis.code or None, shell=shell, code=code,
                        unbound=unbound, tree=analysis.tree if cache else None)
    options = {"outputs": outputs} if outputs else None
    return Node(func, name=name, version=analysis.digest, cache=cache, options=options)


def _cell_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="%%flow", add_help=False, exit_on_error=False)
    parser.add_argument("--name")
    parser.add_argument("--out")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--flow")
    return parser


@magics_class
class FlowMagics(Magics):
    """``%%flow [--name NAME] [--out a,b] [--no-cache] [--flow VAR]`` and ``%flow ...``."""

    @property
    def _shell(self) -> Any:
        assert self.shell is not None, "FlowMagics is registered with a shell"
        return self.shell

    @line_cell_magic
    def flow(self, line: str, cell: str | None = None) -> Any:
        """Make this cell a cached node (``%%flow``), or inspect the flow (``%flow``)."""
        __tracebackhide__ = True  # IPython leaves lazyflow's frames out of a cell's traceback
        if cell is None:
            return self._line(line)
        return self._cell(line, cell)

    # ----------------------------------------------------------------- %%flow

    def _cell(self, line: str, source: str) -> None:
        __tracebackhide__ = True
        try:
            args, extra = _cell_parser().parse_known_args(shlex.split(line))
        except (argparse.ArgumentError, ValueError) as e:
            raise UsageError(f"%%flow: {e}") from None
        if extra:
            raise UsageError(f"%%flow: unknown option(s) {' '.join(extra)}; "
                             "use --name NAME, --out a,b, --no-cache, --flow VAR")
        flow = self._flow(args.flow)
        analysis = self._analyse(source)
        ns = self._shell.user_ns
        outputs = tuple(o.strip() for o in args.out.split(",") if o.strip()) if args.out \
            else tuple(w for w in analysis.writes if not w.startswith("_"))
        name = args.name or (f"cell_{outputs[0]}" if outputs else f"cell_{analysis.digest[:8]}")
        cache = not args.no_cache
        why = _why_not_cached(name, analysis, ns, self._shell) if cache else None
        if why is not None:
            warn(why, CacheWarning)
            cache = False
        node = cell_node(name, source, analysis, ns, self._shell.user_ns_hidden, flow, outputs,
                         cache=cache, shell=self._shell)
        flow.add(node, site=current_cell())
        try:
            run = flow.run(name)
        except HashingError as e:
            if e.node == name and hasattr(e, "add_note"):  # Python 3.11+
                e.add_note("in a %%flow cell: leave that name out of the outputs with "
                           "--out a,b, or run the cell with --no-cache")
            raise
        value = run[name]
        _keep_or_replay_outputs(flow, node, run.nodes[name], outputs)
        if isinstance(value, dict):
            ns.update(value)
        self._define_code(analysis)

    def _analyse(self, source: str) -> CellAnalysis:
        """The cell's analysis, its IPython syntax turned into Python as IPython does."""
        analysis = analyse(source, self._shell.transform_cell)
        if _awaits_at_top_level(analysis.tree):
            raise UsageError("%%flow: this cell uses await (or async for/with) outside a "
                             "function, which %%flow cells do not support yet; run it as an "
                             "ordinary cell, without %%flow")
        return analysis

    def _define_code(self, analysis: CellAnalysis) -> None:
        code = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        statements: list[ast.stmt] = [s for s in analysis.tree.body if isinstance(s, code)]
        if statements:
            module = ast.Module(body=statements, type_ignores=[])
            exec(compile(module, "<lazyflow cell code>", "exec"), self._shell.user_ns)

    # ----------------------------------------------------------------- %flow

    def _line(self, line: str) -> Any:
        words = shlex.split(line)
        flow_var = None
        if "--flow" in words:
            at = words.index("--flow")
            if at + 1 >= len(words):
                raise UsageError("%flow: --flow needs a variable name")
            flow_var = words[at + 1]
            del words[at:at + 2]
        flow = self._flow(flow_var)
        command, rest = (words[0], words[1:]) if words else ("", [])
        if command == "show" and not rest:
            from IPython.display import display

            display(flow.widget())
            return None
        if command in ("explain", "get", "watch") and rest:
            inputs = self._inputs(rest[1:])
            if command == "explain":
                print(flow.explain(rest[0], **inputs))
                return None
            if command == "watch":
                # k=v also reaches watch's own options (max_runs=, poll=, interval=);
                # Ctrl-C (Jupyter's interrupt) ends it and the last run is the cell's result
                return flow.watch(rest[0], **inputs)
            return flow.get(rest[0], **inputs)
        if command == "cache" and rest == ["stats"]:
            print(_stats_table(flow.cache.stats()))
            return None
        if command == "cache" and rest[:1] == ["clear"]:
            _clear(flow, rest[1:])
            return None
        raise UsageError(_LINE_USAGE)

    def _inputs(self, pairs: list[str]) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        for pair in pairs:
            key, eq, expr = pair.partition("=")
            if not eq or not key.isidentifier():
                raise UsageError(f"%flow: expected k=v, got {pair!r} ({_LINE_USAGE})")
            inputs[key] = self._shell.ev(expr)
        return inputs

    def _flow(self, var: str | None) -> Flow:
        if var is None:
            return default_flow()
        value = self._shell.user_ns.get(var)
        if not isinstance(value, Flow):
            raise UsageError(f"--flow {var}: {var!r} is not a lazyflow Flow in this notebook "
                             f"(got {type(value).__name__}); create it with lf.Flow(...)")
        return value


def _clear(flow: Flow, options: list[str]) -> None:
    """``%flow cache clear [--tier NAME] [--yes]``: a remote tier only with ``--yes``."""
    yes = "--yes" in options
    rest = [o for o in options if o != "--yes"]
    if rest and (len(rest) != 2 or rest[0] != "--tier"):
        raise UsageError(_LINE_USAGE)
    tier = rest[1] if rest else None
    try:
        flow.cache.clear(tier, confirm=yes)
    except ConfirmationError as e:
        raise UsageError(str(e.respelled("%flow cache clear", "--yes", "--tier {tier}"))
                         ) from None
    except KeyError as e:
        raise UsageError(f"%flow cache clear: {e.args[0]}") from None
    print(f"lazyflow: cleared {'every cache tier' if tier is None else f'the {tier} tier'} "
          f"of flow {flow.name!r}")


def _why_not_cached(cell: str, analysis: CellAnalysis, ns: Mapping[str, Any],
                    shell: Any) -> str | None:
    """Why a cell cannot be cached, as one warning naming it and the constructs; else None."""
    reasons = []
    dynamic = [n for n in analysis.dynamic if n not in ns]  # not shadowed by the user
    if dynamic:
        reasons.append(f"cell {cell!r} calls {', '.join(dynamic)}, which can read names that "
                       "static analysis cannot see, so it is run without caching; pass the "
                       "values as plain names to cache it")
    hidden = shell.user_ns_hidden
    history = [n for n in analysis.reads
               if n in _HISTORY and n in ns and n in hidden and ns[n] is hidden[n]]
    if history:
        reasons.append(f"cell {cell!r} reads IPython's history ({', '.join(history)}), which "
                       "every cell run changes, so it is not cached; assign what it needs "
                       "to a name in an ordinary cell to cache it")
    outside = [(magic, _reaching_outside(magic, shell)) for magic in analysis.magics]
    reaching = [how for _, how in outside if how]
    if reaching:
        reasons.append(f"cell {cell!r} {' and '.join(reaching)}: its result depends on the "
                       "outside world, so it is not cached")
    opaque = [magic.text for magic, how in outside if not how]
    if opaque:
        reasons.append(f"cell {cell!r} uses {', '.join(opaque)}, which lazyflow cannot see "
                       "into, so it is not cached; move that to an ordinary cell (without "
                       "%%flow) to cache this one")
    return "; ".join(reasons) or None


def _reaching_outside(magic: Magic, shell: Any) -> str:
    """How ``magic`` reaches outside the process (``"runs a shell command (!ls)"``), or ``""``."""
    if magic.kind == "shell":
        return f"runs a shell command ({magic.text})"
    if magic.kind not in ("line", "cell"):
        return ""
    if magic.name in _SHELL_MAGICS or (
            magic.kind == "line" and isinstance(shell.find_line_magic(magic.name), Alias)):
        return f"runs a shell command ({magic.text})"
    return f"uses {magic.text}" if magic.name in _OUTSIDE_MAGICS else ""


def _awaits_at_top_level(tree: ast.Module) -> bool:
    """True if the cell awaits outside a function (IPython runs such a cell in its event loop)."""
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)) \
                or (isinstance(node, ast.comprehension) and node.is_async):
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))  # a function's body awaits in its own time
    return False


def shown_key(content_key: str) -> str:
    """Where the outputs a cell showed are recorded: beside the entry under ``content_key``."""
    return xxhash.xxh3_128_hexdigest(f"{_SHOWN_DOMAIN}{content_key}".encode())


def _keep_or_replay_outputs(flow: Flow, node: Node, record: NodeRecord,
                            outputs: tuple[str, ...]) -> None:
    """After a miss, keep what the cell showed; after a hit, say so and show it again."""
    if record.status == "completed":
        assert isinstance(node.func, CellFunction)
        shown = node.func.shown
        if node.cache and shown and record.key is not None:
            kept: ShownRecord = {"digest": hash_value(json.dumps(shown)), "shown": shown}
            flow.cache.record(shown_key(record.key), kept)
        return
    print(f"lazyflow: {', '.join(outputs) or 'cell'} restored from the {record.tier} cache "
          f"({node.name}; saved {format_duration(record.saved)} of compute)")
    found: ShownRecord | None = None if record.key is None else \
        flow.cache.find_record(shown_key(record.key))
    if found:
        replay.replay(found["shown"])


def _stats_table(stats: Mapping[str, Mapping[str, int]]) -> str:
    columns = sorted({c for row in stats.values() for c in row})
    lines = ["tier      " + "".join(f"{c:>10}" for c in columns)]
    for tier, row in stats.items():
        lines.append(f"{tier:<10}" + "".join(f"{row.get(c, ''):>10}" for c in columns))
    return "\n".join(lines)
