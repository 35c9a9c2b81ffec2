"""The cache format (docs/cache-format.md): what is stored where, the encoding version, and
a committed cache fixture that every later version must still read."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import sqlite3
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import cache_fixture_flow as fixture
import numpy as np
import pytest
import s3fs
from chains import define_list_chain
from doubles import PicklingExecutor

import lazyflow as lf
from lazyflow import keys
from lazyflow.cache import disk, serialize
from lazyflow.cache.audit import verify_cache
from lazyflow.cache.disk import DiskTier
from lazyflow.cache.remote import RemoteTier
from lazyflow.engine import maps, settle
from lazyflow.keys import environment
from lazyflow.model import lazy, mapping
from lazyflow.records import (
    ElementMeta,
    EntryMeta,
    EnvironmentRecord,
    LatestRecord,
    LazyTraceRecord,
    MapChunkMeta,
    TraceRecord,
)

FIXTURES = Path(__file__).parent / "fixtures"
LAYOUTS = {"cache-v2": "disk layout 1: every row in diskcache's Cache table",
           "cache-v2-disk2": "disk layout 2: small entries and records in LazyflowEntries",
           "cache-v2-disk3": "disk layout 3: a computed node's records restated by its row",
           "cache-v3": "key schema 3, disk layout 3",
           "cache-v4": "key schema 4, disk layout 3"}
"""The committed fixtures (docs/cache-format.md): key schema 2 in every disk layout, and key
schemas 3 and 4."""
CURRENT = "cache-v4"
"""The fixture written at this key schema: the same flow hits it. The others' entries are
keyed under older rules, so they are never found again, by design."""
OLDER = sorted(set(LAYOUTS) - {CURRENT})
_VALUE_ONLY = {"size", "serializer", "checksum"}  # Stamp fields of entries holding a value
_LEGACY = {LatestRecord: {"inputs"}}  # documented to be read, no longer written


def _flow(cache: lf.Cache) -> lf.Flow:
    return define_list_chain(lf.Flow("format", cache=cache))


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which unknown encodings this process has warned about already."""
    monkeypatch.setattr(serialize, "_WARNED", set())


NEWER = serialize.ENCODING + 1
"""The encoding version the simulated newer lazyflow writes."""


@contextlib.contextmanager
def newer_lazyflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Write and read as a newer lazyflow would: encoding :data:`NEWER` for every entry and
    record (its frames under a new magic, so this version could not decode them), lazyflow
    0.2.0 in its environment."""
    here = environment.current()
    newer = dataclasses.replace(here, packages={**here.packages, "lazyflow": "0.2.0"},
                                digest="0" * 32)
    with monkeypatch.context() as m:
        m.setattr(serialize, "ENCODING", NEWER)
        m.setattr(serialize, "KNOWN_ENCODINGS", serialize.KNOWN_ENCODINGS | {NEWER})
        m.setattr(serialize, "MAGIC", f"LFv{NEWER}".encode())
        for stamping in (serialize, disk):  # the modules that stamp entries with the encoding
            m.setattr(stamping, "encoding_for", lambda serializer: NEWER)
        m.setattr(serialize, "__version__", "0.2.0")
        for stamping in (settle, maps):  # the modules that stamp entries with the version
            m.setattr(stamping, "__version__", "0.2.0")
        m.setattr(environment, "current", lambda: newer)
        yield


def _encodings(tier: DiskTier | RemoteTier, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Each stored key's encoding version, read as the newer lazyflow reads it."""
    with newer_lazyflow(monkeypatch):
        return {key: tier.meta(key)["encoding"] for key in sorted(tier.keys())}


def _cache_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, lf.CacheWarning)]


# --------------------------------------------------------------------------- encoding version


def test_every_stored_entry_and_record_is_stamped_with_the_encoding_version(tmp_path):
    _flow(lf.Cache(memory=None, disk=tmp_path)).get("total", n=5)
    tier = DiskTier(tmp_path, size_limit=2**30)
    stamped = [tier.meta(key) for key in sorted(tier.keys())]
    assert all(meta["encoding"] == serialize.encoding_for(meta.get("serializer"))
               for meta in stamped)
    # the values (a short list, an int) are JSON: encoding 2; records stay 1, read by every
    # version
    assert {meta["encoding"] for meta in stamped} == {1, 2}


def test_a_pickled_value_is_stamped_encoding_1_so_older_lazyflows_read_it(tmp_path):
    tier = DiskTier(tmp_path, size_limit=2**30)
    tier.put("ab" * 16, (1, 2), {"digest": "d"})
    tier.flush()
    assert (tier.meta("ab" * 16)["serializer"], tier.meta("ab" * 16)["encoding"]) == \
        ("cloudpickle", 1)


def test_an_entry_without_an_encoding_version_reads_as_encoding_1():
    assert serialize.encoding_of({"digest": "d"}) == 1
    assert serialize.readable({"digest": "d"}, "disk cache")


def test_a_newer_encoding_on_disk_is_a_miss_with_one_warning_and_is_kept(
        tmp_path, monkeypatch, fresh_warnings):
    with newer_lazyflow(monkeypatch):
        _flow(lf.Cache(memory=None, disk=tmp_path)).get("total", n=5)
    tier = DiskTier(tmp_path, size_limit=2**30)
    written = _encodings(tier, monkeypatch)
    older = _flow(lf.Cache(memory=None, disk=tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = older.run("total", n=5)
        second = older.run("total", n=5)
    (message,) = _cache_warnings(caught)
    assert f"encoding version {NEWER}" in message and "upgrade lazyflow" in message
    assert str(tmp_path) in message
    assert [first["total"], second["total"]] == [10, 10]
    assert {r.status for r in [*first.nodes.values(), *second.nodes.values()]} == {"completed"}
    now = _encodings(tier, monkeypatch)
    assert {key: now[key] for key in written} == written == dict.fromkeys(written, NEWER)


def _newer_entries_on_s3(s3_url, s3_options, monkeypatch):
    """A newer lazyflow computes ``total`` onto the S3 remote; return a factory of caches on
    that remote, a tier reading it, and each stored key's encoding version."""
    def remote() -> lf.Cache:
        return lf.Cache(memory=None, disk=None, remote=s3_url, remote_options=s3_options)

    with newer_lazyflow(monkeypatch):
        _flow(remote()).get("total", n=5)
    tier = RemoteTier(s3_url, s3_options, background=False)
    return remote, tier, _encodings(tier, monkeypatch)


@pytest.mark.s3
def test_a_newer_encoding_on_s3_is_a_miss_with_one_warning_and_is_kept(
        s3_url, s3_options, monkeypatch, fresh_warnings):
    remote, tier, written = _newer_entries_on_s3(s3_url, s3_options, monkeypatch)
    older = _flow(remote())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = older.run("total", n=5)
        second = older.run("total", n=5)
    (message,) = _cache_warnings(caught)
    assert f"encoding version {NEWER}" in message and "upgrade lazyflow" in message
    assert s3_url in message
    assert [first["total"], second["total"]] == [10, 10]
    assert {r.status for r in [*first.nodes.values(), *second.nodes.values()]} == {"completed"}
    now = _encodings(tier, monkeypatch)
    assert {key: now[key] for key in written} == written == dict.fromkeys(written, NEWER)
    objects = [o for o in s3fs.S3FileSystem(**s3_options).find(s3_url) if "/runs/" not in o]
    assert len(objects) == len(written) + 1  # the older lazyflow's environment record only


class InlineSharingExecutor(PicklingExecutor):
    """Runs each task inline on a pickled copy and shares the cache as Dask does: a node
    becomes a task whose worker opens the remote itself and writes its result there."""

    name = "inline-sharing"
    shares_cache = True


@pytest.mark.s3
def test_workers_writing_to_the_shared_remote_leave_a_newer_entry_in_place(
        s3_url, s3_options, monkeypatch, fresh_warnings):
    remote, tier, written = _newer_entries_on_s3(s3_url, s3_options, monkeypatch)
    with pytest.warns(lf.CacheWarning, match=f"encoding version {NEWER}"):
        run = _flow(remote()).run("total", n=5, executor=InlineSharingExecutor())
    assert (run.nodes["total"].status, run["total"]) == ("completed", 10)
    now = _encodings(tier, monkeypatch)
    assert {key: now[key] for key in written} == written == dict.fromkeys(written, NEWER)


def test_the_newer_lazyflow_still_hits_its_entries_after_an_older_one_ran(
        tmp_path, monkeypatch, fresh_warnings):
    with newer_lazyflow(monkeypatch):
        _flow(lf.Cache(memory=None, disk=tmp_path)).get("total", n=5)
    with pytest.warns(lf.CacheWarning, match=f"encoding version {NEWER}"):
        _flow(lf.Cache(memory=None, disk=tmp_path)).get("total", n=5)
    with newer_lazyflow(monkeypatch):
        run = _flow(lf.Cache(memory=None, disk=tmp_path)).run("total", n=5)
    assert (run.nodes["total"].status, run.nodes["total"].tier, run["total"]) == \
        ("cached", "disk", 10)


def test_reading_a_newer_entrys_value_is_a_miss_that_keeps_it(tmp_path, monkeypatch,
                                                              fresh_warnings):
    with newer_lazyflow(monkeypatch):
        key = _flow(lf.Cache(memory=None, disk=tmp_path)).run("total", n=5).nodes["total"].key
    tier = DiskTier(tmp_path, size_limit=2**30)
    with pytest.warns(lf.CacheWarning, match=f"encoding version {NEWER}"), \
            pytest.raises(serialize.UnknownEncodingError, match="upgrade lazyflow"):
        tier.get(key)
    assert tier.contains(key)


def test_verify_reports_a_newer_entry_as_unreadable_and_never_drops_it(
        tmp_path, monkeypatch, fresh_warnings):
    with newer_lazyflow(monkeypatch):
        key = _flow(lf.Cache(memory=None, disk=tmp_path)).run("total", n=5).nodes["total"].key
    report = verify_cache(lf.Cache(memory=None, disk=tmp_path), drop=True)["disk"]
    assert key in {finding["key"] for finding in report["unreadable"]}
    assert (report["damaged"], report["dropped"]) == ([], [])
    assert DiskTier(tmp_path, size_limit=2**30).contains(key)


# --------------------------------------------------------------------------- where records live


@pytest.mark.s3
def test_latest_records_stay_on_the_local_tiers(s3_url, s3_options, tmp_path):
    flow = _flow(lf.Cache(memory=None, disk=tmp_path, remote=s3_url, remote_options=s3_options))
    run = flow.run("total", n=5)
    latest = keys.latest_key(flow.name, "total")
    assert flow.cache.tier("disk").meta(latest)["key"] == run.nodes["total"].key
    assert not flow.cache.tier("remote").contains(latest)
    assert flow.cache.tier("remote").meta(run.nodes["total"].key)["node"] == "total"


# --------------------------------------------------------------------------- keys and fields


def _fields(kind: type) -> set[str]:
    return set(kind.__required_keys__ | kind.__optional_keys__) - _LEGACY.get(kind, set())


def _documented(kind: type, value: bool) -> set[str]:
    """The fields records.py documents for ``kind``, as a disk tier stores them for nodes
    declared without options (the fixture's)."""
    fields = _fields(kind) - _WITH_OPTIONS_ONLY - (_REMOTE_ONLY if kind is EntryMeta else set())
    return fields if value else fields - _VALUE_ONLY


_WITH_OPTIONS_ONLY = {"checks", "metrics", "expires"}
"""Fields a record has only when its node declares the option (``check=``, ``max_age=``
in its ancestry) or reports figures (``lf.report``)."""
_REMOTE_ONLY = {"environment", "env_at"}
"""Fields the remote tier adds to entries (the environment's carrier, and the pointer to
it: ``remote_environment.py``)."""


_VALUES = (EntryMeta, ElementMeta, MapChunkMeta)


def _derived_kinds(flow: lf.Flow, inputs: dict, digests: dict[str, str], env: str) -> dict:
    """Every key the fixture request stores and its record type, derived from code
    fingerprints, parameters and value digests as docs/cache-format.md says."""
    plan = flow.plan(list(fixture.TARGETS), inputs)
    kinds: dict[str, type] = {keys.environment_key(env): EnvironmentRecord}
    traces: dict[str, str] = {}
    code: dict[str, str] = {}
    params: dict[str, dict[str, str]] = {}
    for name in plan.order:
        code[name] = plan.nodes[name].fingerprint().digest
        params[name] = {p: lf.hash_value(v) for p, v in plan.params[name].items()}
        upstream = plan.upstream[name]
        traces[name] = keys.trace_key(code[name], params[name],
                                      {p: traces[up] for p, up in upstream.items()})
        if upstream:  # a node without any is found by its content key
            kinds[traces[name]] = TraceRecord
        kinds[keys.content_key(code[name], params[name],
                               {p: digests[up] for p, up in upstream.items()})] = EntryMeta
        kinds[keys.latest_key(flow.name, name)] = LatestRecord
    eager = keys.content_key(code["pick"], params["pick"], {"raw": digests["raw"]})
    kinds[lazy.trace_record_key(eager)] = LazyTraceRecord
    base = keys.content_key(code["square"], {}, {})  # without the mapped input
    kinds[mapping.chunk_key(base, "items", 0)] = MapChunkMeta  # its three elements fit in one
    return kinds


def test_a_request_stores_exactly_the_keys_and_fields_the_format_documents(tmp_path):
    tier = DiskTier(tmp_path, size_limit=2**30)
    flow = fixture.build(lf.Cache(tiers=[tier]))
    inputs = fixture.inputs()
    run = flow.run(list(fixture.TARGETS), **inputs)
    digests = {name: record.digest for name, record in run.nodes.items()}
    kinds = _derived_kinds(flow, inputs, digests, environment.current().digest)
    assert set(tier.keys()) == set(kinds)
    for key, kind in kinds.items():
        assert set(tier.meta(key)) == _documented(kind, kind in _VALUES), kind.__name__


# --------------------------------------------------------------------------- the committed fixture


@pytest.fixture(params=sorted(LAYOUTS))
def committed(request) -> str:
    """The name of a committed fixture folder (each test runs on every one)."""
    return str(request.param)


@pytest.fixture
def fixture_copy(tmp_path, committed) -> Path:
    """A copy of the committed fixture: tests open it, never the repository's folder."""
    return Path(shutil.copytree(FIXTURES / committed, tmp_path / "cache"))


@pytest.fixture
def manifest(committed) -> dict:
    """What wrote the fixture (``<folder>.json``): versions, and each node's key and digest."""
    return json.loads((FIXTURES / f"{committed}.json").read_text())


def _same_python(manifest: dict) -> None:
    written = ".".join(manifest["python"].split(".")[:2])
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if written != here:
        pytest.skip(f"the fixture's keys cover code digested by Python {written}; bytecode, "
                    f"and so every key, differs on Python {here}")


def _expected_values() -> dict[str, object]:
    inputs = fixture.inputs()
    squares = fixture.raw(inputs["n"])
    return {"raw": squares, "total": fixture.total(squares),
            "scaled": fixture.scaled(inputs["data"]),
            "square": [fixture.square(i) for i in inputs["items"]],
            "pick": fixture.total(squares)}


def test_the_committed_fixture_stays_small(committed):
    folder = FIXTURES / committed
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 64 * 1024


def test_the_committed_fixtures_hold_the_disk_layouts_they_are_named_for():
    with contextlib.closing(sqlite3.connect(FIXTURES / "cache-v2" / "cache.db")) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        assert "LazyflowEntries" not in tables
    with contextlib.closing(sqlite3.connect(FIXTURES / "cache-v2-disk2" / "cache.db")) as db:
        assert db.execute("SELECT count(*) FROM LazyflowEntries").fetchone()[0] > 0
        assert db.execute("SELECT count(*) FROM Cache").fetchone()[0] == 1  # the value file
        columns = {row[1] for row in db.execute("PRAGMA table_info(LazyflowEntries)")}
        assert "trace" not in columns
    for layout_3 in ("cache-v2-disk3", "cache-v3", "cache-v4"):
        with contextlib.closing(sqlite3.connect(FIXTURES / layout_3 / "cache.db")) as db:
            restating = db.execute("SELECT count(*) FROM LazyflowEntries WHERE trace IS NOT "
                                   "NULL AND latest IS NOT NULL").fetchone()[0]
            assert restating > 0, layout_3


def test_the_committed_fixture_reads_back_its_values_and_metadata(fixture_copy, manifest):
    tier = DiskTier(fixture_copy, size_limit=2**30)
    nodes, expected = manifest["nodes"], _expected_values()
    for name, written in nodes.items():
        meta = tier.meta(written["key"])
        assert (meta["node"], meta["flow"], meta["digest"]) == \
            (name, manifest["flow"], written["digest"])
        # stamped with the lowest encoding that reads it, never above what the writer knew
        assert serialize.encoding_of(meta) == serialize.encoding_for(meta["serializer"]) \
            <= manifest["encoding"]
        value = tier.get(written["key"])
        assert lf.hash_value(value) == written["digest"]
        np.testing.assert_equal(value, expected[name])
        upstream = {"total": ["raw"], "pick": ["raw", "total"]}.get(name, [])
        assert meta["inputs"] == {up: nodes[up]["key"] for up in upstream}
        assert meta["input_digests"] == {up: nodes[up]["digest"] for up in upstream}
    # numpy: pickled frames by encoding 1, its own serializer since encoding 2
    assert tier.meta(nodes["scaled"]["key"])["serializer"] == \
        ("pickle" if manifest["encoding"] == 1 else "numpy")


def test_the_current_fixture_is_written_at_this_key_schema():
    written = json.loads((FIXTURES / f"{CURRENT}.json").read_text())["key_schema"]
    assert written == keys.KEY_SCHEMA, (
        f"{CURRENT} was written at key schema {written}: a key-schema bump writes a new "
        "fixture for the hit checks (docs/cache-format.md, The committed fixtures)")


@pytest.mark.parametrize("committed", [CURRENT])
def test_a_flow_defined_identically_gets_hits_from_the_current_fixture(fixture_copy, manifest):
    _same_python(manifest)
    flow = fixture.build(lf.Cache(memory=None, disk=fixture_copy))
    run = flow.run(list(fixture.TARGETS), **fixture.inputs())
    expected = _expected_values()
    for name in fixture.TARGETS:
        record = run.nodes[name]
        assert (record.status, record.tier, record.key) == \
            ("cached", "disk", manifest["nodes"][name]["key"]), name
        np.testing.assert_equal(run[name], expected[name])


@pytest.mark.parametrize("committed", OLDER)
def test_a_fixture_of_an_older_key_schema_is_a_miss_never_a_wrong_value(fixture_copy,
                                                                        manifest):
    assert manifest["key_schema"] < keys.KEY_SCHEMA
    flow = fixture.build(lf.Cache(memory=None, disk=fixture_copy))
    run = flow.run(list(fixture.TARGETS), **fixture.inputs())
    expected = _expected_values()
    for name in fixture.TARGETS:
        record = run.nodes[name]
        assert record.status == "completed" and record.key != manifest["nodes"][name]["key"]
        np.testing.assert_equal(run[name], expected[name])


_STORED_KINDS = (EntryMeta, ElementMeta, MapChunkMeta, TraceRecord, LatestRecord,
                 LazyTraceRecord, EnvironmentRecord)
"""The record types the fixture flow stores, in any version (``element`` entries: before the
map manifest)."""


@pytest.mark.parametrize("committed", OLDER)
def test_every_record_of_an_older_fixture_has_the_documented_fields_of_its_type(fixture_copy,
                                                                               manifest):
    # this lazyflow cannot derive an older key schema's keys, so each record is matched by
    # its fields: a node's entry must be an EntryMeta, any other record one documented type
    tier = DiskTier(fixture_copy, size_limit=2**30)
    entries = {node["key"] for node in manifest["nodes"].values()}
    found: set[type] = set()
    for key in sorted(tier.keys()):
        stored = set(tier.meta(key))
        kinds = [kind for kind in ((EntryMeta,) if key in entries else _STORED_KINDS)
                 if kind.__required_keys__ <= stored <= _fields(kind)]
        assert len(kinds) == 1, (key, sorted(stored), kinds)
        found |= set(kinds)
    # every type, with the map node's elements either as element entries or in a manifest
    assert set(_STORED_KINDS) - found in ({ElementMeta}, {MapChunkMeta})


@pytest.mark.parametrize("committed", [CURRENT])
def test_the_current_fixture_holds_every_record_type_with_documented_fields(fixture_copy,
                                                                           manifest):
    _same_python(manifest)
    tier = DiskTier(fixture_copy, size_limit=2**30)
    flow = fixture.build(lf.Cache(memory=None, disk=None))
    digests = {name: node["digest"] for name, node in manifest["nodes"].items()}
    env = tier.meta(manifest["nodes"]["raw"]["key"])["env"]
    kinds = _derived_kinds(flow, fixture.inputs(), digests, env)
    assert set(tier.keys()) == set(kinds)
    for key, kind in kinds.items():
        stored = set(tier.meta(key))
        assert stored <= _fields(kind), (kind.__name__, stored - _fields(kind))
        assert kind.__required_keys__ <= stored, kind.__name__
