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
by name); a *code reference* when its value is a module, function or class; a
*flow input* otherwise, its current value captured as the parameter's default so
the node stays runnable on its own (after a restart, from another cell). A name
bound to nothing then (a builtin, a name not defined yet) stays so.

The node is the cell *as defined*: it runs with the code references it was
defined with, and without names defined since, whoever requests it later. Its
key covers the cell's code compiled over those references alone
(``CellFunction.__wrapped__``), which the fingerprint walks like any node's code
and re-checks on every request: the helpers it calls, the attributes it reads
from a local module (a reload, or a new kernel reading an edited file, is a
change), the modules it imports. Rejected: freezing the references'
fingerprints into the node's ``version=`` at definition while running the live
namespace, which let a request from another cell compute with a redefined
helper and store that under the old helper's key.

:class:`CellFunction` executes the compiled cell in a *copy* of the user
namespace with the inputs bound, so a node run on behalf of another request
never clobbers the user's variables; the magic copies the outputs back. What
the cell prints and displays is shown live and recorded for replay on later
hits (``replay.py``). Rejected: wrapping
the cell's source in a generated ``def`` — names the cell assigns would become
locals, which breaks lambdas and generator expressions that read them.

IPython syntax (``%time x = f()``, ``x = !ls``, ``%%bash``) is first turned
into Python as IPython itself does (``shell.transform_cell``); that Python is
what is analysed and run. The timing magics (``%time``, ``%timeit`` and their
cell forms) only time the code they are given, so that code is analysed as
part of the cell (``%timeit`` runs it in a function of its own: its names are
reads, never outputs). Every other IPython construct (shell commands, other
magics, any other use of ``get_ipython()``) is listed in
:attr:`CellAnalysis.magics`, opaque to the analysis: the magic runs such a
cell uncached. Rejected: stripping ``%`` lines before analysis, which would
key ``x = %sx ls`` as if ``x`` were a constant.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import linecache
import re
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import xxhash

from lazyflow.errors import OutputError
from lazyflow.keys.bytecode import DYNAMIC_BUILTINS
from lazyflow.notebook import replay

__all__ = ["DYNAMIC", "TIMING_MAGICS", "CellAnalysis", "CellFunction", "Magic", "analyse"]


DYNAMIC = DYNAMIC_BUILTINS
"""Builtins through which a cell can read names no static analysis sees (one list for cells
and node code: ``lazyflow.keys.bytecode.DYNAMIC_BUILTINS``)."""

TIMING_MAGICS = frozenset({"time", "timeit"})
"""Magics that only time the code they are given: that code is analysed as part of the cell."""

_TIMEIT_VALUED = frozenset({"-n", "-r", "-p"})  # options whose value may be the next word
_OPTION = re.compile(r"\s*(-[\w-]+)")
_SHOWN_CHARS = 60


@dataclass(frozen=True)
class Magic:
    """An IPython construct in a cell that lazyflow cannot see into.

    ``kind`` is ``"shell"`` (``!cmd``, ``x = !cmd``), ``"line"`` (``%name ...``),
    ``"cell"`` (``%%name``) or ``"shell object"`` (any other use of ``get_ipython()``);
    ``name`` is the magic's name (``"cd"``, ``"bash"``), the method's for a shell
    object, empty for a shell command; ``text`` is the construct as the cell
    spells it, shortened (``"!ls -l"``, ``"%cd /tmp"``, ``"%%bash"``).
    """

    kind: str
    name: str
    text: str


@dataclass(frozen=True)
class CellAnalysis:
    """What a cell reads and binds, and the digest of its normalized code."""

    reads: tuple[str, ...]
    writes: tuple[str, ...]
    code_names: tuple[str, ...]
    digest: str
    tree: ast.Module
    """The cell as analysed: its Python, with timing magics replaced by the code they time."""
    code: str = ""
    """The cell as Python, as IPython runs it (``x = !ls`` -> ``x = get_ipython().getoutput('ls')``)."""
    magics: tuple[Magic, ...] = ()
    """IPython constructs the cell uses that lazyflow cannot see into, in order."""

    @property
    def dynamic(self) -> list[str]:
        """Builtins the cell calls that read names by string (its reads are then unknown)."""
        return [name for name in self.reads if name in DYNAMIC]


def analyse(source: str, transform: Callable[[str], str] | None = None) -> CellAnalysis:
    """Parse a cell; list the names it reads before writing and the names it binds.

    ``transform`` turns IPython syntax into Python (``shell.transform_cell``);
    without it the cell must be plain Python.

    >>> a = analyse("import math\\ny = math.sqrt(x)\\nz = y + 1")
    >>> a.reads, a.writes, a.code_names
    (('x',), ('y', 'z'), ('math',))
    """
    code = transform(source) if transform is not None else source
    tree = ast.parse(code)
    # the digest is of the code that runs: the text a timing magic times is a constant in it
    normal = ast.dump(tree, annotate_fields=True, include_attributes=False)
    unwrap = _Unwrap(transform)
    tree = ast.fix_missing_locations(unwrap.visit(tree))
    scan = _Scan()
    for statement in tree.body:
        scan.statement(statement)
    code_names = tuple(dict.fromkeys(scan.code_names))
    writes = tuple(n for n in dict.fromkeys(scan.writes) if n not in code_names)
    return CellAnalysis(tuple(dict.fromkeys(scan.reads)), writes, code_names,
                        xxhash.xxh3_128_hexdigest(normal.encode()), tree, code,
                        tuple(dict.fromkeys(unwrap.magics)))


class _Unwrap(ast.NodeTransformer):
    """Put the code a timing magic times in its place; list the other IPython constructs.

    ``%time S`` becomes the statements of ``S`` (or, as an expression, its
    expression); ``%timeit S`` becomes a tuple of the names ``S`` reads, since
    it runs ``S`` inside a function of its own.
    """

    def __init__(self, transform: Callable[[str], str] | None) -> None:
        self.transform = transform
        self.magics: list[Magic] = []

    def visit_Expr(self, node: ast.Expr) -> Any:
        timed = self._timed(node.value)
        if timed is None:
            return self.generic_visit(node)
        magic, statements = timed
        if magic == "timeit":
            return ast.Expr(_reads_of(statements))
        return statements

    def visit_Call(self, node: ast.Call) -> Any:
        call = _shell_call(node)
        if call is None:
            return self.generic_visit(node)
        timed = self._timed(node)
        if timed is not None:
            magic, statements = timed
            if magic == "time" and len(statements) == 1 and isinstance(statements[0], ast.Expr):
                return statements[0].value
            return _reads_of(statements)
        self.magics.append(_magic(*call))
        # the arguments are code of the cell; the get_ipython() before the call is accounted for
        node.args = [self.visit(a) for a in node.args]
        node.keywords = [self.visit(k) for k in node.keywords]
        return node

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id == "get_ipython" and isinstance(node.ctx, ast.Load):
            self.magics.append(Magic("shell object", "get_ipython", "get_ipython()"))
        return node

    def _timed(self, node: ast.expr) -> tuple[str, list[ast.stmt]] | None:
        """``(magic, the statements it times, unwrapped)`` if ``node`` calls a timing magic."""
        call = _shell_call(node)
        if call is None or call[0] not in ("run_line_magic", "run_cell_magic"):
            return None
        method, args = call
        texts = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None
                 for a in args]
        if len(texts) != (2 if method == "run_line_magic" else 3) or None in texts \
                or texts[0] not in TIMING_MAGICS:
            return None
        magic, line = texts[0], texts[1]
        assert line is not None  # None in texts returned above
        if method == "run_line_magic":
            timed = _without_options(magic, line)
        else:  # %%timeit's line is setup code run before the cell; %%time's holds options
            setup = _without_options(magic, line) if magic == "timeit" else ""
            timed = None if setup is None else f"{setup}\n{texts[2]}"
        if timed is None:
            return None
        try:
            tree = ast.parse(self.transform(timed) if self.transform is not None else timed)
        except SyntaxError:
            return None  # the magic will say so when it runs; meanwhile it is opaque
        statements: list[ast.stmt] = []
        for statement in tree.body:
            done = self.visit(statement)
            statements.extend(done if isinstance(done, list) else [done])
        return magic, statements


def _shell_call(node: ast.AST) -> tuple[str, list[ast.expr]] | None:
    """``(method, arguments)`` when ``node`` is ``get_ipython().method(...)``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return None
    shell = node.func.value
    if isinstance(shell, ast.Call) and isinstance(shell.func, ast.Name) \
            and shell.func.id == "get_ipython" and not shell.args and not shell.keywords:
        return node.func.attr, node.args
    return None


def _magic(method: str, args: list[ast.expr]) -> Magic:
    """The construct a ``get_ipython().method(*args)`` call stands for, as the cell spells it."""
    texts = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else "..."
             for a in args]
    if method in ("system", "getoutput") and texts:
        return Magic("shell", "", _shortened(f"!{texts[0]}"))
    if method == "run_line_magic" and texts:
        return Magic("line", texts[0], _shortened(f"%{' '.join(texts[:2])}".rstrip()))
    if method == "run_cell_magic" and texts:
        return Magic("cell", texts[0], _shortened(f"%%{' '.join(texts[:2])}".rstrip()))
    return Magic("shell object", method, f"get_ipython().{method}(...)")


def _shortened(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS - 3] + "..."


def _without_options(magic: str, line: str) -> str | None:
    """The statement of a ``%time``/``%timeit`` line, its leading options removed.

    ``None`` for ``%timeit -v NAME``, which writes ``NAME`` into the
    notebook's namespace behind the cell's back.
    """
    rest = line
    while (match := _OPTION.match(rest)) is not None:
        option = match.group(1)
        if magic == "timeit" and option.startswith("-v"):
            return None
        rest = rest[match.end():]
        if magic == "timeit" and option in _TIMEIT_VALUED:
            rest = re.sub(r"^\s*\S+", "", rest, count=1)
    return rest.strip()


def _reads_of(statements: list[ast.stmt]) -> ast.Tuple:
    """A tuple expression loading every name ``statements`` read before binding it."""
    scan = _Scan()
    for statement in statements:
        scan.statement(statement)
    names = dict.fromkeys(scan.reads)
    return ast.Tuple(elts=[ast.Name(id=n, ctx=ast.Load()) for n in names], ctx=ast.Load())


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
    ``params`` and ``defaults``, is what the node wires by name. ``python`` is
    the cell as Python when ``source`` has IPython syntax (``analysis.code``);
    ``shell`` is the IPython shell its ``get_ipython()`` calls reach.

    ``code`` holds the modules, functions and classes the cell reads, as they were
    when it was defined, and ``unbound`` the names it reads that were bound to
    nothing of the notebook's then (builtins, or names not yet defined): the cell
    runs with exactly those, whatever the notebook rebinds later, so its key (which
    walks ``code`` on every request, below) always describes what it runs.
    ``tree`` is the code the key walks (``CellAnalysis.tree``: the statements timing
    magics time in place); ``None`` for a cell that is not cached, whose key serves
    nothing (walking it would only repeat the warning that says why).
    """

    def __init__(self, name: str, source: str, namespace: Mapping[str, Any],
                 params: Mapping[str, str], defaults: Mapping[str, Any],
                 outputs: Sequence[str], *, python: str | None = None,
                 shell: Any = None, code: Mapping[str, Any] | None = None,
                 unbound: Sequence[str] = (), tree: ast.Module | None = None) -> None:
        self.__name__ = name
        self.filename = f"<lazyflow cell {name}>"
        # tracebacks show the cell's lines as written, as IPython does for ordinary cells
        linecache.cache[self.filename] = (len(source), None, source.splitlines(True),
                                          self.filename)
        text = source if python is None else python
        self.code = compile(text, self.filename, "exec")
        self.shell = shell
        self.namespace = namespace
        self.params = dict(params)
        self.outputs = tuple(outputs)
        self.references = dict(code or {})
        self.unbound = tuple(unbound)
        # The fingerprint walks what a callable wraps (``__wrapped__``), re-checked on every
        # request: this function is the cell's code over the references it was defined
        # with, so a helper edited, a module reloaded or a local module's file changed
        # (in a new process) is a change of the key, as for any node's code. Never called.
        if tree is not None:
            self.__wrapped__ = _keyed_code(tree, self.filename, name, self.references)
        self.shown: list[replay.Item] = []  # what the last run printed and displayed
        self.__signature__ = inspect.Signature([
            inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY,
                              default=defaults.get(p, inspect.Parameter.empty))
            for p in self.params])

    def __call__(self, **inputs: Any) -> dict[str, Any] | None:
        __tracebackhide__ = True  # IPython hides this frame from the cell's traceback
        scope = dict(self.namespace)
        scope.update(self.references)
        for name in self.unbound:  # a builtin shadowed, or a name defined, since
            scope.pop(name, None)
        for param, value in inputs.items():
            scope[self.params[param]] = value
        if self.shell is not None:
            cell_shell = _CellShell(self.shell, scope)
            scope["get_ipython"] = lambda: cell_shell
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
        """Its own part of the fingerprint: the node's ``version=`` carries the cell's code
        digest and the fingerprint walks ``__wrapped__`` (its code over its references);
        the namespace it runs in is data the analysis turned into inputs."""
        return "lazyflow cell"

    def __repr__(self) -> str:
        return f"<cell {self.__name__}>"


def _keyed_code(tree: ast.Module, filename: str, name: str,
                references: Mapping[str, Any]) -> types.FunctionType:
    """The cell's code as a function over ``references`` alone, for the fingerprint to walk:
    the names it reads from them (``mymod.scale``), the modules it imports, its helpers.

    Its globals hold nothing else: inputs are keyed as values, and a name bound to
    nothing keys as unbound. ``__name__`` marks it the user's code (``__main__``).
    """
    code = compile(tree, filename, "exec")
    scope: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    scope.update(references)
    keyed = types.FunctionType(code, scope, name)
    keyed.__qualname__ = name  # what warnings name (the code's own name is "<module>")
    return keyed


class _CellShell:
    """``get_ipython()`` inside a running cell: the shell, with the cell's namespace for magics.

    A line magic that reads its caller's names (``%time``) finds the cell's
    namespace on the stack by itself; IPython hands a *cell* magic
    (``%%time``) the notebook's namespace instead, where it would read and
    bind names behind the cell's back. This gives it the cell's.
    """

    def __init__(self, shell: Any, scope: dict[str, Any]) -> None:
        self._shell = shell
        self._scope = scope

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._shell, attr)

    def run_cell_magic(self, name: str, line: str, cell: str) -> Any:
        """Run ``%%name line`` on ``cell``, in the cell's namespace if the magic reads one."""
        shell = self._shell
        magic = shell.find_cell_magic(name)
        if magic is None or not getattr(magic, "needs_local_scope", False) or not cell:
            return shell.run_cell_magic(name, line, cell)  # its own errors and rules
        if not getattr(magic, "_ipython_magic_no_var_expand", False):
            line = shell.var_expand(line, 1)  # $x and {x} as the cell sees them
        with shell.builtin_trap:
            return magic(line, cell, local_ns=self._scope)
