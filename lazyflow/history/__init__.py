"""Run history: every run and every node it touched, in SQLite beside the disk cache.

Design note
-----------
Layout. One module per job, each knowing only those below it:
``entries.py`` the records read back (:class:`RunEntry`, :class:`NodeEntry`,
:class:`Runs`) and their text; ``processes.py`` which process recorded a run
and whether it lives; ``versions.py`` the environment a run records;
``paths.py`` where a history lives; ``rows.py`` a run as a stored row and back;
``store.py`` the SQLite file; ``recorder.py`` the writer thread;
``query.py`` :func:`history` and :func:`find`. This package re-exports the
names the rest of lazyflow and its users call.

Policy. A :class:`Recorder` subscribes to :data:`lazyflow.engine.events.GLOBAL`, so
every flow's runs are recorded without the engine knowing (it never prints or
writes history itself). It subscribes on the process's first run
(``Flow.run`` calls :func:`start_recording`), not at import: importing
lazyflow starts no thread and leaves the bus empty, so a process that never
runs a flow builds no event objects for it. It takes run events only
(``subscribe(nodes=False)``), so the engine builds no node event for it. A
request's thread does little: it notes a run's start, and at the run's end
queues what its row has of its own when the run repeats the last plain run of
its request shape (every warm request after the first: its nodes compared at
once), its row when every node was a plain cache hit, or the run itself for
the writer to build (``recorder.py``). One background writer thread drains the
queue and commits a whole batch in one SQLite transaction every
:data:`BATCH_SECONDS`; :func:`flush` and interpreter exit commit what is
queued on their own thread (no wake-up of the writer to wait for). So a run
never waits for a disk write; a process killed loses at most the last
quarter second (a run killed sooner than that after it started may be
missing; a longer one is there, marked interrupted). ``recorder.py`` says
why nothing of a run's records is kept past its request (the cyclic GC) and
how a long run's progress is kept (its records read again at each commit).

State. One SQLite file per cache directory (``<disk dir>/history.sqlite``,
the directory the disk tier declares: ``Cache.disk_directory``), in WAL mode
so readers (``lazyflow runs``, another kernel) never block writers and two
processes can record concurrently (``busy_timeout`` makes them queue). Table
``runs``: one row per run, written ``running`` if it is still going at a
commit and updated when it ends. Its nodes are one JSON array in column
``nodes`` (the view ``nodes`` shows them as one SQL row per (run, node)),
except for a run whose every node was a plain hit: it names a *node set*
(table ``node_sets``: names, tiers, keys, digests, sizes, saved times; shared
by the runs alike, stored once per file) and keeps only when each hit was
served (``rows.py``). Measured with ``benchmarks/history.py``: a warm request
of 100 memory hits cost 1.8x with JSON rows, 1.06-1.08x so; the file grows by
~1 KB for such a run instead of ~15 KB. A run also keeps how its flow inputs
read (``n=3``, ``<redacted>``, ``<ndarray float64 (1000, 3)>``: ``model/shown.py``),
taken from the request's values that ``RunStarted`` carries and built once per
request shape, so a warm run pays nothing for them; each node's cpu, peak memory
and metrics; and what its hits saved. Values stay in this local file: cache
metadata, which travels to a remote, holds digests only. The schema is numbered
(``PRAGMA user_version``, ``store.SCHEMA_VERSION``); a file an earlier
lazyflow wrote gains the new table and columns when first opened, and its
rows read as they were. A flow without a disk tier keeps its history in an
in-memory database for the life of the process: nothing is written to disk
that was not asked for, yet ``lf.history()`` still lists its runs.
``LAZYFLOW_HISTORY`` names another file, or ``off`` disables recording.

A run whose process died (SIGKILL, power cut) stays ``running`` in the file;
every transaction is atomic, so the record is consistent up to the last
commit. Readers report such a run as ``interrupted`` (and rewrite it so) once
its process is gone: same host, and no live process with that pid and start
time (pids are reused).

A damaged file ("file is not a database", "malformed"), found when the store
opens it or when a statement first fails, is moved aside to
``history.sqlite.damaged-<timestamp>`` (``cache/quarantine.py``: never
deleted, its rows may be recoverable) and recording goes on in a fresh file,
with one :class:`~lazyflow.errors.CacheWarning` naming both paths.

Rejected: writing synchronously from the run thread (a commit costs more than
a whole warm request, 20 µs here); one file per run (``lazyflow runs`` would
have to open thousands of files); one SQL row per node (5-10 µs an insert);
a plain run's nodes as JSON text (each float's ``repr`` ~0.4 µs: the 100-hit
request's history cost 0.4 ms) or inline in its row without sharing (the
blob's insert alone cost 9-15 µs); finding the history's directory by
probing a tier named "disk" for a ``directory``, ``path`` or ``root``
attribute (the disk tier declares its directory, the cache answers
``disk_directory``).
"""

from lazyflow.history.entries import NodeEntry, RunEntry, Runs
from lazyflow.history.paths import FILENAME, MEMORY, default_cache_dir, location
from lazyflow.history.query import find, history, open_store
from lazyflow.history.recorder import BATCH_SECONDS, Recorder, flush, start_recording
from lazyflow.history.store import BUSY_SECONDS, Store
from lazyflow.history.versions import environment

__all__ = ["BATCH_SECONDS", "BUSY_SECONDS", "FILENAME", "MEMORY", "NodeEntry", "Recorder",
           "RunEntry", "Runs", "Store", "default_cache_dir", "environment", "find", "flush",
           "history", "location", "open_store", "start_recording"]
