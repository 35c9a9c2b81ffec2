"""The keys layer: what a value, a piece of code and a node's result are named by.

Design note
-----------
Everything that decides a cache hit is computed here, from values and code
alone, with no cache, graph or engine in sight:

- ``hashing.py`` — the value digest (``lf.hash_value``): xxh3-128 over a
  canonical encoding that counts the type and every detail that changes
  behaviour; ``hashers/`` adds native digests for numpy, pandas, Arrow,
  polars, xarray, scipy.sparse and torch, registered lazily, and those of the
  standard library's values, registered at once;
- ``fingerprint.py`` — the code fingerprint: one walk over a function, the
  helpers, classes, modules and globals it reaches (``walk.py`` keeps what
  the walk found, ``rechecks.py`` re-reads it on each request,
  ``bytecode.py`` reads code statically, ``origin.py`` tells user code from
  installed packages,
  ``weakmemo.py`` remembers results per live object, ``environment.py``
  describes the installed distributions);
- ``domains.py`` — every key domain and the node keys built from the two
  digests (content key, trace key, and the records' keys), re-exported here.

Values carry code (a function in a list) and code reads values (a global),
so hashing and fingerprints recurse into each other; the import cycle is
broken by registration: ``fingerprint`` registers its code hasher into
``hashing`` when imported, never the other way round.
"""

from lazyflow.keys.domains import (
    KEY_SCHEMA,
    Domain,
    checked_key,
    content_key,
    domain,
    environment_key,
    latest_key,
    reasons,
    scoped,
    trace_key,
)

__all__ = ["KEY_SCHEMA", "Domain", "checked_key", "content_key", "domain", "environment_key", "latest_key",
           "reasons", "scoped", "trace_key"]
