"""Remote layout 2 (docs/cache-format.md): entries apart from content, few requests,
conditional writes, and layout 1 migrated — against a real moto S3 server, requests counted
by the server itself (moto's recorder), colleagues as fresh processes."""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import cache_fixture_flow as fixture
import numpy as np
import pytest
import s3fs

import lazyflow as lf
from lazyflow import keys
from lazyflow.cache import NO_VALUE, serialize
from lazyflow.cache.remote import RemoteTier
from lazyflow.cache.remote_entries import LAYOUT, EntryObject
from lazyflow.cache.remote_records import merge
from lazyflow.cache.trust import TRUST_OPTION, Trust

pytestmark = pytest.mark.s3

FIXTURE = Path(__file__).parent / "fixtures" / "remote-v1"
MANIFEST = json.loads(FIXTURE.with_suffix(".json").read_text())
FIXTURE_2 = Path(__file__).parent / "fixtures" / "remote-v2"
MANIFEST_2 = json.loads(FIXTURE_2.with_suffix(".json").read_text())
CURRENT = Path(__file__).parent / "fixtures" / "remote-v3-keys4"
"""The remote fixture written at this key schema (layout 3): the same flow hits it. The
entries of remote-v1 and remote-v2 (key schema 2) and remote-v3-keys3 are keyed under
older rules, so they are never found again, by design: those fixtures keep their
read-back (and migration) checks."""
MANIFEST_CURRENT = json.loads(CURRENT.with_suffix(".json").read_text())
KEYS_3 = Path(__file__).parent / "fixtures" / "remote-v3-keys3"
MANIFEST_KEYS_3 = json.loads(KEYS_3.with_suffix(".json").read_text())
KEY, OTHER = "ab" * 16, "cd" * 16
BIG = np.arange(2000, dtype=np.float64)  # 16 KB: a content object
SMALL = [1, 2, 3]  # inline in its entry

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


# --------------------------------------------------------------------------- helpers


class Requests:
    """Requests the moto server answered for one bucket, by kind (GET, PUT, HEAD, LIST...)."""

    def __init__(self, path: Path) -> None:
        from moto.moto_api import recorder

        self.recorder = recorder
        self.path = path

    @contextlib.contextmanager
    def counted(self, url: str) -> Iterator[Counter[str]]:
        """Count, on leaving, the requests made within about ``url``'s bucket (any path or
        query in it: objects, listings)."""
        bucket = url.removeprefix("s3://").split("/")[0]
        counts: Counter[str] = Counter()
        self.recorder.reset_recording()
        self.recorder.start_recording()
        try:
            yield counts
        finally:
            self.recorder.stop_recording()
        for line in self.path.read_text().splitlines():
            entry = json.loads(line)
            if urlsplit(entry["url"]).path.split("/")[1] == bucket:
                counts[_kind(entry)] += 1


def _kind(entry: dict[str, str]) -> str:
    if entry["method"] == "GET" and "list-type=" in entry["url"]:
        return "LIST"
    return entry["method"]


@pytest.fixture
def s3_requests(s3_server, tmp_path, monkeypatch) -> Requests:
    """Counts of what the moto server answers (its recorder, writing to a temporary file)."""
    from moto.moto_api import recorder

    path = tmp_path / "requests.jsonl"
    monkeypatch.setattr(recorder, "_location", str(path))  # moto reads it from the environment
    return Requests(path)                                  # once, when first imported


def _run(code: str, url: str, options: dict[str, object]) -> str:
    """Run ``code`` after the chain's definition in a fresh Python process (a colleague)."""
    script = f"URL = {url!r}\nOPTIONS = {options!r}\n{_CHAIN}\n{code}\nflow.cache.flush()\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "LAZYFLOW_HISTORY": "off"}, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _objects(url: str, options: dict[str, object]) -> list[str]:
    fs = s3fs.S3FileSystem(**options)
    fs.invalidate_cache()
    return sorted(o.split("/lazyflow/", 1)[1] for o in fs.find(url))


def _same_python(manifest: dict) -> None:
    written = ".".join(manifest["python"].split(".")[:2])
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if written != here:
        pytest.skip(f"the fixture's keys cover code digested by Python {written}")


def _tier(url: str, options: dict[str, object] | None = None) -> RemoteTier:
    return RemoteTier(url, options, background=False)


@pytest.fixture(params=["s3", "file"])
def remote(request, tmp_path) -> tuple[str, dict[str, object]]:
    """A fresh remote on the moto S3 server, then on a local folder (a shared mount)."""
    if request.param == "file":
        return f"file://{tmp_path / 'mount'}", {}
    return request.getfixturevalue("s3_url"), request.getfixturevalue("s3_options")


# --------------------------------------------------------------------------- requests


def test_a_colleagues_hit_on_a_small_fresh_value_is_one_get(s3_url, s3_options, s3_requests):
    _run("flow.get('report', n=10)", s3_url, s3_options)
    with s3_requests.counted(s3_url) as counts:
        assert _run("print(flow.run('report', n=10).nodes['report'].tier)", s3_url,
                    s3_options).strip() == "remote"
    assert counts == {"GET": 1}  # no manifest: the entry is younger than the refresh interval


def test_a_colleagues_hit_on_a_64_KiB_fresh_value_is_two_gets(s3_url, s3_options, s3_requests):
    _run("flow.get('report', n=10, size=65536)", s3_url, s3_options)
    with s3_requests.counted(s3_url) as counts:
        assert _run("print(flow.get('report', n=10, size=65536) == b'x' * 65536)", s3_url,
                    s3_options).strip() == "True"
    assert counts == {"GET": 2}


def test_a_cold_chain_never_lists_or_heads_and_costs_one_get_and_two_puts_per_node(
        s3_url, s3_options, s3_requests):
    with s3_requests.counted(s3_url) as counts:
        _run("flow.get('report', n=10)", s3_url, s3_options)
    # per node: its trace record missed (GET 404), then its entry and its trace record
    # written (PUT; the entry of a node whose inputs are all new is not asked for); the
    # first node, without upstream nodes, is found by its entry alone (GET 404, one PUT),
    # which carries the environment's description; plus the run's manifest
    assert counts == {"GET": 3, "PUT": 1 + 2 * 2 + 1}


def test_only_management_lists_the_bucket(s3_url, s3_options, s3_requests):
    tier = _tier(s3_url, s3_options)
    tier.put(KEY, SMALL, {"digest": "d"})
    with s3_requests.counted(s3_url) as counts:
        assert list(tier.keys()) == [KEY]
    assert counts["LIST"] >= 1


def test_a_miss_is_one_get_answered_not_found(s3_url, s3_options, s3_requests):
    tier = _tier(s3_url, s3_options)
    with s3_requests.counted(s3_url) as counts:
        assert tier.meta(KEY) is None
    assert counts == {"GET": 1}


@pytest.mark.parametrize(("value", "gets"), [(SMALL, 1), (BIG, 2)])
def test_loading_a_remote_hit_reads_its_entry_once(s3_url, s3_options, s3_requests, value, gets):
    _tier(s3_url, s3_options).put(KEY, value, {"digest": "d"})
    cache = lf.Cache(tiers=[_tier(s3_url, s3_options)])
    with s3_requests.counted(s3_url) as counts:
        assert cache.lookup(KEY)[1] == "remote"
        np.testing.assert_array_equal(cache.load(KEY)[0], value)
    assert counts == {"GET": gets}


def test_a_small_value_is_one_object_holding_it_inline(s3_url, s3_options):
    _tier(s3_url, s3_options).put(KEY, 12345678, {"digest": "d"})
    (name,) = _objects(s3_url, s3_options)
    assert name == f"ac/{KEY[:2]}/{KEY}.json"


# --------------------------------------------------------------------------- content


def test_a_second_key_with_equal_bytes_writes_no_second_content_object(s3_url, s3_options):
    _tier(s3_url, s3_options).put(KEY, BIG, {"digest": "d"})
    _tier(s3_url, s3_options).put(OTHER, BIG.copy(), {"digest": "d"})  # a colleague's process
    names = _objects(s3_url, s3_options)
    assert [n.split("/")[0] for n in names] == ["ac", "ac", "cas"]
    reader = _tier(s3_url, s3_options)
    np.testing.assert_array_equal(reader.get(OTHER), BIG)
    assert reader.remove_orphans() == 0


def test_a_damaged_content_object_is_a_miss_for_every_entry_naming_it(s3_url, s3_options):
    writer = _tier(s3_url, s3_options)
    writer.put(KEY, BIG, {"digest": "d"})
    writer.put(OTHER, BIG, {"digest": "d"})
    fs = s3fs.S3FileSystem(**s3_options)
    (content,) = [o for o in fs.find(s3_url) if "/cas/" in o]
    data = bytearray(fs.cat_file(content))
    data[-1] ^= 0xFF
    fs.pipe_file(content, bytes(data))
    cache = lf.Cache(tiers=[_tier(s3_url, s3_options)])
    for key in (KEY, OTHER):
        with pytest.warns(lf.CacheWarning, match="checksum|missing"), pytest.raises(KeyError):
            cache.load(key)
    cache.store(KEY, BIG, {"digest": "d"})  # recomputed: the damaged bytes were removed
    np.testing.assert_array_equal(_tier(s3_url, s3_options).get(KEY), BIG)


def test_damaged_inline_bytes_are_a_miss_and_the_entry_is_dropped(s3_url, s3_options):
    _tier(s3_url, s3_options).put(KEY, SMALL, {"digest": "d"})
    fs = s3fs.S3FileSystem(**s3_options)
    path = f"{s3_url}/ac/{KEY[:2]}/{KEY}.json"
    stored = EntryObject.from_json(fs.cat_file(path)).as_fields()
    data = bytearray(base64.b64decode(stored["data"]))
    data[-2] ^= 0x01  # still a valid entry object: only the checksum can tell
    stored["data"] = base64.b64encode(bytes(data)).decode()
    fs.pipe_file(path, EntryObject.from_fields(stored).to_json())
    cache = lf.Cache(tiers=[_tier(s3_url, s3_options)])
    with pytest.warns(lf.CacheWarning, match="checksum"), pytest.raises(KeyError):
        cache.load(KEY)
    assert _objects(s3_url, s3_options) == []


def test_a_record_carrying_a_damaged_copy_is_dropped_with_the_entry_and_rewritten(
        s3_url, s3_options):
    _run("flow.get('report', n=10)", s3_url, s3_options)
    fs = s3fs.S3FileSystem(**s3_options)
    for path in fs.find(s3_url):
        if "/ac/" not in path:
            continue
        stored = EntryObject.from_json(fs.cat_file(path)).as_fields()
        carried = stored.get("entry", {})
        if "data" in carried:  # a trace record carrying its target's entry: damage the copy
            data = bytearray(base64.b64decode(carried["data"]))
            data[-2] ^= 0x01
            carried["data"] = base64.b64encode(bytes(data)).decode()
            fs.pipe_file(path, EntryObject.from_fields(stored).to_json())
    code = "import warnings\nwarnings.simplefilter('ignore')\n" \
           "run = flow.run('report', n=10)\nprint(run['report'], run.nodes['report'].status)"
    assert _run(code, s3_url, s3_options).split() == ["45", "completed"]
    assert _run(code, s3_url, s3_options).split() == ["45", "cached"]


# --------------------------------------------------------------------------- concurrent writers


_ONE_KEY = """
import sys
gate = open(sys.argv[1], "rb")  # returns once the test holds the other end
print("ready", flush=True)
gate.read()                     # returns for every writer at once, when the test lets go
print(flow.get("report", n=3, size=65536) == b"x" * 65536)
"""


@pytest.mark.timeout(600)
def test_twenty_processes_writing_one_key_leave_one_content_object_and_no_orphans(
        s3_url, s3_options, tmp_path):
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    held = os.open(gate, os.O_RDWR)  # a writer end, so the processes' opens return
    script = f"URL = {s3_url!r}\nOPTIONS = {s3_options!r}\n{_CHAIN}\n{_ONE_KEY}"
    env = {**os.environ, "LAZYFLOW_HISTORY": "off"}
    writers = [subprocess.Popen([sys.executable, "-c", script, str(gate)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(20)]
    try:
        for writer in writers:
            assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
    finally:
        os.close(held)  # every writer computes and writes now
    outcomes = [writer.communicate() for writer in writers]
    assert [out.strip() for out, _ in outcomes] == ["True"] * 20, [e for _, e in outcomes]
    names = _objects(s3_url, s3_options)
    assert len([n for n in names if n.startswith("cas/")]) == 1  # report's 64 KiB
    reader = _tier(s3_url, s3_options)
    assert reader.remove_orphans() == 0
    assert _run("print(flow.run('report', n=3, size=65536).nodes['report'].tier)", s3_url,
                s3_options).strip() == "remote"


def test_a_process_putting_a_key_twice_keeps_its_first_entry_even_before_it_lands(
        s3_url, s3_options):
    tier = RemoteTier(s3_url, s3_options, lanes=2)
    tier.put(KEY, BIG, {"digest": "first"})
    tier.put(KEY, BIG + 1, {"digest": "second"})
    assert tier.meta(KEY)["digest"] == "first"
    tier.flush()
    assert _tier(s3_url, s3_options).meta(KEY)["digest"] == "first"
    assert len([n for n in _objects(s3_url, s3_options) if n.startswith("cas/")]) == 1


def test_a_second_writer_of_a_key_keeps_the_first_entry_on_a_shared_folder(tmp_path):
    url = f"file://{tmp_path / 'mount'}"
    _tier(url).put(KEY, BIG, {"digest": "d"})
    _tier(url).put(KEY, BIG + 1, {"digest": "d"})  # another process, other bytes
    np.testing.assert_array_equal(_tier(url).get(KEY), BIG)
    assert sorted(p.parent.parent.name for p in (tmp_path / "mount").rglob("*") if p.is_file()) \
        == ["ac", "cas"]


def test_a_folder_without_hard_links_still_keeps_the_first_entry(tmp_path, monkeypatch):
    def no_links(source, target):
        raise PermissionError(errno.EPERM, "hard links not supported", target)

    monkeypatch.setattr(os, "link", no_links)  # as on some SMB mounts
    url = f"file://{tmp_path / 'mount'}"
    first, second = _tier(url), _tier(url)
    assert second.meta(KEY) is None  # a miss: it computes, while the first writes
    first.put(KEY, BIG, {"digest": "first"})
    second.put(KEY, BIG + 1, {"digest": "second"})
    assert _tier(url).meta(KEY)["digest"] == "first"
    np.testing.assert_array_equal(_tier(url).get(KEY), BIG)
    assert _tier(url).remove_orphans() == 1  # the second's content, uploaded after its miss


# --------------------------------------------------------------------------- records


def test_two_writers_extending_one_record_at_once_keep_both_extensions(remote):
    url, options = remote
    _tier(url, options).put(KEY, NO_VALUE, {"traces": [["a", "1"]]})
    first, second = _tier(url, options), _tier(url, options)
    read_first, read_second = first.meta(KEY), second.meta(KEY)  # both read it...
    first.put(KEY, NO_VALUE, {"traces": [*read_first["traces"], ["b", "2"]]})
    second.put(KEY, NO_VALUE, {"traces": [*read_second["traces"], ["c", "3"]]})  # ...then write
    assert _tier(url, options).meta(KEY)["traces"] == [["a", "1"], ["b", "2"], ["c", "3"]]


def test_two_writers_creating_one_record_at_once_keep_both(remote):
    url, options = remote
    first, second = _tier(url, options), _tier(url, options)
    assert first.meta(KEY) is None and second.meta(KEY) is None
    first.put(KEY, NO_VALUE, {"traces": [["b", "2"]]})
    second.put(KEY, NO_VALUE, {"traces": [["c", "3"]]})
    assert _tier(url, options).meta(KEY)["traces"] == [["b", "2"], ["c", "3"]]


def test_a_record_read_here_is_replaced_over_the_version_read(remote):
    url, options = remote
    _tier(url, options).put(KEY, NO_VALUE, {"key": "1" * 32, "digest": "d1"})
    tier = _tier(url, options)
    assert tier.meta(KEY)["key"] == "1" * 32  # a trace record naming an entry now gone
    tier.put(KEY, NO_VALUE, {"key": "2" * 32, "digest": "d2"})
    assert _tier(url, options).meta(KEY)["key"] == "2" * 32


def test_a_colleagues_change_to_a_record_read_here_is_kept(remote):
    url, options = remote
    _tier(url, options).put(KEY, NO_VALUE, {"key": "1" * 32, "digest": "d1"})
    mine, colleague = _tier(url, options), _tier(url, options)
    mine.meta(KEY), colleague.meta(KEY)
    colleague.put(KEY, NO_VALUE, {"key": "3" * 32, "digest": "d3"})
    mine.put(KEY, NO_VALUE, {"key": "2" * 32, "digest": "d2"})  # conflicts: theirs is as valid
    assert _tier(url, options).meta(KEY)["key"] == "3" * 32


def test_a_record_never_read_here_is_created_or_left_as_a_colleague_wrote_it(remote):
    url, options = remote
    _tier(url, options).put(KEY, NO_VALUE, {"environment": {"python": "3.11"}})
    _tier(url, options).put(KEY, NO_VALUE, {"environment": {"python": "3.12"}})
    assert _tier(url, options).meta(KEY)["environment"] == {"python": "3.11"}


def test_a_record_saying_what_is_there_already_is_not_written(s3_url, s3_options, s3_requests):
    _tier(s3_url, s3_options).put(KEY, NO_VALUE, {"traces": [["a", "1"]]})
    tier = _tier(s3_url, s3_options)
    with s3_requests.counted(s3_url) as counts:
        tier.put(KEY, NO_VALUE, dict(tier.meta(KEY)))
    assert counts == {"GET": 1}


def test_merging_keeps_what_each_writer_changed():
    assert merge({"a": 1, "b": 1}, {"a": 2, "b": 1}, {"a": 1, "b": 3}) == {"a": 2, "b": 3}
    assert merge(None, {"traces": [1]}, {"traces": [2]}) == {"traces": [2, 1]}
    assert merge({"key": "k"}, {"key": "m"}, {"key": "n"}) is None


# --------------------------------------------------------------------------- versions


def test_an_entry_of_a_newer_layout_is_a_miss_that_is_never_replaced(s3_url, s3_options,
                                                                      monkeypatch):
    monkeypatch.setattr(serialize, "_WARNED", set())  # warned once per process and version
    fs = s3fs.S3FileSystem(**s3_options)
    path = f"{s3_url}/ac/{KEY[:2]}/{KEY}.json"
    fs.pipe_file(path, b'{"v": 4, "meta": {"digest": "d"}, "blob": "..."}')
    tier = _tier(s3_url, s3_options)
    with pytest.warns(lf.CacheWarning, match="layout 4"):
        assert tier.meta(KEY) is None
    tier.put(KEY, SMALL, {"digest": "d"})
    assert json.loads(fs.cat_file(path))["v"] == 4


def test_an_eight_byte_entry_is_one_object_of_at_most_200_bytes(s3_url, s3_options):
    _tier(s3_url, s3_options).put(KEY, 2**40, {"digest": "d" * 32, "node": "double",
                                               "flow": "maps", "element": 7})
    fs = s3fs.S3FileSystem(**s3_options)
    found = fs.find(s3_url, detail=True)
    assert [int(info["size"]) <= 200 for info in found.values()] == [True]
    assert _tier(s3_url, s3_options).get(KEY) == 2**40


def _layout_2(entry: EntryObject) -> bytes:
    """The entry object as lazyflow wrote it in remote layout 2 (JSON fields)."""
    return json.dumps({"v": 2, **entry.as_fields()}, separators=(",", ":")).encode()


def test_entry_objects_of_layout_2_still_read_with_every_field(remote):
    url, options = remote
    tier = _tier(url, options)
    for key, value in ((KEY, SMALL), (OTHER, BIG)):
        encoded = serialize.encode(value)
        meta = serialize.stamp({"digest": "d" * 32, "node": "n", "params": {"p": "e" * 32}},
                               encoded)
        entry = EntryObject.for_value(meta, encoded)
        if entry.cas is not None:
            tier.store.write_content(entry.cas, encoded)
        tier.store.put(tier.store.entry_path(key), [_layout_2(entry)])
    reader = _tier(url, options)
    assert reader.get(KEY) == SMALL
    np.testing.assert_array_equal(reader.get(OTHER), BIG)
    assert reader.meta(KEY)["params"] == {"p": "e" * 32}


def test_a_damaged_layout_3_body_is_dropped_never_misread(s3_url, s3_options):
    _tier(s3_url, s3_options).put(KEY, SMALL, {"digest": "d" * 32})
    fs = s3fs.S3FileSystem(**s3_options)
    path = f"{s3_url}/ac/{KEY[:2]}/{KEY}.json"
    stored = json.loads(fs.cat_file(path))
    fs.pipe_file(path, json.dumps({"v": 3, "b": stored["b"][:-10]}).encode())  # cut short
    cache = lf.Cache(tiers=[_tier(s3_url, s3_options)])
    with pytest.warns(lf.CacheWarning, match="unreadable"), pytest.raises(KeyError):
        cache.load(KEY)
    assert _objects(s3_url, s3_options) == []


def test_metadata_fields_of_any_shape_read_back_exactly():
    meta = {"digest": "D" * 32, "created": 5, "stored": 1.5, "size": True, "lazyflow": "é",
            "serializer": "zstd-pickle", "encoding": 300, "checksum": None, "key": "ab" * 16,
            "nested": {"a": [1, 2.5, None]}}
    for entry in (EntryObject(meta), EntryObject({**meta, "created": 1.5})):
        assert EntryObject.from_json(entry.to_json()).meta == entry.meta


# --------------------------------------------------------------------------- layout 2


@pytest.fixture
def layout_2(tmp_path) -> str:
    """A copy of the committed remote written in layout 2, as a ``file://`` URL."""
    return f"file://{shutil.copytree(FIXTURE_2, tmp_path / 'remote')}"


def test_entries_a_layout_2_lazyflow_wrote_read_back_without_migrating(layout_2):
    tier = _tier(layout_2)
    for written in MANIFEST_2["nodes"].values():
        assert lf.hash_value(tier.get(written["key"])) == written["digest"]


def test_a_flow_on_layout_2_entries_of_an_older_key_schema_recomputes_every_node(layout_2):
    assert MANIFEST_2["key_schema"] < keys.KEY_SCHEMA
    flow = fixture.build(lf.Cache(memory=None, disk=None, remote=layout_2))
    run = flow.run(list(fixture.TARGETS), **fixture.inputs())
    assert {r.status for r in run.nodes.values()} == {"completed"}
    assert {name: run.nodes[name].digest for name in fixture.TARGETS} == {
        name: MANIFEST_2["nodes"][name]["digest"] for name in fixture.TARGETS}


# --------------------------------------------------------------------------- key schema 3


@pytest.fixture
def keys_3(tmp_path) -> str:
    """A copy of the committed remote written at key schema 3 (layout 3)."""
    return f"file://{shutil.copytree(KEYS_3, tmp_path / 'remote')}"


def test_entries_of_the_key_schema_3_remote_fixture_read_back(keys_3):
    tier = _tier(keys_3)
    for written in MANIFEST_KEYS_3["nodes"].values():
        assert lf.hash_value(tier.get(written["key"])) == written["digest"]


def test_a_flow_on_key_schema_3_entries_recomputes_every_node(keys_3):
    assert MANIFEST_KEYS_3["key_schema"] < keys.KEY_SCHEMA
    flow = fixture.build(lf.Cache(memory=None, disk=None, remote=keys_3))
    run = flow.run(list(fixture.TARGETS), **fixture.inputs())
    assert {r.status for r in run.nodes.values()} == {"completed"}
    assert {name: run.nodes[name].digest for name in fixture.TARGETS} == {
        name: MANIFEST_KEYS_3["nodes"][name]["digest"] for name in fixture.TARGETS}


# --------------------------------------------------------------------------- this key schema


@pytest.fixture
def current(tmp_path) -> str:
    """A copy of the committed remote written at this key schema, as a ``file://`` URL."""
    return f"file://{shutil.copytree(CURRENT, tmp_path / 'remote')}"


def test_the_current_remote_fixture_is_written_at_this_key_schema_and_layout():
    assert (MANIFEST_CURRENT["key_schema"], MANIFEST_CURRENT["layout"]) == \
        (keys.KEY_SCHEMA, LAYOUT), "a key-schema or layout bump writes a new remote fixture " \
        "for the hit checks (docs/cache-format.md, The committed fixtures)"


def test_entries_of_the_current_remote_fixture_read_back(current):
    tier = _tier(current)
    for written in MANIFEST_CURRENT["nodes"].values():
        assert lf.hash_value(tier.get(written["key"])) == written["digest"]


def test_a_flow_defined_identically_hits_every_node_of_the_current_remote_fixture(current):
    _same_python(MANIFEST_CURRENT)
    flow = fixture.build(lf.Cache(memory=None, disk=None, remote=current))
    run = flow.run(list(fixture.TARGETS), **fixture.inputs())
    assert {(r.status, r.tier) for r in run.nodes.values()} == {("cached", "remote")}
    assert {name: run.nodes[name].key for name in fixture.TARGETS} == {
        name: MANIFEST_CURRENT["nodes"][name]["key"] for name in fixture.TARGETS}


# --------------------------------------------------------------------------- layout 1


@pytest.fixture
def old_layout(tmp_path) -> str:
    """A copy of the committed remote written in layout 1, as a ``file://`` URL."""
    return f"file://{shutil.copytree(FIXTURE, tmp_path / 'remote')}"


def _old_entries(url: str) -> list[Path]:
    """The layout-1 objects under a ``file://`` remote: everything outside ac/, cas/, runs/
    and the statistics checkpoint."""
    folder = Path(url.removeprefix("file://"))
    return sorted(p.relative_to(folder) for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).parts[0] not in
                  ("ac", "cas", "runs", "stats.json"))


def test_old_layout_entries_read_back_after_migrating(old_layout):
    old = [p for p in _old_entries(old_layout) if p.suffix == ".json"]
    report = RemoteTier(old_layout).migrate()
    assert (report["migrated"], report["damaged"], report["skipped"]) == (len(old), [], 0)
    tier = _tier(old_layout)
    for written in MANIFEST["nodes"].values():
        assert lf.hash_value(tier.get(written["key"])) == written["digest"]


def test_migrated_trace_records_still_name_each_nodes_entry(old_layout):
    # the flow's own trace keys are of this key schema, so it cannot find these records:
    # read them by listing instead (a trace record is the one with a "key" field)
    RemoteTier(old_layout).migrate()
    tier = _tier(old_layout)
    traces = {meta["node"]: (meta["key"], meta["digest"])
              for meta in map(tier.meta, sorted(tier.keys())) if "key" in meta}
    assert traces == {name: (written["key"], written["digest"])
                      for name, written in MANIFEST["nodes"].items()}


def test_old_layout_entries_are_misses_until_migrated(old_layout):
    tier = _tier(old_layout)
    assert [tier.meta(written["key"]) for written in MANIFEST["nodes"].values()] == \
        [None] * len(MANIFEST["nodes"])


def test_a_flow_on_migrated_entries_of_an_older_key_schema_recomputes_every_node(old_layout):
    assert MANIFEST["key_schema"] < keys.KEY_SCHEMA
    RemoteTier(old_layout).migrate()
    flow = fixture.build(lf.Cache(memory=None, disk=None, remote=old_layout))
    run = flow.run(list(fixture.TARGETS), **fixture.inputs())
    assert {r.status for r in run.nodes.values()} == {"completed"}
    assert {name: run.nodes[name].digest for name in fixture.TARGETS} == {
        name: MANIFEST["nodes"][name]["digest"] for name in fixture.TARGETS}


def test_migrating_keeps_the_old_objects_for_older_lazyflows_unless_asked(old_layout):
    old = _old_entries(old_layout)
    RemoteTier(old_layout).migrate()
    assert _old_entries(old_layout) == old
    assert RemoteTier(old_layout).migrate(remove=True)["removed"] == len(
        [p for p in old if p.suffix == ".json"])
    assert _old_entries(old_layout) == []
    key = MANIFEST["nodes"]["scaled"]["key"]
    assert lf.hash_value(_tier(old_layout).get(key)) == MANIFEST["nodes"]["scaled"]["digest"]


def test_migrating_an_s3_remote_copies_its_old_entries(s3_url, s3_options):
    fs = s3fs.S3FileSystem(**s3_options)
    fs.put(str(FIXTURE) + "/", s3_url.removeprefix("s3://") + "/", recursive=True)
    report = RemoteTier(s3_url, s3_options).migrate()
    assert report["migrated"] == len(list(FIXTURE.rglob("*.json")))
    tier = _tier(s3_url, s3_options)
    for written in MANIFEST["nodes"].values():
        assert lf.hash_value(tier.get(written["key"])) == written["digest"]


SECRET = "team-secret-9f2c41d7b0e84a6c"


def test_a_bucket_migrated_by_a_signing_process_is_read_by_caches_trusting_its_key(
        old_layout):
    migrating = lf.Cache(memory=None, disk=None, remote=old_layout, sign_with=SECRET)
    assert migrating.tier("remote").migrate()["damaged"] == []
    reader = lf.Cache(memory=None, disk=None, remote=old_layout, trusted_keys=[SECRET])
    for written in MANIFEST["nodes"].values():
        assert reader.lookup(written["key"])[1] == "remote"
        assert lf.hash_value(reader.load(written["key"])[0]) == written["digest"]


def test_migrated_entries_are_signed_so_a_trusting_reader_reads_every_value(old_layout):
    RemoteTier(old_layout, {TRUST_OPTION: Trust.configured(sign_with=SECRET)}).migrate()
    reader = RemoteTier(old_layout, {TRUST_OPTION: Trust.configured(trusted_keys=[SECRET])})
    for written in MANIFEST["nodes"].values():
        assert lf.hash_value(reader.get(written["key"])) == written["digest"]


def test_migrating_leaves_a_damaged_old_entry_behind_and_names_it(old_layout):
    key = MANIFEST["nodes"]["scaled"]["key"]
    (value,) = [p for p in Path(old_layout.removeprefix("file://"), key[:2]).glob(f"{key[2:]}.*")
                if p.suffix != ".json"]
    data = bytearray(value.read_bytes())
    data[-1] ^= 0xFF
    value.write_bytes(bytes(data))
    report = RemoteTier(old_layout).migrate()
    assert report["damaged"] == [key]
    assert _tier(old_layout).store.read_entry(key) is None


def test_prune_ages_out_old_layout_entries_too(old_layout):
    cache = lf.Cache(memory=None, disk=None, remote=old_layout)
    assert cache.stats()["remote"]["entries"] == len(
        [p for p in _old_entries(old_layout) if p.suffix == ".json"])
    cache.prune(older_than=0, confirm=True)
    assert [p for p in Path(old_layout.removeprefix("file://")).rglob("*") if p.is_file()] == []
