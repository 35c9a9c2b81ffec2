"""How a task of a Dask graph travels (``dask.py``): pickled once on the client, its outcome
pickled on its worker, and a batch's outcomes together as one collector's result.

Dask unpickles each task of a graph on the scheduler and pickles it again for its worker
(twice for a function defined in ``__main__``), all in the client's process with a
``LocalCluster``. As bytes, a task is pickled once; its outcome, pickled where it ran,
goes to a collector or a task that follows it as bytes Dask need not serialize, and a
value that cannot be pickled fails its own node there. Both are pickled by Dask's own rule
(:func:`dumped`): by the standard pickler, by cloudpickle where a name would not resolve
on the other side.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

import lazyflow.cache.pickler as pickler
from lazyflow.executors.base import Outcome, Task

__all__ = ["Pick", "Shipped", "arguments_of", "dumped", "packed", "takes", "together", "unpacked"]


class Pick:
    """A task of an earlier graph, as the collector of its batch and its place there."""

    __slots__ = ("index", "remote")

    def __init__(self, remote: Any, index: int) -> None:
        self.remote, self.index = remote, index


class Shipped:
    """A task of a graph as it travels: pickled once, here, and unpickled on its worker,
    where it returns its outcome pickled.

    Dask unpickles each task of a graph on the scheduler and pickles it again for its
    worker, and with a function defined in ``__main__`` (by value) it pickles it twice,
    by reference first; all in the client's process with a ``LocalCluster``. As bytes,
    the task is pickled once. Its outcome goes to the client in any case; pickled on
    its worker, it is sent to a collector or a task that follows it as bytes Dask need
    not serialize, and a value that cannot be pickled fails its own node there (Dask
    would fail to send it, again and again). ``takes`` says how each argument comes:
    ``None`` as it is (an outcome the client had), ``-1`` pickled (a task's), ``i`` as
    the ``i``-th outcome of a collector's result.
    """

    __slots__ = ("blob", "takes")

    def __init__(self, task: Task, takes: tuple[int | None, ...]) -> None:
        self.blob = dumped(task, by_value=not _named(task.func))
        self.takes = takes

    def __call__(self, *arguments: Any) -> bytes:
        task = pickle.loads(self.blob)
        outcome: Outcome = task(*(_taken(a, how)
                                  for a, how in zip(arguments, self.takes, strict=True)))
        return packed(outcome)

    def __reduce__(self) -> tuple[Any, ...]:
        return _arrived, (self.blob, self.takes)


def _arrived(blob: bytes, takes: tuple[int | None, ...]) -> Shipped:
    """A :class:`Shipped` as it arrives on a worker (its task stays pickled)."""
    shipped = Shipped.__new__(Shipped)
    shipped.blob, shipped.takes = blob, takes
    return shipped


def _named(func: Any) -> bool:
    """Whether ``func`` can travel by reference: a function (or class) of a module other
    than ``__main__``, found there by its name (not a lambda, not one defined in another
    function). The others go straight to cloudpickle, rather than being tried first."""
    return getattr(func, "__module__", "__main__") != "__main__" \
        and "<" not in getattr(func, "__qualname__", "<")


def _taken(argument: Any, how: int | None) -> Any:
    """An argument of a :class:`Shipped` task, as ``how`` says it comes."""
    if how is None:
        return argument
    if how < 0:
        return unpacked(argument)
    return unpacked(pickle.loads(argument)[how])


def takes(refs: list[Any]) -> tuple[int | None, ...]:
    """How a task takes each of ``refs`` (see :class:`Shipped`)."""
    return tuple(r.index if isinstance(r, Pick) else None if isinstance(r, Outcome) else -1
                 for r in refs)


def arguments_of(refs: list[Any]) -> list[Any]:
    """What Dask passes for ``refs``: a collector's future stands for a task picked there."""
    return [r.remote if isinstance(r, Pick) else r for r in refs]


def together(*outcomes: bytes) -> bytes:
    """A batch's collector: the pickled outcomes of its tasks as one result (one frame to
    Dask, not a collection it sizes, serializes and sends item by item)."""
    return pickle.dumps(outcomes, protocol=5)


def packed(outcome: Outcome) -> bytes:
    """``outcome`` pickled; if it cannot be, its failure to be (the node's error)."""
    try:
        return dumped(outcome)
    except Exception as e:
        return dumped(Outcome(error=e, attempts=outcome.attempts, started=outcome.started,
                              ended=outcome.ended))


def dumped(obj: Any, *, by_value: bool = False) -> bytes:
    """``obj`` pickled as Dask pickles tasks and results (``distributed.protocol.pickle``):
    by the standard pickler, which names functions and classes by reference, unless it
    cannot pickle ``obj`` (a lambda, a local class), the result names ``__main__``
    (defined in a notebook or a script: there is no such name on a worker), some module
    travels by value (``cloudpickle.register_pickle_by_value``) or the caller knows
    (``by_value``): then by cloudpickle, which pickles those by value.

    The standard pickler is C all through; cloudpickle calls back into Python for every
    object it pickles: 7 against 3 microseconds an outcome, hot, and several times that
    on a busy worker, where each holds the thread that runs tasks.
    """
    if not by_value and not cloudpickle.list_registry_pickle_by_value():
        try:
            data = pickle.dumps(obj, protocol=5)
        except Exception:  # what pickle cannot name, cloudpickle pickles by value
            pass
        else:
            if b"__main__" not in data:
                return data
    return pickler.dumps(obj)  # cloudpickle, memoryviews kept as views


def unpacked(data: bytes) -> Outcome:
    """The outcome :func:`packed` pickled."""
    outcome: Outcome = pickle.loads(data)
    return outcome
