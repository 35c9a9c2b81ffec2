"""A remote cache seen from outside, for tests of its management: objects listed, objects
made older (as days passing would), requests counted by the moto server itself."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def objects(url: str, options: dict[str, object] | None = None) -> list[str]:
    """The paths of every object under the remote ``url``, relative to it, sorted."""
    if url.startswith("file://"):
        root = Path(url.removeprefix("file://"))
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    import s3fs

    fs = s3fs.S3FileSystem(**(options or {}))
    fs.invalidate_cache()
    prefix = url.removeprefix("s3://").rstrip("/") + "/"
    return sorted(o.removeprefix(prefix) for o in fs.find(url))


def age(url: str, seconds: float, *, under: tuple[str, ...] = ("ac/", "cas/")) -> None:
    """Make the objects under the given folders of ``url`` ``seconds`` older: on a folder by
    their modification time, on the moto server of this process by its LastModified."""
    if url.startswith("file://"):
        root = Path(url.removeprefix("file://"))
        for path in root.rglob("*"):
            if path.is_file() and str(path.relative_to(root)).startswith(under):
                stat = path.stat()
                os.utime(path, (stat.st_atime, stat.st_mtime - seconds))
        return
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    stored = s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[bucket]
    for key in stored.keys.values():
        if key.name.removeprefix(prefix.rstrip("/") + "/").startswith(under):
            key.last_modified = key.last_modified - dt.timedelta(seconds=seconds)


class Requests:
    """What the moto server answers, recorded by it (its recorder writing to ``path``)."""

    def __init__(self, path: Path) -> None:
        from moto.moto_api import recorder

        _serialize_recording(recorder)
        self.recorder = recorder
        self.path = path

    @contextlib.contextmanager
    def recorded(self, url: str) -> Iterator[list[dict[str, str]]]:
        """The requests made within about ``url``'s bucket, filled in on leaving."""
        bucket = url.removeprefix("s3://").split("/")[0]
        found: list[dict[str, str]] = []
        self.recorder.reset_recording()
        self.recorder.start_recording()
        try:
            yield found
        finally:
            self.recorder.stop_recording()
        for line in self.path.read_text().splitlines():
            entry = json.loads(line)
            if urlsplit(entry["url"]).path.split("/")[1] == bucket:
                found.append(entry)


def _serialize_recording(recorder: Any) -> None:
    """Make the recorder write one request at a time: it writes a request's JSON and its
    newline apart, so with the server's threads a large request (a 64 KiB body) could
    find another's record between the two, two records on one line."""
    if getattr(recorder, "_lazyflow_serialized", False):
        return
    lock = threading.Lock()
    record = recorder._record_request

    def one_at_a_time(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return record(*args, **kwargs)

    recorder._record_request = one_at_a_time
    recorder._lazyflow_serialized = True


def kind(entry: dict[str, str]) -> str:
    """A recorded request's kind: its method, LIST for a listing."""
    if entry["method"] == "GET" and "list-type=" in entry["url"]:
        return "LIST"
    return entry["method"]


def kinds(entries: list[dict[str, str]]) -> Counter[str]:
    """How many requests of each kind."""
    return Counter(kind(e) for e in entries)


def body(entry: dict[str, str]) -> str:
    """A recorded request's body as text."""
    raw = entry.get("body") or ""
    if entry.get("body_encoded"):
        return base64.b64decode(raw).decode(errors="replace")
    return raw
