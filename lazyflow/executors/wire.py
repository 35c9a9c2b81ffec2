"""How objects cross a pipe between lazyflow and its worker processes.

Design note
-----------
Policy. An object is pickled with cloudpickle at protocol 5, so functions
defined in a notebook or a closure travel by value, and large buffers (numpy
arrays, bytes-like data) are taken *out of band*: the pickle stream holds
only their place, and each buffer is written to the pipe straight from the
array's memory and read straight into a preallocated ``bytearray`` that the
rebuilt array then owns. A result is therefore copied once by the kernel and
once into its final home, never through an intermediate pickle string.

Frame: ``Connection.send_bytes`` carries a small header (the pickle length and
the buffer lengths) and the pickle; the buffers follow as raw bytes on the
same descriptor. Only one thread reads a given connection, so the raw part
cannot interleave with another message.

Rejected: ``Connection.send``/``recv`` (pickles in band and copies a large
array twice more); shared memory segments (need explicit lifetime management
across a killed worker, which is exactly when they would leak).
"""

from __future__ import annotations

import os
import pickle
from multiprocessing.connection import Connection
from typing import Any

import lazyflow.cache.pickler as pickler

__all__ = ["receive", "send"]


def send(conn: Connection, obj: Any) -> None:
    """Write ``obj`` to ``conn``: header, pickle, then each out-of-band buffer raw."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickler.dumps(obj, buffers.append)  # cloudpickle, memoryviews kept as views
    views = [buffer.raw() for buffer in buffers]
    conn.send_bytes(pickle.dumps((len(data), [view.nbytes for view in views])))
    conn.send_bytes(data)
    fd = conn.fileno()
    for view in views:
        _write_all(fd, view)


def receive(conn: Connection) -> Any:
    """Read one object written by :func:`send`; raises ``EOFError`` if the peer died."""
    _, sizes = pickle.loads(conn.recv_bytes())
    data = conn.recv_bytes()
    fd = conn.fileno()
    buffers = []
    for size in sizes:
        buffer = bytearray(size)
        _read_into(fd, memoryview(buffer))
        buffers.append(buffer)
    return pickle.loads(data, buffers=buffers)


def _write_all(fd: int, view: memoryview) -> None:
    view = view.cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_into(fd: int, view: memoryview) -> None:
    while view:
        got = os.readv(fd, [view])
        if got == 0:
            raise EOFError("the worker process closed its pipe in the middle of a message")
        view = view[got:]
