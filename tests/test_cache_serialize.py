"""How values become bytes: out-of-band buffers, cloudpickle fallback, verified reads."""

from __future__ import annotations

import io
import threading

import numpy as np
import pandas as pd
import pytest
import xxhash

from lazyflow.cache import serialize
from lazyflow.cache.serialize import (
    CorruptEntryError,
    Encoded,
    decode,
    decode_bytes,
    encode,
    read_encoded,
)


def _roundtrip(value):
    encoded = encode(value)
    return decode(decode_bytes(encoded.tobytes(), encoded.serializer, encoded.checksum()))


def test_an_array_travels_as_a_frame_of_its_own_memory():
    array = np.arange(1000, dtype=np.float64)
    encoded = encode(array)
    assert encoded.serializer == "numpy"
    assert len(encoded.frames) == 2
    assert np.shares_memory(np.frombuffer(encoded.frames[1], dtype=np.float64), array)


def test_a_pickled_array_travels_as_an_out_of_band_frame_of_its_own_memory():
    array = np.zeros(1000, dtype=[("x", np.float64)])  # structured: pickled
    encoded = encode(array)
    assert encoded.serializer == "pickle"
    assert len(encoded.frames) == 2
    assert np.shares_memory(np.frombuffer(encoded.frames[1], dtype=array.dtype), array)


def test_a_decoded_array_is_equal_and_writable():
    array = np.random.default_rng(0).random((300, 300))
    back = _roundtrip(array)
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    back += 1  # owns its buffer


def test_a_large_decoded_array_owns_a_fresh_buffer():
    array = np.ones(2**18)  # 2 MiB: above the threshold that skips zero-filling
    back = _roundtrip(array)
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable and not np.shares_memory(back, array)


def test_a_dataframe_of_object_columns_roundtrips_with_the_standard_pickler():
    frame = pd.DataFrame({"x": np.arange(5), "o": [1, "b", None, 2.5, b"e"]},
                         index=list("vwxyz"))
    assert encode(frame).serializer == "pickle"
    pd.testing.assert_frame_equal(_roundtrip(frame), frame)


def test_lambdas_closures_and_local_classes_use_cloudpickle():
    offset = 3

    class Local:
        def __init__(self, v):
            self.v = v

    value = {"f": lambda x: x + offset, "obj": Local(7)}
    assert encode(value).serializer == "cloudpickle"
    back = _roundtrip(value)
    assert back["f"](1) == 4
    assert back["obj"].v == 7


def test_a_flipped_byte_is_detected_before_unpickling():
    encoded = encode(np.arange(100))
    data = bytearray(encoded.tobytes())
    data[-5] ^= 0xFF
    with pytest.raises(CorruptEntryError, match="checksum"):
        decode_bytes(bytes(data), encoded.serializer, encoded.checksum())


def test_a_truncated_entry_is_detected():
    encoded = encode(np.arange(100))
    with pytest.raises(CorruptEntryError, match="truncated"):
        decode_bytes(encoded.tobytes()[:-10], encoded.serializer, encoded.checksum())


def test_trailing_bytes_are_detected():
    encoded = encode([1, 2])
    with pytest.raises(CorruptEntryError, match="trailing"):
        decode_bytes(encoded.tobytes() + b"x", encoded.serializer, encoded.checksum())


def test_garbage_is_not_mistaken_for_an_entry():
    with pytest.raises(CorruptEntryError, match="magic"):
        decode_bytes(b"definitely not an entry", "pickle", "0" * 32)


def test_an_unknown_serializer_is_refused_with_advice():
    encoded = encode([1])
    with pytest.raises(CorruptEntryError, match="upgrade lazyflow or clear the cache"):
        decode(Encoded("from-the-future", encoded.frames))


def test_reads_stream_in_chunks_of_the_given_size():
    class Recording(io.BytesIO):
        def __init__(self, data):
            super().__init__(data)
            self.sizes = []

        def readinto(self, view):
            self.sizes.append(len(view))
            return super().readinto(view)

    encoded = encode(np.arange(10_000, dtype=np.int64))
    stream = Recording(encoded.tobytes())
    read_encoded(stream, encoded.serializer, encoded.checksum(), chunk=4096)
    assert max(stream.sizes) == 4096


_LARGE = 3 * 2**20  # float64 elements: a 24 MB frame, hashed beside the reads


@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_a_flipped_byte_anywhere_in_a_large_frame_is_detected(where):
    encoded = encode(np.arange(_LARGE, dtype=np.float64))
    data = bytearray(encoded.tobytes())
    frame = len(encoded.frames[-1])  # the array's bytes, at the end of the entry
    data[len(data) - frame + min(int(frame * where), frame - 1)] ^= 0x01
    with pytest.raises(CorruptEntryError, match="checksum"):
        read_encoded(io.BytesIO(bytes(data)), encoded.serializer, encoded.checksum())


def test_a_large_frame_reads_back_equal_when_hashed_beside_the_reads():
    value = np.arange(_LARGE, dtype=np.float64)
    encoded = encode(value)
    stream = io.BufferedReader(io.BytesIO(encoded.tobytes()))
    np.testing.assert_array_equal(
        decode(read_encoded(stream, encoded.serializer, encoded.checksum())), value)


def test_a_large_frame_cut_short_is_truncated_and_leaves_no_hashing_thread():
    encoded = encode(np.arange(_LARGE, dtype=np.float64))
    with pytest.raises(CorruptEntryError, match="truncated"):
        read_encoded(io.BytesIO(encoded.tobytes()[:-4096]), encoded.serializer,
                     encoded.checksum())
    assert not [t for t in threading.enumerate() if t.name == "lazyflow-hash"]


class _ThreadNoting:
    """An xxh3_128 that notes the thread of each update (which thread hashed what)."""

    threads: set[str] = set()
    real = xxhash.xxh3_128

    def __init__(self) -> None:
        self._digest = _ThreadNoting.real()

    def update(self, data: memoryview) -> None:
        _ThreadNoting.threads.add(threading.current_thread().name)
        self._digest.update(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def test_a_large_frame_is_hashed_on_a_thread_of_its_own_while_it_is_read(monkeypatch):
    encoded = encode(np.arange(_LARGE, dtype=np.float64))
    monkeypatch.setattr(serialize.xxhash, "xxh3_128", _ThreadNoting)
    _ThreadNoting.threads = set()
    read_encoded(io.BufferedReader(io.BytesIO(encoded.tobytes())), encoded.serializer,
                 encoded.checksum())
    assert "lazyflow-hash" in _ThreadNoting.threads
