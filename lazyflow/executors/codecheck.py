"""Whether a worker runs the code a task's key was taken from.

Design note
-----------
A node's key holds its function's fingerprint as the submitting process took
it. A worker process has code of its own: a function travelling by reference
(``mymod.clean``) is the one the worker's ``mymod`` holds, and a function
travelling by value still reads its helpers of other modules there. Python
imports a module once, so a worker that imported ``mymod`` before the file was
edited and reloaded in the notebook runs the old code, and its value, stored
under the new code's key, would be served as that code's result ever after (in
a shared tier, to the whole team). A worker whose modules are *newer* than the
kernel's (a fresh worker, a kernel that did not reload) is the same fault the
other way round.

So a task sent out of this process carries :class:`ExpectedCode`: the
function, its ``version=`` and the digest and parts its key was taken from.
Before calling, the worker fingerprints the function it has (:func:`refusal`);
when the digests differ it does not call it and fails the task with
:class:`WorkerCodeError`, naming the parts that differ. The process pool then
tries once more on a fresh worker, which imports the files as they are now
(the usual case: a module edited and reloaded here); a mismatch there too
means this kernel's modules differ from their files (``processes.py``). A Dask
worker's error says how to restart the workers.

Cost on the worker: a function by reference is the same object task after task,
so its memoised fingerprint is re-checked (~1 µs); a function by value is a new
object per task, fingerprinted afresh (tens of µs, against the milliseconds of
a task's round trip). Tasks that run in this process carry nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lazyflow.errors import LazyflowError
from lazyflow.keys.fingerprint import Fingerprint, fingerprint

__all__ = ["ExpectedCode", "WorkerCodeError", "refusal"]

_SHOWN_PARTS = 5


@dataclass(frozen=True, slots=True)
class ExpectedCode:
    """The code a task's key was taken from: its node's function, ``version=`` (``extra``)
    and the fingerprint's digest and named parts, as the submitting process took them."""

    func: Callable[..., Any]
    extra: str
    digest: str
    components: Mapping[str, str]

    @classmethod
    def of(cls, func: Callable[..., Any], fp: Fingerprint) -> ExpectedCode:
        """What ``fp``, the fingerprint of ``func``, expects a worker to run."""
        return cls(func, fp._extra, fp.digest, dict(fp.components))


class WorkerCodeError(LazyflowError, RuntimeError):
    """A worker holds other code for a node than the process that keyed it; the node was
    not run there, so no value of that code is stored under this code's key."""

    def __init__(self, node: str, parts: list[str], pid: int, *, fresh: bool = False) -> None:
        self.node, self.parts, self.pid, self.fresh = node, parts, pid, fresh
        shown = ", ".join(parts[:_SHOWN_PARTS]) + (
            f" and {len(parts) - _SHOWN_PARTS} more" if len(parts) > _SHOWN_PARTS else "")
        if fresh:
            advice = ("even a fresh worker process, which imports the modules' files as they "
                      "are now, so this kernel's modules differ from their files (edited and not "
                      "reloaded, changed from the notebook, such as mymod.SCALE = 2, or compiled "
                      "by an import hook such as pytest's assertion rewriting of test modules): "
                      "reload the module (importlib.reload) or restart the kernel, or run the "
                      "node with executor='threads'")
        else:
            advice = ("a worker imports a module once, so one that imported it before it was "
                      "edited here runs the old code: restart the workers (Dask: "
                      "client.restart()) or send the module by value "
                      "(cloudpickle.register_pickle_by_value(mymod)); if this kernel's modules "
                      "differ from their files (edited and not reloaded), reload them")
        super().__init__(f"node {node!r}: the worker process (pid {pid}) holds other code "
                         f"for it than this kernel (parts that differ: {shown}), so it was not "
                         f"run there; {advice}")

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuilt, (self.node, self.parts, self.pid, self.fresh)

    def in_fresh_worker(self) -> WorkerCodeError:
        """The same refusal, as a fresh worker gave it."""
        return WorkerCodeError(self.node, self.parts, self.pid, fresh=True)


def _rebuilt(node: str, parts: list[str], pid: int, fresh: bool) -> WorkerCodeError:
    return WorkerCodeError(node, parts, pid, fresh=fresh)


def refusal(node: str, expected: ExpectedCode | None) -> WorkerCodeError | None:
    """On a worker: ``None`` when the function it holds for ``node`` is the code the key was
    taken from (or nothing is expected); else the error that refuses to run it."""
    if expected is None:
        return None
    try:
        here = fingerprint(expected.func, extra=expected.extra)
    except Exception as e:  # the worker cannot even fingerprint it: not the same code
        return WorkerCodeError(node, [f"(the worker could not fingerprint it: "
                                      f"{type(e).__name__}: {e})"], os.getpid())
    if here.digest == expected.digest and not here.volatile:
        return None
    return WorkerCodeError(node, _differing(expected.components, here), os.getpid())


def _differing(expected: Mapping[str, str], here: Fingerprint) -> list[str]:
    """The labels of the parts that differ (``code:f``, ``global:mymod.SCALE``...)."""
    if here.volatile:
        return [f"(the worker cannot see into it: {'; '.join(here.notes)})"]
    found = here.components
    return sorted(label for label in expected.keys() | found.keys()
                  if expected.get(label) != found.get(label)) or ["(the digest)"]
