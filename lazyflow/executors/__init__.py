"""Executors: where node functions run (see ``base.py`` for the protocol).

Design note
-----------
An executor only *calls*: it takes a :class:`Task` (a function, its keyword
arguments and its retry policy) and returns a future of an :class:`Outcome`.
Hashing, storing and recording stay in the engine, so every executor gives the
records of the synchronous reference path (``tests/executor_conformance.py``
holds them all to it). Executors are registered by name, and the optional ones
(processes, Dask) are imported only when asked for.

``executor=`` accepts a name (``"sync"``, ``"threads"``, ``"processes"``,
``"dask"``), an executor object, or a ``distributed.Client``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from lazyflow.executors.base import Capabilities, Executor, Outcome, Task
from lazyflow.executors.sync import SyncExecutor
from lazyflow.executors.threads import ThreadExecutor

__all__ = ["Capabilities", "Executor", "Outcome", "SyncExecutor", "Task", "ThreadExecutor", "executors",
           "register_executor", "resolve_executor"]

_FACTORIES: dict[str, Callable[[int | None], Executor]] = {
    "sync": lambda max_workers: SyncExecutor(),
    "threads": lambda max_workers: ThreadExecutor(max_workers),
    "processes": lambda max_workers: _processes().leased(max_workers),
    "dask": lambda max_workers: _dask().DaskExecutor(_dask().client_from_environment(),
                                                     max_workers),
}


def _processes() -> Any:
    from lazyflow.executors import processes  # worker processes only when asked for

    return processes


def _dask() -> Any:
    from lazyflow.executors import dask  # imports distributed only when asked for

    return dask


def register_executor(name: str, factory: Callable[[int | None], Executor]) -> None:
    """Make ``executor=name`` build an executor with ``factory(max_workers)``."""
    if name in _FACTORIES:
        raise ValueError(f"an executor named {name!r} is already registered")
    _FACTORIES[name] = factory


def executors() -> MappingProxyType[str, Callable[[int | None], Executor]]:
    """The registered executor names (read-only)."""
    return MappingProxyType(_FACTORIES)


def resolve_executor(spec: Any, max_workers: int | None = None) -> tuple[Executor, bool]:
    """Turn ``executor=`` into an executor; the flag says whether we own (must shut) it."""
    if spec is None:
        spec = "sync"
    if isinstance(spec, str):
        factory = _FACTORIES.get(spec)
        if factory is None:
            raise ValueError(f"unknown executor {spec!r}; use one of "
                             f"{', '.join(map(repr, _FACTORIES))} or an executor object")
        return factory(max_workers), True
    if _is_client(spec):
        return _dask().DaskExecutor(spec, max_workers), True  # owns the tasks, not the client
    if isinstance(spec, Executor):
        return spec, False
    raise TypeError(f"executor= takes a name ({', '.join(map(repr, _FACTORIES))}), an executor "
                    f"object or a distributed.Client, got {spec!r}")


def _is_client(obj: Any) -> bool:
    """Whether ``obj`` is a ``distributed.Client``, without importing distributed."""
    return any(cls.__name__ == "Client" and cls.__module__.startswith("distributed")
               for cls in type(obj).__mro__)
