"""``lease=`` (docs/caching.md, "Leases"): two colleagues asking for one expensive key at
once compute it once; a stale lease never blocks; a read-only remote and a node without
``lease=`` send no lease request — against the moto S3 server and a folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from bucket import objects

import lazyflow as lf
from lazyflow.cache.remote import RemoteTier
from lazyflow.cache.remote_leases import lease_path
from lazyflow.errors import DefinitionError

_COLLEAGUE = """
import json, os, sys, time
import lazyflow as lf
from lazyflow.cache.remote import RemoteTier

URL, OPTIONS, CALLS, GATE, WAITING = sys.argv[1], json.loads(sys.argv[2]), *sys.argv[3:6]
flow = lf.Flow("team", cache=lf.Cache(memory=None, disk=None, remote=URL,
                                      remote_options=OPTIONS))

@flow.node(lease="2m")
def slow():
    with open(CALLS, "a") as f:
        f.write("called\\n")
    deadline = time.time() + 60
    while not os.path.exists(GATE) and time.time() < deadline:  # the test opens the gate
        time.sleep(0.01)
    return 42

take = RemoteTier.take_lease
def taking(self, *args):  # tells the test when this process found the lease held
    held = take(self, *args)
    if held is not None:
        open(WAITING, "a").close()
    return held
RemoteTier.take_lease = taking

run = flow.run("slow")
print(json.dumps({"value": run["slow"], "status": run.nodes["slow"].status,
                  "reason": run.nodes["slow"].reason}), flush=True)
"""


def _colleague(url: str, options: dict[str, object], folder, who: str
               ) -> subprocess.Popen[str]:
    env = {**os.environ, "LAZYFLOW_HISTORY": "off"}
    args = [url, json.dumps(options), str(folder / "calls"), str(folder / "gate"),
            str(folder / f"waiting-{who}")]
    return subprocess.Popen([sys.executable, "-c", _COLLEAGUE, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _until(condition, what: str, seconds: float = 60.0) -> None:
    """Poll ``condition`` until it holds (a deadline, never a sleep as synchronisation)."""
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _answer(process: subprocess.Popen[str]) -> dict:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _flow(cache: lf.Cache, calls: list[int], lease: object = "2m") -> lf.Flow:
    flow = lf.Flow("team", cache=cache)

    @flow.node(lease=lease)
    def slow():
        calls.append(1)
        return 42

    return flow


def _remote(url: str, options: dict[str, object], **kwargs: object) -> lf.Cache:
    return lf.Cache(memory=None, disk=None, remote=url, remote_options=options, **kwargs)


def _key() -> str:
    """The key of ``slow`` (a cache without a remote computes it)."""
    return _flow(lf.Cache(memory="1MB", disk=None, remote=None), []).run("slow").nodes[
        "slow"].key


def _write_lease(url: str, options: dict[str, object], key: str, expires: float) -> None:
    store = RemoteTier(url, options, background=False).store
    body = json.dumps({"lease": 1, "holder": "elsewhere pid 1, run r", "expires": expires})
    store.put(lease_path(store, key), [body.encode()], create=True)


# --------------------------------------------------------------------------- two colleagues


@pytest.mark.timeout(180)
def test_two_processes_asking_for_one_leased_node_at_once_compute_it_once(remote, tmp_path):
    url, options = remote
    first = _colleague(url, options, tmp_path, "first")
    _until(lambda: (tmp_path / "calls").exists(), "the first process to compute")
    second = _colleague(url, options, tmp_path, "second")
    _until(lambda: (tmp_path / "waiting-second").exists(), "the second process to wait")
    (tmp_path / "gate").touch()
    computed, waited = _answer(first), _answer(second)
    assert (tmp_path / "calls").read_text().splitlines() == ["called"]
    assert (computed["value"], computed["status"]) == (42, "completed")
    assert (waited["value"], waited["status"]) == (42, "cached")
    assert waited["reason"].startswith("computed meanwhile by ")
    assert f"pid {first.pid}" in waited["reason"]
    assert not [n for n in objects(url, options) if n.startswith("leases/")]  # released


# --------------------------------------------------------------------------- never blocks


def test_a_stale_lease_is_taken_over_and_does_not_block(remote):
    url, options = remote
    key = _key()
    _write_lease(url, options, key, expires=time.time() - 60)
    calls: list[int] = []
    run = _flow(_remote(url, options), calls).run("slow")
    assert (run["slow"], run.nodes["slow"].status, calls) == (42, "completed", [1])
    assert not [n for n in objects(url, options) if n.startswith("leases/")]


def test_a_read_only_remote_computes_without_asking_for_a_lease(
        s3_url, s3_options, s3_requests):
    key = _key()
    _write_lease(s3_url, s3_options, key, expires=time.time() + 3600)  # a live one
    calls: list[int] = []
    flow = _flow(_remote(s3_url, s3_options, read_only=True), calls)
    with s3_requests.recorded(s3_url) as recorded:
        run = flow.run("slow")
    assert (run["slow"], run.nodes["slow"].status, calls) == (42, "completed", [1])
    assert not [e for e in recorded if "/leases/" in e["url"]]


def test_a_node_without_lease_sends_no_lease_request(s3_url, s3_options, s3_requests):
    flow = _flow(_remote(s3_url, s3_options), [], lease=None)
    with s3_requests.recorded(s3_url) as recorded:
        run = flow.run("slow")
    assert run.nodes["slow"].status == "completed"
    assert recorded and not [e for e in recorded if "/leases/" in e["url"]]


def test_a_leased_node_takes_its_lease_and_releases_it_when_the_run_ends(
        s3_url, s3_options, s3_requests):
    flow = _flow(_remote(s3_url, s3_options), [])
    with s3_requests.recorded(s3_url) as recorded:
        flow.run("slow")
    leases = [e["method"] for e in recorded if "/leases/" in e["url"]]
    assert leases == ["PUT", "DELETE"]
    assert not [n for n in objects(s3_url, s3_options) if n.startswith("leases/")]


# --------------------------------------------------------------------------- collection


def test_garbage_collection_removes_expired_leases_and_keeps_live_ones(remote):
    url, options = remote
    _write_lease(url, options, "aa" * 16, expires=time.time() - 60)
    _write_lease(url, options, "bb" * 16, expires=time.time() + 3600)
    cache = _remote(url, options)
    cache.prune(older_than="7d", confirm=True)
    assert [n for n in objects(url, options) if n.startswith("leases/")] == \
        [f"leases/bb/{'bb' * 16}.json"]
    assert cache.stats()["remote"]["entries"] == 0  # a lease is no entry


# --------------------------------------------------------------------------- declaring


def test_lease_accepts_true_or_a_duration_and_rejects_anything_else(flow):
    @flow.node(lease=True)
    def a():
        return 1

    @flow.node(lease="90s")
    def b():
        return 2

    assert (flow["a"].options.lease, flow["b"].options.lease) == (600.0, 90.0)
    with pytest.raises(DefinitionError, match=r"node 'c': lease= takes True"):
        @flow.node(lease="soon")
        def c():
            return 3


def test_a_lease_its_holder_gives_up_without_an_entry_is_taken_and_the_node_computed(
        remote, monkeypatch):
    url, options = remote
    key = _key()
    _write_lease(url, options, key, expires=time.time() + 3600)  # a colleague's, live
    held = threading.Event()
    take = RemoteTier.take_lease

    def taking(self, *args):
        found = take(self, *args)
        if found is not None:
            held.set()
        return found

    monkeypatch.setattr(RemoteTier, "take_lease", taking)
    calls: list[int] = []
    flow = _flow(_remote(url, options), calls)
    runs: list[lf.Run] = []
    waiter = threading.Thread(target=lambda: runs.append(flow.run("slow")))
    waiter.start()
    assert held.wait(60)
    assert calls == []  # waiting for the colleague
    store = RemoteTier(url, options, background=False).store
    store.delete(lease_path(store, key))  # the colleague's run ended without an entry
    waiter.join(60)
    assert (runs[0]["slow"], runs[0].nodes["slow"].status, calls) == (42, "completed", [1])
