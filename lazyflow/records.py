"""The cache's record types: what is stored under each kind of key, field by field.

Design note
-----------
The cache is a file format colleagues share through the remote tier, so what
it stores is written down here, one ``TypedDict`` per record type, and in
``docs/cache-format.md`` (keys, tiers, versions). The key's domain
(``keys.Domain``) decides which record type is stored under it:

==================  ==================================  =========================
domain              stored under it                     written by
==================  ==================================  =========================
``CONTENT``         a value with :class:`EntryMeta`     ``engine/settle.py``
``MAP_CHUNK``       a value with :class:`MapChunkMeta`  ``engine/maps.py``
``ELEMENT``         a value with :class:`ElementMeta`   (versions before the manifest)
``FILE``            bytes with :class:`FileMeta`        ``files.py``
``TRACE``           :class:`TraceRecord`                ``engine/settle.py``
``LATEST``          :class:`LatestRecord`               ``engine/settle.py`` (local)
``LAZY_TRACES``     :class:`LazyTraceRecord`            ``engine/lazyinputs.py``
``ENVIRONMENT``     :class:`EnvironmentRecord`          ``engine/why.py``
``CHECKED``         :class:`CheckedRecord`              ``engine/checks.py``
``SHOWN``           :class:`ShownRecord`                ``notebook/magics.py``
==================  ==================================  =========================

A *record* is metadata without a value (``cache.base.NO_VALUE``). Every type
includes :class:`Stamp`, the fields a disk or remote tier adds when it writes
(``cache/serialize.py``: ``stamp``), so the types describe what a reader gets
back. Readers ignore fields they do not know, so a later version may add an
optional field without any version bump (expiry, metrics, manifests); changing
what a field *means* needs a new key schema (``keys.KEY_SCHEMA``) or a new name.

One name, one meaning. ``inputs`` in :class:`EntryMeta` maps a parameter to
the upstream entry's *content key* (what lineage walks); the upstream *value
digests* are ``input_digests``, in every type that has them. The latest
record called its digests ``inputs`` before the encoding version was stamped
(such records carry no ``encoding``); it is written as ``input_digests`` now
and the old name is still read (``keys.reasons``), which is cheaper than
bumping the key schema and orphaning every entry. Elsewhere in lazyflow, ``inputs`` of a ``Run`` (and of
a run-history row) are the *flow inputs'* digests, which entries call
``params``; those records are not part of the cache.

Types only: this module imports nothing of lazyflow, so every layer (keys,
cache, engine, notebook) may annotate with it. Values read back from a tier
are JSON, trusted to be of the type their key's domain says (a reader never
sees a foreign type: the domain is in the key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

__all__ = ["ElementMeta", "EntryMeta", "EnvironmentDescription", "EnvironmentRecord", "FileMeta",
           "LatestRecord", "LazyTraceRecord", "MapChunkMeta", "ShownRecord", "Stamp",
           "TraceRecord"]


class Stamp(TypedDict, total=False):
    """What the disk and remote tiers add to everything they store (``serialize.stamp``).

    The memory tier stores what it is given (plus ``size`` for a value).
    """

    created: float
    """When the value was computed (``time.time()``); kept through promotion."""
    stored: float
    """When this tier wrote the entry: what ``prune(older_than=...)`` ages by."""
    lazyflow: str
    """The version of lazyflow that wrote it (``lazyflow._version``)."""
    encoding: int
    """The lowest encoding version that reads the stored bytes and metadata
    (``serialize.encoding_for``); absent in entries written before it was stamped, which
    read as encoding 1."""
    size: int
    """Bytes of the encoded value (the memory tier: bytes it holds). Values only."""
    serializer: str
    """What decodes the frames: ``"pickle"``, ``"cloudpickle"`` (encoding 1), ``"bytes"``,
    ``"json"``, ``"numpy"`` or ``"arrow"`` (encoding 2; ``cache/formats.py``). Values only."""
    checksum: str
    """xxh3-128 hex of the encoded bytes, verified on every read. Values only; on the
    disk tier its absence marks a record."""


class _Digest(TypedDict):
    digest: str


class EntryMeta(_Digest, Stamp, total=False):
    """A node's value entry (domain ``CONTENT``), as the engine writes it.

    ``digest`` (required) is the value digest (``lf.hash_value``): dependents
    are keyed by it and a hit reports it.
    """

    node: str
    """The node's name."""
    flow: str
    """The flow's name."""
    duration: float
    """Seconds the call took."""
    cost: float
    """Seconds this value cost, its ancestors' computations included (``time_saved``)."""
    params: Mapping[str, str]
    """Flow-input parameter -> value digest."""
    inputs: Mapping[str, str]
    """Upstream parameter -> the upstream entry's content key (lineage walks these)."""
    input_digests: Mapping[str, str]
    """Upstream parameter -> the upstream value digest the key was built from."""
    fingerprint: Mapping[str, str]
    """Code fingerprint components (``code:f``, ``global:X``...) -> digest."""
    pid: int
    """The process that computed it."""
    env: str
    """The digest of the environment that computed it (see :class:`EnvironmentRecord`)."""
    checks: str
    """The digest of the node's ``check=`` callables the value passed when it was stored
    (absent: the node had none); see :class:`CheckedRecord`."""
    metrics: Mapping[str, float]
    """What the call reported with ``lf.report`` (absent: nothing)."""
    ancestry: Mapping[str, list[Any]]
    """What the value cost node by node, itself and every ancestor: node name ->
    ``[seconds]`` or ``[seconds, {metric: value}]``; absent past 128 nodes
    (``engine/ancestry.py``). A request counts each node's cost once with it."""
    environment: EnvironmentDescription
    """On a remote only, in the first entry a process wrote there: the description of
    ``env`` (``cache/remote_environment.py``), where other versions wrote a record."""
    env_at: str
    """On a remote only, in the process's later entries: the key of the entry carrying the
    description of ``env`` (the ``environment`` field above)."""


class CheckedRecord(Stamp):
    """A stored value passed a node's changed ``check=`` callables (domain ``CHECKED``),
    so a later hit does not run them again."""

    key: str
    """The content key of the entry checked."""
    checks: str
    """The digest of the checks it passed."""


class ElementMeta(_Digest, Stamp, total=False):
    """One element's value entry of a ``map=`` node (domain ``ELEMENT``), as versions before
    the map manifest wrote them (:class:`MapChunkMeta` replaced it); not read now."""

    node: str
    """The map node's name."""
    element: int
    """The element's index in the mapped input when it was computed."""
    flow: str
    """The flow's name."""


class MapChunkMeta(Stamp, total=False):
    """One chunk of a ``map=`` node's manifest (domain ``MAP_CHUNK``, ``model/mapping.py``).

    The value is a tuple ``(ids, results, aligned, cost)``: the ids of the elements the
    chunk holds (16 bytes each, concatenated), their results in the same order, how many
    of the first ids are the elements at the chunk's positions (the rest were carried
    over from the chunk it replaced), and what computing those results took (seconds
    and ``lf.report`` figures, summed; chunks of earlier versions have no ``cost``). It
    has no value digest: nothing is keyed by it.
    """

    node: str
    """The map node's name."""
    flow: str
    """The flow's name."""
    chunk: int
    """The chunk's index: it was written for the elements from ``chunk * 2048`` on."""
    elements: int
    """How many results it holds, carried-over ones included."""


class FileMeta(_Digest, Stamp, total=False):
    """The bytes of a file a node returned (domain ``FILE``), restored when it is deleted.

    ``digest`` is ``lf.hash_value`` of the bytes; the key holds their xxh3-128.
    A ``Dir``'s manifest (relative path, content digest per file) is pinned on
    the ``Dir`` inside the node's value, not stored as a record.
    """

    file: str
    """The path the bytes were first stored from (information only: restoring writes to
    the path the loaded value names)."""


class _TraceRequired(Stamp):
    key: str
    """The content key of the entry computed last for this trace key."""
    digest: str
    """That entry's value digest."""
    node: str
    """The node's name (information only)."""


class TraceRecord(_TraceRequired, total=False):
    """Request key -> content key (domain ``TRACE``): resolves a cached node from code and
    flow inputs alone, without touching its ancestors."""

    expires: float
    """The earliest time (Unix seconds) a ``max_age=`` in the value's ancestry makes it stale,
    itself included; absent when none has one (``engine/freshness.py``)."""


class _LatestRequired(TypedDict):
    digest: str
    key: str
    params: Mapping[str, str]
    fingerprint: Mapping[str, str]


class LatestRecord(_LatestRequired, Stamp, total=False):
    """What a flow's node was last computed from (domain ``LATEST``), so ``explain`` can say
    *what* changed. Kept on the memory and disk tiers only: it says what was computed
    *here*, which differs per colleague.

    ``digest`` and ``key`` are the value digest and content key computed; ``params`` and
    ``fingerprint`` mean what they mean in :class:`EntryMeta`.
    """

    input_digests: Mapping[str, str]
    """Upstream parameter -> value digest."""
    inputs: Mapping[str, str]
    """The same as ``input_digests``, in records written before the encoding version was
    stamped: read, never written."""


class LazyTraceRecord(Stamp):
    """The dependency traces of a lazy node's base key (domain ``LAZY_TRACES``, ``lazy.py``).

    Each trace lists ``[parameter, value digest]`` of the lazy inputs the node called, in
    call order; at most 16 traces, oldest first.
    """

    traces: list[list[list[str]]]


class _ShownRequired(TypedDict):
    digest: str
    shown: list[dict[str, Any]]


class ShownRecord(_ShownRequired, Stamp, total=False):
    """What a ``%%flow`` cell printed and displayed (domain ``SHOWN``, over its content key).

    ``shown`` holds ``{"stdout": text}`` or ``{"data": {mime: payload}, "metadata": {...}}``
    items in order (``notebook/replay.py``); ``digest`` is ``lf.hash_value`` of their JSON.
    """


class EnvironmentDescription(TypedDict):
    """An environment, as ``environment.Environment.describe`` gives it."""

    python: str
    implementation: str
    platform: str
    packages: Mapping[str, str]
    """Normalised distribution name -> version (plus ``+vcs.``/``+record.`` for path installs)."""


class EnvironmentRecord(Stamp):
    """The description of an environment digest (domain ``ENVIRONMENT``), recorded once
    per process and cache, so ``explain`` can say what differs for a hit computed elsewhere."""

    environment: EnvironmentDescription
