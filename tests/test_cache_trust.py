"""Trust on a shared remote (docs/caching.md, "Trusted remotes"): signed entries, untrusted
ones never decoded nor replaced, read-only remotes, keys that never leak — against a real moto
S3 server whose recorder counts requests, and a local folder, with a real attacker's pickle."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import pickle
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from chains import define_list_chain
from doubles import PicklingExecutor
from test_cache_remote_layout import Requests

import lazyflow as lf
from lazyflow.cache import formats, remote, serialize, trust
from lazyflow.cache.remote import RemoteTier
from lazyflow.cache.remote_entries import EntryObject, Signature
from lazyflow.cache.trust import TRUST_OPTION, ReadOnlyRemoteError, Trust
from lazyflow.errors import ConfigError
from lazyflow.history import recorder

SECRET = "team-secret-9f2c41d7b0e84a6c"
OTHER_SECRET = "not-the-team-secret-5e7a0c9d"
KEY = "ab" * 16


def _flow(cache: lf.Cache) -> lf.Flow:
    flow = define_list_chain(lf.Flow("team", cache=cache))

    @flow.node
    def spread(raw):
        return np.arange(len(raw) * 1000.0)  # 8 KB a raw element: a content object

    return flow


def _cache(url: str, options: dict[str, object], **trusting: object) -> lf.Cache:
    return lf.Cache(memory=None, disk=None, remote=url, remote_options=options, **trusting)


def _written(cache: lf.Cache, target: str, **inputs: object) -> None:
    """A writer's request for ``target``, flushed: its run's manifest, written in the
    background, has landed (no later request counted here meets it)."""
    _flow(cache).get(target, **inputs)
    cache.flush()


def _tier(url: str, options: dict[str, object] | None = None, **trusting: object) -> RemoteTier:
    configured = Trust.configured(**trusting)  # type: ignore[arg-type]
    extra = {} if configured is None else {TRUST_OPTION: configured}
    return RemoteTier(url, {**(options or {}), **extra}, background=False)


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which remotes this process has warned about already."""
    monkeypatch.setattr(trust, "_WARNED", set())


@pytest.fixture
def s3_requests(s3_server, tmp_path, monkeypatch) -> Requests:
    """Counts of what the moto server answers (its recorder, writing to a temporary file)."""
    from moto.moto_api import recorder

    path = tmp_path / "requests.jsonl"
    monkeypatch.setattr(recorder, "_location", str(path))
    return Requests(path)


@pytest.fixture
def folder(tmp_path) -> tuple[str, dict[str, object]]:
    """A remote on a local folder (a shared mount)."""
    return f"file://{tmp_path / 'mount'}", {}


# --------------------------------------------------------------------------- the attacker


class Exploit:
    """What an attacker who can write to the bucket stores: unpickling it creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _poison(url: str, options: dict[str, object], key: str, marker: Path, *,
            inline: bool = True) -> None:
    """Replace the entry of ``key`` with one whose value runs the attacker's code when
    unpickled (inline, or in a content object), keeping its metadata otherwise."""
    store = RemoteTier(url, options, background=False).store
    entry, _ = store.read_entry(key)
    encoded = serialize.encode(Exploit(marker))
    meta = {**entry.meta, "serializer": encoded.serializer, "checksum": encoded.checksum(),
            "size": encoded.nbytes, "encoding": 1}
    if inline:
        poisoned = EntryObject(meta, data=encoded.tobytes())
    else:
        store.fs.pipe_file(store.content_path(meta["checksum"]), encoded.tobytes())
        poisoned = EntryObject(meta, cas=meta["checksum"])
    store.fs.pipe_file(store.entry_path(key), poisoned.to_json())


def _keys(**inputs: object) -> dict[str, str]:
    """Each node's content key for ``inputs`` (keys cover code and inputs, not the cache)."""
    probe = _flow(lf.Cache(memory="10MB", disk=None, remote=None))
    runs = [probe.run(target, **inputs) for target in ("total", "spread")]
    return {name: record.key for run in runs for name, record in run.nodes.items()}


def _cache_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, lf.CacheWarning)]


# --------------------------------------------------------------------------- signed entries


@pytest.mark.s3
def test_a_colleague_trusting_the_key_hits_signed_entries_in_one_get(s3_url, s3_options,
                                                                       s3_requests):
    writer = _flow(_cache(s3_url, s3_options, sign_with=SECRET))
    writer.get("total", n=10)
    writer.cache.flush()  # its manifest, written in the background, landed before counting
    reader = _flow(_cache(s3_url, s3_options, trusted_keys=[SECRET]))
    with s3_requests.counted(s3_url) as counts:
        run = reader.run("total", n=10)
    assert (run["total"], run.nodes["total"].tier) == (45, "remote")
    assert counts == {"GET": 1}  # the trace record, carrying its signed entry (read-only: no manifest)


def test_every_entry_object_a_signing_writer_stores_carries_a_valid_signature(folder):
    url, options = folder
    _written(_cache(url, options, sign_with=SECRET), "spread", n=10)
    tier = _tier(url, trusted_keys=[SECRET])
    check = Trust.configured(trusted_keys=[SECRET])
    entries = {key: tier.store.read_entry(key)[0] for key in list(tier.keys())}
    assert entries and all(check.trusts(key, entry) for key, entry in entries.items())
    entries = list(entries.values())
    assert all(entry.sha256 for entry in entries if entry.cas is not None)
    assert all(check.trusts(entry.meta["key"], entry.carried) for entry in entries
               if entry.carried is not None)


def test_a_signature_covers_the_key_and_the_metadata(folder):
    url, _ = folder
    signed = _tier(url, sign_with=SECRET)
    signed.put(KEY, [1, 2], {"digest": "d" * 32})
    entry, _ = signed.store.read_entry(KEY)
    check = Trust.configured(trusted_keys=[SECRET])
    assert check.trusts(KEY, entry)
    assert not check.trusts("cd" * 16, entry)  # the same entry under another key
    forged = EntryObject({**entry.meta, "digest": "e" * 32}, data=entry.data, sig=entry.sig)
    assert not check.trusts(KEY, forged)  # the digest dependents are keyed by


# --------------------------------------------------------------------------- untrusted entries


def test_without_trust_a_bucket_writer_runs_code_in_every_reader(folder, tmp_path):
    """The threat itself, so that the tests below can fail: an attacker's entry runs."""
    url, options = folder
    _written(_cache(url, options), "total", n=10)
    marker = tmp_path / "pwned"
    _poison(url, options, _keys(n=10)["total"], marker)
    _cache(url, options).load(_keys(n=10)["total"])
    assert marker.exists()


@pytest.mark.s3
@pytest.mark.parametrize("inline", [True, False], ids=["inline", "content object"])
def test_an_attackers_unsigned_entry_is_never_fetched_nor_decoded_with_trust_configured(
        s3_url, s3_options, s3_requests, tmp_path, monkeypatch, inline):
    _written(_cache(s3_url, s3_options), "total", n=10)  # any writer of the bucket, unsigned
    marker = tmp_path / "pwned"
    _poison(s3_url, s3_options, _keys(n=10)["total"], marker, inline=inline)
    loads: list[object] = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: loads.append(a))
    monkeypatch.setattr(cloudpickle, "loads", lambda *a, **k: loads.append(a))
    reader = _flow(_cache(s3_url, s3_options, trusted_keys=[SECRET]))
    with warnings.catch_warnings(record=True) as caught, \
            s3_requests.counted(s3_url) as counts:
        warnings.simplefilter("always")
        run = reader.run("total", n=10)
    assert (run["total"], run.nodes["total"].status) == (45, "completed")
    assert not marker.exists() and loads == []
    assert counts["PUT"] == counts["DELETE"] == 0  # read-only: trusted keys, no signing key
    (message,) = _cache_warnings(caught)
    assert s3_url in message and "ignored" in message and "unsigned" in message


@pytest.mark.s3
def test_the_content_of_an_untrusted_entry_is_never_downloaded(s3_url, s3_options, s3_requests,
                                                                tmp_path):
    _written(_cache(s3_url, s3_options), "spread", n=10)
    keys = _keys(n=10)
    _poison(s3_url, s3_options, keys["spread"], tmp_path / "pwned", inline=False)
    reader = _cache(s3_url, s3_options, trusted_keys=[SECRET])
    with pytest.warns(lf.CacheWarning, match="ignored"), s3_requests.counted(s3_url):
        assert reader.lookup(keys["spread"]) is None
        with pytest.raises(KeyError):
            reader.load(keys["spread"])
    requested = [json.loads(line)["url"] for line in s3_requests.path.read_text().splitlines()]
    assert requested and not [url for url in requested if "/cas/" in url]


@pytest.mark.parametrize("value", [[1, 2], b"raw", np.arange(3.0)], ids=["json", "bytes", "numpy"])
def test_an_unsigned_entry_in_a_format_read_without_code_is_not_read_either(folder, value,
                                                                             monkeypatch):
    url, _ = folder
    _tier(url).put(KEY, value, {"digest": "d" * 32})
    monkeypatch.setattr(formats, "decode", lambda *args: pytest.fail("decoded"))
    reader = lf.Cache(tiers=[_tier(url, trusted_keys=[SECRET])])
    with pytest.warns(lf.CacheWarning, match="ignored"), pytest.raises(KeyError):
        reader.load(KEY)


def test_an_entry_signed_by_a_key_not_trusted_is_a_miss(folder):
    url, _ = folder
    _tier(url, sign_with=OTHER_SECRET).put(KEY, [1, 2], {"digest": "d" * 32})
    reader = _tier(url, trusted_keys=[SECRET])
    with pytest.warns(lf.CacheWarning, match="not signed by a trusted key"):
        assert reader.meta(KEY) is None
    with pytest.raises(KeyError):
        reader.get(KEY)


def test_an_entry_signed_in_layout_2_is_still_trusted_and_an_altered_one_is_not(folder):
    url, _ = folder
    store = _tier(url).store
    secret = trust.HmacKey(SECRET.encode())
    for key, digest in ((KEY, "d" * 32), ("cd" * 16, "e" * 32)):
        encoded = serialize.encode([1, 2])
        entry = replace(EntryObject(serialize.stamp({"digest": "d" * 32}, encoded),
                                    data=encoded.tobytes()), layout=2)
        signature = base64.b64encode(secret.sign(trust.message(key, entry))).decode()
        fields = replace(entry, sig=(Signature(secret.id, trust.HMAC, signature),)
                         ).as_fields()
        fields["meta"]["digest"] = digest  # the second: altered after signing
        store.put(store.entry_path(key), [json.dumps({"v": 2, **fields}).encode()])
    reader = _tier(url, trusted_keys=[SECRET])
    assert reader.get(KEY) == [1, 2]
    with pytest.warns(lf.CacheWarning, match="ignored"):
        assert reader.meta("cd" * 16) is None


def test_a_signed_entry_whose_metadata_was_changed_is_a_miss(folder):
    url, _ = folder
    writer = _tier(url, sign_with=SECRET)
    writer.put(KEY, [1, 2], {"digest": "d" * 32})
    stored = EntryObject.from_json(writer.store.fs.cat_file(writer.store.entry_path(KEY)))
    altered = replace(stored, meta={**stored.meta, "digest": "e" * 32})
    writer.store.fs.pipe_file(writer.store.entry_path(KEY), altered.to_json())
    with pytest.warns(lf.CacheWarning, match="ignored"):
        assert _tier(url, trusted_keys=[SECRET]).meta(KEY) is None


def test_content_that_does_not_have_its_signed_sha256_is_dropped_before_decoding(
        folder, monkeypatch):
    """What bytes forged to match the xxh3 checksum would meet: the signed SHA-256."""
    url, _ = folder
    signer = Trust.configured(sign_with=SECRET)
    tier = _tier(url, sign_with=SECRET)
    signed_bytes, served = serialize.encode(np.zeros(1000)), serialize.encode(np.ones(1000))
    tier.store.write_content(served.checksum(), served)
    meta = serialize.stamp({"digest": "d" * 32}, served)
    entry = EntryObject(meta, cas=served.checksum(), sha256=trust.content_sha256(signed_bytes))
    tier.store.write_entry(KEY, signer.sign(KEY, entry), create=True)
    monkeypatch.setattr(remote, "decode", lambda encoded: pytest.fail("decoded"))
    reader = lf.Cache(tiers=[_tier(url, trusted_keys=[SECRET])])
    with pytest.warns(lf.CacheWarning, match="SHA-256"), pytest.raises(KeyError):
        reader.load(KEY)


def test_a_trusted_record_carrying_an_altered_copy_is_used_without_the_copy(folder):
    url, options = folder
    writer = _flow(_cache(url, options, sign_with=SECRET))
    writer.get("total", n=10)
    tier = _tier(url, sign_with=SECRET)
    entries = {key: tier.store.read_entry(key)[0] for key in list(tier.keys())}
    (trace,) = [key for key, entry in entries.items()
                if entry.carried is not None and entry.meta.get("node") == "total"]
    stored = EntryObject.from_json(tier.store.fs.cat_file(tier.store.entry_path(trace)))
    evil = serialize.encode(999)
    assert stored.carried is not None
    altered = replace(stored, carried=replace(
        stored.carried, data=evil.tobytes(),
        meta={**stored.carried.meta, "checksum": evil.checksum(), "size": evil.nbytes}))
    tier.store.fs.pipe_file(tier.store.entry_path(trace), altered.to_json())
    run = _flow(_cache(url, options, trusted_keys=[SECRET])).run("total", n=10)
    assert (run["total"], run.nodes["total"].tier) == (45, "remote")


def test_an_untrusted_entry_warns_once_per_process_and_remote(folder):
    url, _ = folder
    unsigned = _tier(url)
    for key in (KEY, "cd" * 16):
        unsigned.put(key, [1], {"digest": "d" * 32})
    reader = _tier(url, trusted_keys=[SECRET])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert reader.meta(KEY) is None and reader.meta("cd" * 16) is None
        assert _tier(url, trusted_keys=[SECRET]).meta(KEY) is None
    assert len(_cache_warnings(caught)) == 1


def test_an_untrusted_value_entry_is_never_written_over(folder):
    url, options = folder
    unsigned = _tier(url)
    unsigned.put(KEY, [1, 2], {"digest": "d" * 32})
    before = unsigned.store.fs.cat_file(unsigned.store.entry_path(KEY))
    cache = lf.Cache(memory="10MB", disk=None, remote=url, remote_options=options,
                     sign_with=SECRET)
    with pytest.warns(lf.CacheWarning, match="ignored"):
        assert cache.lookup(KEY) is None
    cache.store(KEY, [1, 2], {"digest": "d" * 32})
    cache.flush()
    assert unsigned.store.fs.cat_file(unsigned.store.entry_path(KEY)) == before


def test_an_untrusted_record_met_is_never_written_over(folder):
    url, _ = folder
    unsigned = _tier(url)
    unsigned.put(KEY, lf.cache.NO_VALUE, {"traces": [[["x", "1" * 32]]]})
    before = unsigned.store.fs.cat_file(unsigned.store.entry_path(KEY))
    signer = _tier(url, sign_with=SECRET)
    with pytest.warns(lf.CacheWarning, match="ignored"):
        assert signer.meta(KEY) is None
    signer.put(KEY, lf.cache.NO_VALUE, {"traces": [[["x", "2" * 32]]]})
    assert unsigned.store.fs.cat_file(unsigned.store.entry_path(KEY)) == before


def test_a_record_found_untrusted_by_any_read_is_never_written_over(folder):
    url, _ = folder
    unsigned = _tier(url)
    unsigned.put(KEY, lf.cache.NO_VALUE, {"traces": [[["x", "1" * 32]]]})
    before = unsigned.store.fs.cat_file(unsigned.store.entry_path(KEY))
    signer = _tier(url, sign_with=SECRET)
    with pytest.warns(lf.CacheWarning, match="ignored"):
        assert signer.contains(KEY)  # present, whatever it holds: its version is now known
    signer.put(KEY, lf.cache.NO_VALUE, {"traces": [[["x", "2" * 32]]]})
    assert unsigned.store.fs.cat_file(unsigned.store.entry_path(KEY)) == before


def test_a_record_replaced_by_an_untrusted_one_is_never_merged_into(folder):
    url, _ = folder
    signer = _tier(url, sign_with=SECRET)
    signer.put(KEY, lf.cache.NO_VALUE, {"traces": [[["x", "1" * 32]]]})
    assert signer.meta(KEY)["traces"] == [[["x", "1" * 32]]]  # its version is the base
    signer.flush()
    _tier(url).store.write_entry(KEY, EntryObject({"traces": [[["evil", "6" * 32]]]}))
    replaced = signer.store.fs.cat_file(signer.store.entry_path(KEY))
    with pytest.warns(lf.CacheWarning, match="ignored"):  # met by the compare-and-swap
        signer.put(KEY, lf.cache.NO_VALUE, {"traces": [[["x", "1" * 32]], [["x", "2" * 32]]]})
    assert signer.store.fs.cat_file(signer.store.entry_path(KEY)) == replaced


def test_pruning_with_trust_configured_keeps_the_content_of_untrusted_entries(folder):
    url, _ = folder
    unsigned = _tier(url)
    unsigned.put(KEY, np.arange(1000.0), {"digest": "d" * 32})
    with pytest.warns(lf.CacheWarning, match="ignored"):
        _tier(url, sign_with=SECRET).remove_orphans()
    np.testing.assert_array_equal(_tier(url).get(KEY), np.arange(1000.0))


# --------------------------------------------------------------------------- read-only


@pytest.mark.s3
def test_a_read_only_remote_gets_no_put_or_delete_and_still_serves_hits(
        s3_url, s3_options, s3_requests, tmp_path):
    _written(_cache(s3_url, s3_options), "total", n=10)
    reader = _flow(lf.Cache(memory=None, disk=tmp_path / "disk", remote=s3_url,
                            remote_options=s3_options, read_only=True))
    with s3_requests.counted(s3_url) as counts:
        hit = reader.run("total", n=10)
        cold = reader.run("spread", n=10)  # computed: written to the disk tier only
    assert (hit.nodes["total"].tier, hit["total"]) == ("remote", 45)
    assert cold.nodes["spread"].status == "completed"
    assert set(counts) == {"GET"}
    again = _flow(lf.Cache(memory=None, disk=tmp_path / "disk", remote=None)).run("spread", n=10)
    assert again.nodes["spread"].tier == "disk"


@pytest.mark.s3
def test_a_read_only_remote_never_deletes_a_damaged_entry(s3_url, s3_options, s3_requests):
    writer = _tier(s3_url, s3_options)
    writer.put(KEY, np.arange(1000.0), {"digest": "d" * 32})
    content = writer.store.content_path(writer.store.read_entry(KEY)[0].cas)
    writer.store.fs.pipe_file(content, b"damaged")
    reader = lf.Cache(memory=None, disk=None, remote=s3_url, remote_options=s3_options,
                      read_only=True)
    with s3_requests.counted(s3_url) as counts, \
            pytest.warns(lf.CacheWarning, match="dropped"), pytest.raises(KeyError):
        reader.load(KEY)
    assert "DELETE" not in counts and "PUT" not in counts
    assert writer.store.fs.exists(writer.store.entry_path(KEY))


def test_clearing_or_pruning_a_read_only_remote_is_refused(folder):
    url, options = folder
    _tier(url).put(KEY, [1], {"digest": "d" * 32})
    cache = _cache(url, options, read_only=True)
    with pytest.raises(ReadOnlyRemoteError, match="read-only"):
        cache.clear(confirm=True)
    with pytest.raises(ReadOnlyRemoteError, match="read-only"):
        cache.prune(older_than=0, confirm=True)
    assert _tier(url).get(KEY) == [1]


def test_trusted_keys_without_a_key_to_sign_with_make_the_remote_read_only(folder):
    url, options = folder
    cache = _cache(url, options, trusted_keys=[SECRET])
    cache.store(KEY, [1], {"digest": "d" * 32})
    cache.flush()
    assert cache.tier("remote").store.read_only
    assert not cache.tier("remote").store.fs.exists(cache.tier("remote").store.entry_path(KEY))


class InlineSharingExecutor(PicklingExecutor):
    """Runs each task inline on a pickled copy and shares the cache as Dask does: a node
    becomes a task whose worker opens the remote itself and writes its result there."""

    name = "inline-sharing"
    shares_cache = True


def test_workers_sign_what_they_write_to_the_shared_remote(folder):
    url, options = folder
    run = _flow(_cache(url, options, sign_with=SECRET)).run("total", n=10,
                                                            executor=InlineSharingExecutor())
    assert run["total"] == 45
    again = _flow(_cache(url, options, trusted_keys=[SECRET])).run("total", n=10)
    assert (again.nodes["total"].tier, again["total"]) == ("remote", 45)


def test_a_worker_on_a_read_only_remote_sends_its_result_back(folder):
    url, options = folder
    run = _flow(_cache(url, options, read_only=True)).run("total", n=10,
                                                          executor=InlineSharingExecutor())
    assert (run.nodes["total"].status, run["total"]) == ("completed", 45)
    assert list(_tier(url).keys()) == []


# --------------------------------------------------------------------------- configuration


def test_lazyflow_toml_names_a_key_file_and_the_environment_holds_keys(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "team.key").write_text(SECRET + "\n")
    (project / "lazyflow.toml").write_text(
        f'remote = "file://{tmp_path / "mount"}"\nsign_with = "team.key"\n')
    monkeypatch.chdir(project)
    _written(lf.Cache(memory=None, disk=None), "total", n=10)
    monkeypatch.setenv("LAZYFLOW_TRUSTED_KEYS", f"{OTHER_SECRET} {SECRET}")
    monkeypatch.setenv("LAZYFLOW_REMOTE_READ_ONLY", "yes")
    (project / "lazyflow.toml").write_text(f'remote = "file://{tmp_path / "mount"}"\n')
    cache = lf.Cache(memory=None, disk=None)
    assert cache.tier("remote").store.read_only
    assert _flow(cache).run("total", n=10).nodes["total"].tier == "remote"


def test_the_signing_key_comes_from_its_environment_variable(folder, monkeypatch):
    url, options = folder
    monkeypatch.setenv("LAZYFLOW_SIGNING_KEY", SECRET)
    _written(_cache(url, options), "total", n=10)
    monkeypatch.delenv("LAZYFLOW_SIGNING_KEY")
    run = _flow(_cache(url, options, trusted_keys=[SECRET])).run("total", n=10)
    assert run.nodes["total"].tier == "remote"


def test_a_key_file_is_read_from_a_path(folder, tmp_path):
    url, options = folder
    (tmp_path / "k").write_text(SECRET)
    _written(_cache(url, options, sign_with=tmp_path / "k"), "total", n=10)
    run = _flow(_cache(url, options, trusted_keys=[SECRET.encode()])).run("total", n=10)
    assert run.nodes["total"].tier == "remote"


@pytest.mark.parametrize(("given", "error"), [
    ("a-short-one", "fewer than 16"),
    (12345, "must be a secret"),
    ("ed25519:" + base64.b64encode(b"x" * 32).decode(), "public key"),
], ids=["short", "not a key", "public key"])
def test_a_bad_signing_key_is_refused_without_showing_it(folder, given, error):
    url, options = folder
    with pytest.raises(ConfigError, match=error) as raised:
        _cache(url, options, sign_with=given)
    assert str(given) not in str(raised.value)


def test_a_key_given_as_a_path_string_is_refused(folder, tmp_path):
    url, options = folder
    (tmp_path / "team.key").write_text(SECRET)
    with pytest.raises(ConfigError, match="pathlib.Path"):
        _cache(url, options, sign_with=str(tmp_path / "team.key"))


def test_a_bad_key_in_the_environment_is_named_without_its_value(monkeypatch, tmp_path):
    monkeypatch.setenv("LAZYFLOW_SIGNING_KEY", "tiny-secret")
    with pytest.raises(ConfigError) as raised:
        lf.Cache(memory=None, disk=None, remote=f"file://{tmp_path}")
    assert "tiny-secret" not in str(raised.value) and "sign_with" in str(raised.value)


def test_a_secret_written_into_lazyflow_toml_is_refused(tmp_path, monkeypatch):
    (tmp_path / "lazyflow.toml").write_text(f'remote = "file://{tmp_path}/m"\n'
                                            f'sign_with = "{SECRET}"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="cannot read the key file") as raised:
        lf.Cache(memory=None, disk=None)
    assert SECRET not in str(raised.value)


def test_read_only_must_be_a_bool(folder):
    url, options = folder
    with pytest.raises(ConfigError, match="read_only must be True or False"):
        _cache(url, options, read_only="no")


def test_trust_arguments_with_explicit_tiers_are_refused():
    with pytest.raises(ValueError, match="without tiers="):
        lf.Cache(tiers=[], sign_with=SECRET)


# --------------------------------------------------------------------------- secrets


def test_the_secret_appears_in_no_repr_stored_object_warning_or_history(tmp_path):
    url = f"file://{tmp_path / 'mount'}"
    unsigned = _tier(url)
    unsigned.put(KEY, [1], {"digest": "d" * 32})
    cache = lf.Cache(memory="10MB", disk=tmp_path / "disk", remote=url, sign_with=SECRET,
                     trusted_keys=[OTHER_SECRET])
    flow = _flow(cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flow.run("spread", n=10)
        cache.lookup(KEY)
        cache.flush()
    recorder.flush()
    assert (tmp_path / "disk" / "history.sqlite").exists()  # scanned below with the rest
    shown = [repr(cache), str(cache.tiers), repr(cache.tier("remote").store.trust),
             *(str(w.message) for w in caught)]
    assert caught and not [text for text in shown if SECRET in text or OTHER_SECRET in text]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data and OTHER_SECRET.encode() not in data, path


# --------------------------------------------------------------------------- Ed25519


def test_readers_holding_only_an_ed25519_public_key_verify_and_cannot_sign(folder):
    pytest.importorskip("cryptography")
    url, options = folder
    secret, public = trust.generate_ed25519_key()
    _written(_cache(url, options, sign_with=secret), "total", n=10)
    reader = _cache(url, options, trusted_keys=[public])
    assert _flow(reader).run("total", n=10).nodes["total"].tier == "remote"
    assert reader.tier("remote").store.read_only
    with pytest.raises(ConfigError, match="public key"):
        _cache(url, options, sign_with=public)


def test_an_entry_signed_by_another_ed25519_key_is_a_miss(folder):
    pytest.importorskip("cryptography")
    url, _ = folder
    mine, _ = trust.generate_ed25519_key()
    _, theirs = trust.generate_ed25519_key()
    _tier(url, sign_with=mine).put(KEY, [1], {"digest": "d" * 32})
    with pytest.warns(lf.CacheWarning, match="ignored"):
        assert _tier(url, trusted_keys=[theirs]).meta(KEY) is None


# --------------------------------------------------------------------------- a colleague


@pytest.mark.s3
def test_a_colleagues_process_with_trust_in_its_environment_never_unpickles_an_attack(
        s3_url, s3_options, tmp_path):
    _written(_cache(s3_url, s3_options), "total", n=10)
    marker = tmp_path / "pwned"
    _poison(s3_url, s3_options, _keys(n=10)["total"], marker)
    script = (
        "import warnings, lazyflow as lf, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_cache_trust import _flow\n"
        f"cache = lf.Cache(memory=None, disk=None, remote={s3_url!r}, "
        f"remote_options={s3_options!r})\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    print(_flow(cache).get('total', n=10))\n"
        "print(sum(issubclass(w.category, lf.CacheWarning) for w in caught))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "LAZYFLOW_TRUSTED_KEYS": SECRET,
                               "LAZYFLOW_HISTORY": "off"}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["45", "1"] and not marker.exists()
