"""Packs on a shared remote (docs/cache-format.md, "Packs"): values written together share one
content object, each read back with one ranged GET; a map's changed element is computed alone
and only its chunk is rewritten; signatures cover each member; garbage collection keeps a pack
while any entry in it is live — on the moto S3 server (its recorder) and on a folder."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import replace

import numpy as np
import pytest
from bucket import age, kinds, objects

import lazyflow as lf
from lazyflow.cache import remote_manifests as manifests
from lazyflow.cache import trust
from lazyflow.cache.remote import RemoteTier
from lazyflow.cache.remote_entries import EntryObject
from lazyflow.cache.trust import TRUST_OPTION, Trust

N = 5000
DAY = 86400
SECRET = "team-secret-9f2c41d7b0e84a6c"
A, B = "aa" * 16, "bb" * 16
VALUES = {A: np.arange(1000.0), B: np.arange(1000.0) * 2}  # 8 KB each: content, not inline


class _Recorder:
    """Appends a node's elements to the test's list; keyed as a constant, so recording what
    ran neither changes the node's key nor counts as a value it read changing while it ran
    (which would leave its results unstored: ``engine/moved.py``)."""

    def __init__(self, calls: list[object]) -> None:
        self.calls = calls

    def append(self, item: object) -> None:
        self.calls.append(item)


lf.register_hasher(_Recorder, lambda recorder: "recorder")


def _map(url: str, options: dict[str, object], calls: list[object], **trusting: object
         ) -> lf.Flow:
    flow = lf.Flow("maps", cache=lf.Cache(memory=None, disk=None, remote=url,
                                          remote_options=options, **trusting))
    recorder = _Recorder(calls)

    @flow.node(map="items")
    def double(items):
        recorder.append(items)
        return items * 2

    return flow


def _tier(url: str, options: dict[str, object], **trusting: object) -> RemoteTier:
    configured = Trust.configured(**trusting)  # type: ignore[arg-type]
    return RemoteTier(url, {**options, **({} if configured is None else
                                          {TRUST_OPTION: configured})})


def _packed(url: str, options: dict[str, object]) -> dict[str, EntryObject]:
    """Every entry object that names a span of a pack, by key."""
    tier = RemoteTier(url, options, background=False)
    found = {}
    for key in list(tier.keys()):  # RemoteTier is no dict: keys() lists the remote
        read = tier.store.read_entry(key)
        if read is not None and read[0].span is not None:
            found[key] = read[0]
    return found


def _content(url: str, options: dict[str, object]) -> list[str]:
    return [name for name in objects(url, options) if name.startswith("cas/")]


# --------------------------------------------------------------------------- maps


def _first_run(url: str, options: dict[str, object], items: list[int]) -> None:
    """A writer's first run of the map over ``items``, its manifest landed (a flush)."""
    flow = _map(url, options, [])
    flow.get("double", items=items)
    flow.cache.flush()


@pytest.mark.s3
def test_a_maps_first_run_over_200_small_elements_makes_three_writes(s3_url, s3_options,
                                                                     s3_requests):
    with s3_requests.recorded(s3_url) as requests:
        _first_run(s3_url, s3_options, list(range(200)))
    puts = sorted(r["url"].split("/lazyflow/", 1)[1].split("/")[0] for r in requests
                  if r["method"] == "PUT")
    # 3 + N/1000: its one manifest chunk, its list (carrying the environment's description;
    # a node without upstream nodes has no trace record) and the run's manifest
    assert puts == ["ac", "ac", "runs"]


@pytest.mark.parametrize("items", [[*range(200), 200], [*range(199), -1]],
                         ids=["appended", "changed"])
def test_an_element_appended_to_or_changed_in_a_small_map_is_computed_alone(remote, items):
    url, options = remote
    _first_run(url, options, list(range(200)))
    calls: list[object] = []
    assert _map(url, options, calls).get("double", items=items) == [2 * i for i in items]
    assert calls == items[-1:]


@pytest.mark.s3
def test_a_maps_first_run_writes_its_chunks_and_list_as_one_pack(s3_url, s3_options,
                                                                  s3_requests):
    with s3_requests.recorded(s3_url) as requests:
        _first_run(s3_url, s3_options, list(range(N)))
    puts = [r["url"] for r in requests if r["method"] == "PUT"]
    assert len(puts) <= 3 + N // 1000
    assert sum("/cas/" in url for url in puts) == 1
    assert kinds(requests)["LIST"] == 0
    assert len(_packed(s3_url, s3_options)) == 4  # three manifest chunks and the list


@pytest.mark.s3
def test_a_colleague_reads_a_packed_value_with_one_ranged_get(s3_url, s3_options, s3_requests):
    _map(s3_url, s3_options, []).get("double", items=list(range(N)))
    colleague: list[object] = []
    with s3_requests.recorded(s3_url) as requests:
        got = _map(s3_url, s3_options, colleague).get("double", items=list(range(N)))
    assert got == [2 * i for i in range(N)] and colleague == []
    (content,) = [r for r in requests if "/cas/" in r["url"]]
    assert content["method"] == "GET" and content["headers"].get("Range", "").startswith("bytes=")


def test_a_changed_element_is_computed_alone_and_its_chunk_rewritten_in_a_new_pack(remote):
    url, options = remote
    _map(url, options, []).get("double", items=list(range(N)))
    first = set(_content(url, options))
    changed = [*range(N - 1), -1]
    calls: list[object] = []
    assert _map(url, options, calls).get("double", items=changed)[-3:] == [9994, 9996, -2]
    assert calls == [-1]
    (new,) = set(_content(url, options)) - first  # one new pack: that chunk and the list
    rewritten = {k for k, e in _packed(url, options).items() if new.endswith(e.cas or "-")}
    assert len(rewritten) == 2
    again: list[object] = []  # a colleague going back to the first list computes nothing
    assert _map(url, options, again).get("double", items=list(range(N)))[-1] == 2 * (N - 1)
    assert again == []
    elsewhere: list[object] = []  # nor one asking for the changed list afresh
    assert _map(url, options, elsewhere).get("double", items=[*changed, -7])[-2:] == [-2, -14]
    assert elsewhere == [-7]


def test_values_written_one_at_a_time_keep_their_own_content_objects(remote):
    url, options = remote
    tier = _tier(url, options)
    for key, value in VALUES.items():
        tier.put(key, value, {"digest": "d"})
        tier.flush()
    assert _packed(url, options) == {}
    assert len(_content(url, options)) == 2


def test_values_held_for_a_pack_are_written_when_a_process_exits_without_flushing(tmp_path):
    url = f"file://{tmp_path / 'mount'}"
    script = ("import sys, numpy as np\nfrom lazyflow.cache.remote import RemoteTier\n"
              "tier = RemoteTier(sys.argv[1])\n"
              "for key, factor in (('aa' * 16, 1), ('bb' * 16, 2)):\n"
              "    tier.put(key, np.arange(1000.0) * factor, {'digest': 'd'})\n")
    subprocess.run([sys.executable, "-c", script, url], check=True, cwd=tmp_path)
    assert set(_packed(url, {})) == {A, B}
    for key, value in VALUES.items():
        np.testing.assert_array_equal(_tier(url, {}).get(key), value)


def test_a_damaged_member_is_dropped_alone_and_the_pack_kept_for_the_others(remote):
    url, options = remote
    tier = _tier(url, options)
    for key, value in VALUES.items():
        tier.put(key, value, {"digest": "d"})
    tier.flush()
    packed = _packed(url, options)
    (pack,) = {entry.cas for entry in packed.values()}
    store = tier.store
    data = bytearray(store.objects.get(store.content_path(pack)).data)
    offset, length = packed[A].span  # type: ignore[misc]
    data[offset + length - 1] ^= 0xFF
    store.fs.pipe_file(store.content_path(pack), bytes(data))
    cache = lf.Cache(tiers=[_tier(url, options)])
    with pytest.warns(lf.CacheWarning, match="checksum"), pytest.raises(KeyError):
        cache.load(A)
    np.testing.assert_array_equal(cache.load(B)[0], VALUES[B])
    assert _content(url, options) and A not in _packed(url, options)


# --------------------------------------------------------------------------- trust


def test_each_member_of_a_pack_is_signed_and_read_by_a_trusting_colleague(remote):
    url, options = remote
    _map(url, options, [], sign_with=SECRET).get("double", items=list(range(N)))
    packed = _packed(url, options)
    assert packed and all(entry.sig and entry.sha256 for entry in packed.values())
    calls: list[object] = []
    run = _map(url, options, calls, trusted_keys=[SECRET]).run("double", items=list(range(N)))
    assert (run.nodes["double"].status, calls) == ("cached", [])


def test_a_signed_member_pointed_at_another_span_is_never_decoded(remote, monkeypatch):
    url, options = remote
    writer = _tier(url, options, sign_with=SECRET)
    for key, value in VALUES.items():
        writer.put(key, value, {"digest": "d"})
    writer.flush()
    packed = _packed(url, options)
    moved = replace(packed[A], span=packed[B].span, meta={
        **packed[A].meta, "checksum": packed[B].meta["checksum"]})
    writer.store.fs.pipe_file(writer.store.entry_path(A), moved.to_json())
    monkeypatch.setattr(trust, "_WARNED", set())
    reader = lf.Cache(tiers=[_tier(url, options, trusted_keys=[SECRET])])
    with pytest.warns(lf.CacheWarning, match="ignored"), pytest.raises(KeyError):
        reader.load(A)
    np.testing.assert_array_equal(reader.load(B)[0], VALUES[B])


def test_an_unsigned_pack_is_never_read_by_a_colleague_with_trust_configured(remote,
                                                                            monkeypatch):
    url, options = remote
    _map(url, options, []).get("double", items=list(range(N)))  # no key: nothing signed
    monkeypatch.setattr(trust, "_WARNED", set())
    calls: list[object] = []
    flow = _map(url, options, calls, trusted_keys=[SECRET])
    monkeypatch.setattr(flow.cache.tier("remote").store, "read_span",
                        lambda *args: pytest.fail("a pack was fetched"))
    with pytest.warns(lf.CacheWarning, match="ignored"):
        assert flow.get("double", items=list(range(N)))[-1] == 2 * (N - 1)
    assert len(calls) == N  # every element computed here, none decoded from the pack


def test_a_read_only_remote_writes_no_pack(remote):
    url, options = remote
    tier = _tier(url, options, read_only=True)
    with pytest.raises(trust.ReadOnlyRemoteError):
        tier.put(A, VALUES[A], {"digest": "d"})
    tier.flush()
    assert objects(url, options) == []


# --------------------------------------------------------------------------- garbage collection


def _packed_pair(url: str, options: dict[str, object]) -> str:
    """A and B written together (one pack), then everything made 30 days old; the pack."""
    tier = _tier(url, options)
    for key, value in VALUES.items():
        tier.put(key, value, {"digest": "d", "flow": "team"})
    tier.finish_run("team", f"run-{uuid.uuid4().hex[:8]}", time.time())
    tier.flush()  # its manifest, written in the background, landed
    age(url, 30 * DAY, under=("ac/", "cas/", manifests.RUNS + "/"))
    (pack,) = {entry.cas for entry in _packed(url, options).values()}
    assert pack is not None
    return pack


def test_a_pack_stays_while_any_entry_in_it_is_live(remote):
    url, options = remote
    pack = _packed_pair(url, options)
    reader = _tier(url, options)  # a run uses A today: A is live, B is not
    reader.get(A)
    reader.finish_run("team", "run-today", time.time())
    reader.flush()  # its manifest, written in the background, landed
    done = lf.Cache(tiers=[_tier(url, options)]).prune(older_than=7 * DAY, confirm=True)
    assert done["remote"]["entries"] == 1  # B's entry
    assert any(name.endswith(pack) for name in _content(url, options))
    np.testing.assert_array_equal(_tier(url, options).get(A), VALUES[A])


def test_eviction_by_size_removes_a_pack_only_with_its_last_entry(remote):
    url, options = remote
    pack = _packed_pair(url, options)
    reader = _tier(url, options)
    for key in VALUES:
        reader.get(key)
    reader.finish_run("team", "run-today", time.time())
    reader.flush()  # its manifest, written in the background, landed
    age(url, 2 * 3600, under=("ac/", "cas/"))  # past the hour an object is never evicted in
    cache = lf.Cache(tiers=[_tier(url, options)])
    packed = _packed(url, options).values()
    entry_bytes = sum(len(e.to_json()) for e in packed)
    pack_bytes = sum(e.span[1] for e in packed if e.span is not None)
    cache.prune(max_size=pack_bytes + entry_bytes - 1, confirm=True)  # one entry must go
    assert any(name.endswith(pack) for name in _content(url, options))
    assert len(_packed(url, options)) == 1
    cache.prune(older_than=0, confirm=True)
    assert objects(url, options) == []
