"""cloudpickle as lazyflow pickles values: to store them (``serialize.py``) and to carry
them between processes (``executors/wire.py``, ``executors/dask_travel.py``).

One difference from cloudpickle's own: a ``memoryview`` comes back as one. cloudpickle
pickles it as its ``bytes``, so a node returning a view was served ``bytes`` from disk,
or got them back from a worker process, a value of another type and digest than its
function computes.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from typing import Any

import cloudpickle

__all__ = ["Pickler", "dumps"]


def dumps(value: Any, buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None
          ) -> bytes:
    """``value`` pickled at protocol 5 by :class:`Pickler` (large buffers out of band when
    ``buffer_callback`` takes them)."""
    out = io.BytesIO()
    Pickler(out, protocol=5, buffer_callback=buffer_callback).dump(value)
    return out.getvalue()


class Pickler(cloudpickle.CloudPickler):  # type: ignore[misc]  # cloudpickle is untyped
    """cloudpickle, with ``memoryview`` values rebuilt as views (:func:`_view`)."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is memoryview:
            try:  # the formats a view can be cast back to (struct's native single items)
                memoryview(bytes(obj.itemsize)).cast(obj.format)  # type: ignore[call-overload]
            except (TypeError, ValueError) as e:
                raise pickle.PicklingError(f"a memoryview of format {obj.format!r} cannot be "
                                           "stored as itself; return bytes or an array") from e
            return _view, (obj.tobytes(), obj.format, obj.shape, obj.readonly)
        return super().reducer_override(obj)


def _view(data: bytes, form: str, shape: tuple[int, ...], readonly: bool) -> memoryview:
    """A ``memoryview`` as :class:`Pickler` pickled it: its bytes in C order, its format
    and shape, and whether it was read-only (else it views a ``bytearray``)."""
    view = memoryview(data if readonly else bytearray(data))
    if (form, shape) == ("B", (len(data),)):
        return view
    shaped: memoryview = view.cast("B").cast(form, shape)  # type: ignore[call-overload]
    return shaped
