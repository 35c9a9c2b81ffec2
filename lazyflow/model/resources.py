"""Resources: what a node needs (``resources=``) and what a run may use (``lf.Resources``).

Design note
-----------
Policy. A node declares what it needs while it runs,
``@flow.node(resources={"cpus": 2, "memory": "4GB", "gpus": 1})``; a run has
totals, ``flow.run(..., resources=lf.Resources(cpus=8, memory="32GB"))``,
defaulting to this machine's cores and RAM and no GPUs. Local executors never
start a node whose needs do not fit in what the running nodes leave free
(the scheduler takes the first *ready* node that fits, so a big node waiting
for room does not hold back small ones behind it). Needs are limits on
concurrency, never a refusal: a node that needs more than the run's totals
(``cpus=4`` on a two-core laptop) runs *alone* -- it starts once nothing else
runs, and nothing starts beside it -- with one :class:`~lazyflow.ResourcesWarning`
per run naming the node and the resource. So a notebook written on a big
machine runs on a small one. (Rejected: refusing such a node up front, which
made ``resources=`` a portability hazard even under the synchronous
executor.) Any other name (``{"licenses": 1}``) is a custom resource whose
total is 0 unless ``lf.Resources(licenses=2)`` gives one.

Executors that place work themselves (Dask, whose workers declare their own
resources) get the needs as worker resources instead, and no local gate.

State. :class:`Gate` keeps ``free`` amounts, ``held`` needs per running
node, the ``running`` nodes, the ``alone`` ones (needing more than the
totals) and the ``solo`` one running now; ``take`` and ``release`` are the
scheduler's only calls. Rejected:
counting resources in the executors, which would let each one drift from the
others and could not see the run's ready queue.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Mapping
from typing import Any

from lazyflow.cache.sizes import format_size, parse_size
from lazyflow.errors import DefinitionError, LazyflowError, ResourcesWarning, warn

__all__ = ["Gate", "ResourceError", "Resources", "parse_needs"]


class ResourceError(LazyflowError, ValueError):
    """A node needs a resource no worker has (Dask, which places work itself; local
    executors run such a node alone instead)."""


def _machine_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 2**63 - 1  # unknown: memory is not what limits this run


class Resources:
    """Totals a run may use at once; each omitted total is this machine's.

    >>> Resources(cpus=4, memory="16GB").totals["memory"]
    16000000000
    >>> Resources(licenses=2).totals["licenses"]
    2.0
    """

    def __init__(self, cpus: float | None = None, memory: int | str | None = None,
                 gpus: float = 0, **custom: float) -> None:
        totals = {"cpus": float(cpus if cpus is not None else os.cpu_count() or 1),
                  "memory": _machine_memory() if memory is None
                  else parse_size(memory, what="Resources(memory=...)"),
                  "gpus": float(gpus)}
        for name, amount in custom.items():
            totals[name] = float(amount)
        for name, amount in totals.items():
            if amount < 0:
                raise ValueError(f"Resources({name}=...) must be >= 0, got {amount!r}")
        self.totals: dict[str, float] = totals

    def __repr__(self) -> str:
        shown = {k: format_size(v) if k == "memory" else f"{v:g}" for k, v in self.totals.items()}
        return f"Resources({', '.join(f'{k}={v}' for k, v in shown.items())})"


def parse_needs(node: str, needs: Any) -> dict[str, float]:
    """Validate a node's ``resources=`` and return amounts (memory in bytes)."""
    if needs is None:
        return {}
    if not isinstance(needs, Mapping):
        raise DefinitionError(f"node {node!r}: resources= takes a dict such as "
                              f"{{'cpus': 2, 'memory': '4GB'}}, got {needs!r}")
    parsed: dict[str, float] = {}
    for name, amount in needs.items():
        if not isinstance(name, str):
            raise DefinitionError(f"node {node!r}: resources= keys are names, got {name!r}")
        try:
            if name == "memory":
                parsed[name] = float(parse_size(amount, what="memory"))
            elif isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                raise ValueError(f"must be a number >= 0, got {amount!r}")
            else:
                parsed[name] = float(amount)
        except ValueError as e:
            raise DefinitionError(f"node {node!r}: resources[{name!r}] {e}") from e
    return parsed


class Gate:
    """The scheduler's resource accounting for one run."""

    def __init__(self, totals: Resources | None, needs: Mapping[str, Mapping[str, float]]) -> None:
        self.totals = (totals or Resources()).totals
        self.needs: dict[str, dict[str, float]] = {}
        self.free = dict(self.totals)
        self.held: dict[str, dict[str, float]] = {}
        self.running: set[str] = set()
        self.alone: set[str] = set()  # nodes needing more than the totals: they run alone
        self.solo: str | None = None  # the one of them running now
        for name, need in needs.items():
            self.add(name, need)

    def add(self, name: str, need: Mapping[str, float]) -> None:
        """Account for ``name``'s needs from now on (a node the run took on midway); a need
        beyond the totals makes it run alone, with a warning."""
        if not need:
            return
        beyond = {r: a for r, a in need.items() if a > self.totals.get(r, 0.0)}
        if beyond:
            self.alone.add(name)
            _warn_alone(name, beyond, self.totals)
        # an alone node takes what there is of what it asked for (it runs by itself anyway)
        self.needs[name] = {r: min(a, self.totals.get(r, 0.0)) for r, a in need.items()}

    def take(self, ready: deque[str]) -> str | None:
        """Remove and return the first ready node whose needs fit; ``None`` if none fits."""
        if not self.needs:
            name = ready.popleft()
            self.running.add(name)
            return name
        if self.solo is not None:  # a node needing more than the totals runs by itself
            return None
        for index, name in enumerate(ready):
            need = self.needs.get(name)
            if name in self.alone:
                if self.running:
                    continue
                self.solo = name
            elif need is not None and not all(self.free.get(r, 0.0) >= a
                                              for r, a in need.items()):
                continue
            del ready[index]
            if need is not None:
                for resource, amount in need.items():
                    self.free[resource] -= amount
                self.held[name] = need
            self.running.add(name)
            return name
        return None

    def release(self, name: str) -> None:
        """Give back what ``name`` held (no-op if it held nothing)."""
        self.running.discard(name)
        if name == self.solo:
            self.solo = None
        held = self.held.pop(name, None) if self.held else None
        if held:
            for resource, amount in held.items():
                self.free[resource] += amount


def _warn_alone(name: str, beyond: Mapping[str, float], totals: Mapping[str, float]) -> None:
    """One warning naming the node and each resource it needs more of than the run has."""
    wants = ", ".join(f"{r}={_amount(r, a)}" for r, a in beyond.items())
    haves = ", ".join(f"{r}={_amount(r, totals.get(r, 0.0))}" for r in beyond)
    fix = ", ".join(f"{r}=..." for r in beyond)
    warn(f"node {name!r} needs {wants} but the run has {haves} in all; it runs alone (nothing "
         "else runs beside it). Lower its resources= or pass resources=lf.Resources("
         f"{fix}) to flow.run if the machine has more", ResourcesWarning)


def _amount(resource: str, amount: float) -> str:
    return format_size(amount) if resource == "memory" else f"{amount:g}"
