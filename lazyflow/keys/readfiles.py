"""Files a function's code reads by a constant path (``pd.read_csv("data.csv")``), as parts
of its code fingerprint (``fingerprint.py``).

``bytecode._read_paths`` lists the path-like string constants the code hands to a
reader; each names a file keyed here by its content, and re-checked by one ``stat`` a
request (``rechecks.FILE``): keyed by the path's text alone, an edit to the file was
served the old result.
"""

from __future__ import annotations

import os
import stat
import types

import xxhash

from lazyflow.keys.origin import display_name
from lazyflow.keys.rechecks import FILE, file_signature
from lazyflow.keys.walk import Source, Walk

__all__ = ["collect_read_file"]


def collect_read_file(func: types.FunctionType, path: str, walk: Walk) -> None:
    """A file ``func``'s code reads by a constant path (``pd.read_csv("data.csv")``,
    ``bytecode._read_paths``): keyed by its content, and re-checked by one ``stat`` a
    request, so an edit to it runs the node again (the path's text alone would serve the
    old result). A folder cannot be keyed so: the node is not cached, and a note says to
    pass ``lf.Dir``. Nothing there yet: a file made later is a change."""
    where = os.path.abspath(path)
    signature = file_signature(where)
    walk.checks.append((FILE, None, where, signature, None))
    if signature is None:
        return
    if stat.S_ISDIR(signature[-1]):
        walk.unseeable(f"{display_name(func)} reads the folder {path!r} by a constant path, "
                       f"whose files lazyflow does not follow: pass lf.Dir({path!r}) as a "
                       "parameter's default to key its content")
        return
    try:
        digest = _file_digest(where)
    except OSError as e:
        walk.unseeable(f"{display_name(func)} reads the file {path!r}, which could not be "
                       f"read to key it ({e})")
        return
    walk.add(f"file:{path}", digest, Source(None, where))


def _file_digest(path: str) -> str:
    """The xxh3-128 digest of a file's bytes, read in 1 MiB blocks."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
