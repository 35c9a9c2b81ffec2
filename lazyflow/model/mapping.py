"""Per-item map: ``@flow.node(map="items")`` calls the function once per element.

Design note
-----------
Policy. A map node is one node of the graph whose value is the list of its
function's results, one per element of the mapped input, in order. When the
node's own key misses (some element changed), the engine calls the function
only for the elements it has no result for — change one element of 1,000
and one call runs. A map over a map's output is element-wise for the same
reason: the changed element is the only one whose result changed.

Where earlier results are found: the map's *manifest*. It belongs to the
node's *base key* — its content key without the mapped input, so code,
parameters and other inputs — and holds, for every element computed under
it, the element's *id* and its result. It is split into *chunks* of
:data:`CHUNK` elements, each one cache entry under its own key (the base key,
the mapped parameter and the chunk's index: :func:`chunk_key`), so appending
one element rewrites one chunk, not the whole list, and a chunk is written
whole or not at all. Chunk ``i`` holds first the elements at positions ``i *
CHUNK`` onwards of the list it was written for, then up to ``CHUNK`` results
*carried over* from the chunk it replaced, for elements that list lacks: a
request on a sample of the list, then on the whole list again, computes
nothing the second time. Results are looked up by *id*, so a reordered list,
a list with an element inserted, or duplicates find every result they can
(:func:`recall`: chunk by chunk at memcmp speed where the positions still
agree, then by id in the chunk, then in all the chunks read), and an element
missing at several positions is computed once. An element's id
(:func:`element_ids`) is 16 bytes: its exact value for an int or a float,
else its ``lf.hash_value`` digest (``keys/flat.py``: a list of ints or floats
gets its ids at buffer speed, without hashing each).

Why this is never wrong. Every chunk under a base key pairs ids with results
the node's function gives *for that code, those parameters and those other
inputs* — the base key covers them all — so any chunk, whoever wrote it and
for whichever list, is correct for the ids it holds. Two processes writing one
map at once can leave chunks from either: fewer hits at worst, never a wrong
value. A chunk that is missing, damaged (its checksum fails: the tier drops
it) or not shaped as this version writes it is a miss for its elements,
which are computed again.

Elements to compute are submitted to the run's executor in a few batches
(``engine/maps.py``), each element called on its own with the node's retry
policy; their futures are gathered into one future, so the scheduler sees one
node in flight. A failing element fails the node with its own
exception plus a note naming its index; the results that succeeded are
written to the manifest, so the next request computes only the failures.

Rejected alternatives: one cache entry per element (what earlier versions
did, under the ``element`` key domain): on the disk tier a first run over
20,000 ints cost 1.7x storing their results with plain ``diskcache`` sets, and
appending one element 9x reading them with plain gets (a digest, a key and a
lookup per element); the manifest costs 0.02x and 0.06-0.08x
(``benchmarks/maps.py``).
Expanding a map into one graph node per element at planning time makes the
plan's size depend on data (a 1,000,000-element list would be a
1,000,000-node graph before anything is known to have changed) and needs the
data before planning, which breaks lazy requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Final

import xxhash

from lazyflow.errors import DefinitionError, MapError
from lazyflow.keys import Domain, domain, flat
from lazyflow.keys.hashing import hash_value

__all__ = ["CHUNK", "ID_SIZE", "MISSING", "Chunk", "Cost", "Recalled", "build_chunk", "chunk_count",
           "chunk_ids", "chunk_key", "element_ids", "element_key", "elements", "recall",
           "validate_map"]

CHUNK: Final = 2048
"""Elements per manifest chunk: appending one rewrites one chunk of at most this many.

2,048 ids take 32 KiB, so a chunk of numbers stays under the disk tier's 64 KiB
``min_file_size`` and is written into its SQLite row: 4,096 went to a value file,
created and removed on every rewrite (3 ms of an 11 ms request that appended one
element to 20,000); fewer means more chunks to read per request."""
ID_SIZE: Final = 16
"""Bytes of one element id."""
_CHUNK_DOMAIN = domain(Domain.MAP_CHUNK)
_ELEMENT_DOMAIN = domain(Domain.ELEMENT)
_SCAN = 32  # ids looked up by scanning the chunks, up to which a dict of every id is not built


Cost = tuple[float, "dict[str, float] | None"]
"""What computing some results took: seconds, and the ``lf.report`` figures or ``None``."""


def _is_cost(cost: Any) -> bool:
    """Whether ``cost`` is shaped as a :data:`Cost` (a chunk read back is not trusted blindly)."""
    return (type(cost) is tuple and len(cost) == 2 and type(cost[0]) is float
            and (cost[1] is None or type(cost[1]) is dict))


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final[Any] = _Missing()
"""Stands for an element's result that is not known (yet)."""


def validate_map(node: str, params: Sequence[str], option: Any, lazy: Any) -> None:
    """Check a ``map=`` option: one parameter name of the function, not a lazy one."""
    if option is None:
        return
    if not isinstance(option, str) or option not in params:
        raise DefinitionError(f"node {node!r}: map= names the parameter whose elements the "
                              f"function is applied to, one of {', '.join(params) or 'none'}; "
                              f"got {option!r}")
    if lazy:
        raise DefinitionError(f"node {node!r}: a map node cannot take lazy inputs "
                              f"(lazy={tuple(lazy)!r}); compute the choice in an upstream node")


def elements(value: Any, node: str, param: str) -> list[Any]:
    """The elements of a mapped input, as a list.

    A set is refused: its digest leaves its order out (``{0, 8}`` built two ways
    iterates two ways), so a stored list of results could come back in another
    order than the function gives now. So is a value that says it iterates and
    then does not (a 0-d numpy array), with the same clear error."""
    if type(value) is list:  # the usual case, with no check to pay
        return value
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise MapError(f"node {node!r} maps over {param!r}, which must be a list or another "
                       f"iterable of elements, got a {type(value).__name__}")
    if isinstance(value, (set, frozenset)):
        raise MapError(f"node {node!r} maps over {param!r}, a {type(value).__name__}: its "
                       "order is not part of its value, so the results' order could change "
                       f"from one request to the next; map over sorted({param}) or a list")
    try:
        return list(value)
    except TypeError as e:
        raise MapError(f"node {node!r} maps over {param!r}, which must be a list or another "
                       f"iterable of elements, got a {type(value).__name__} that cannot be "
                       f"iterated ({e})") from e


def element_ids(items: list[Any]) -> bytes:
    """Every element's id, :data:`ID_SIZE` bytes each, in order (see the design note).

    Equal ids mean equal ``lf.hash_value`` digests: ``1``, ``True`` and ``1.0`` differ.
    Raises :class:`~lazyflow.errors.HashingError` for an element that cannot be hashed.
    """
    fast = flat.scalar_ids(items)
    if fast is not None:
        return fast
    return b"".join([flat.scalar_id(item) or bytes.fromhex(hash_value(item))
                     for item in items])


def element_key(base_key: str, param: str, digest: str) -> str:
    """Where versions before the manifest stored one element's result (domain ``element``):
    the base key, the mapped parameter and the element's digest. Neither written nor read
    now; kept so the format of the caches they wrote stays described, and tested."""
    return xxhash.xxh3_128_hexdigest(
        f"{_ELEMENT_DOMAIN}{base_key}\0{len(param)}:{param}\0{digest}".encode())


def chunk_key(base_key: str, param: str, index: int) -> str:
    """Where chunk ``index`` of a map's manifest is stored: the node's key without the mapped
    input (``base_key``), the mapped parameter, and the chunk's index."""
    return xxhash.xxh3_128_hexdigest(
        f"{_CHUNK_DOMAIN}{base_key}\0{len(param)}:{param}\0{index}".encode())


# --------------------------------------------------------------------------- chunks


@dataclass(frozen=True, slots=True)
class Chunk:
    """One manifest chunk: element ids (``ID_SIZE`` bytes each) and their results, in order.

    The first ``aligned`` are the elements at the chunk's positions of the list it was
    written for; the rest were *carried* over from the chunk it replaced (results of
    an earlier list, kept so that going back to it computes nothing).
    """

    ids: bytes
    values: tuple[Any, ...]
    aligned: int
    cost: Cost = (0.0, None)
    """What computing the results it holds took, summed: seconds and ``lf.report``
    figures (zero for a chunk written before versions recorded it)."""

    def stored(self) -> tuple[bytes, tuple[Any, ...], int, Cost]:
        """What the cache stores: a plain tuple (immutable results stay unpickled in memory)."""
        return (self.ids, self.values, self.aligned, self.cost)

    @classmethod
    def read(cls, stored: Any) -> Chunk | None:
        """The chunk a stored value holds, or ``None`` if it is not shaped as one.

        A chunk written before chunks recorded their cost (three fields) reads with
        none: its results are as right, only what they saved is not known."""
        if type(stored) is not tuple or len(stored) not in (3, 4):
            return None
        ids, values, aligned = stored[:3]
        cost = stored[3] if len(stored) == 4 else (0.0, None)
        if (type(ids) is not bytes or type(values) is not tuple or type(aligned) is not int
                or not 0 <= aligned <= len(values) or len(ids) != ID_SIZE * len(values)
                or not _is_cost(cost)):
            return None
        return cls(ids, values, aligned, cost)

    def __len__(self) -> int:
        return len(self.values)

    def matches(self, part: bytes) -> bool:
        """Whether this chunk was written for exactly the ids ``part`` (carried ones aside)."""
        return self.aligned * ID_SIZE == len(part) and self.ids.startswith(part)


def chunk_ids(ids: bytes, length: int, index: int, unknown: AbstractSet[int]) -> bytes:
    """The ids at chunk ``index``'s positions of a list of ``length`` elements whose result
    is known (all but the ``unknown`` positions: elements that failed)."""
    lo, hi = index * CHUNK, min(length, (index + 1) * CHUNK)
    if not unknown or not any(p in unknown for p in range(lo, hi)):
        return ids[lo * ID_SIZE:hi * ID_SIZE]
    return b"".join([ids[p * ID_SIZE:(p + 1) * ID_SIZE] for p in range(lo, hi)
                     if p not in unknown])


def build_chunk(ids: bytes, values: Sequence[Any], index: int, unknown: AbstractSet[int],
                old: Chunk | None) -> Chunk:
    """Chunk ``index`` of a list with these ids and results (the ``unknown`` ones left out),
    carrying over the results of ``old`` (the chunk it replaces) for other ids, up to
    :data:`CHUNK` of them."""
    lo, hi = index * CHUNK, min(len(values), (index + 1) * CHUNK)
    known = list(values[lo:hi]) if not unknown else \
        [values[p] for p in range(lo, hi) if p not in unknown]
    aligned = chunk_ids(ids, len(values), index, unknown)
    carried_ids, carried = _carried(old, aligned) if old is not None else (b"", [])
    return Chunk(aligned + carried_ids, tuple(known + carried), len(known))


def _carried(old: Chunk, aligned: bytes) -> tuple[bytes, list[Any]]:
    """The ids and results of ``old`` that ``aligned`` lacks, at most :data:`CHUNK` of them
    (its own aligned ones first: the most recent)."""
    if aligned.startswith(old.ids):  # an element appended: nothing of old is lacking
        return b"", []
    present = set(_split(aligned))
    ids: list[bytes] = []
    carried: list[Any] = []
    for element, value in zip(_split(old.ids), old.values, strict=True):
        if element not in present:
            present.add(element)
            ids.append(element)
            carried.append(value)
            if len(carried) == CHUNK:
                break
    return b"".join(ids), carried


def chunk_count(length: int) -> int:
    """How many chunks the manifest of a list of ``length`` elements has."""
    return -(-length // CHUNK)


# --------------------------------------------------------------------------- recall


@dataclass(slots=True)
class Recalled:
    """What a manifest knows of a list: every element's result (``MISSING`` if unknown), the
    positions to compute (one per distinct id), where the duplicates of those are, and
    which results were found by id rather than in place."""

    values: list[Any]
    missing: list[int]
    copies: dict[int, int]  # position -> the missing position whose result it takes
    shared: list[int]  # positions whose result was found by id (another may hold it too)


def recall(chunks: Sequence[Chunk | None], ids: bytes, *, dedupe: bool = True) -> Recalled:
    """Look every element (by its id) up in the manifest chunks read.

    Chunk by chunk, the positions where the list still agrees with the chunk of
    the same index are taken at memcmp speed, and the others are looked up by id
    in that chunk (its carried results included); what is still missing is then
    looked up in all the chunks. ``dedupe``: an id missing at several positions
    is computed once.
    """
    length = len(ids) // ID_SIZE
    if not any(chunks):  # nothing to recall (a first run): the ids only tell duplicates
        return _first(ids, length, dedupe=dedupe)
    values: list[Any] = []
    unmatched: list[int] = []
    shared: list[int] = []
    for index in range(chunk_count(length)):
        lo = index * CHUNK
        part = ids[lo * ID_SIZE:(lo + CHUNK) * ID_SIZE]
        old = chunks[index] if index < len(chunks) else None
        if old is not None and old.matches(part):  # the usual case: the chunk is unchanged
            values.extend(old.values[:old.aligned])
            continue
        pending: list[int] = []
        values.extend(_aligned(old, part, lo, pending))
        if old is None or len(old) == 0:
            unmatched.extend(pending)
            continue
        own = _Index([old], len(pending))  # moved within the chunk, or carried over
        for position in pending:
            value = own.get(ids[position * ID_SIZE:(position + 1) * ID_SIZE])
            if value is MISSING:
                unmatched.append(position)
            else:
                values[position] = value
                shared.append(position)
    found = _Index([c for c in chunks if c is not None], len(unmatched))
    missing: list[int] = []
    copies: dict[int, int] = {}
    first: dict[bytes, int] = {}
    for position in unmatched:
        element = ids[position * ID_SIZE:(position + 1) * ID_SIZE]
        value = found.get(element)
        if value is not MISSING:
            values[position] = value
            shared.append(position)
        elif dedupe and element in first:
            copies[position] = first[element]
        else:
            first[element] = position
            missing.append(position)
    return Recalled(values, missing, copies, shared)


def _first(ids: bytes, length: int, *, dedupe: bool) -> Recalled:
    """Every element missing, each distinct id computed once when ``dedupe``."""
    if not dedupe or flat.all_distinct(ids):  # a sort of 8-byte halves: 0.35 s of a dict
        return Recalled([MISSING] * length, list(range(length)), {}, [])  # less at 1M
    split = list(_split(ids))
    # built from the end, so each id keeps its first position (a C loop, no Python one)
    first = dict(zip(reversed(split), range(length - 1, -1, -1), strict=True))
    if len(first) == length:  # no duplicates after all
        return Recalled([MISSING] * length, list(range(length)), {}, [])
    copies = {p: first[element] for p, element in enumerate(split) if first[element] != p}
    return Recalled([MISSING] * length, sorted(first.values()), copies, [])


def _aligned(old: Chunk | None, part: bytes, lo: int, pending: list[int]) -> list[Any]:
    """Results of ``part`` (the ids at ``lo`` onwards) taken from ``old``'s aligned ones
    where the two agree position by position; the other positions go to ``pending``."""
    count = len(part) // ID_SIZE
    if old is None:
        pending.extend(range(lo, lo + count))
        return [MISSING] * count
    before = old.ids[:old.aligned * ID_SIZE]
    head = _shared_prefix(before, part)  # an element appended or changed leaves the rest
    tail = _shared_suffix(before, part, head) if len(before) == len(part) else 0
    out = list(old.values[:head]) + [MISSING] * (count - head - tail) + \
        list(old.values[old.aligned - tail:old.aligned] if tail else [])
    for offset in range(head, count - tail):
        start = offset * ID_SIZE
        if offset < old.aligned and before[start:start + ID_SIZE] == part[start:start + ID_SIZE]:
            out[offset] = old.values[offset]
        else:
            pending.append(lo + offset)
    return out


def _shared_prefix(a: bytes, b: bytes) -> int:
    """How many leading ids ``a`` and ``b`` share (a binary search of memcmp's)."""
    lo, hi = 0, min(len(a), len(b)) // ID_SIZE
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid * ID_SIZE] == b[:mid * ID_SIZE]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _shared_suffix(a: bytes, b: bytes, head: int) -> int:
    """How many trailing ids ``a`` and ``b`` (of equal length) share, past ``head``."""
    lo, hi = 0, len(a) // ID_SIZE - head
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid * ID_SIZE:] == b[len(b) - mid * ID_SIZE:]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class _Index:
    """Results by id across chunks: a scan for a few ids, a dict for many."""

    __slots__ = ("_chunks", "_table")

    def __init__(self, chunks: Sequence[Chunk], lookups: int) -> None:
        self._chunks = chunks
        self._table: dict[bytes, Any] | None = None
        if lookups > _SCAN and chunks:
            self._table = {}
            for chunk in chunks:
                self._table.update(zip(_split(chunk.ids), chunk.values, strict=True))

    def get(self, element: bytes) -> Any:
        """The result stored for the id ``element``, or ``MISSING``."""
        if self._table is not None:
            return self._table.get(element, MISSING)
        for chunk in self._chunks:
            at = flat.find_id(chunk.ids, element)
            if at != -1:
                return chunk.values[at]
        return MISSING


def _split(ids: bytes) -> Iterable[bytes]:
    return (ids[at:at + ID_SIZE] for at in range(0, len(ids), ID_SIZE))
