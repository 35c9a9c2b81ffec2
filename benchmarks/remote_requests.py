"""S3 requests and objects the remote tier costs, counted by a real S3 server.

A moto S3 server on loopback records every HTTP request it answers (moto's
recorder); each scenario runs in a fresh Python process (a colleague's
kernel has nothing in memory), between a reset and a read of the recording.
Requests are classified by method and, for GET, object read versus listing
(``list-type=2``). Scenarios (issue 13's targets):

* **cold node** — a writer computes a chain on memory + remote: the 3-node
  ``raw -> total -> report``, one node alone, and 100 nodes; requests per
  computed node, the run's manifest counted once per run (the environment's
  description rides on the process's first entry: no record of its own; a node
  without upstream nodes, such as ``raw``, writes no trace record);
* **colleague hit, small / large** — a fresh process asks for ``report``
  (8 bytes, then a 64 KiB value) that a writer cached; and the small one
  again as if the entry were older than the refresh interval (the hit then
  writes the run's manifest: ``lazyflow_refresh`` set to 0);
* **map of N small elements** — a writer's first run of ``map=`` over 200 and 5,000
  ints (at 200: its manifest chunk, its list and the run's manifest; at 5,000 the
  manifest's chunks and the list are one pack); then, over 5,000,
  one element changed (computed alone, its chunk rewritten in a new pack) and a
  colleague's hit (a ranged GET of the list's span);
* **small entry** — objects and bytes one 8-byte entry leaves in the bucket;
* **stats** and **prune** (that removes nothing) — management requests, on the
  chain's bucket and on one holding 3,000 more entries (written with the tier's
  puts, outside runs; for ``stats``, counted once by a first ``stats`` that made
  the checkpoint).

GETs of entry and content objects (``ac/``, ``cas/``) count as ``GET``; GETs of
anything else (run manifests, the statistics checkpoint) as ``GET other``; PUTs of
run manifests as ``PUT manifest``.

Run: ``python benchmarks/remote_requests.py`` (``--markdown FILE`` to also
write the table; ``--only TEXT`` for the scenarios whose name contains it;
``--show`` prints every request, object path included).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

_CHAIN = """
import lazyflow as lf
flow = lf.Flow("team", cache=lf.Cache(disk=None, remote=URL, remote_options=OPTIONS))

@flow.node
def raw(n: int):
    return list(range(n))

@flow.node
def total(raw):
    return sum(raw)

@flow.node
def report(total, size: int = 0):
    return b"x" * size if size else total
"""

_LONG = """
chain = lf.Flow("long", cache=flow.cache)

@chain.node(name="n0")
def first(n: int):
    return n

for i in range(1, NODES):
    @chain.node(name=f"n{i}", inputs={"x": f"n{i - 1}"})
    def step(x):
        return x + 1

chain.get(f"n{NODES - 1}", n=10)
"""

_CROWD = ("import lazyflow.cache.remote as remote\n"
          "crowd = remote.RemoteTier(URL, OPTIONS, lanes=16)\n"
          "for i in range(3000):\n    crowd.put(f'{i:032x}', i, {'digest': 'd'})\n"
          "crowd.flush()\n")

_MAP = ("m = lf.Flow('maps', cache=flow.cache)\n"
        "@m.node(map='items')\ndef double(items):\n    return items * 2\n"
        "m.get('double', items=%s)")

SCENARIOS: dict[str, tuple[str, str]] = {
    # name: (set-up code run first, in its own process; measured code, in a fresh process)
    "cold node (3-node chain)": ("", "flow.get('report', n=10)"),
    "cold node (1 node)": ("", "flow.get('raw', n=10)"),
    "cold node (100-node chain)": ("", "NODES = 100\n" + _LONG),
    "colleague hit, value <= 4 KiB": ("flow.get('report', n=10)", "flow.get('report', n=10)"),
    "colleague hit, value <= 4 KiB, entry older than the refresh interval": (
        "flow.get('report', n=10)", "flow.get('report', n=10)"),
    "colleague hit, 64 KiB value": ("flow.get('report', n=10, size=65536)",
                                    "flow.get('report', n=10, size=65536)"),
    "map over 200 small elements, first run": ("", _MAP % "list(range(200))"),
    "map over 5,000 small elements, first run": ("", _MAP % "list(range(5000))"),
    "map over 5,000, one element changed": (_MAP % "list(range(5000))",
                                             _MAP % "list(range(4999)) + [-1]"),
    "map over 5,000, a colleague's hit": (_MAP % "list(range(5000))",
                                          _MAP % "list(range(5000))"),
    "a small (8-byte) entry": (  # as a map element's entry, its metadata included
        "", "flow.cache.tier('remote').put('ab' * 16, 2**40, {'digest': 'd' * 32, "
            "'node': 'double', 'flow': 'maps', 'element': 7})"),
    "stats()": ("flow.get('report', n=10)", "flow.cache.stats()"),
    "prune(older_than='30d') removing nothing": ("flow.get('report', n=10)",
                                                  "flow.cache.prune(older_than='30d', confirm=True)"),
    "stats() with 3,000 more entries": (
        _CROWD + "flow.cache.stats()\nflow.get('report', n=10)", "flow.cache.stats()"),
    "prune(older_than='30d') with 3,000 more entries": (
        _CROWD + "flow.get('report', n=10)", "flow.cache.prune(older_than='30d', confirm=True)"),
}

COMPUTED = {"cold node (3-node chain)": 3, "cold node (1 node)": 1,
            "cold node (100-node chain)": 100}
"""Scenarios reported per computed node, with how many nodes they compute."""

OPTIONS = {"colleague hit, value <= 4 KiB, entry older than the refresh interval":
           {"lazyflow_refresh": 0}}
"""Extra ``remote_options`` of a scenario's measured process."""

TARGETS = {
    "cold node (3-node chain)": "<= 3 per node, no LIST",
    "cold node (1 node)": "<= 3 per node, no LIST",
    "cold node (100-node chain)": "<= 3 per node, no LIST",
    "colleague hit, value <= 4 KiB, entry older than the refresh interval": "1 + the manifest",
    "colleague hit, value <= 4 KiB": "1",
    "colleague hit, 64 KiB value": "2",
    "map over 200 small elements, first run": "<= 3 + N/1000 writes",
    "map over 5,000 small elements, first run": "<= 3 + N/1000 writes",
    "map over 5,000, one element changed": "the element alone computed",
    "map over 5,000, a colleague's hit": "-",
    "a small (8-byte) entry": "1 object <= 200 B",
    "stats()": "<= 50 at any size",
    "prune(older_than='30d') removing nothing": "no per-entry GET",
    "stats() with 3,000 more entries": "<= 50 at any size",
    "prune(older_than='30d') with 3,000 more entries": "no per-entry GET",
}


def _serialize_recording(recorder: Any) -> None:
    """Make moto's recorder write one request at a time: it writes a request's JSON and its
    newline apart, so with the server's threads two records could share a line (as
    ``tests/bucket.py`` does for the tests)."""
    lock = threading.Lock()
    record = recorder._record_request

    def one_at_a_time(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return record(*args, **kwargs)

    recorder._record_request = one_at_a_time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(endpoint: str, path: str) -> None:
    urllib.request.urlopen(urllib.request.Request(endpoint + path, method="POST")).read()


def _classify(entry: dict[str, str]) -> str:
    method = entry["method"]
    if method == "GET" and ("list-type=" in entry["url"] or entry["url"].rstrip("/").count("/") <= 3
                            and "?" in entry["url"]):
        return "LIST"
    if method == "GET" and "/ac/" not in entry["url"] and "/cas/" not in entry["url"]:
        return "GET other"  # run manifests, the statistics checkpoint
    if method == "PUT" and "/runs/" in entry["url"]:
        return "PUT manifest"
    return method


def _run(code: str, url: str, options: dict[str, object]) -> None:
    script = f"URL = {url!r}\nOPTIONS = {options!r}\n" + _CHAIN + "\n" + code + "\n" + \
        "flow.cache.flush()\n"
    subprocess.run([sys.executable, "-c", script], check=True, env=os.environ.copy())


def measure(endpoint: str, recording: Path, only: str = "", show: bool = False
            ) -> list[tuple[str, Counter[str], int, int]]:
    """Per scenario: request counts by type, objects and bytes left in the bucket
    (``only``: the scenarios whose name contains it; ``show``: print each request)."""
    import s3fs

    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, key="testing",
                           secret="testing")
    rows = []
    for name, (setup, measured) in SCENARIOS.items():
        if only not in name:
            continue
        bucket = f"lf-{uuid.uuid4().hex[:12]}"
        fs.mkdir(bucket)
        url = f"s3://{bucket}/lazyflow"
        if setup:
            _run(setup, url, options)
        _post(endpoint, "/moto-api/recorder/reset-recording")
        _post(endpoint, "/moto-api/recorder/start-recording")
        _run(measured, url, {**options, **OPTIONS.get(name, {})})
        _post(endpoint, "/moto-api/recorder/stop-recording")
        entries = [json.loads(line) for line in recording.read_text().splitlines() if line]
        counts = Counter(_classify(e) for e in entries)
        if show:
            print(f"{name}:")
            for e in entries:
                print(f"  {_classify(e):9} {e['url'].split('/lazyflow', 1)[-1]}")
        fs.invalidate_cache()
        found = fs.find(f"{bucket}/lazyflow", detail=True)
        rows.append((name, counts, len(found), sum(int(v["size"]) for v in found.values())))
    return rows


def table(rows: list[tuple[str, Counter[str], int, int]]) -> str:
    """The result as a Markdown table."""
    lines = ["| scenario | requests | by type | objects in bucket | bytes | target |",
             "|---|---:|---|---:|---:|---|"]
    for name, counts, objects, nbytes in rows:
        by_type = ", ".join(f"{n} {t}" for t, n in sorted(counts.items()))
        total = str(sum(counts.values()))
        if name in COMPUTED:  # the manifest once per run, the rest per computed node
            per_node = (sum(counts.values()) - counts["PUT manifest"]) / COMPUTED[name]
            total += f" ({per_node:.2f} per node + {counts['PUT manifest']} per run)"
        lines.append(f"| {name} | {total} | {by_type} | {objects} | {nbytes} | "
                     f"{TARGETS[name]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--only", default="", help="the scenarios whose name contains this")
    parser.add_argument("--show", action="store_true", help="print every request")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    with tempfile.TemporaryDirectory() as folder:
        recording = Path(folder) / "recording.jsonl"
        os.environ.update(MOTO_RECORDER_FILEPATH=str(recording), AWS_ACCESS_KEY_ID="testing",
                          AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
        from moto.moto_api import recorder  # reads MOTO_RECORDER_FILEPATH when imported
        from moto.server import ThreadedMotoServer

        _serialize_recording(recorder)
        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            rows = measure(f"http://127.0.0.1:{port}", recording, args.only, args.show)
        finally:
            server.stop()
    text = table(rows)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
