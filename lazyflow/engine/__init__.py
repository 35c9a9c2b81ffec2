"""The engine: answer a plan from the cache, computing only what is needed.

Design note
-----------
Policy. A request is answered in three steps, all on plain data:

1. **Prepare** every node (``prepare.py``): its code fingerprint, its flow
   inputs' digests and its *trace key* — pure CPU, no cache.
2. **Resolve** backwards from the targets (``prepare.resolve``): a node whose
   trace record points to a stored entry is a hit and its ancestors are not
   even looked at; any other node is *needed*, and so are its upstream nodes.
   This is what makes a request lazy.
3. **Execute** the needed nodes in dependency order (``loop.py``). Before
   calling a node, its *content key* is computed from its inputs' value
   digests and looked up once more (``start.py``): an upstream node that
   re-ran and returned an equal value leaves it cached (early cutoff).

Shape. Dask's ``local.py``: the run is a plain record, :class:`RunState`
(``state.py``), and the steps are functions of it — ``start`` (key, lookup,
single-flight claim, inputs, submit), ``settle`` (digest, store, trace,
records, error policies), ``schedule`` (who is ready). The per-node step a
worker runs elsewhere is ``step.py``'s. What only some nodes have is a
*feature* bound per node when it is first started (``hooks.py`` lists the
hook points, ``features.py`` binds them): lazy inputs (``lazyinputs.py``),
``map=`` (``maps.py``), a shared tier the workers write (``shared.py``),
``timeout=`` (``timeouts.py``) and, on an executor that takes graphs, being
sent with the nodes after it (``graphs.py``); the usual node has none and
makes no hook call. Two mechanisms keep a hit honest and a miss single: a hit whose entry
vanished before it was read is computed again in the same run
(``vanished.py``), and a key another request is computing parks the node
until it lands (``flight.py`` over ``flights.py``). ``why.py`` holds the one
"why does it run" that runs and ``explain.py`` share.

The engine knows nothing of notebooks: it tells the world through
``events.py``. Executors only *call* functions; hashing, storing and
recording stay here, so every executor gives the same records as the
synchronous reference path. Executors are told apart by the capabilities
they declare (``executors.base.Capabilities``), never by name.
"""

from lazyflow.engine.explain import explain
from lazyflow.engine.loop import RunOptions, execute
from lazyflow.engine.prepare import REUSE_NONDETERMINISTIC
from lazyflow.engine.settle import NOT_NEEDED
from lazyflow.engine.state import RunState
from lazyflow.engine.vanished import VANISHED
from lazyflow.engine.why import environment_note

__all__ = ["NOT_NEEDED", "REUSE_NONDETERMINISTIC", "VANISHED", "RunOptions", "RunState",
           "environment_note", "execute", "explain"]
