"""``map=`` as an engine feature: one task per element that misses (``mapping.py``)."""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import lazyflow.keys as keys
import lazyflow.mapping as mapping
from lazyflow._version import __version__
from lazyflow.engine.hooks import Feature
from lazyflow.engine.step import load, store
from lazyflow.errors import HashingError, MapError
from lazyflow.executors.base import Executor, Outcome, Task
from lazyflow.hashing import hash_value
from lazyflow.records import ElementMeta

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState

__all__ = ["MAPPED"]


class Mapped(Feature):
    """Hooks of a map node."""

    __slots__ = ()

    def submit(self, s: RunState, name: str, task: Task,
               executor: Executor) -> Future[Outcome] | None:
        """Look every element up; submit one task per element that misses."""
        return _submit_map(s, name, task.kwargs, executor)

    def outcome(self, s: RunState, name: str, outcome: Outcome) -> Outcome | None:
        """Gather the elements' outcomes (and store each computed element) into the node's."""
        elements = s.maps.pop(name, None)
        if elements is None:  # it failed before any element was submitted
            return outcome
        return mapping.collect(elements, outcome, name, lambda i, v, d: _store_element(
            s, name, elements.keys[i], i, v, d))


MAPPED = Mapped()


def _submit_map(s: RunState, name: str, kwargs: dict[str, Any],
                executor: Executor) -> Future[Outcome]:
    node, prep = s.plan.nodes[name], s.prepared[name]
    param = node.options.map
    assert param is not None  # only map nodes have this feature
    inputs = {p: s.digests[up] for p, up in s.plan.upstream[name].items()}
    key = keys.content_key(prep.code, {p: d for p, d in prep.params.items() if p != param},
                           {p: d for p, d in inputs.items() if p != param})
    try:
        items = mapping.elements(kwargs[param], name, param)
        digests = [hash_value(item) for item in items]
    except (MapError, HashingError) as e:  # the node fails, as if its function had raised
        failed: Future[Outcome] = Future()
        error = e.located(name, param) if isinstance(e, HashingError) else e
        failed.set_result(Outcome(error=error, attempts=1, started=time.time(),
                                  ended=time.time()))
        return failed
    run = mapping.MapRun([mapping.element_key(key, param, d) for d in digests],
                         [None] * len(items), [])
    for index, element_key in enumerate(run.keys):
        try:
            if not prep.cacheable:
                raise KeyError(element_key)
            run.values[index] = load(s.cache, element_key)
        except KeyError:
            run.missing.append(index)
    s.maps[name] = run
    s.run.nodes[name].reason += f"; {len(run.missing)} of {len(items)} elements to compute"
    policy = s.policies[name]
    return mapping.gather([executor.submit(Task(f"{name}[{i}]", node.call,
                                                {**kwargs, param: items[i]}, policy))
                           for i in run.missing])


def _store_element(s: RunState, name: str, key: str, index: int, value: Any,
                   digest: str | None) -> None:
    if not s.prepared[name].cacheable or digest is None:
        return
    meta: ElementMeta = {"digest": digest, "node": name, "element": index,
                         "flow": s.flow.name, "created": time.time(), "lazyflow": __version__}
    store(s.cache, key, value, meta)
