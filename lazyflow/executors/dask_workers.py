"""What the workers of a Dask cluster declare and run for lazyflow (``dask.py``): their
resources, and the hashers registered here, installed on each of them.

Resources. A node's ``resources=`` become Dask worker resources (workers declare theirs:
``dask worker --resources "gpus=1"``). ``cpus`` and ``memory`` that no worker declares are
left to Dask's own thread and memory limits; any other resource no worker declares is
refused up front, since Dask would hold the task forever.

Hashers. Hashers registered with ``lf.register_hasher`` are installed on every worker,
present and future, as a worker plugin, and re-installed when they change, so workers hash
results exactly as the client would; if they cannot be pickled, results are hashed on the
client instead.
"""

from __future__ import annotations

from typing import Any

from lazyflow.executors.base import Task, install_hashers, pack_hashers
from lazyflow.keys.hashing import registered_hashers
from lazyflow.model.resources import ResourceError

__all__ = ["Workers"]

_LOCAL_ONLY = ("cpus", "memory")  # enforced by Dask itself when workers do not declare them


class Workers:
    """The workers of ``client``: the resources they declare, and whether they hash results
    as this process would."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._hashers: tuple[tuple[type, Any], ...] | None = None
        self._hash_on_workers = False
        self._declared: set[str] | None = None

    def resources(self, task: Task) -> dict[str, float]:
        """The Dask resources ``task``'s node needs; :class:`ResourceError` naming the node
        when one of them no worker declares."""
        needs = task.policy.resources
        if not needs:
            return {}
        declared = self._declared_resources(refresh=False)
        if not set(needs) <= declared | set(_LOCAL_ONLY):
            declared = self._declared_resources(refresh=True)
        missing = sorted(set(needs) - declared - set(_LOCAL_ONLY))
        if missing:
            raise ResourceError(
                f"node {task.node!r} needs {', '.join(missing)}, which no Dask worker declares; "
                f"start workers with --resources \"{missing[0]}=1\" or drop it from resources=")
        return {name: amount for name, amount in needs.items() if name in declared}

    def hash_like_the_client(self) -> bool:
        """Whether the workers hash results as this process would: the hashers registered
        here are installed on them (again, when they changed since); False when they cannot
        be pickled (results are then hashed here)."""
        current = tuple(registered_hashers().items())
        if current != self._hashers:
            self._hashers = current
            blob = pack_hashers(current)
            if blob is not None:
                self.client.register_plugin(_hashers_plugin(blob), name="lazyflow-hashers")
            self._hash_on_workers = blob is not None
        return self._hash_on_workers

    def _declared_resources(self, *, refresh: bool) -> set[str]:
        if self._declared is None or refresh:
            workers = self.client.scheduler_info().get("workers", {})
            self._declared = {r for info in workers.values() for r in info.get("resources", {})}
        return self._declared


def _hashers_plugin(blob: bytes) -> Any:
    """A worker plugin installing the client's hashers on every worker, present and future."""
    from distributed import WorkerPlugin

    class Hashers(WorkerPlugin):
        idempotent = False

        def setup(self, worker: Any) -> None:
            install_hashers(blob)

    return Hashers()
