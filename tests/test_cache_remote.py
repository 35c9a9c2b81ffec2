"""The remote tier under a flow, against a real moto S3 server on loopback."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import s3fs
from bucket import age, objects
from chains import define_array_chain

import lazyflow as lf
from lazyflow.cache.audit import verify_cache
from lazyflow.cache.config import ConfigError
from lazyflow.cache.remote import RemoteTier, RemoteUnavailableError

pytestmark = pytest.mark.s3


def _remote_flow(s3_url, s3_options, tmp_path, *, disk: bool = False, name: str = "remote"
                 ) -> lf.Flow:
    cache = lf.Cache(memory=None, disk=str(tmp_path / "disk") if disk else None,
                     remote=s3_url, remote_options=s3_options)
    return lf.Flow(name, cache=cache)


def _objects(s3_url, s3_options) -> list[str]:
    fs = s3fs.S3FileSystem(**s3_options)
    fs.invalidate_cache()
    return fs.find(s3_url)


def _warned(caught, text: str) -> bool:
    return any(text in str(w.message) for w in caught)


def test_the_layout_keeps_entries_apart_from_content_named_by_its_checksum(
        s3_url, s3_options, tmp_path, calls):
    flow = define_array_chain(_remote_flow(s3_url, s3_options, tmp_path), calls)
    key = flow.run("raw", n=1000).nodes["raw"].key
    names = [o.split("/lazyflow/", 1)[1] for o in _objects(s3_url, s3_options)]
    checksum = flow.cache.tier("remote").meta(key)["checksum"]
    assert f"ac/{key[:2]}/{key}.json" in names
    assert f"cas/{checksum[:2]}/{checksum}" in names


def test_background_writes_have_landed_when_the_run_returns(s3_url, s3_options, tmp_path, calls):
    flow = define_array_chain(_remote_flow(s3_url, s3_options, tmp_path), calls)
    key = flow.run("total", n=1000).nodes["total"].key
    other_process_view = RemoteTier(s3_url, s3_options, background=False)
    assert other_process_view.get(key) == float(np.arange(1000).sum())


def test_a_remote_hit_is_served_and_promoted_to_disk(s3_url, s3_options, tmp_path, calls):
    define_array_chain(_remote_flow(s3_url, s3_options, tmp_path), calls).get("total", n=1000)
    fresh = define_array_chain(_remote_flow(s3_url, s3_options, tmp_path, disk=True), calls)
    first = fresh.run("total", n=1000)
    second = fresh.run("total", n=1000)
    assert (first.nodes["total"].status, first.nodes["total"].tier) == ("cached", "remote")
    assert second.nodes["total"].tier == "disk"
    assert calls == {"raw": 1, "total": 1}


def test_a_hit_is_decided_without_downloading_the_value(s3_url, s3_options, tmp_path, calls):
    flow = define_array_chain(_remote_flow(s3_url, s3_options, tmp_path), calls)
    key = flow.run("raw", n=1000).nodes["raw"].key
    fs = s3fs.S3FileSystem(**s3_options)
    for path in _objects(s3_url, s3_options):
        if not path.endswith(".json"):
            fs.pipe_file(path, b"garbage")
    assert flow.cache.lookup(key)[1] == "remote"  # silent: a warning would be an error here


def test_a_corrupted_s3_object_is_dropped_and_recomputed(s3_url, s3_options, tmp_path, calls):
    flow = define_array_chain(_remote_flow(s3_url, s3_options, tmp_path), calls)
    expected = flow.get("raw", n=100_000)
    fs = s3fs.S3FileSystem(**s3_options)
    (value_object,) = [p for p in _objects(s3_url, s3_options) if not p.endswith(".json")]
    data = bytearray(fs.cat_file(value_object))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(value_object, bytes(data))
    with pytest.warns(lf.CacheWarning) as caught:
        value = flow.get("raw", n=100_000)
    assert _warned(caught, "checksum")
    np.testing.assert_array_equal(value, expected)
    assert calls["raw"] == 2


def test_a_truncated_s3_object_is_dropped_and_recomputed(s3_url, s3_options, tmp_path, calls):
    flow = define_array_chain(_remote_flow(s3_url, s3_options, tmp_path), calls)
    flow.get("raw", n=100_000)
    fs = s3fs.S3FileSystem(**s3_options)
    (value_object,) = [p for p in _objects(s3_url, s3_options) if not p.endswith(".json")]
    fs.pipe_file(value_object, fs.cat_file(value_object)[:1000])
    with pytest.warns(lf.CacheWarning) as caught:
        flow.get("raw", n=100_000)
    assert _warned(caught, "truncated")
    assert calls["raw"] == 2


def test_a_deleted_s3_value_object_is_dropped_and_recomputed(s3_url, s3_options, tmp_path,
                                                             calls):
    flow = define_array_chain(_remote_flow(s3_url, s3_options, tmp_path), calls)
    flow.get("raw", n=1000)
    fs = s3fs.S3FileSystem(**s3_options)
    for path in _objects(s3_url, s3_options):
        if not path.endswith(".json"):
            fs.rm_file(path)
    with pytest.warns(lf.CacheWarning) as caught:
        flow.get("raw", n=1000)
    assert _warned(caught, "missing")
    assert calls["raw"] == 2


def test_corrupted_metadata_is_dropped_and_recomputed(s3_url, s3_options, tmp_path, calls):
    flow = define_array_chain(_remote_flow(s3_url, s3_options, tmp_path), calls)
    flow.get("raw", n=1000)
    fs = s3fs.S3FileSystem(**s3_options)
    for path in _objects(s3_url, s3_options):
        if path.endswith(".json"):
            fs.pipe_file(path, b"{not json")
    with pytest.warns(lf.CacheWarning) as caught:
        flow.get("raw", n=1000)
    assert _warned(caught, "unreadable metadata")
    assert calls["raw"] == 2


def test_an_unreachable_remote_warns_and_the_run_succeeds(tmp_path, calls):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "k", "secret": "s",
               "retries": 1, "config_kwargs": {"retries": {"max_attempts": 1}}}
    cache = lf.Cache(memory=None, disk=str(tmp_path / "disk"), remote="s3://nowhere/lf",
                     remote_options=options)
    flow = define_array_chain(lf.Flow("offline", cache=cache), calls)
    with pytest.warns(lf.CacheWarning) as caught:
        run = flow.run("total", n=100)
    assert run.status == "completed" and run["total"] == 4950.0
    assert _warned(caught, "could not be read")
    assert _warned(caught, "remote cache s3://nowhere/lf failed")
    assert flow.run("total", n=100).nodes["total"].tier == "disk"


def test_a_missing_filesystem_names_the_package_to_install():
    with pytest.raises(RemoteUnavailableError, match="install gcsfs to use gcs:// caches"):
        RemoteTier("gcs://bucket/prefix")  # a known protocol whose package is not installed


def test_an_unknown_protocol_is_a_configuration_error():
    with pytest.raises(ConfigError, match="s3://bucket/prefix"):
        RemoteTier("nosuchprotocol://bucket/prefix")


def test_prune_removes_old_remote_entries(s3_url, s3_options, tmp_path, calls):
    flow = define_array_chain(_remote_flow(s3_url, s3_options, tmp_path), calls)
    flow.get("total", n=1000)
    assert flow.cache.prune(older_than=0, confirm=True)["remote"]["removed"] >= 2
    assert _objects(s3_url, s3_options) == []


def test_a_second_writer_of_a_key_keeps_the_first_entry_and_uploads_nothing(s3_url, s3_options):
    first = RemoteTier(s3_url, s3_options, background=False)
    second = RemoteTier(s3_url, s3_options, background=False)  # a colleague's process
    first.put("ab" * 16, np.zeros(1000), {"digest": "d"})
    second.put("ab" * 16, np.ones(1000), {"digest": "d"})  # other bytes, same key
    assert len(_objects(s3_url, s3_options)) == 2  # one entry, one content object
    np.testing.assert_array_equal(RemoteTier(s3_url, s3_options).get("ab" * 16), np.zeros(1000))


def test_prune_removes_content_no_run_used_once_older_than_the_window(s3_url, s3_options):
    tier = RemoteTier(s3_url, s3_options, background=False)
    tier.put("ab" * 16, np.zeros(1000), {"digest": "d"})
    tier.finish_run("remote", "run-1", 0.0)  # its manifest names the entry and its content
    cut_off = RemoteTier(s3_url, s3_options, background=False)  # a writer cut off before its
    cut_off.put("cd" * 16, np.ones(1000), {"digest": "d"})      # entry and its manifest
    cut_off.store.delete(cut_off.store.entry_path("cd" * 16))
    age(s3_url, 2 * 86400)  # the entries and content are two days old, the manifest is not
    assert lf.Cache(memory=None, disk=None, remote=None, tiers=[tier]).prune(
        older_than="1d", confirm=True)["remote"]["removed"] == 1
    assert [o.split("/")[0] for o in objects(s3_url, s3_options)] == \
        ["ac", "cas", "runs", "stats.json"]
    np.testing.assert_array_equal(tier.get("ab" * 16), np.zeros(1000))


def test_background_writes_of_one_key_land_in_order(s3_url, s3_options):
    tier = RemoteTier(s3_url, s3_options, lanes=4)
    for version in range(20):
        tier.put("ab" * 16, lf.cache.NO_VALUE, {"digest": str(version)})
        tier.put(f"{version:032x}", version, {"digest": str(version)})
    tier.flush()
    reader = RemoteTier(s3_url, s3_options, background=False)
    assert reader.meta("ab" * 16)["digest"] == "19"
    assert [reader.get(f"{v:032x}") for v in range(20)] == list(range(20))


# --------------------------------------------------------------------------- verify


def test_verify_reports_a_flipped_s3_object_and_deletes_it_only_with_drop(s3_url, s3_options,
                                                                          tmp_path, calls):
    flow = define_array_chain(_remote_flow(s3_url, s3_options, tmp_path), calls)
    key = flow.run("raw", n=1000).nodes["raw"].key
    fs = s3fs.S3FileSystem(**s3_options)
    (value_object,) = [p for p in _objects(s3_url, s3_options) if not p.endswith(".json")]
    data = bytearray(fs.cat_file(value_object))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(value_object, bytes(data))
    remote = flow.cache.tier("remote")
    report = verify_cache(flow.cache)["remote"]
    assert [(d["key"], d["node"]) for d in report["damaged"]] == [(key, "raw")]
    assert remote.contains(key)
    assert verify_cache(flow.cache, drop=True)["remote"]["dropped"] == [key]
    assert not remote.contains(key)


def test_verify_keeps_a_remote_entry_whose_class_this_process_cannot_import(
        s3_url, s3_options, tmp_path, colleague_module):
    flow = _remote_flow(s3_url, s3_options, tmp_path, name="shapes")
    circle = colleague_module.module.Circle

    @flow.node
    def shape(radius: int):
        return circle(radius)

    key = flow.run("shape", radius=2).nodes["shape"].key
    colleague_module.leave()  # as for a teammate's CLI outside that project
    report = verify_cache(flow.cache, drop=True)["remote"]
    assert (report["checked"], report["intact"], report["damaged"]) == (1, 1, [])
    assert flow.cache.tier("remote").contains(key)


def test_loading_a_remote_entry_whose_class_cannot_be_imported_is_a_miss_that_keeps_it(
        s3_url, s3_options, tmp_path, colleague_module):
    flow = _remote_flow(s3_url, s3_options, tmp_path, name="shapes-load")
    circle = colleague_module.module.Circle

    @flow.node
    def shape(radius: int):
        return circle(radius)

    key = flow.run("shape", radius=2).nodes["shape"].key
    flow.cache.tier("remote").flush()
    colleague_module.leave()
    teammate = lf.Cache(memory=None, disk=None, remote=s3_url, remote_options=s3_options)
    with pytest.warns(lf.CacheWarning, match="cannot import.*kept"), pytest.raises(KeyError):
        teammate.load(key)
    assert teammate.tier("remote").contains(key)
