"""Notebook cells as nodes: what a cell reads and writes, and the function that runs it.

Design note
-----------
A ``%%flow`` cell becomes a node whose key is the cell's *normalized AST*
(comments, blank lines and line numbers do not count) plus the digests of
the values it reads. Reads are found statically: a name loaded before the cell
binds it (free names of functions, lambdas and comprehensions in the cell
count too, conservatively: an extra read only adds a key component, a missed
one could return a wrong value). Writes are the names the cell assigns at top
level (``with ... as f`` and ``except ... as e`` bind resources and
transient errors, not outputs); names bound by ``import``, ``def`` and ``class`` are code, not data:
they are replayed in the user namespace rather than cached.

A read becomes, at definition time (see ``magics.py``): an *edge* when a node
of that name exists (so ``@lf.node`` functions and other cells feed the cell
by name); a *code reference* when its value is a module, function or class
(its fingerprint or ``package==version`` joins the node's version); a *flow
input* otherwise, its current value captured as the parameter's default so the
node stays runnable on its own (after a restart, from another cell).

:class:`CellFunction` executes the compiled cell in a *copy* of the user
namespace with the inputs bound, so a node run on behalf of another request
never clobbers the user's variables; the magic copies the outputs back. What
the cell prints and displays is shown live and recorded for replay on later
hits (``replay.py``). Rejected: wrapping
the cell's source in a generated ``def`` — names the cell assigns would become
locals, which breaks lambdas and generator expressions that read them.
"""

from __future__ import annotations

import ast
import inspect
import linecache
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import xxhash

from lazyflow.errors import OutputError
from lazyflow.fingerprint import DYNAMIC_BUILTINS
from lazyflow.notebook import replay

__all__ = ["DYNAMIC", "CellAnalysis", "CellFunction", "analyse"]



DYNAMIC = DYNAMIC_BUILTINS
"""Builtins through which a cell can read names no static analysis sees (one list for cells
and node code: ``lazyflow.fingerprint.DYNAMIC_BUILTINS``)."""


@dataclass(frozen=True)
class CellAnalysis:
    """What a cell reads and binds, and the digest of its normalized code."""

    reads: tuple[str, ...]
    writes: tuple[str, ...]
    code_names: tuple[str, ...]
    digest: str
    tree: ast.Module

    @property
    def dynamic(self) -> list[str]:
        """Builtins the cell calls that read names by string (its reads are then unknown)."""
        return [name for name in self.reads if name in DYNAMIC]


def analyse(source: str) -> CellAnalysis:
    """Parse a cell; list the names it reads before writing and the names it binds.

    >>> a = analyse("import math\\ny = math.sqrt(x)\\nz = y + 1")
    >>> a.reads, a.writes, a.code_names
    (('x',), ('y', 'z'), ('math',))
    """
    tree = ast.parse(source)
    scan = _Scan()
    for statement in tree.body:
        scan.statement(statement)
    normal = ast.dump(tree, annotate_fields=True, include_attributes=False)
    code = tuple(dict.fromkeys(scan.code_names))
    writes = tuple(n for n in dict.fromkeys(scan.writes) if n not in code)
    return CellAnalysis(tuple(dict.fromkeys(scan.reads)), writes, code,
                        xxhash.xxh3_128_hexdigest(normal.encode()), tree)


class _Scan:
    """Walk top-level statements in execution order, tracking what is bound so far."""

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.reads: list[str] = []
        self.writes: list[str] = []
        self.code_names: list[str] = []

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    self._bind(alias.asname or alias.name.partition(".")[0], code=True)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.bound.add(node.name)  # a function may call itself
            self._reads_in(node, nested=True)
            self._bind(node.name, code=True)
        elif isinstance(node, ast.Assign):
            self.expr(node.value)
            for target in node.targets:
                self.expr(target)
        elif isinstance(node, ast.AugAssign):
            if isinstance(node.target, ast.Name):
                self._read(node.target.id)
            self.expr(node.value)
            self.expr(node.target)
        elif isinstance(node, ast.AnnAssign):
            if node.value is not None:
                self.expr(node.value)
            self.expr(node.target)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.expr(node.iter)
            self.expr(node.target)
            for child in (*node.body, *node.orelse):
                self.statement(child)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.expr(item.context_expr)
                if item.optional_vars is not None:  # a resource (file, lock): not an output
                    for name, _ in _names(item.optional_vars):
                        self.bound.add(name)
            for child in node.body:
                self.statement(child)
        elif isinstance(node, ast.Try):
            for child in node.body:
                self.statement(child)
            for handler in node.handlers:
                if handler.type is not None:
                    self.expr(handler.type)
                if handler.name:  # Python unbinds it after the handler
                    self.bound.add(handler.name)
                for child in handler.body:
                    self.statement(child)
            for child in (*node.orelse, *node.finalbody):
                self.statement(child)
        elif isinstance(node, (ast.If, ast.While)):
            self.expr(node.test)
            for child in (*node.body, *node.orelse):
                self.statement(child)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.writes = [w for w in self.writes if w != target.id]
                else:
                    self.expr(target)
        else:
            self._reads_in(node, nested=False)

    def expr(self, node: ast.AST) -> None:
        self._reads_in(node, nested=False)

    def _reads_in(self, node: ast.AST, *, nested: bool) -> None:
        """Record loads in ``node``; stores bind at top level unless inside a nested scope."""
        for name, ctx in _names(node):
            if isinstance(ctx, ast.Load):
                self._read(name)
            elif not nested:
                self._bind(name)

    def _read(self, name: str) -> None:
        if name not in self.bound:
            self.reads.append(name)

    def _bind(self, name: str, *, code: bool = False) -> None:
        self.bound.add(name)
        (self.code_names if code else self.writes).append(name)


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp,
           ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _names(node: ast.AST) -> Iterator[tuple[str, ast.expr_context]]:
    """(name, context) of every name in ``node``; nested scopes yield only their free loads."""
    if isinstance(node, _SCOPES):
        for name in _free_names(node):
            yield name, ast.Load()
        return
    if isinstance(node, ast.Name):
        yield node.id, node.ctx
        return
    if isinstance(node, ast.NamedExpr):
        yield from _names(node.value)
        yield node.target.id, ast.Store()
        return
    for child in ast.iter_child_nodes(node):
        yield from _names(child)


def _free_names(scope: ast.AST) -> list[str]:
    """Names a function, lambda, class or comprehension loads but does not bind itself."""
    local: set[str] = set()
    declared: set[str] = set()
    loads: list[str] = []
    outside: list[ast.AST] = []  # evaluated in the enclosing scope
    inside: list[ast.AST] = []
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        args = scope.args
        for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if a is not None:
                local.add(a.arg)
                if a.annotation is not None:
                    outside.append(a.annotation)
        outside.extend(d for d in (*args.defaults, *args.kw_defaults) if d is not None)
        if isinstance(scope, ast.Lambda):
            inside.append(scope.body)
        else:
            outside.extend(scope.decorator_list)
            if scope.returns is not None:
                outside.append(scope.returns)
            inside.extend(scope.body)
    elif isinstance(scope, ast.ClassDef):
        outside.extend((*scope.decorator_list, *scope.bases, *scope.keywords))
        inside.extend(scope.body)
    else:  # a comprehension
        comp: Any = scope
        for gen in comp.generators:
            inside.extend((gen.target, gen.iter, *gen.ifs))
        inside.extend([comp.key, comp.value] if isinstance(scope, ast.DictComp) else [comp.elt])
    for part in outside:
        loads.extend(n for n, ctx in _names(part) if isinstance(ctx, ast.Load))
    body_loads: list[str] = []
    for part in inside:
        for name, ctx in _names(part):
            if isinstance(ctx, ast.Load):
                body_loads.append(name)
            else:
                local.add(name)
    for part in inside:  # names declared global or nonlocal are not the scope's own
        for node in ast.walk(part):
            if isinstance(node, (ast.Global, ast.Nonlocal)):
                body_loads.extend(node.names)
                declared.update(node.names)
    local -= declared
    if isinstance(scope, ast.ClassDef):
        # a class body's names are invisible to its methods: keep every load (safe side)
        return loads + body_loads
    for part in inside:  # names a nested def or class binds are local too
        if isinstance(part, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            local.add(part.name)
        elif isinstance(part, (ast.Import, ast.ImportFrom)):
            local.update(a.asname or a.name.partition(".")[0] for a in part.names)
    return loads + [n for n in body_loads if n not in local]


class CellFunction:
    """A compiled cell, callable as a node: keyword inputs in, a dict of outputs out.

    ``params`` maps each parameter to the variable it binds in the cell (they
    differ for a name the cell reads and re-binds). Its signature, built from
    ``params`` and ``defaults``, is what the node wires by name.
    """

    def __init__(self, name: str, source: str, namespace: Mapping[str, Any],
                 params: Mapping[str, str], defaults: Mapping[str, Any],
                 outputs: Sequence[str]) -> None:
        self.__name__ = name
        self.filename = f"<lazyflow cell {name}>"
        # tracebacks show the cell's lines, as IPython does for ordinary cells
        linecache.cache[self.filename] = (len(source), None, source.splitlines(True),
                                          self.filename)
        self.code = compile(source, self.filename, "exec")
        self.namespace = namespace
        self.params = dict(params)
        self.outputs = tuple(outputs)
        self.shown: list[replay.Item] = []  # what the last run printed and displayed
        self.__signature__ = inspect.Signature([
            inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY,
                              default=defaults.get(p, inspect.Parameter.empty))
            for p in self.params])

    def __call__(self, **inputs: Any) -> dict[str, Any] | None:
        scope = dict(self.namespace)
        for param, value in inputs.items():
            scope[self.params[param]] = value
        with replay.recording() as shown:
            exec(self.code, scope)
        self.shown = shown
        if not self.outputs:
            return None
        missing = [o for o in self.outputs if o not in scope]
        if missing:
            raise OutputError(f"cell {self.__name__!r} did not assign {', '.join(missing)}; "
                              "assign it on every path or choose outputs with --out")
        return {o: scope[o] for o in self.outputs}

    def __lazyflow_key__(self) -> str:
        """Its fingerprint: the node's ``version=`` carries the cell's code and references;
        the namespace it runs in is data the analysis turned into inputs."""
        return "lazyflow cell"

    def __repr__(self) -> str:
        return f"<cell {self.__name__}>"
