"""The cache hierarchy: ``lf.Cache``, built only on the ``Tier`` primitives.

Design note
-----------
Tiers are ordered fastest first (memory, disk, remote). Reads walk down and
stop at the first tier that holds the key; a hit below the top is *promoted*
(copied into every faster tier) so the next read is fast; the memory tier adopts
a promoted value (its arrays made read-only in place, not copied) since it was just
decoded and only the caller holds it. Writes go to every tier. ``lookup`` answers
from metadata alone, so deciding a hit never loads or unpickles a value; ``load``
then fetches the value, which tiers that serialise verify against the checksum in
its metadata. An entry verified wrong (:class:`CorruptEntryError`: corrupted,
truncated, undecodable, or changed in place) is dropped with a warning and reported
as a miss: never return wrong data. A tier that cannot be reached at all (network,
permissions) is skipped with a warning but its entries are kept: a transient outage
must not empty a shared remote. A
tier that passed its deadline (:class:`TierOfflineError`) has warned once
itself and fails fast from then on: it is skipped silently for the rest of the
run, and ``flush``, which ends every run, lets the next run try it again.

Besides value entries the hierarchy keeps *records*: metadata-only entries
(the trace index of ``keys.py``: request key -> content key and digest).
They live on every tier, so a fresh process or a colleague resolves a cached
target from them without computing anything. A *local* record lives on the
memory and disk tiers only, never on a shared remote: the latest record of a
node says what was last computed *here*, which differs per colleague (and
would cost an upload per computed node). ``docs/cache-format.md`` lists
every record type and where it lives.

Settings not passed explicitly come from ``config.py`` (environment, then
``lazyflow.toml`` / ``[tool.lazyflow]``, then defaults). Management
(``stats``, ``clear``, ``prune``, ``management.py``) is built on the same
primitives, so every tier, present or future, supports it. Deleting from a
shared (remote) tier needs ``confirm=True``, checked for every chosen tier
before any is touched: a refused clear deletes nothing, not even the local
tiers (all or nothing; a ``file://`` remote once lost its root to a plain
``clear``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import lazyflow.cache.config as config
import lazyflow.cache.management as management
from lazyflow.cache.base import NO_VALUE, CorruptEntryError, Meta, Stored, Tier, TierOfflineError
from lazyflow.cache.management import SHARED
from lazyflow.cache.memory import MemoryTier
from lazyflow.cache.sizes import parse_size
from lazyflow.errors import CacheWarning, warn

if TYPE_CHECKING:
    from lazyflow.cache.disk import DiskTier

__all__ = ["Cache", "default_memory_budget"]

_SCOPES = ("code", "environment")
"""Tiers other people's processes read: local records (``record(local=True)``) skip them."""


def default_memory_budget() -> int:
    """A quarter of physical RAM (1 GiB when that cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4)
    except (ValueError, OSError, AttributeError):
        return 2**30


def _check_arguments(tiers_given: bool, trust: tuple[Any, ...], scope: str) -> None:
    """Refuse ``lf.Cache`` arguments that cannot work together."""
    if tiers_given and any(v is not config.DEFAULT for v in trust):
        raise ValueError("lf.Cache(tiers=...) takes its tiers as built: give sign_with=, "
                         "trusted_keys= and read_only= without tiers=, to the remote tier "
                         "lf.Cache builds")
    if scope not in _SCOPES:
        raise ValueError(f"lf.Cache(scope={scope!r}): choose 'code' (keys cover the code "
                         "and the packages it names; every entry records its environment) "
                         "or 'environment' (keys also cover Python, the platform and every "
                         "installed package's version)")


class Cache:
    """Where results live: memory, then local disk, then a remote URL.

    >>> cache = Cache(memory="500MB", disk=None, remote=None)
    >>> [tier.name for tier in cache.tiers]
    ['memory']

    ``memory`` is a byte budget ("2GB", bytes, or ``None`` for no memory tier);
    ``disk`` a directory (``None`` for none) holding at most ``disk_limit``
    bytes; ``remote`` an fsspec URL such as ``s3://bucket/prefix`` with
    ``remote_options`` passed to the filesystem. A setting not given comes
    from the environment (``LAZYFLOW_CACHE_DIR``, ``LAZYFLOW_REMOTE``,
    ``LAZYFLOW_REMOTE_OPTIONS``...), then ``lazyflow.toml`` or
    ``[tool.lazyflow]``, then the defaults: a quarter of RAM, ``./.lazyflow``
    with 20 GB, no remote.

    ``sign_with`` (a secret, or a key file as a ``pathlib.Path``) signs what is
    written to the remote; with ``trusted_keys``, an entry no trusted key signed is
    a miss, never decoded nor replaced; ``read_only=True`` writes nothing there
    (``cache/trust.py``, docs/caching.md "Trust"). ``scope="environment"`` puts
    Python, the platform and every installed version into every key
    (``keys/environment.py``); by default (``"code"``) entries only record it.
    """

    def __init__(
        self,
        memory: int | str | None = config.DEFAULT,
        disk: str | os.PathLike[str] | None = config.DEFAULT,
        remote: str | None = config.DEFAULT,
        remote_options: dict[str, Any] | None = config.DEFAULT,
        *,
        disk_limit: int | str = config.DEFAULT,
        sign_with: str | bytes | os.PathLike[str] | None = config.DEFAULT,
        trusted_keys: Sequence[str | bytes | os.PathLike[str]] | None = config.DEFAULT,
        read_only: bool = config.DEFAULT,
        tiers: Sequence[Tier] | None = None,
        scope: str = "code",
    ) -> None:
        _check_arguments(tiers is not None, (sign_with, trusted_keys, read_only), scope)
        self.scope = scope
        if tiers is None:
            tiers = _build_tiers(config.resolve(
                memory=memory, disk=disk, disk_limit=disk_limit, remote=remote,
                remote_options=remote_options, sign_with=sign_with, trusted_keys=trusted_keys,
                read_only=read_only))
        self.tiers: list[Tier] = list(tiers)
        self._lock = threading.Lock()
        self._hits: Counter[str] = Counter()
        self._tier_misses: Counter[str] = Counter()
        self._misses = 0

    # ----------------------------------------------------------------- values

    def lookup(self, key: str, *, local: bool = False) -> tuple[Stored, str] | None:
        """Metadata and tier name of the first tier holding ``key``; never loads the value.

        ``local``: the memory and disk tiers only; a shared tier is told that it was
        not asked, the caller holding ``key`` for new (``presume_missing``: a write of
        it then checks nothing first, and is still create-only).
        """
        for tier in self.tiers:
            if local and tier.name in SHARED:
                getattr(tier, "presume_missing", _unasked)(key)
                continue
            meta = _meta(tier, key)
            if meta is not None:
                return meta, tier.name
        return None

    def load(self, key: str, *, digest: str | None = None) -> tuple[Any, str]:
        """The value under ``key`` and the tier it came from; promotes lower-tier hits.

        As :meth:`entry`, without the metadata."""
        value, _, tier = self.entry(key, digest=digest)
        return value, tier

    def entry(self, key: str, *, digest: str | None = None) -> tuple[Any, Meta, str]:
        """The value under ``key``, its metadata and the tier it came from; promotes
        lower-tier hits.

        ``digest``: the value digest the caller found under ``key`` (and keyed its
        dependents by); an entry another writer replaced since with a value of another
        digest (a node that is not deterministic) is a miss. A tier that can
        (``entry``) gives the value with the metadata of the same read, so what is
        checked and promoted is the value's own. Raises ``KeyError`` when no tier holds
        a readable entry (of that digest).
        """
        for index, tier in enumerate(self.tiers):
            meta = _meta(tier, key)
            if meta is None or (digest is not None and meta.get("digest") != digest):
                self._missed(tier)
                continue
            try:
                value, meta = _read(tier, key, meta)
            except KeyError:
                if _meta(tier, key) is not None:  # still listed: broken, not just gone;
                    # dropping it keeps callers that recompute on a miss from looping
                    _drop_corrupt(tier, key, KeyError("listed, but its value is missing"))
                self._missed(tier)
                continue
            except CorruptEntryError as e:  # verified wrong: drop it, recompute
                _drop_corrupt(tier, key, e)
                continue
            except TierOfflineError:  # past its deadline: it has warned, skip it
                continue
            except Exception as e:  # unreachable (network, permissions): skip, keep the entry
                _warn_unreadable(tier, e)
                continue
            if digest is not None and meta.get("digest") != digest:
                self._missed(tier)  # replaced between the two reads: a miss, the entry kept
                continue
            with self._lock:
                self._hits[tier.name] += 1
            # slower tiers first: they encode the value before the memory tier adopts it
            # (making its arrays read-only, which their pickles would then record)
            for upper in reversed(self.tiers[:index]):
                _put_quietly(upper, key, value, meta, owned=True)
            return value, meta, tier.name
        with self._lock:
            self._misses += 1
        raise KeyError(key)

    def store(self, key: str, value: Any, meta: Meta) -> Meta | None:
        """Write ``value`` to every tier; a failing lower tier warns, never fails the run.

        Returns the metadata the fastest tier stored (as ``lookup`` would now
        answer), or ``None`` when that tier kept nothing or does not say.
        """
        stored = [_put_quietly(tier, key, value, meta) for tier in self.tiers]
        return stored[0] if stored else None

    # ----------------------------------------------------------------- records

    def record(self, key: str, meta: Meta, *, local: bool = False) -> None:
        """Store a metadata-only record under ``key`` in every tier; ``local``: in the
        memory and disk tiers only, not on a shared remote."""
        for tier in self.tiers:
            if not (local and tier.name in SHARED):
                _put_quietly(tier, key, NO_VALUE, meta)

    def find_record(self, key: str, *, local: bool = False) -> Stored | None:
        """The record under ``key`` from the fastest tier holding it (promoted upwards);
        ``local``: looked up in the memory and disk tiers only."""
        for index, tier in enumerate(self.tiers):
            if local and tier.name in SHARED:
                continue
            meta = _meta(tier, key)
            if meta is not None:
                for upper in self.tiers[:index]:
                    _put_quietly(upper, key, NO_VALUE, meta)
                return meta
        return None

    def expect(self, keys: Iterable[str]) -> None:
        """Say that ``keys`` are about to be looked up one by one (a request's trace and
        latest records): a tier that can (the disk's ``expect``) looks them up together
        now, so that each one it found missing is a miss without a statement of its own.
        ``keys`` is not even iterated when no tier can (a memory-only cache)."""
        listed: list[str] | None = None
        for tier in self.tiers:
            expect = getattr(tier, "expect", None)
            if expect is not None:
                if listed is None:
                    listed = list(keys)
                try:
                    expect(listed)
                except Exception as e:  # the lookups one by one will tell
                    _warn_unreadable(tier, e)

    # ----------------------------------------------------------------- management

    def delete(self, key: str) -> None:
        """Remove ``key`` from every tier."""
        for tier in self.tiers:
            tier.delete(key)

    def clear(self, tier: str | None = None, *, confirm: bool = False) -> None:
        """Remove every entry, from one tier (by name) or from all.

        Clearing a remote tier (shared with everyone who points at it) needs
        ``confirm=True``; without it :class:`~lazyflow.ConfirmationError` names
        the remote and nothing is deleted, on any tier.

        >>> cache = Cache(memory="1MB", disk=None, remote=None)
        >>> cache.clear("memory")
        """
        management.clear(self.tiers, self._select(tier), confirm,
                         "cache.clear()" if tier is None else f"cache.clear({tier!r})")

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per tier: entries, bytes, hits (values served) and misses (loads it could not serve).

        ``total`` adds the requests no tier could serve; the remote answers without listing
        (``RemoteTier.usage``) and adds ``flows``: entries and bytes per flow."""
        self.flush()
        return management.stats(self.tiers, self._hits, self._tier_misses, self._misses)

    def prune(self, max_size: int | str | None = None,
              older_than: float | str | _dt.timedelta | None = None,
              tier: str | None = None, *, confirm: bool = False) -> dict[str, dict[str, int]]:
        """Shrink the disk and remote tiers (or the one named); return what went per tier.

        ``older_than`` ("30d", "12h", seconds or a timedelta) removes entries stored (on a
        remote: last used) longer ago; ``max_size`` ("10GB" or bytes) then removes the
        oldest (least recently used) until the rest fits. A remote needs ``confirm=True``.

        >>> Cache(memory="1MB", disk=None, remote=None).prune(older_than="30d")
        {}
        """
        chosen = self._select(tier) if tier is not None else \
            [t for t in self.tiers if t.name != "memory"]
        return management.prune(self.tiers, chosen, max_size, older_than, confirm,
                                "cache.prune()" if tier is None else
                                f"cache.prune(tier={tier!r})", flush=self.flush)

    def finish_run(self, flow: str, run: str, started: float
                   ) -> dict[str, dict[str, int]] | None:
        """End a run in the tiers that keep a record of runs (the remote writes its
        manifest); the remote requests and bytes it sent, per method, or ``None``."""
        return _finish_run(self.tiers, flow, run, started)

    def commit(self) -> None:
        """Start committing the writes tiers buffer (the disk tier's batch); returns at once.

        The engine calls it before it blocks waiting on a running node, so a crash
        during a long node loses no finished result. The disk tier commits its
        batch on its writer thread meanwhile (otherwise at most 50 ms after the
        batch's first write); :meth:`flush` waits until writes landed. Costs a few
        attribute lookups when nothing is buffered.
        """
        for tier in self.tiers:
            commit = getattr(tier, "commit", None)
            if commit is not None:
                commit()

    def flush(self, *, manifests: bool = True) -> None:
        """Wait for buffered and background writes of every tier that has them (the disk
        tier's batch, the remote tier's uploads and run manifests); then a tier that went
        offline (past its deadline) is tried again by the next request.

        The engine flushes at the end of every run, so an outage lasts one run and
        every value a run computed is committed when the run returns; it passes
        ``manifests=False``: the run's manifest is written in the background, and
        lands by the next flush or before the process exits.
        """
        for tier in self.tiers:
            flush = getattr(tier, "flush", None)
            if not callable(flush):
                continue
            if not manifests and getattr(tier, "writes_manifests", False):
                flush(manifests=False)
            else:
                flush()
        for tier in self.tiers:
            reset = getattr(tier, "reset_outage", None)
            if callable(reset):
                reset()

    def tier(self, name: str) -> Tier:
        """The tier called ``name``; ``KeyError`` naming the configured ones otherwise."""
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(f"no {name!r} tier in this cache; configured: "
                       f"{', '.join(t.name for t in self.tiers) or 'none'}")

    @property
    def disk_directory(self) -> str | None:
        """The disk tier's directory, where files that belong beside the cache go (the run
        history); ``None`` without a disk tier.

        >>> Cache(memory="1MB", disk=None, remote=None).disk_directory is None
        True
        """
        disk = sys.modules.get("lazyflow.cache.disk")
        if disk is None:  # no disk tier was ever built; importing one would load diskcache
            return None
        kind: type[DiskTier] = disk.DiskTier
        return next((t.directory for t in self.tiers if isinstance(t, kind)), None)

    def __repr__(self) -> str:
        return f"Cache({', '.join(repr(t) for t in self.tiers)})"

    # ----------------------------------------------------------------- internals

    def _select(self, name: str | None) -> list[Tier]:
        return list(self.tiers) if name is None else [self.tier(name)]

    def _missed(self, tier: Tier) -> None:
        """Count a miss of ``tier`` (for ``stats``)."""
        with self._lock:
            self._tier_misses[tier.name] += 1


def _meta(tier: Tier, key: str) -> Meta | None:
    """A tier's metadata; a tier that cannot answer (remote down) counts as a miss."""
    if tier.name == "memory":
        return tier.meta(key)
    try:
        return tier.meta(key)
    except TierOfflineError:  # it has warned once itself
        return None
    except Exception as e:
        _warn_unreadable(tier, e)
        return None


def _put_quietly(tier: Tier, key: str, value: Any, meta: Meta, *,
                 owned: bool = False) -> Meta | None:
    """Write to one tier; a failing tier other than memory warns, never fails the run."""
    if isinstance(tier, MemoryTier):
        return tier.put(key, value, meta, owned=owned)
    if tier.name == "memory":
        return tier.put(key, value, meta)
    try:
        return tier.put(key, value, meta)
    except TierOfflineError:  # it has warned once itself
        return None
    except Exception as e:
        warn(f"could not write cache entry {key[:12]}… to the {tier.name} tier "
             f"({type(e).__name__}: {e}); the run goes on", CacheWarning)
        return None


def _read(tier: Tier, key: str, meta: Meta) -> tuple[Any, Meta]:
    """The value under ``key`` with the metadata of the same read where the tier can give
    both (``entry``), else with ``meta``, read before it."""
    read = getattr(tier, "entry", None)
    return read(key) if read is not None else (tier.get(key), meta)


def _unasked(key: str) -> None:
    """A shared tier's ``presume_missing`` where it keeps no note of keys not asked."""


def _warn_unreadable(tier: Tier, error: BaseException) -> None:
    warn(f"the {tier.name} cache tier could not be read "
         f"({type(error).__name__}: {error}); treating it as a miss", CacheWarning)


def _drop_corrupt(tier: Tier, key: str, error: BaseException) -> None:
    warn(f"dropped unreadable {tier.name} cache entry {key[:12]}… "
         f"({type(error).__name__}: {error}); it will be recomputed", CacheWarning)
    with contextlib.suppress(Exception):  # an undeletable entry still is not served
        tier.delete(key)


def _build_tiers(settings: config.Settings) -> list[Tier]:
    from lazyflow.cache.disk import DiskTier  # diskcache and fsspec load only when used
    from lazyflow.cache.remote import RemoteTier

    tiers: list[Tier] = []
    if settings.memory is not None:
        budget = (default_memory_budget() if settings.memory is config.DEFAULT
                  else parse_size(settings.memory, what="memory"))
        tiers.append(MemoryTier(budget))
    if settings.disk is not None:
        tiers.append(DiskTier(settings.disk,
                              size_limit=parse_size(settings.disk_limit, what="disk_limit")))
    if settings.remote is not None:
        tiers.append(RemoteTier(settings.remote, _with_trust(settings)))
    return tiers


def _with_trust(settings: config.Settings) -> dict[str, Any]:
    """The remote options, with the trust the settings configure (``trust.py``) under
    lazyflow's own option, which the tier's workers inherit."""
    from lazyflow.cache.trust import TRUST_OPTION, Trust

    trust = Trust.configured(settings.sign_with, settings.trusted_keys, settings.read_only)
    if trust is None:
        return settings.remote_options
    return {**settings.remote_options, TRUST_OPTION: trust}


def _finish_run(tiers: Sequence[Tier], flow: str, run: str,
                started: float) -> dict[str, dict[str, int]] | None:
    """``Cache.finish_run``: the engine calls it as a run ends, before ``flush``; a tier's
    failure warns, never fails the run."""
    cost = None
    for tier in tiers:
        finish = getattr(tier, "finish_run", None)
        if not callable(finish):
            continue
        try:
            cost = finish(flow, run, started) or cost
        except TierOfflineError:  # it has warned once itself
            continue
        except Exception as e:
            warn(f"the {tier.name} cache tier could not end run {run} "
                 f"({type(e).__name__}: {e}); the run goes on", CacheWarning)
    return cost
