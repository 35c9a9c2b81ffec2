"""``lease=`` (docs/caching.md, "Leases"): two colleagues asking for one expensive key at
once compute it once; a lease is renewed while its node computes; a stale lease never
blocks, nor does a wait hold up the run's other nodes; a read-only remote and a node
without ``lease=`` send no lease request — against the moto S3 server and a folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from bucket import objects
from gates import until

import lazyflow as lf
import lazyflow.cache.remote_leases as remote_leases
from lazyflow.cache.remote import RemoteTier
from lazyflow.cache.remote_leases import RENEW_AT, lease_path
from lazyflow.cache.remote_objects import PreconditionFailed
from lazyflow.errors import DefinitionError

_COLLEAGUE = """
import json, os, sys, time
import lazyflow as lf
import lazyflow.cache.remote_leases as remote_leases
from lazyflow.cache.remote import RemoteTier

URL, OPTIONS, CALLS, GATE, WAITING, LEASE = sys.argv[1], json.loads(sys.argv[2]), *sys.argv[3:7]
remote_leases.RENEW_AT = float(sys.argv[7])  # how soon the lease is renewed
flow = lf.Flow("team", cache=lf.Cache(memory=None, disk=None, remote=URL,
                                      remote_options=OPTIONS))

@flow.node(lease=LEASE)
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


def _colleague(url: str, options: dict[str, object], folder, who: str, lease: str = "2m",
               renew_at: float = RENEW_AT) -> subprocess.Popen[str]:
    env = {**os.environ, "LAZYFLOW_HISTORY": "off"}
    args = [url, json.dumps(options), str(folder / "calls"), str(folder / "gate"),
            str(folder / f"waiting-{who}"), lease, str(renew_at)]
    return subprocess.Popen([sys.executable, "-c", _COLLEAGUE, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


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


def _write_lease(url: str, options: dict[str, object], key: str, expires: float, *,
                 over: bool = False) -> None:
    """A colleague's lease on ``key``; ``over``: taken over from whoever holds it, as a
    colleague does (over the version read, again if it changed meanwhile)."""
    store = RemoteTier(url, options, background=False).store
    body = json.dumps({"lease": 1, "holder": "elsewhere pid 1, run r", "expires": expires})
    path = lease_path(store, key)
    while over:
        try:
            store.put(path, [body.encode()], match=store.fetch(path).version)
            return
        except PreconditionFailed:
            continue
    store.put(path, [body.encode()], create=True)


def _noting_held(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set when this process finds a colleague's lease held (``take_lease``)."""
    held = threading.Event()
    take = RemoteTier.take_lease

    def taking(self, *args):
        found = take(self, *args)
        if found is not None:
            held.set()
        return found

    monkeypatch.setattr(RemoteTier, "take_lease", taking)
    return held


def _leases(url: str, options: dict[str, object]) -> list[dict]:
    """The lease objects on the remote, as written."""
    store = RemoteTier(url, options, background=False).store
    return [json.loads(store.fetch(f"{store.root}/{name}").data)
            for name in objects(url, options) if name.startswith("leases/")]


# --------------------------------------------------------------------------- two colleagues


@pytest.mark.timeout(180)
def test_two_processes_asking_for_one_leased_node_at_once_compute_it_once(remote, tmp_path):
    url, options = remote
    first = _colleague(url, options, tmp_path, "first")
    until(lambda: (tmp_path / "calls").exists(), "the first process to compute")
    second = _colleague(url, options, tmp_path, "second")
    until(lambda: (tmp_path / "waiting-second").exists(), "the second process to wait")
    (tmp_path / "gate").touch()
    computed, waited = _answer(first), _answer(second)
    assert (tmp_path / "calls").read_text().splitlines() == ["called"]
    assert (computed["value"], computed["status"]) == (42, "completed")
    assert (waited["value"], waited["status"]) == (42, "cached")
    assert waited["reason"].startswith("computed meanwhile by ")
    assert f"pid {first.pid}" in waited["reason"]
    assert not [n for n in objects(url, options) if n.startswith("leases/")]  # released


# --------------------------------------------------------------------------- renewal


@pytest.mark.timeout(180)
def test_a_lease_renewed_while_its_node_computes_is_not_taken_over_past_its_first_expiry(
        remote, tmp_path):
    url, options = remote
    calls = tmp_path / "calls"
    first = _colleague(url, options, tmp_path, "first", lease="4s", renew_at=0.1)
    until(lambda: calls.exists(), "the first process to compute")
    [taken] = _leases(url, options)
    until(lambda: time.time() > taken["expires"], "the lease's first expiry to pass")
    second = _colleague(url, options, tmp_path, "second", lease="4s", renew_at=0.1)
    until(lambda: (tmp_path / "waiting-second").exists()
           or len(calls.read_text().splitlines()) > 1, "the second process to wait or compute")
    (tmp_path / "gate").touch()
    computed, waited = _answer(first), _answer(second)
    assert calls.read_text().splitlines() == ["called"]
    assert (computed["status"], waited["status"], waited["value"]) == ("completed", "cached", 42)
    assert f"pid {first.pid}" in waited["reason"]


@pytest.mark.parametrize("executor", ["sync", "threads", "processes"])
def test_a_lease_taken_over_while_its_node_computes_warns_once_and_the_node_finishes(
        remote, tmp_path, monkeypatch, executor):
    url, options = remote
    computing, lost = tmp_path / "computing", tmp_path / "lost"
    renew = remote_leases.renew

    def renewing(*args):  # tells the node when a renewal found its lease taken over
        found = renew(*args)
        if isinstance(found, remote_leases.Held):
            lost.touch()
        return found

    monkeypatch.setattr(remote_leases, "renew", renewing)
    flow = lf.Flow("team", cache=_remote(url, options))

    @flow.node(lease="3s")
    def slow():
        computing.touch()
        until(lost.exists, "a renewal to find the lease taken over")
        return 42

    def take_over() -> None:  # a colleague's takeover, as if our renewals had failed
        until(computing.exists, "the node to compute")
        [name] = [n for n in objects(url, options) if n.startswith("leases/")]
        _write_lease(url, options, name.rsplit("/", 1)[1].removesuffix(".json"),
                     time.time() + 3600, over=True)

    colleague = threading.Thread(target=take_over)
    colleague.start()
    with pytest.warns(lf.CacheWarning, match=r"node 'slow': its lease .* taken over by "
                                             r"elsewhere pid 1, run r") as warned:
        run = flow.run("slow", executor=executor)
    colleague.join(60)
    assert (run["slow"], run.nodes["slow"].status) == (42, "completed")
    assert len([w for w in warned if "taken over" in str(w.message)]) == 1
    assert [lease["holder"] for lease in _leases(url, options)] == ["elsewhere pid 1, run r"]


# --------------------------------------------------------------------------- the run goes on


@pytest.mark.parametrize("executor", ["sync", "threads"])
def test_a_node_waiting_for_a_colleagues_lease_lets_an_independent_node_of_its_run_finish(
        remote, monkeypatch, executor):
    url, options = remote
    key = _key()
    _write_lease(url, options, key, expires=time.time() + 3600)  # a colleague's, live
    held = _noting_held(monkeypatch)
    calls: list[int] = []
    flow = _flow(_remote(url, options), calls)
    finished = threading.Event()

    @flow.node
    def other():
        started_while_held = held.wait(60)  # the leased node is waiting by now
        finished.set()
        return started_while_held

    runs: list[lf.Run] = []
    waiter = threading.Thread(target=lambda: runs.append(
        flow.run(["slow", "other"], executor=executor)))
    waiter.start()
    assert finished.wait(60)  # while the colleague still holds the lease
    assert calls == []
    store = RemoteTier(url, options, background=False).store
    store.delete(lease_path(store, key))  # the colleague's run ended without an entry
    waiter.join(60)
    [run] = runs
    assert run["other"] is True
    assert (run["slow"], run.nodes["slow"].status, calls) == (42, "completed", [1])


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


def test_a_run_ending_releases_its_own_leases_and_not_those_of_a_run_still_computing(remote):
    url, options = remote
    flow = lf.Flow("team", cache=_remote(url, options))
    computing, finish = threading.Event(), threading.Event()

    @flow.node(lease="2m")
    def slow():
        computing.set()
        finish.wait(60)
        return 1

    @flow.node(lease="2m")
    def quick():
        return 2

    slow_run = threading.Thread(target=flow.run, args=("slow",))
    slow_run.start()
    assert computing.wait(60)
    flow.run("quick")  # ends while slow computes, on the same remote tier
    try:
        holders = [lease["holder"] for lease in _leases(url, options)]
    finally:
        finish.set()
        slow_run.join(60)
    assert len(holders) == 1 and holders[0].endswith(f"run {flow.last_run.id}")  # slow's
    assert not _leases(url, options)  # released when its own run ended


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
    held = _noting_held(monkeypatch)
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



def test_a_colleagues_lease_that_lapses_while_a_node_waits_is_taken_over_and_computed(
        remote, monkeypatch):
    url, options = remote
    key = _key()
    _write_lease(url, options, key, expires=time.time() + 3)  # a colleague's that crashed
    held = []
    take = RemoteTier.take_lease

    def taking(self, *args):
        found = take(self, *args)
        held.append(found is not None)
        return found

    monkeypatch.setattr(RemoteTier, "take_lease", taking)
    calls: list[int] = []
    run = _flow(_remote(url, options), calls).run("slow")
    assert (run["slow"], run.nodes["slow"].status, calls) == (42, "completed", [1])
    assert held[0] and not held[-1]  # waited for it, then took it
    assert not [n for n in objects(url, options) if n.startswith("leases/")]

# --------------------------------------------------------------------------- dask


@pytest.mark.cluster
def test_under_dask_a_leased_node_is_not_sent_ahead_to_compute_under_a_colleagues_lease(
        dask_client, tmp_path, monkeypatch):
    url = f"file://{tmp_path / 'mount'}"
    holders = tmp_path / "holders"

    def define(flow: lf.Flow) -> None:
        @flow.node
        def first():
            return 1

        @flow.node(lease="2m")
        def slow(first):  # the lease holders it computes under, as the remote says
            with open(holders, "a") as f:
                f.writelines(lease["holder"] + "\n" for lease in _leases(url, {}))
            return first + 41

    scratch = lf.Flow("team", cache=lf.Cache(memory="1MB", disk=None, remote=None))
    define(scratch)
    key = scratch.run("slow").nodes["slow"].key
    holders.unlink()
    _write_lease(url, {}, key, expires=time.time() + 3600)  # a colleague's, live
    held = _noting_held(monkeypatch)
    flow = lf.Flow("team", cache=_remote(url, {}))
    define(flow)
    runs: list[lf.Run] = []
    waiter = threading.Thread(target=lambda: runs.append(flow.run("slow", executor="dask")))
    waiter.start()
    assert held.wait(60)
    store = RemoteTier(url, {}, background=False).store
    store.delete(lease_path(store, key))  # the colleague's run ended without an entry
    waiter.join(120)
    assert (runs[0]["slow"], runs[0].nodes["slow"].status) == (42, "completed")
    [holder] = holders.read_text().splitlines()
    assert f"pid {os.getpid()}, run {runs[0].id}" in holder
