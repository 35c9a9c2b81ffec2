"""Run manifests and what each run costs on the remote (docs/cache-format.md, "Run
manifests"): one object per run naming what it read and wrote, and ``run.remote``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from bucket import age, kinds, objects
from chains import define_list_chain, ran

import lazyflow as lf
from lazyflow.cache import remote_manifests as manifests
from lazyflow.cache.remote import RemoteTier
from lazyflow.cache.remote_entries import EntryObject


def _flow(url: str, options: dict[str, object], *, name: str = "team",
          memory: str | None = None) -> lf.Flow:
    """A chain on a remote-only cache (``memory``: with a memory tier above it)."""
    return define_list_chain(lf.Flow(name, cache=lf.Cache(
        memory=memory, disk=None, remote=url, remote_options=options)))


def _manifests(url: str, options: dict[str, object]) -> dict[str, dict]:
    """Each manifest under the remote, by its path relative to the root."""
    tier = RemoteTier(url, options, background=False)
    return {name: json.loads(tier.store.fetch(f"{tier.root}/{name}").data)
            for name in objects(url, options) if name.startswith("runs/")}


# --------------------------------------------------------------------------- manifests


def test_a_run_that_computed_writes_one_manifest_naming_every_object_it_wrote(remote):
    url, options = remote
    run = ran(_flow(url, options), "total", n=5000)  # raw's 5,000 ints (10 KB flat): a content object
    ((name, manifest),) = _manifests(url, options).items()
    wrote = {key: cas for key, cas, _ in manifest["wrote"]}
    stored = objects(url, options)
    assert {p.rsplit("/", 1)[1].removesuffix(".json") for p in stored if p.startswith("ac/")} \
        == set(wrote)
    assert {p.rsplit("/", 1)[1] for p in stored if p.startswith("cas/")} \
        == {wrote[run.nodes["raw"].key]}
    assert name == (f"runs/{manifests.day_of(time.time())}/team/{run.id}"
                    f".e{manifest['added']['entries']}.b{manifest['added']['bytes']}.json")
    assert (manifest["flow"], manifest["run"], manifest["read"]) == ("team", run.id, [])


def test_the_ledger_counts_the_entries_and_bytes_the_run_created(remote):
    url, options = remote
    ran(_flow(url, options), "total", n=5000)
    ((_, manifest),) = _manifests(url, options).items()
    tier = RemoteTier(url, options, background=False)
    listed = [item for item in tier.store.listing() if "/runs/" not in item.path]
    assert manifest["added"] == {"entries": len([i for i in listed if "/ac/" in i.path]),
                                 "bytes": sum(i.size for i in listed)}


DAY = 86400


def test_a_colleagues_hit_on_an_old_entry_is_named_as_read_in_its_runs_manifest(remote):
    url, options = remote
    ran(_flow(url, options), "total", n=5000)
    age(url, 2 * DAY, under=("ac/", "cas/", "runs/"))  # older than the refresh interval
    colleague = ran(_flow(url, options), "total", n=5000)  # a fresh cache: nothing in memory
    assert colleague.nodes["total"].tier == "remote"
    (manifest,) = [m for m in _manifests(url, options).values() if m["run"] == colleague.id]
    assert colleague.nodes["total"].key in {key for key, _, _ in manifest["read"]}
    assert (manifest["wrote"], manifest["added"]) == ([], {"entries": 0, "bytes": 0})


def test_a_run_served_from_memory_writes_no_manifest_and_costs_nothing(remote):
    url, options = remote
    flow = _flow(url, options, memory="10MB")
    flow.run("total", n=10)
    again = flow.run("total", n=10)
    assert again.nodes["total"].tier == "memory"
    assert again.remote is None
    flow.cache.flush()
    assert len(_manifests(url, options)) == 1


def test_two_runs_sharing_an_id_keep_both_manifests(remote):
    url, options = remote
    store = RemoteTier(url, options).store
    manifest = manifests.Manifest("team", "20261125-165012-3f9a1c", 0.0, time.time(),
                                  wrote=(("ab" * 16, None, 8),), entries=1, nbytes=180)
    first, second = manifests.write(store, manifest), manifests.write(store, manifest)
    assert first != second
    assert sorted(objects(url, options)) == sorted([first, second])


def test_a_manifest_names_the_content_a_record_carries(remote):
    url, options = remote
    flow = _flow(url, options)

    @flow.node
    def doubled(raw):  # 2,000 ints: a content object its trace record's copy names
        return [2 * x for x in raw]

    ran(flow, "doubled", n=5000)
    tier = RemoteTier(url, options, background=False)
    carried = {}
    for name in objects(url, options):
        if name.startswith("ac/"):
            stored = EntryObject.from_json(tier.store.fetch(f"{tier.root}/{name}").data)
            if stored.carried is not None and stored.carried.cas is not None:
                carried[Path(name).stem] = stored.carried.cas  # doubled's trace record
    ((_, manifest),) = _manifests(url, options).items()
    assert carried and carried.items() <= {(k, c) for k, c, _ in manifest["wrote"]}


# --------------------------------------------------------------------------- written in the background


def test_a_run_returns_before_its_manifest_is_written_which_lands_by_the_flush(remote,
                                                                               monkeypatch):
    url, options = remote
    gate, write = threading.Event(), manifests.write
    held: list[bool] = []

    def held_back(store, manifest):  # the upload, held until the test lets it go
        held.append(gate.wait(timeout=60))
        return write(store, manifest)

    monkeypatch.setattr(manifests, "write", held_back)
    flow = _flow(url, options)
    run = flow.run("total", n=10)
    assert run.status == "completed" and _manifests(url, options) == {}
    gate.set()
    flow.cache.flush()
    assert held == [True]  # the run had returned while the manifest was held back
    assert [m["run"] for m in _manifests(url, options).values()] == [run.id]


def test_a_process_that_exits_without_flushing_still_writes_its_manifest(remote, tmp_path):
    url, options = remote
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\nsys.path.insert(0, sys.argv[3])\nimport lazyflow as lf\n"
        "from chains import define_list_chain\n"
        "flow = define_list_chain(lf.Flow('team', cache=lf.Cache(memory=None, disk=None, "
        "remote=sys.argv[1], remote_options=eval(sys.argv[2]))))\n"
        "print(flow.run('total', n=10).id)\n")  # no flush: the process exits at once
    done = subprocess.run([sys.executable, str(script), url, repr(options),
                           str(Path(__file__).parent)], capture_output=True, text=True,
                          env={**os.environ, "LAZYFLOW_HISTORY": "off"}, check=True)
    assert [m["run"] for m in _manifests(url, options).values()] == [done.stdout.strip()]


def test_a_manifest_that_cannot_be_written_warns_at_the_flush_and_fails_no_run(remote,
                                                                              monkeypatch):
    url, options = remote

    def refused(store, manifest):
        raise PermissionError("access denied to runs/")

    monkeypatch.setattr(manifests, "write", refused)
    flow = _flow(url, options)
    # the failure warns at the first flush after it: the run's own, when the write failed
    # by then, else the one that waits for manifests
    with pytest.warns(lf.CacheWarning, match="manifest of run .* could not be written") as caught:
        run = flow.run("total", n=10)
        flow.cache.flush()
    assert run.status == "completed"
    assert len([w for w in caught if "could not be written" in str(w.message)]) == 1
    assert _manifests(url, options) == {}


# --------------------------------------------------------------------------- what a run cost


def test_run_remote_counts_the_requests_the_server_answered(s3_url, s3_options, s3_requests):
    flow = _flow(s3_url, s3_options)
    with s3_requests.recorded(s3_url) as recorded:
        run = ran(flow, "total", n=5000)  # its manifest's PUT included, though written later
    assert {m: c["requests"] for m, c in run.remote.items()} == kinds(recorded)


def test_run_remote_counts_the_bytes_moved(remote):
    url, options = remote
    ran(_flow(url, options), "total", n=5000)
    age(url, 2 * DAY, under=("ac/", "cas/", "runs/"))
    run = ran(_flow(url, options), "total", n=5000)  # a colleague's hit: one GET, one PUT
    ((name, manifest),) = [(n, m) for n, m in _manifests(url, options).items()
                           if m["run"] == run.id]
    sizes = {i.path.rsplit("/", 1)[1]: i.size
             for i in RemoteTier(url, options).store.listing()}
    read = {sizes[f"{key}.json"] for key, _, _ in manifest["read"]}
    assert run.remote["GET"]["requests"] == 1  # the trace record, carrying total's entry
    assert run.remote["GET"]["bytes"] in read
    assert run.remote["PUT"] == {"requests": 1, "bytes": sizes[name.rsplit("/", 1)[1]]}


def test_the_summary_says_what_the_run_cost_on_the_remote(remote):
    url, options = remote
    ran(_flow(url, options), "total", n=10)
    run = ran(_flow(url, options), "total", n=10)
    assert "remote: 1 request (1 GET), " in run.summary()


def test_a_run_without_a_remote_has_no_remote_line(flow):
    @flow.node
    def one():
        return 1

    run = flow.run("one")
    assert run.remote is None and "remote:" not in run.summary()
