"""What trust costs on a remote: verification time per entry, and S3 requests when signed,
trusted or read-only.

Two measurements:

* **verification** — ``Trust.trusts`` (what a reader with trusted keys runs on every
  entry object it reads, before anything else) on entries as the remote tier writes them:
  an 8-byte value inline, a 4 KiB value inline, a value in ``cas/``, a trace record
  carrying its entry; HMAC-SHA256 and, when ``cryptography`` is installed, Ed25519.
  Signing is timed too (a writer pays it once per entry);
* **requests** — the chain of ``remote_requests.py`` (``raw -> total -> report``) in fresh
  processes against a moto S3 server whose recorder counts every request: a signing
  writer's cold run, a trusting colleague's hits, a reader meeting unsigned entries, and a
  read-only reader (``LAZYFLOW_REMOTE_READ_ONLY``) computing and hitting.

Run: ``python benchmarks/remote_trust.py`` (``--markdown FILE`` to also write the tables).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import tempfile
import timeit
import uuid
from collections import Counter
from pathlib import Path

from remote_requests import _classify, _free_port, _post, _run

from lazyflow.cache.remote_entries import EntryObject
from lazyflow.cache.serialize import encode, stamp
from lazyflow.cache.trust import Trust, content_sha256

SECRET = "benchmark-team-secret-0123456789"
KEY = "ab" * 16


def _entries() -> dict[str, tuple[str, EntryObject]]:
    """Entries shaped as the remote tier writes them (metadata as the engine stamps it)."""
    meta = {"digest": "1" * 32, "node": "report", "flow": "team", "duration": 0.0012,
            "cost": 0.0031, "params": {"n": "2" * 32}, "inputs": {"total": "3" * 32},
            "input_digests": {"total": "4" * 32}, "fingerprint": {"code:report": "5" * 32},
            "pid": 4242, "env": "6" * 32, "ancestry": {"raw": [0.001], "total": [0.002]}}
    small, page, large = encode(2**40), encode(b"x" * 4000), encode(b"x" * 65536)
    cas = EntryObject.for_value(stamp(meta, large), large)
    return {
        "8-byte value, inline": (KEY, EntryObject.for_value(stamp(meta, small), small)),
        "4 KiB value, inline": (KEY, EntryObject.for_value(stamp(meta, page), page)),
        "value in cas/": (KEY, EntryObject(cas.meta, cas=cas.cas,
                                           sha256=content_sha256(large))),
        "trace record carrying its entry": ("cd" * 16, EntryObject(
            stamp({"key": KEY, "digest": "1" * 32, "node": "report"}, None),
            carried=EntryObject.for_value(stamp(meta, small), small))),
    }


def verification() -> list[tuple[str, str, float, float]]:
    """Per algorithm and entry: microseconds to verify and to sign."""
    signers = {"HMAC-SHA256": SECRET}
    try:
        from lazyflow.cache.trust import generate_ed25519_key

        signers["Ed25519"] = generate_ed25519_key()[0]
    except Exception:  # cryptography is not installed
        pass
    rows = []
    for algorithm, secret in signers.items():
        trust = Trust.configured(sign_with=secret)
        assert trust is not None
        for name, (key, entry) in _entries().items():
            if entry.carried is not None:
                entry = EntryObject(entry.meta, carried=trust.sign(KEY, entry.carried))
            signed = trust.sign(key, entry)
            assert trust.trusts(key, signed)
            verify = _seconds(functools.partial(trust.trusts, key, signed), 2000)
            sign = _seconds(functools.partial(trust.sign, key, entry), 500)
            rows.append((algorithm, name, verify * 1e6, sign * 1e6))
    return rows


def _seconds(call, number: int) -> float:
    """The best of five timings of ``call``, per call."""
    return min(timeit.repeat(call, number=number, repeat=5)) / number


SCENARIOS: dict[str, tuple[str, dict[str, str], str, dict[str, str]]] = {
    # name: (set-up code, its environment, measured code, its environment)
    "signing writer, cold 3-node chain": ("", {}, "flow.get('report', n=10)",
                                          {"LAZYFLOW_SIGNING_KEY": SECRET}),
    "trusting colleague, hit <= 4 KiB": (
        "flow.get('report', n=10)", {"LAZYFLOW_SIGNING_KEY": SECRET},
        "flow.get('report', n=10)", {"LAZYFLOW_TRUSTED_KEYS": SECRET}),
    "trusting colleague, hit 64 KiB": (
        "flow.get('report', n=10, size=65536)", {"LAZYFLOW_SIGNING_KEY": SECRET},
        "flow.get('report', n=10, size=65536)", {"LAZYFLOW_TRUSTED_KEYS": SECRET}),
    "trusting reader, every entry unsigned": (
        "flow.get('report', n=10, size=65536)", {},
        "flow.get('report', n=10, size=65536)", {"LAZYFLOW_TRUSTED_KEYS": SECRET}),
    "read-only reader, cold 3-node chain": ("", {}, "flow.get('report', n=10)",
                                            {"LAZYFLOW_REMOTE_READ_ONLY": "1"}),
    "read-only reader, hit": ("flow.get('report', n=10)", {}, "flow.get('report', n=10)",
                              {"LAZYFLOW_REMOTE_READ_ONLY": "1"}),
}

_TRUST_VARIABLES = ("LAZYFLOW_SIGNING_KEY", "LAZYFLOW_TRUSTED_KEYS", "LAZYFLOW_REMOTE_READ_ONLY")


def requests(endpoint: str, recording: Path) -> list[tuple[str, Counter[str]]]:
    """Per scenario: the requests the measured process made, by kind."""
    import s3fs

    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, key="testing",
                           secret="testing")
    rows = []
    for name, (setup, setup_env, measured, measured_env) in SCENARIOS.items():
        bucket = f"lf-{uuid.uuid4().hex[:12]}"
        fs.mkdir(bucket)
        url = f"s3://{bucket}/lazyflow"
        if setup:
            _with_env(setup_env, functools.partial(_run, setup, url, options))
        _post(endpoint, "/moto-api/recorder/reset-recording")
        _post(endpoint, "/moto-api/recorder/start-recording")
        _with_env(measured_env, functools.partial(_run, measured, url, options))
        _post(endpoint, "/moto-api/recorder/stop-recording")
        entries = [json.loads(line) for line in recording.read_text().splitlines() if line]
        rows.append((name, Counter(_classify(e) for e in entries)))
    return rows


def _with_env(variables: dict[str, str], call) -> None:
    saved = {name: os.environ.pop(name, None) for name in _TRUST_VARIABLES}
    os.environ.update(variables)
    try:
        call()
    finally:
        for name in _TRUST_VARIABLES:
            os.environ.pop(name, None)
            if saved[name] is not None:
                os.environ[name] = saved[name]


def tables(verified: list[tuple[str, str, float, float]],
           counted: list[tuple[str, Counter[str]]]) -> str:
    """Both results as Markdown tables."""
    lines = ["| algorithm | entry | verify (µs) | sign (µs) |", "|---|---|---:|---:|"]
    lines += [f"| {a} | {n} | {v:.1f} | {s:.1f} |" for a, n, v, s in verified]
    lines += ["", "| scenario | requests | by type |", "|---|---:|---|"]
    lines += [f"| {name} | {sum(c.values())} | "
              f"{', '.join(f'{n} {t}' for t, n in sorted(c.items()))} |" for name, c in counted]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", help="also write the tables to this file")
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    verified = verification()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        recording = Path(folder) / "recording.jsonl"
        os.environ.update(MOTO_RECORDER_FILEPATH=str(recording), AWS_ACCESS_KEY_ID="testing",
                          AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                          LAZYFLOW_HISTORY="off")
        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            counted = requests(f"http://127.0.0.1:{port}", recording)
        finally:
            server.stop()
    text = tables(verified, counted)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
