"""Managing a shared remote without reading its entries (docs/cache-format.md, "Garbage
collection" and "Statistics"): prune marks from run manifests and sweeps by listing
metadata, stats sums a checkpoint and the ledgers since — on the moto S3 server and on a
folder, time passing simulated by making objects older."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import s3fs
from bucket import age, body, kind, kinds, objects

import lazyflow as lf
from lazyflow.cache import remote_gc, remote_ledger
from lazyflow.cache import remote_manifests as manifests
from lazyflow.cache.remote import RemoteTier

DAY = 86400
A, B, C = "aa" * 16, "bb" * 16, "cc" * 16
BIG = np.arange(2000, dtype=np.float64)  # 16 KB: a content object


def _tier(url: str, options: dict[str, object]) -> RemoteTier:
    return RemoteTier(url, options, background=False)


def _cache(url: str, options: dict[str, object]) -> lf.Cache:
    return lf.Cache(memory=None, disk=None, remote=url, remote_options=options)


def _run(url: str, options: dict[str, object], *, reads: tuple[str, ...] = (),
         writes: tuple[tuple[str, object], ...] = (), flow: str = "team") -> None:
    """A run, as a colleague's process makes one: it reads and writes those keys, then ends
    (writing its manifest)."""
    tier = _tier(url, options)
    for key in reads:
        tier.get(key)
    for key, value in writes:
        tier.put(key, value, {"digest": "d", "flow": flow})
    tier.finish_run(flow, f"run-{uuid.uuid4().hex[:8]}", time.time())


def _entries(url: str, options: dict[str, object]) -> set[str]:
    return {name.rsplit("/", 1)[1].removesuffix(".json") for name in objects(url, options)
            if name.startswith("ac/")}


def _content(url: str, options: dict[str, object]) -> set[str]:
    return {name.rsplit("/", 1)[1] for name in objects(url, options) if name.startswith("cas/")}


# --------------------------------------------------------------------------- marking


def test_an_old_entry_a_run_used_within_the_window_stays_with_its_content(remote):
    url, options = remote
    _run(url, options, writes=((A, BIG),))
    age(url, 30 * DAY, under=("ac/", "cas/", "runs/"))  # written a month ago...
    _run(url, options, reads=(A,))                       # ...and read today
    report = _cache(url, options).prune(older_than="7d", confirm=True)["remote"]
    assert report["removed"] == 0
    np.testing.assert_array_equal(_tier(url, options).get(A), BIG)


def test_entries_and_content_no_run_used_within_the_window_are_removed(remote):
    url, options = remote
    _run(url, options, writes=((A, BIG), (B, [1, 2])))
    age(url, 30 * DAY, under=("ac/", "cas/", "runs/"))
    _run(url, options, writes=((C, 3),))
    report = _cache(url, options).prune(older_than="7d", confirm=True)["remote"]
    assert (report["entries"], report["content"], report["manifests"]) == (2, 1, 1)
    assert (_entries(url, options), _content(url, options)) == ({C}, set())


def test_nothing_younger_than_the_window_is_removed_even_if_no_run_named_it(remote):
    url, options = remote
    tier = _tier(url, options)
    tier.put(A, BIG, {"digest": "d"})  # written outside any run: no manifest names it
    tier.store.delete(tier.store.entry_path(A))  # its content unnamed, as a writer cut off
    tier.put(B, [1, 2], {"digest": "d"})
    age(url, 3 * DAY)
    report = _cache(url, options).prune(older_than="7d", confirm=True)["remote"]
    assert report["removed"] == 0 and _entries(url, options) == {B}
    assert len(_content(url, options)) == 1


def test_a_window_of_zero_removes_everything(remote):
    url, options = remote
    _run(url, options, writes=((A, BIG), (B, [1, 2])))
    _cache(url, options).prune(older_than=0, confirm=True)
    assert objects(url, options) == []


def test_the_default_window_is_seven_days(remote):
    url, options = remote
    _run(url, options, writes=((A, [1]),))
    age(url, 6 * DAY, under=("ac/", "cas/", "runs/"))
    _run(url, options, writes=((B, [2]),))
    age(url, 2 * DAY, under=("ac/", "cas/", "runs/"))  # A: 8 days unused, B: 2 days
    _cache(url, options).prune(max_size="1GB", confirm=True)
    assert _entries(url, options) == {B}


def test_a_manifest_of_a_newer_format_stops_the_collection_with_a_warning(remote):
    url, options = remote
    _run(url, options, writes=((A, [1]),))
    age(url, 30 * DAY, under=("ac/", "cas/", "runs/"))
    tier = _tier(url, options)
    day = manifests.day_of(time.time())
    tier.store.put(f"{tier.root}/runs/{day}/team/later.e0.b0.json", [b'{"v": 2, "rows": []}'])
    with pytest.warns(lf.CacheWarning, match="newer lazyflow"):
        assert _cache(url, options).prune(older_than="7d", confirm=True)["remote"]["removed"] == 0
    assert _entries(url, options) == {A}


# --------------------------------------------------------------------------- evicting by size


def test_max_size_evicts_the_least_recently_used_not_the_oldest_written(remote):
    url, options = remote
    _run(url, options, writes=((A, BIG),))
    age(url, 10 * DAY, under=("ac/", "cas/", "runs/"))
    _run(url, options, writes=((B, BIG + 1),))
    age(url, 5 * DAY, under=("ac/", "cas/", "runs/"))  # A written 15 days ago, B 5
    _run(url, options, reads=(A,))                      # A read today
    stored = sum(i.size for i in _tier(url, options).store.listing() if "/runs/" not in i.path)
    report = _cache(url, options).prune(max_size=stored - 1, older_than="30d", confirm=True)["remote"]
    assert _entries(url, options) == {A}
    assert report["bytes"] <= stored - 1
    np.testing.assert_array_equal(_tier(url, options).get(A), BIG)


def test_max_size_never_evicts_what_was_written_within_the_last_hour(remote):
    url, options = remote
    _run(url, options, writes=((A, BIG), (B, BIG + 1)))
    report = _cache(url, options).prune(max_size=1, older_than="30d", confirm=True)["remote"]
    assert report["removed"] == 0 and _entries(url, options) == {A, B}


# --------------------------------------------------------------------------- deleting safely


def test_entries_go_before_the_content_they_name(s3_url, s3_options, s3_requests):
    _run(s3_url, s3_options, writes=((A, BIG),))
    with s3_requests.recorded(s3_url) as recorded:
        _cache(s3_url, s3_options).prune(older_than=0, confirm=True)
    deletes = [body(e) for e in recorded if e["method"] == "POST" and "delete" in e["url"]]
    assert ["/ac/" in d for d in deletes[:2]] == [True, False]
    assert "/cas/" in deletes[1]


def test_every_delete_is_conditional_on_the_version_listed(s3_url, s3_options, s3_requests):
    _run(s3_url, s3_options, writes=((A, BIG),))
    with s3_requests.recorded(s3_url) as recorded:
        _cache(s3_url, s3_options).prune(older_than=0, confirm=True)
    deletes = [body(e) for e in recorded if e["method"] == "POST" and "delete" in e["url"]]
    objects_deleted = sum(d.count("<Object>") for d in deletes)
    assert objects_deleted >= 3 and sum(d.count("<ETag>") for d in deletes) == objects_deleted


def test_an_entry_replaced_while_prune_runs_is_kept_with_its_content(remote, monkeypatch):
    url, options = remote
    _run(url, options, writes=((A, BIG),))
    age(url, 30 * DAY, under=("ac/", "cas/", "runs/"))
    recent = remote_gc._recent

    def colleague_recomputes_meanwhile(store, now):  # after the listing, before the deletes
        _tier(url, options).delete(A)
        _tier(url, options).put(A, BIG.copy(), {"digest": "d"})  # the same bytes: reused
        return recent(store, now)

    monkeypatch.setattr(remote_gc, "_recent", colleague_recomputes_meanwhile)
    report = _cache(url, options).prune(older_than="7d", confirm=True)["remote"]
    assert report["kept"] == 1 and report["removed"] == 0
    np.testing.assert_array_equal(_tier(url, options).get(A), BIG)


def test_content_a_new_entry_reuses_is_refreshed_and_outlives_the_window(remote):
    url, options = remote
    _run(url, options, writes=((A, BIG),))
    age(url, 30 * DAY, under=("ac/", "cas/", "runs/"))
    tier = _tier(url, options)
    tier.put(B, BIG.copy(), {"digest": "d"})  # same bytes, another key, no manifest yet
    _cache(url, options).prune(older_than="7d", confirm=True)
    assert _entries(url, options) == {B}
    np.testing.assert_array_equal(_tier(url, options).get(B), BIG)


def test_prune_reads_no_entry_and_no_content_object(s3_url, s3_options, s3_requests):
    for i in range(40):
        _run(s3_url, s3_options, writes=((f"{i:032x}", BIG + i if i % 4 == 0 else i),))
    with s3_requests.recorded(s3_url) as recorded:
        _cache(s3_url, s3_options).prune(older_than="30d", confirm=True)
    gets = [e["url"] for e in recorded if kind(e) == "GET"]
    assert not [u for u in gets if "/ac/" in u or "/cas/" in u]
    assert len([u for u in gets if "/runs/" in u]) == 40  # the live manifests, once each


# --------------------------------------------------------------------------- statistics


def test_stats_counts_the_entries_and_bytes_runs_created(remote):
    url, options = remote
    cache = _cache(url, options)
    cache.stats()  # the first: makes the checkpoint, from one listing
    _run(url, options, writes=((A, BIG), (B, [1, 2])))
    _run(url, options, writes=((C, 3),), flow="other")
    listed = [i for i in _tier(url, options).store.listing()
              if "/ac/" in i.path or "/cas/" in i.path]
    report = cache.stats()["remote"]
    assert (report["entries"], report["bytes"]) == (3, sum(i.size for i in listed))


def test_stats_reports_entries_and_bytes_per_flow(remote):
    url, options = remote
    _run(url, options, writes=((A, [1]), (B, [2])))
    _run(url, options, writes=((C, [3]),), flow="other")
    flows = _cache(url, options).stats()["remote"]["flows"]
    assert {f: figures["entries"] for f, figures in flows.items()} == {"team": 2, "other": 1}


def test_stats_after_a_collection_counts_what_is_left(remote):
    url, options = remote
    _run(url, options, writes=((A, BIG), (B, [1, 2])))
    age(url, 30 * DAY, under=("ac/", "cas/", "runs/"))
    _run(url, options, reads=(B,), writes=((C, 3),))
    cache = _cache(url, options)
    cache.prune(older_than="7d", confirm=True)
    listed = [i for i in _tier(url, options).store.listing()
              if "/ac/" in i.path or "/cas/" in i.path]
    report = cache.stats()["remote"]
    assert (report["entries"], report["bytes"]) == (2, sum(i.size for i in listed))
    assert report["flows"] == {"team": {"entries": 2, "bytes": report["bytes"]}}


def test_the_first_stats_of_a_remote_lists_it_once_to_make_a_checkpoint(remote):
    url, options = remote
    tier = _tier(url, options)
    tier.put(A, [1], {"digest": "d"})  # written outside a run: only a listing finds it
    assert _cache(url, options).stats()["remote"]["entries"] == 1
    assert "stats.json" in objects(url, options)


def test_stats_folds_days_no_manifest_lands_in_any_more_into_the_checkpoint(remote):
    url, options = remote
    store = _tier(url, options).store
    remote_ledger.usage(store)  # the checkpoint: closed two days ago
    _run(url, options, writes=((A, [1]),))
    later = time.time() + 3 * DAY  # today's manifests are three days old by then
    before = remote_ledger.usage(store, now=later)
    store.traffic.take()
    assert remote_ledger.usage(store, now=later) == before
    assert store.traffic.take()["LIST"]["requests"] == 1  # the days: none left to read
    stored = json.loads(store.fetch(f"{store.root}/stats.json").data)
    assert stored["closed"] == manifests.day_of(later - 2 * DAY)


def test_a_stats_folding_at_the_same_time_as_a_colleague_loses_nothing(remote, monkeypatch):
    url, options = remote
    store = _tier(url, options).store
    remote_ledger.usage(store)
    _run(url, options, writes=((A, [1]),))
    later = time.time() + 3 * DAY
    read = remote_ledger._read

    def colleague_folds_first(found_store):
        found = read(found_store)
        monkeypatch.setattr(remote_ledger, "_read", read)
        remote_ledger.usage(store, now=later)  # folds, and changes the checkpoint's version
        return found

    monkeypatch.setattr(remote_ledger, "_read", colleague_folds_first)
    assert remote_ledger.usage(store, now=later)["entries"] == 1  # its fold failed: no harm
    assert remote_ledger.usage(store, now=later)["entries"] == 1


# --------------------------------------------------------------------------- at size


@pytest.fixture(scope="module")
def crowded(s3_server) -> tuple[str, dict[str, object]]:
    """A bucket of 3,000 entries (every tenth with a content object), written quickly with
    the tier's puts, outside runs, then counted once by a first stats."""
    options = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**options).mkdir(bucket)
    url = f"s3://{bucket}/lazyflow"
    tier = RemoteTier(url, options, lanes=16)
    for i in range(3000):
        tier.put(f"{i:032x}", BIG + i if i % 10 == 0 else i, {"digest": "d"})
    tier.flush()
    assert _cache(url, options).stats()["remote"]["entries"] == 3000
    return url, options


@pytest.mark.slow
def test_stats_of_thousands_of_entries_costs_a_few_requests_and_lists_no_entry(
        crowded, s3_requests):
    url, options = crowded
    _run(url, options, writes=((A, [1]), (B, BIG)))
    with s3_requests.recorded(url) as recorded:
        report = _cache(url, options).stats()["remote"]
    assert report["entries"] == 3002
    assert len(recorded) <= 50, kinds(recorded)
    assert not [e for e in recorded if "/ac/" in e["url"] or "/cas/" in e["url"]
                or "prefix=lazyflow%2Fac" in e["url"] or "prefix=lazyflow%2Fcas" in e["url"]]


@pytest.mark.slow
def test_prune_of_thousands_of_entries_reads_none_of_them(crowded, s3_requests):
    url, options = crowded
    with s3_requests.recorded(url) as recorded:
        report = _cache(url, options).prune(older_than="30d", confirm=True)["remote"]
    assert report["removed"] == 0
    counts = kinds(recorded)
    assert not [e for e in recorded if kind(e) == "GET" and ("/ac/" in e["url"]
                                                             or "/cas/" in e["url"])]
    assert counts["LIST"] <= 3300 // 1000 + 5, counts


# --------------------------------------------------------------------------- many users

_USER = """
import json, os, sys, time
import numpy as np
import lazyflow as lf

URL, OPTIONS, WHO, STOP = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
HOT = range(4)
flow = lf.Flow("team", cache=lf.Cache(memory=None, disk=None, remote=URL,
                                      remote_options=OPTIONS))

@flow.node
def value(k: int):
    return np.full(1000, k, dtype=np.int64)  # 8 KB: an entry and a content object

def request(k):
    started = time.time()
    run = flow.run("value", k=k)
    got = run["value"]
    print(json.dumps({"who": WHO, "k": k, "status": run.nodes["value"].status,
                      "right": got.shape == (1000,) and bool((got == k).all()),
                      "started": started, "ended": time.time()}), flush=True)

if WHO < 0:  # the first user computes the keys everyone then reads
    for k in HOT:
        request(k)
    sys.exit()
cold = 0
while not os.path.exists(STOP):
    for k in HOT:
        request(k)
    cold += 1
    request(1000 * (WHO + 1) + cold)  # computed once, never read again: collectable
"""

_COLLECTOR = """
import json, sys, time
import lazyflow as lf

URL, OPTIONS, WINDOW, ROUNDS = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), \\
    int(sys.argv[4])
cache = lf.Cache(memory=None, disk=None, remote=URL, remote_options=OPTIONS)
for _ in range(ROUNDS):
    started = time.time()
    report = cache.prune(older_than=WINDOW, confirm=True)["remote"]
    print(json.dumps({"started": started, "ended": time.time(), **report}), flush=True)
"""

HOT = range(4)
WINDOW = 6.0
REFRESH = 2.0  # hits on entries younger than this write no manifest (at most the window)
SLACK = 1.5  # S3 listings give LastModified to the second


def _start(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "LAZYFLOW_HISTORY": "off"}
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _lines(process: subprocess.Popen[str]) -> list[dict]:
    out, err = process.communicate()
    assert process.returncode == 0, err
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_many_users_and_a_collection_lose_nothing_read_within_the_window(s3_url, s3_options,
                                                                         tmp_path):
    options = json.dumps({**s3_options, "lazyflow_refresh": REFRESH})
    stop = str(tmp_path / "stop")
    assert all(r["status"] == "completed" for r in _lines(_start(_USER, s3_url, options, "-1",
                                                                 stop)))
    users = [_start(_USER, s3_url, options, str(who), stop) for who in range(3)]
    for user in users:  # each has read the hot keys once: their manifests are fresh
        assert user.stdout is not None and user.stdout.readline().startswith("{")
    collector = _start(_COLLECTOR, s3_url, options, str(WINDOW), "12")
    rounds = _lines(collector)
    open(stop, "w").close()
    reads = sorted((r for user in users for r in _lines(user)), key=lambda r: r["started"])
    assert all(r["right"] for r in reads)  # 0 wrong values
    assert sum(r["removed"] for r in rounds) > 0  # the collection did remove cold entries
    lost = []
    for r in reads:  # a miss on a key a run had read within the window before it: lost
        previous = max((e["ended"] for e in reads if e["k"] == r["k"] and
                        e["ended"] < r["started"] and e["status"] == "cached"), default=None)
        if r["status"] != "cached" and previous is not None and \
                r["started"] - previous < WINDOW - SLACK:
            lost.append((r, previous))
    assert lost == []
    swept = min(g["ended"] for g in rounds if g["removed"])
    assert [r for r in reads if r["k"] in HOT and r["started"] > swept and
            r["status"] == "cached"]  # hot keys were served while the collection removed
