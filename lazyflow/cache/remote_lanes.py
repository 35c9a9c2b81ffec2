"""The remote tier's background writes: lanes that upload entries, and the failures they meet.

Design note
-----------
Writes go through *lanes*: single-thread executors, a key always on the same
lane, so successive records of one key land in order while different keys
upload in parallel (and a record carrying its target's entry waits for that
entry on its lane: ``remote_writes.py``). The tier's ``pending`` dict maps
keys being written to their entry, so the process sees its own writes at
once; a lane removes a key from it when its upload ends, however it ends.

Lanes never warn: :meth:`Lanes.wait` lets the tier's ``flush`` wait for every
upload queued so far, and :meth:`Lanes.failures` hands it the failures met
since, for one warning per flush (and one per outage, which the store
announces), not one per upload. An upload stopped by an outage
(:class:`~lazyflow.cache.base.TierOfflineError`) is no failure of its own.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from lazyflow.cache.base import TierOfflineError
from lazyflow.cache.remote_writes import Pending, Writes

__all__ = ["Lanes"]


class Lanes:
    """``count`` single-thread executors writing through ``writes``; none for a tier that
    writes at once (``background=False``).

    ``pending`` and ``lock`` are the tier's: its view of the writes on their way,
    and the lock it holds around that view.
    """

    def __init__(self, writes: Writes, pending: dict[str, Pending], lock: threading.RLock,
                 count: int) -> None:
        self._writes = writes
        self._pending = pending
        self._lock = lock
        self._futures: list[Future[None]] = []
        self._errors: list[str] = []
        # threads start with the first upload, so opening a tier starts none
        self._executors = [ThreadPoolExecutor(1, thread_name_prefix=f"lazyflow-remote-{i}")
                           for i in range(count)]

    def __len__(self) -> int:
        return len(self._executors)

    def submit(self, key: str, pending: Pending) -> None:
        """Queue the write of ``key`` on its lane, pending until it ends."""
        with self._lock:
            self._pending[key] = pending
            lane = self._executors[hash(key) % len(self._executors)]
            future = lane.submit(self._upload, key, pending)
            self._futures.append(future)
            self._writes.inflight[key] = future

    def submit_pack(self, members: list[tuple[str, Pending]]) -> None:
        """Queue the write of values together (``remote_packs.py``) on one lane, each
        pending (``pending`` holds them already) until it ends."""
        with self._lock:
            lane = self._executors[hash(members[0][0]) % len(self._executors)]
            future = lane.submit(self._upload_pack, members)
            self._futures.append(future)
            for key, _ in members:
                self._writes.inflight[key] = future

    def wait(self) -> None:
        """Wait for every upload queued so far, and those they queue meanwhile."""
        while True:
            with self._lock:
                futures, self._futures = self._futures, []
            if not futures:
                break
            for future in futures:
                future.exception()  # bounded: each upload's calls have deadlines

    def failures(self) -> list[str]:
        """The uploads that failed since the last call, each as ``key… of node 'n': error``."""
        with self._lock:
            errors, self._errors = self._errors, []
        return errors

    def _upload(self, key: str, pending: Pending) -> None:
        store = self._writes.store
        try:
            with store.in_background():  # the outage is announced once, by the tier's flush
                self._writes.write(key, pending)
        except TierOfflineError:
            pass
        except Exception as e:
            with self._lock:
                self._errors.append(f"{key[:12]}… of node {pending.meta.get('node')!r}: "
                                    f"{type(e).__name__}: {e}")
        finally:
            with self._lock:
                if self._pending.get(key) is pending:
                    del self._pending[key]

    def _upload_pack(self, members: list[tuple[str, Pending]]) -> None:
        store = self._writes.store
        try:
            with store.in_background():
                self._writes.write_pack(members)
        except TierOfflineError:
            pass
        except Exception as e:
            with self._lock:
                self._errors.append(f"a pack of {len(members)} values (node "
                                    f"{members[0][1].meta.get('node')!r}...): "
                                    f"{type(e).__name__}: {e}")
        finally:
            with self._lock:
                for key, pending in members:
                    if self._pending.get(key) is pending:
                        del self._pending[key]
