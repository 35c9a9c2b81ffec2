"""The remote's miss path (docs/cache-format.md, "Requests"): a cold node asks the remote
once, a key found missing is asked once per run, and a hit on a fresh entry writes no
manifest while garbage collection still keeps everything used within its window — against
the moto S3 server (requests recorded by the server itself) and a folder."""

from __future__ import annotations

import pytest
from bucket import age, kinds, objects
from chains import define_list_chain, ran

import lazyflow as lf
from lazyflow.cache import NO_VALUE
from lazyflow.cache.config import ConfigError
from lazyflow.cache.remote import RemoteTier
from lazyflow.cache.remote_entries import EntryObject

DAY = 86400
KEY = "ab" * 16


def _flow(url: str, options: dict[str, object], *, disk: str | None = None) -> lf.Flow:
    """A chain ``raw -> total -> report`` on a fresh remote cache (a colleague's process:
    nothing in memory)."""
    flow = define_list_chain(lf.Flow("team", cache=lf.Cache(
        memory=None, disk=disk, remote=url, remote_options=options)))

    @flow.node
    def report(total):
        return f"total {total}"

    return flow


def _tier(url: str, options: dict[str, object]) -> RemoteTier:
    return RemoteTier(url, options, background=False)


def _manifests(url: str, options: dict[str, object]) -> list[str]:
    return [name for name in objects(url, options) if name.startswith("runs/")]


def _gets(recorded: list[dict[str, str]]) -> list[str]:
    """The object names the recorded GETs asked for."""
    return [e["url"].rsplit("/", 1)[1].split("?")[0] for e in recorded if e["method"] == "GET"]


# --------------------------------------------------------------------------- cold nodes


def test_a_cold_node_asks_the_remote_once_and_writes_its_entry_and_trace_record(
        s3_url, s3_options, s3_requests):
    flow = _flow(s3_url, s3_options)
    with s3_requests.recorded(s3_url) as recorded:
        run = ran(flow, "report", n=10)
    computed = [n for n in ("raw", "total", "report") if run.nodes[n].status == "completed"]
    assert len(computed) == 3
    # per node: its trace record missed, then its entry and its trace record written;
    # raw, without upstream nodes, is found by its entry alone (missed, then written,
    # carrying the environment's description); once per run: the run's manifest
    assert kinds(recorded) == {"GET": 3, "PUT": 1 + 2 * 2 + 1}
    entries = {f"{run.nodes[n].key}.json" for n in ("total", "report")}
    assert entries.isdisjoint(_gets(recorded))  # their inputs were new: not asked


def test_a_node_whose_input_was_a_hit_is_still_found_by_its_entry(remote):
    url, options = remote
    first = ran(_flow(url, options), "total", n=10)
    tier = _tier(url, options)
    for name in objects(url, options):  # lose total's trace record (its entry stays)
        if name.startswith("ac/"):
            stored = EntryObject.from_json(tier.store.fetch(f"{tier.root}/{name}").data)
            if stored.meta.get("key") == first.nodes["total"].key:
                tier.store.delete(f"{tier.root}/{name}")
    again = ran(_flow(url, options), "total", n=10)
    assert (again.nodes["raw"].status, again.nodes["total"].status) == ("cached", "cached")
    assert again.nodes["total"].tier == "remote"  # early cutoff through the remote


def test_early_cutoff_after_an_upstream_edit_is_found_on_the_local_disk(remote, tmp_path):
    url, options = remote
    flow = _flow(url, options, disk=str(tmp_path / "disk"))
    flow.run("report", n=10)

    with pytest.warns(lf.DefinitionWarning, match="replaces node 'raw'"):
        @flow.node
        def raw(n: int):  # edited: the same value, computed another way
            return [i for i in range(n)]

    run = flow.run("report", n=10)
    assert run.nodes["raw"].status == "completed"
    assert (run.nodes["total"].status, run.nodes["total"].tier) == ("cached", "disk")


# --------------------------------------------------------------------------- misses, once per run


def test_a_key_found_missing_is_not_asked_again_in_the_same_run(s3_url, s3_options,
                                                                s3_requests):
    cache = lf.Cache(tiers=[_tier(s3_url, s3_options)])
    with s3_requests.recorded(s3_url) as recorded:
        assert cache.lookup(KEY) is None
        assert cache.lookup(KEY) is None
        with pytest.raises(KeyError):
            cache.load(KEY)
    assert kinds(recorded) == {"GET": 1}


@pytest.mark.parametrize("background", [True, False])
def test_a_key_the_run_wrote_after_finding_it_missing_is_found(remote, background):
    url, options = remote
    tier = RemoteTier(url, options, background=background)
    assert tier.meta(KEY) is None
    tier.put(KEY, [1, 2], {"digest": "d"})
    assert tier.meta(KEY)["digest"] == "d" and tier.get(KEY) == [1, 2]
    tier.flush()
    assert tier.contains(KEY) and tier.get(KEY) == [1, 2]


def test_a_record_the_run_wrote_after_finding_it_missing_is_found(remote):
    url, options = remote
    tier = _tier(url, options)
    assert tier.meta(KEY) is None
    tier.put(KEY, NO_VALUE, {"key": "cd" * 16, "digest": "d"})  # a trace record
    assert tier.meta(KEY)["key"] == "cd" * 16


def test_the_next_run_asks_again_for_a_key_found_missing(remote):
    url, options = remote
    tier = _tier(url, options)
    assert tier.meta(KEY) is None
    _tier(url, options).put(KEY, [1, 2], {"digest": "d"})  # a colleague writes it
    assert tier.meta(KEY) is None  # this run found it missing
    tier.flush()  # the run ends
    assert tier.get(KEY) == [1, 2]


def test_misses_are_asked_again_while_the_runs_workers_write(remote):
    url, options = remote
    tier = _tier(url, options)
    worker = tier.opener()()  # a Dask run's workers open the tier themselves
    assert tier.meta(KEY) is None
    worker.put(KEY, [1, 2], {"digest": "d"})
    assert tier.get(KEY) == [1, 2]


# --------------------------------------------------------------------------- manifest-free hits


def test_a_fresh_hit_on_a_fresh_entry_makes_exactly_one_get(s3_url, s3_options, s3_requests):
    ran(_flow(s3_url, s3_options), "report", n=10)
    written = _manifests(s3_url, s3_options)
    with s3_requests.recorded(s3_url) as recorded:
        run = ran(_flow(s3_url, s3_options), "report", n=10)
    assert (run.nodes["report"].status, run.nodes["report"].tier) == ("cached", "remote")
    assert kinds(recorded) == {"GET": 1}
    assert _manifests(s3_url, s3_options) == written


def test_an_old_entrys_hit_records_its_use_so_a_collection_keeps_it(remote):
    url, options = remote
    ran(_flow(url, options), "report", n=10)
    age(url, 8 * DAY, under=("ac/", "cas/", "runs/"))  # unused for 8 days...
    run = ran(_flow(url, options), "report", n=10)      # ...then read: its use recorded
    assert len(_manifests(url, options)) == 2
    lf.Cache(memory=None, disk=None, remote=url, remote_options=options).prune(
        older_than="7d", confirm=True)
    again = ran(_flow(url, options), "report", n=10)
    assert again.nodes["report"].tier == "remote" and again["report"] == run["report"]


def test_a_collection_counts_a_fresh_entry_as_used_until_its_refresh_interval_ends(remote):
    url, options = remote
    ran(_flow(url, options), "report", n=10)
    age(url, 0.9 * DAY, under=("ac/", "cas/", "runs/"))  # written 0.9 days ago...
    ran(_flow(url, options), "report", n=10)              # ...and read: no manifest
    assert len(_manifests(url, options)) == 1
    age(url, 6.6 * DAY, under=("ac/", "cas/", "runs/"))  # that read was 6.6 days ago
    report = lf.Cache(memory=None, disk=None, remote=url, remote_options=options).prune(
        older_than="7d", confirm=True)["remote"]
    assert report["entries"] == 0
    assert ran(_flow(url, options), "report", n=10).nodes["report"].tier == "remote"


def test_a_refresh_interval_of_zero_records_every_hit(remote):
    url, options = remote
    recording = {**options, "lazyflow_refresh": 0}
    ran(_flow(url, recording), "report", n=10)
    ran(_flow(url, recording), "report", n=10)
    assert len(_manifests(url, options)) == 2


def test_a_refresh_interval_that_is_not_a_number_of_seconds_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="lazyflow_refresh"):
        RemoteTier(f"file://{tmp_path}", {"lazyflow_refresh": "1d"})


def test_a_run_that_wrote_writes_its_manifest_however_fresh_what_it_read(remote):
    url, options = remote
    ran(_flow(url, options), "total", n=10)
    ran(_flow(url, options), "report", n=10)  # reads total, computes report
    assert len(_manifests(url, options)) == 2


def test_a_cold_node_with_a_large_value_adds_only_its_content_object(s3_url, s3_options,
                                                                     s3_requests):
    flow = lf.Flow("team", cache=lf.Cache(memory=None, disk=None, remote=s3_url,
                                          remote_options=s3_options))

    @flow.node
    def big(n: int):
        return b"x" * n

    with s3_requests.recorded(s3_url) as recorded:
        ran(flow, "big", n=65536)
    # its entry missed (a node without upstream nodes is found by its entry alone); its
    # content and entry written (no check first: its inputs are new); the manifest
    assert kinds(recorded) == {"GET": 1, "PUT": 2 + 1}
