"""The :class:`Flow` façade: a graph of nodes with a cache, and the requests users make.

Design note
-----------
``graph.py`` defines nodes and plans and knows nothing of caches or runs; the
engine answers plans; history, provenance, watching, sub-flows and the
notebook views sit on the engine. :class:`Flow` is where they meet: it adds a
cache, an event bus and the request methods (``get``, ``run``, ``explain``,
``submit``, ``watch``, ``lineage``, ``verify``, ``widget``, ``to_svg``) to
:class:`~lazyflow.model.graph.Graph`, each a thin call into the module that does
the work. Being on top, it imports them all, so none of them needs to import
it (they type it under ``TYPE_CHECKING``); only the front ends (``%%flow``,
the CLI) and the package's lazy re-exports sit above it.

Defining a node again replaces it; :meth:`Flow.add` also remembers where
each node was defined (``notebook/sites.py``) and warns when a replacement
comes from another place (another cell, file or line), which is more often
two things given one name than an edit.

The run history starts listening on the process's first run
(:func:`~lazyflow.history.start_recording`), not when a module is imported:
``import lazyflow`` starts no thread and subscribes nothing.

Rejected: keeping ``Flow`` in ``graph.py`` with function-local imports of the
engine and the layers above it; each was a cycle in disguise (the model
importing what is built on it).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import lazyflow.engine as engine
import lazyflow.provenance as provenance
import lazyflow.subflow as subflow
import lazyflow.watch as watch
from lazyflow.cache.hierarchy import Cache
from lazyflow.engine.cancel import CancelToken
from lazyflow.engine.events import EventBus
from lazyflow.errors import DefinitionWarning, SkippedError, SkippedWarning, warn
from lazyflow.handle import RunHandle
from lazyflow.history import start_recording
from lazyflow.model.graph import Graph, Node
from lazyflow.notebook.progress import show_progress
from lazyflow.notebook.sites import Site, definition_site, notebook_name
from lazyflow.render.display import flow_html, flow_mimebundle, flow_svg
from lazyflow.render.model import requested
from lazyflow.run import has_value

if TYPE_CHECKING:
    from lazyflow.model.resources import Resources
    from lazyflow.provenance import Lineage, Verification
    from lazyflow.run import Explanation, Run

__all__ = ["Flow", "default_flow", "node"]

F = TypeVar("F", bound=Callable[..., Any])

RUN_OPTIONS = ("executor", "max_workers", "cancel", "overrides", "observers", "progress",
               "resources")
"""The options of :meth:`Flow.run` (keyword-only): every other keyword is a flow input."""
REQUEST_OPTIONS = (*RUN_OPTIONS, "strict", "inputs")
"""What a request takes besides flow inputs: ``explain`` and ``submit`` accept these too."""


class Flow(Graph):
    """A named graph of nodes with a cache.

    >>> flow = Flow("demo", cache=None)
    >>> @flow.node
    ... def raw(n: int): return list(range(n))
    >>> @flow.node
    ... def total(raw): return sum(raw)
    >>> flow.get("total", n=10)
    45
    """

    request_options = REQUEST_OPTIONS  # suggested for a misspelt keyword of a request

    def __init__(self, name: str = "flow", cache: Cache | None | str = "default") -> None:
        if isinstance(cache, str) and cache != "default":
            raise TypeError(f"cache= takes an lf.Cache, None (memory only) or 'default', "
                            f"got {cache!r}")
        super().__init__(name)
        self.cache: Cache = Cache() if isinstance(cache, str) \
            else (cache or Cache(disk=None, remote=None))
        self.events: EventBus = EventBus()
        self.last_run: Run | None = None
        self._sites: dict[str, Site | None] = {}  # node -> where it was defined

    # ----------------------------------------------------------------- definition

    def add(self, node: Node, *, site: Site | None = None) -> Node:
        """Add (or replace) a built :class:`Node`; ``site`` says where it is defined
        (default: its function's file and line, or the notebook cell running now).

        A node replacing one of its name that was defined somewhere else (another
        cell, file or line) warns with :class:`~lazyflow.DefinitionWarning` naming
        both places; running the same definition again does not.
        """
        site = site or definition_site(node.func)
        previous = self._sites.get(node.name) if node.name in self else None
        if site is not None and previous is not None and site.identity != previous.identity:
            warn(f"node {node.name!r} defined in {site.label} replaces node {node.name!r} "
                 f"defined in {previous.label}; if both are meant to exist, give one "
                 "another name (@flow.node(name=...), or %%flow --name NAME)",
                 DefinitionWarning)
        self._sites[node.name] = site
        return super().add(node)

    # ----------------------------------------------------------------- sub-flows

    def include(self, inner: Flow, *, prefix: str,
                inputs: Mapping[str, str] | None = None) -> list[str]:
        """Copy ``inner``'s nodes into this flow as ``prefix.name``; return their names.

        Included nodes keep their keys, so results ``inner`` computed with the same
        cache are hits here. ``inputs={"path": "raw_path"}`` wires inner flow
        inputs to nodes of this flow. Including again under a prefix replaces it.

        >>> outer.include(prep_flow, prefix="prep")        # doctest: +SKIP
        >>> outer.get("prep.clean", path="a.csv")          # doctest: +SKIP
        """
        return subflow.include(self, inner, prefix, inputs)

    def as_node(self, target: str, *, name: str | None = None) -> Node:
        """One node computing this flow's ``target``, to add to another flow.

        Its parameters are this flow's inputs for ``target``; its key follows every
        function upstream of ``target``.

        >>> outer.add(prep_flow.as_node("clean", name="prep"))   # doctest: +SKIP
        """
        return subflow.as_node(self, target, name=name)

    # ----------------------------------------------------------------- requests

    def get(self, targets: str | Iterable[str], /, *, strict: bool = False, **options: Any
            ) -> Any:
        """Compute (or fetch) one target's value, or a dict of several.

        Runs only the needed nodes whose results are not cached. Flow inputs are
        keyword arguments; a keyword that no node of the flow takes raises
        :class:`~lazyflow.UnknownInputError` before anything runs, then a
        parameter neither passed nor defaulted raises
        :class:`~lazyflow.MissingInputError`. Takes the options of :meth:`run` too. A
        target that was skipped or failed under ``on_error="skip"`` gives
        ``None`` with a warning, or raises when ``strict=True``.
        """
        __tracebackhide__ = True  # IPython leaves lazyflow's frames out of a node's traceback
        run = self.run(targets, **options)
        values = {t: self._value_or_none(run, t, strict) for t in run.targets}
        return values[targets] if isinstance(targets, str) else values

    def run(self, targets: str | Iterable[str], /, *, executor: Any = None,
            max_workers: int | None = None, cancel: CancelToken | None = None,
            overrides: Mapping[str, Mapping[str, Any]] | None = None,
            observers: Iterable[Callable[[Any], Any]] = (), progress: bool = False,
            resources: Resources | None = None,
            inputs: Mapping[str, Any] | None = None, **kw_inputs: Any) -> Run:
        """Like :meth:`get` but returns the :class:`~lazyflow.run.Run` with per-node records.

        Options (keyword-only; pass a flow input whose name clashes with one of
        them through ``inputs={...}``, which is checked like keywords are):

        - ``executor``: ``"sync"`` (default), ``"threads"``, ``"processes"``, an
          executor object or a ``distributed.Client``; ``max_workers`` bounds it.
        - ``cancel``: a :class:`~lazyflow.CancelToken`; setting it from another
          thread stops the run at the next node boundary.
        - ``overrides``: per-node policy overrides for this run,
          ``{"fit": {"timeout": 60}, "*": {"retries": 1}}``.
        - ``observers``: callables receiving this run's events.
        - ``progress``: show the live DAG widget in a notebook, a text bar elsewhere.
        - ``resources``: an :class:`~lazyflow.Resources` with the totals local
          executors may hand to nodes declaring ``resources=`` (default: this
          machine's cores and RAM).
        """
        __tracebackhide__ = True
        values = {**(inputs or {}), **kw_inputs}
        options = engine.RunOptions(executor=executor, max_workers=max_workers, cancel=cancel,
                                    overrides=overrides, observers=tuple(observers),
                                    resources=resources)
        plan = self.plan(targets, values)
        start_recording()  # the run history listens from the process's first run on
        before = self.last_run
        try:
            with requested(plan.params):  # the widget shows small input values
                if not progress:
                    return engine.execute(self, plan, options)
                with show_progress(self):
                    return engine.execute(self, plan, options)
        finally:  # the run's own edges, for drawing it (the engine keeps none)
            if self.last_run is not None and self.last_run is not before:
                self.last_run.edges = [(up, n) for n in plan.order if n in self.last_run.nodes
                                       for up in dict.fromkeys(plan.upstream[n].values())
                                       if up in self.last_run.nodes]

    async def aget(self, targets: str | Iterable[str], /, **options: Any) -> Any:
        """:meth:`get` for ``await``: the request runs on a thread, so a notebook awaiting
        it keeps its event loop (and kernel) responsive; cancelling the await cancels
        the run (finished nodes stay cached)."""
        return await self._awaited(self.get, targets, options)

    async def arun(self, targets: str | Iterable[str], /, **options: Any) -> Run:
        """:meth:`run` for ``await`` (see :meth:`aget`)."""
        result: Run = await self._awaited(self.run, targets, options)
        return result

    async def _awaited(self, request: Callable[..., Any], targets: str | Iterable[str],
                       options: dict[str, Any]) -> Any:
        cancel = options.setdefault("cancel", CancelToken())
        call = functools.partial(request, targets, **options)
        try:
            return await asyncio.get_running_loop().run_in_executor(None, call)
        except asyncio.CancelledError:
            cancel.cancel("the awaiting task was cancelled")
            raise

    def submit(self, targets: str | Iterable[str], /, **options: Any) -> RunHandle:
        """Start :meth:`run` in a background thread; return a handle to watch or cancel it.

        Unknown targets and keywords raise here, before the thread starts; the
        run's own errors (a missing input, a failing node) come from ``result()``.

        >>> handle = flow.submit("report", executor="threads")   # doctest: +SKIP
        >>> handle.cancel(); handle.result()                      # doctest: +SKIP
        """
        targets = targets if isinstance(targets, str) else list(targets)
        self.check_inputs(targets, _inputs_of(options))
        return RunHandle(self, targets, options)

    def widget(self, *, interval: float = 0.1) -> Any:
        """The live DAG widget of this flow (needs ipywidgets: ``lazyflow[notebook]``).

        It follows every run of the flow from now on, redrawn at most once per
        ``interval`` seconds; ``widget.submit(...)`` runs in the background with
        a working Cancel button.
        """
        from lazyflow.notebook.widget import FlowWidget  # needs ipywidgets: only when asked

        return FlowWidget(self, interval=interval)

    def to_svg(self, path: str | os.PathLike[str] | None = None) -> str:
        """The DAG as SVG text: nodes with their return annotations, flow inputs as dashed
        boxes with dashed edges into the nodes taking them; written to ``path`` if given.

        The picture of the definition, not of a run: the same flow gives the same text.

        >>> flow.to_svg("dag.svg")                     # doctest: +SKIP
        """
        svg = flow_svg(self)
        if path is not None:
            Path(path).write_text(svg, encoding="utf-8")
        return svg

    def _repr_html_(self) -> str:
        return flow_html(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return flow_mimebundle(self)

    def explain(self, targets: str | Iterable[str], /, **options: Any) -> Explanation:
        """Dry run: per needed node, would it hit (which tier) or run, and why. Computes nothing.

        Takes the keywords of :meth:`get`: flow inputs (also as ``inputs={...}``),
        checked the same way, and its options, which change nothing here (so one
        set of keywords serves both).
        """
        return engine.explain(self, self.plan(targets, _inputs_of(options)))

    def watch(self, target: str, /, *, interval: float = 0.5, poll: bool = False,
              cancel: CancelToken | None = None, on_run: Callable[[Run], Any] | None = None,
              max_runs: int | None = None, every: Any = None, **inputs: Any) -> Run | None:
        """Run ``target``, then run it again whenever an ``lf.File``/``lf.Dir`` input changes.

        Uses watchdog (the ``watch`` extra) or polls every ``interval`` seconds
        (``poll=True``). A touch or an unchanged save does not re-run; a failing
        run is reported and watching goes on. ``every="10m"`` (seconds, a string or
        a timedelta) also re-requests on a timer — with ``max_age=`` on the node that
        pulls the data, each tick re-pulls it once it is older than that. Stops on Ctrl-C, when ``cancel``
        is set, or after ``max_runs`` runs; returns the last run.

        >>> flow.watch("report", data=lf.File("data.csv"))   # doctest: +SKIP
        """
        return watch.watch(self, target, inputs, interval=interval, poll=poll, cancel=cancel,
                     on_run=on_run, max_runs=max_runs, every=every)

    @staticmethod
    def _value_or_none(run: Run, target: str, strict: bool) -> Any:
        record = run.nodes[target]
        if has_value(record.status):
            return run[target]
        message = f"target {target!r} has no value: {record.status} ({record.reason})"
        if strict:
            raise record.error if record.error is not None else SkippedError(target, record.reason)
        warn(message + "; returning None (pass strict=True to raise)",
                      SkippedWarning)
        return None

    def lineage(self, target: str, /, **inputs: Any) -> Lineage:
        """The tree that produced ``target``'s cached value: keys, code, parameters, inputs.

        Reads cache metadata only (also a colleague's, through a remote tier);
        raises :class:`~lazyflow.NotCachedError` if the value is not cached.
        """
        return provenance.lineage(self, target, **inputs)

    def verify(self, target: str, /, **inputs: Any) -> Verification:
        """Recompute ``target``'s ancestry without the cache; report nodes whose values differ.

        Takes the options of :meth:`run` too (``executor=``, ...). Nodes declared
        ``deterministic=False`` are skipped (their stored value is used).
        """
        return provenance.verify(self, target, **inputs)


def _inputs_of(keywords: Mapping[str, Any]) -> dict[str, Any]:
    """The flow inputs among a request's keywords: ``inputs={...}`` and all but the options."""
    inputs = keywords.get("inputs")
    return {**(inputs or {}),
            **{k: v for k, v in keywords.items() if k not in REQUEST_OPTIONS}}


_DEFAULT_FLOW: Flow | None = None


def default_flow() -> Flow:
    """The process's own flow (the notebook's), used by ``@lf.node`` and ``%%flow``.

    Named after the notebook (``analysis`` for ``analysis.ipynb``) when the front end
    tells the kernel its path, so notebooks keep their runs apart in the history;
    ``"default"`` otherwise.
    """
    global _DEFAULT_FLOW
    if _DEFAULT_FLOW is None:
        _DEFAULT_FLOW = Flow(notebook_name() or "default")
    return _DEFAULT_FLOW


def node(func: F | None = None, /, **options: Any) -> Any:
    """Register a function on :func:`default_flow`; bare or with the options of ``Flow.node``."""
    return default_flow().node(func, **options) if func is not None \
        else default_flow().node(**options)
