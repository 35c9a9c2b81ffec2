"""Node keys: content keys, trace keys, and why a key changed.

Design note
-----------
Two keys per node, both xxh3-128 over *sorted, length-prefixed* (name, digest)
pairs with a domain tag, so no two layouts can collide:

* the **content key** (``NodeRecord.key``): code fingerprint + parameter digests
  + the *value digests* of the node's inputs. Results are stored under it.
  Because inputs enter by value, an upstream node that re-runs and returns an
  equal value leaves its dependents' content keys unchanged (early cutoff).
* the **trace key**: code fingerprint + parameter digests + the *trace keys*
  of the inputs. It can be computed from code and flow inputs alone, without
  any value, so a request resolves a cached target without touching its
  ancestors' entries. The cache keeps a small record trace key -> (content
  key, value digest). Nodes downstream of an uncacheable node have no trace
  key: they are resolved by content after that node runs. A node without
  upstream nodes needs no record: its two keys cover the same code and
  parameters, so it is resolved by its content key (``engine/prepare.py``);
  its trace key still enters its dependents'.

Every key domain carries :data:`KEY_SCHEMA`, bumped whenever what a digest or
fingerprint covers changes, so an entry keyed under older rules (on a disk
cache, or a team's shared remote) is never served again: it simply is not
found. Schema 2: value digests count type, sign of zero, Decimal exponent, tz
identity, dict order and pandas/numpy metadata; fingerprints cover decorators,
class hierarchies, local modules, bound instances and callable objects. Schema 3:
value digests also count a memoryview's format and shape, mapping proxies,
containers shared within a value, pandas extension columns (masks, tz, Arrow),
MultiIndex levels and codes and the duplicate-label flag, and hash structured and
long double arrays and set-slotted objects stably; fingerprints also cover
function attributes, patched builtins, modules imported in a body, each reader's
module attributes, a module's ``__getattr__``, metaclasses and assigned bases,
and ``functools.wraps`` of installed functions; a node's key also covers how its
function is called (``map=``, lazy inputs). Schema 4: entries a fixed fault may have
written wrong under a key that stays the same are never found again — values a worker
computed with stale module code (``executors/codecheck.py``), memoryviews stored as
bytes, UTC columns stored as Arrow (read back in another zone), a returned ``lf.Skip``;
fingerprints take globals from the bytecode's global loads (not attribute names), key a
class defined in a function by its name less the function, and key the files a node's
code reads by constant paths.

Every domain is a member of :class:`Domain`: a module that builds a key takes
its prefix from :func:`domain` and never spells the string itself, so the key
space is listed in one place (``docs/cache-format.md`` says, per domain, what
goes into the key and which record type is stored under it). The strings are
part of the cache format: changing one orphans every entry of its domain, as
bumping :data:`KEY_SCHEMA` does, and ``tests/test_keys.py`` pins known keys.

``reasons`` compares a node's current components with the last ones recorded
for it, so ``explain`` and run records can say *what* changed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING

import xxhash

if TYPE_CHECKING:
    from lazyflow.records import LatestRecord

__all__ = ["KEY_SCHEMA", "Domain", "checked_key", "content_key", "domain", "environment_key",
           "latest_key", "reasons", "scoped", "trace_key"]

KEY_SCHEMA = 4
"""The key-schema version inside every key domain (see the design note)."""


class Domain(enum.Enum):
    """Every key domain of the cache; the value is the name spelled inside the prefix."""

    CONTENT = "content"
    """A node's value entry (:func:`content_key`)."""
    TRACE = "trace"
    """A trace record: request key -> content key (:func:`trace_key`)."""
    LATEST = "latest"
    """What a flow's node was last computed from, for ``explain`` (:func:`latest_key`)."""
    SCOPED = "scoped"
    """Not a storage key: a code fingerprint scoped to an environment (:func:`scoped`)."""
    ENVIRONMENT = "environment"
    """The description of an environment digest (:func:`environment_key`)."""
    ELEMENT = "element"
    """One element's value entry of a ``map=`` node, as versions before the map manifest
    wrote them; no longer written nor read (the string stays reserved)."""
    MAP_CHUNK = "map-chunk"
    """One chunk of a ``map=`` node's manifest: element ids and results (``mapping.py``)."""
    LAZY_TRACES = "lazy-traces"
    """The dependency traces of a lazy node's base key (``lazy.py``)."""
    FILE = "file"
    """The bytes of an output file, by content digest (``files.py``)."""
    CHECKED = "checked"
    """A value entry that passed a node's changed checks (``engine/checks.py``)."""
    SHOWN = "shown"
    """What a ``%%flow`` cell printed and displayed (``notebook/magics.py``)."""


def domain(name: Domain) -> str:
    """The prefix of key domain ``name``.

    >>> domain(Domain.CONTENT)
    'lazyflow-content-4\\x00'
    """
    return f"lazyflow-{name.value}-{KEY_SCHEMA}\0"


_CONTENT = domain(Domain.CONTENT)
_TRACE = domain(Domain.TRACE)
_LATEST_DOMAIN = domain(Domain.LATEST)
_SCOPED = domain(Domain.SCOPED)
_ENVIRONMENT = domain(Domain.ENVIRONMENT)
_CHECKED = domain(Domain.CHECKED)


def scoped(fingerprint: str, environment: str) -> str:
    """A code fingerprint scoped to an environment digest (``lf.Cache(scope="environment")``):
    keys built from it never meet keys of another environment."""
    return xxhash.xxh3_128_hexdigest(f"{_SCOPED}{fingerprint}\0{environment}".encode())


def checked_key(key: str, checks: str) -> str:
    """Where it is recorded that the entry under ``key`` passed the checks digested ``checks``."""
    return xxhash.xxh3_128_hexdigest(f"{_CHECKED}{key}\0{checks}".encode())


def environment_key(digest: str) -> str:
    """Where the description of the environment with ``digest`` is recorded."""
    return xxhash.xxh3_128_hexdigest(f"{_ENVIRONMENT}{digest}".encode())


def _fold(domain: str, fingerprint: str, params: Mapping[str, str],
          inputs: Mapping[str, str]) -> str:
    # one string hashed once (this runs twice per node per request), spelling out the
    # domain, the fingerprint, then per section its tag and "len:name=digest;" pairs
    text = (f"{domain}{fingerprint}\x01{_pairs(params) if params else ''}"
            f"\x02{_pairs(inputs) if inputs else ''}")
    return xxhash.xxh3_128_hexdigest(text.encode())


def _pairs(pairs: Mapping[str, str]) -> str:
    if len(pairs) == 1:  # the usual case, without a sort or a comprehension
        for name, digest in pairs.items():
            return f"{len(name)}:{name}={digest};"
    return "".join([f"{len(name)}:{name}={pairs[name]};" for name in sorted(pairs)])


def content_key(fingerprint: str, params: Mapping[str, str], inputs: Mapping[str, str]) -> str:
    """The key results are stored under: code, parameter digests, input value digests."""
    return _fold(_CONTENT, fingerprint, params, inputs)


def trace_key(fingerprint: str, params: Mapping[str, str], upstream: Mapping[str, str]) -> str:
    """A key computable without values: code, parameter digests, upstream trace keys."""
    return _fold(_TRACE, fingerprint, params, upstream)


_LATEST: dict[str, str] = {}  # "len:flow NUL node" -> latest key
_LATEST_SIZE = 65536


def latest_key(flow: str, node: str) -> str:
    """Where the components of a node's most recent computation are recorded."""
    # asked twice per computed node: memoised in a dict of strings, which the cyclic GC does
    # not track (lru_cache keeps a tracked link object per entry)
    name = f"{len(flow)}:{flow}\0{node}"
    key = _LATEST.get(name)
    if key is None:
        if len(_LATEST) >= _LATEST_SIZE:
            _LATEST.clear()
        key = _LATEST[name] = xxhash.xxh3_128_hexdigest(f"{_LATEST_DOMAIN}{name}".encode())
    return key


def reasons(previous: LatestRecord | None, fingerprint: Mapping[str, str],
            params: Mapping[str, str], inputs: Mapping[str, str | None]) -> list[str]:
    """Say why a node's key differs from its last recorded computation (its latest record).

    ``inputs`` maps parameter to value digest, or ``None`` when the upstream
    node has still to run. Returns human phrases, most specific first.
    """
    if previous is None:
        return ["never computed"]
    out: list[str] = []
    old_fp = previous.get("fingerprint") or {}
    changed = sorted(k for k in set(old_fp) | set(fingerprint) if old_fp.get(k) != fingerprint.get(k))
    if changed:
        out.append("code changed (" + ", ".join(_label(k) for k in changed) + ")")
    old_params = previous.get("params") or {}
    changed = sorted(k for k in set(old_params) | set(params) if old_params.get(k) != params.get(k))
    if changed:
        out.append("parameter changed (" + ", ".join(changed) + ")")
    # records written before the encoding was stamped call them "inputs" (records.LatestRecord)
    old_inputs = previous.get("input_digests") or previous.get("inputs") or {}
    pending = sorted(k for k, v in inputs.items() if v is None)
    changed = sorted(k for k, v in inputs.items() if v is not None and old_inputs.get(k) != v)
    if changed:
        out.append("input changed (" + ", ".join(changed) + ")")
    if pending:
        out.append("input may change (" + ", ".join(pending) + " will run)")
    return out or ["entry missing from the cache (evicted or cleared)"]


def _label(component: str) -> str:
    kind, _, name = component.partition(":")
    return {"code": f"{name}", "helper": f"helper {name}", "global": f"global {name}",
            "version": "version="}.get(kind, f"{kind} {name}")
