"""Lineage of cached values, verify by recomputation, and deterministic=False nodes."""

from __future__ import annotations

import contextlib
import random
import sqlite3

import pytest

import lazyflow as lf
from lazyflow.cache.audit import verify_cache


def _analysis(flow: lf.Flow, calls) -> None:
    @flow.node
    def raw(n: int):
        calls["raw"] += 1
        return list(range(n))

    @flow.node
    def scaled(raw, factor: int = 3):
        calls["scaled"] += 1
        return [x * factor for x in raw]

    @flow.node
    def total(raw, scaled):
        calls["total"] += 1
        return sum(raw) + sum(scaled)


def _noisy(flow: lf.Flow, calls, **options) -> None:
    @flow.node
    def raw(n: int):
        calls["raw"] += 1
        return list(range(n))

    @flow.node(**options)
    def sample(raw):
        calls["sample"] += 1
        return [x + random.random() for x in raw]   # unseeded: differs on every call

    @flow.node
    def mean(sample):
        calls["mean"] += 1
        return sum(sample) / len(sample)


# --------------------------------------------------------------------------- lineage


def test_lineage_is_the_tree_of_keys_that_produced_a_value(flow, calls):
    _analysis(flow, calls)
    run = flow.run("total", n=4)
    tree = flow.lineage("total", n=4)
    assert tree.node == "total"
    assert tree.key == run.nodes["total"].key
    assert {p: up.node for p, up in tree.inputs.items()} == {"raw": "raw", "scaled": "scaled"}
    assert tree.inputs["scaled"].inputs["raw"] is tree.inputs["raw"]
    assert {item.node: item.key for item in tree.walk()} == \
        {name: record.key for name, record in run.nodes.items()}


def test_lineage_records_code_components_and_parameter_digests(flow, calls):
    _analysis(flow, calls)
    flow.get("total", n=4)
    scaled = flow.lineage("total", n=4)["scaled"]
    assert set(scaled.params) == {"factor"}
    assert scaled.params["factor"] == lf.hash_value(3)
    assert "code:scaled" in scaled.fingerprint
    assert scaled.digest == lf.hash_value([0, 3, 6, 9])
    assert "scaled [" in str(scaled) and "(factor=3)" in str(scaled)


def test_lineage_computes_nothing(flow, calls):
    _analysis(flow, calls)
    flow.get("total", n=4)
    flow.lineage("total", n=4)
    assert calls == {"raw": 1, "scaled": 1, "total": 1}


def test_lineage_of_a_value_not_cached_says_how_to_compute_it(flow, calls):
    _analysis(flow, calls)
    with pytest.raises(lf.NotCachedError, match=r"node 'total' .* flow.get\('total'"):
        flow.lineage("total", n=4)
    assert calls == {}


def test_lineage_keeps_the_digest_of_an_input_whose_entry_was_evicted(flow, calls):
    _analysis(flow, calls)
    run = flow.run("total", n=4)
    flow.cache.tier("memory").delete(run.nodes["raw"].key)
    raw = flow.lineage("total", n=4)["raw"]
    assert not raw.found
    assert raw.digest == lf.hash_value([0, 1, 2, 3])
    assert "no longer cached" in str(raw)


def test_lineage_of_a_value_from_a_colleagues_remote_cache(tmp_path, calls):
    shared = (tmp_path / "shared").as_uri()
    colleague = lf.Flow("analysis", cache=lf.Cache(disk=str(tmp_path / "theirs"), remote=shared))
    _analysis(colleague, calls)
    computed = colleague.run("total", n=4)
    colleague.cache.flush()
    mine = lf.Flow("analysis", cache=lf.Cache(disk=str(tmp_path / "mine"), remote=shared))
    _analysis(mine, calls)
    tree = mine.lineage("total", n=4)
    assert {item.node: item.tier for item in tree.walk()} == \
        {"total": "remote", "raw": "remote", "scaled": "remote"}
    assert tree.key == computed.nodes["total"].key
    assert tree["scaled"].fingerprint["code:scaled"] == \
        colleague.lineage("total", n=4)["scaled"].fingerprint["code:scaled"]
    assert calls == {"raw": 1, "scaled": 1, "total": 1}


def test_lineage_follows_a_chain_of_a_thousand_nodes(flow):
    flow.node(lambda x: x, name="n0")
    for i in range(1, 1000):
        flow.add(lf.Node(lambda prev: prev + 1, name=f"n{i}", inputs={"prev": f"n{i - 1}"}))
    flow.get("n999", x=0)
    assert sum(1 for _ in flow.lineage("n999", x=0).walk()) == 1000


# --------------------------------------------------------------------------- verify


def test_verify_flags_a_node_with_unseeded_randomness(flow, calls):
    _noisy(flow, calls)
    flow.get("mean", n=5)
    result = flow.verify("mean", n=5)
    assert not result.ok
    assert result.nondeterministic == ["sample"]
    assert result.first_divergence == "sample"
    assert [(c.node, c.status) for c in result.checks] == \
        [("raw", "same"), ("sample", "differs"), ("mean", "inputs differ")]
    assert "first divergence at 'sample'" in str(result)


def test_verify_passes_a_deterministic_flow(flow, calls):
    _analysis(flow, calls)
    flow.get("total", n=5)
    result = flow.verify("total", n=5)
    assert result.ok
    assert {c.status for c in result.checks} == {"same"}
    assert result.to_dict()["nondeterministic"] == []


def test_verify_recomputes_a_node_with_positional_only_parameters(flow):
    @flow.node
    def total(n, /, factor=2):
        return n * factor

    flow.get("total", n=5)
    assert flow.verify("total", n=5).ok


def test_verify_recomputes_every_ancestor_without_reading_the_cache(flow, calls):
    _analysis(flow, calls)
    flow.get("total", n=5)
    flow.verify("total", n=5)
    assert calls == {"raw": 2, "scaled": 2, "total": 2}


def test_verify_of_a_value_never_computed_computes_the_reference_first(flow, calls):
    _analysis(flow, calls)
    result = flow.verify("total", n=5)
    assert result.ok and result.reference_computed
    assert calls == {"raw": 2, "scaled": 2, "total": 2}


def test_verify_recomputes_only_the_branch_a_lazy_input_took(flow, calls):
    @flow.node
    def taken(n: int):
        calls["taken"] += 1
        return n + 1

    @flow.node
    def untaken(n: int):
        calls["untaken"] += 1
        return n * 10

    @flow.node
    def pick(flag: bool, taken: lf.Lazy[int], untaken: lf.Lazy[int]):
        calls["pick"] += 1
        return taken() if flag else untaken()

    flow.get("pick", flag=True, n=1)
    result = flow.verify("pick", flag=True, n=1)
    assert result.ok
    assert [(c.node, c.status) for c in result.checks] == [("taken", "same"), ("pick", "same")]
    assert calls["taken"] == 2 and calls["untaken"] == 0


def test_verify_recomputes_every_element_of_a_map_node(flow, calls):
    @flow.node(map="xs")
    def squared(xs: int):
        calls["squared"] += 1
        return xs * xs

    @flow.node
    def total(squared):
        return sum(squared)

    flow.get("total", xs=[1, 2, 3])
    result = flow.verify("total", xs=[1, 2, 3])
    assert [(c.node, c.status) for c in result.checks] == [("squared", "same"),
                                                           ("total", "same")]
    assert calls["squared"] == 6


def test_verify_checks_each_output_of_a_node_with_several(flow, calls):
    @flow.node(outputs=("train", "test"))
    def split(n: int):
        calls["split"] += 1
        return list(range(n)), list(range(n, 2 * n))

    @flow.node
    def score(test):
        return sum(test)

    flow.get("score", n=4)
    result = flow.verify("score", n=4)
    assert [(c.node, c.status) for c in result.checks] == \
        [("split", "same"), ("test", "same"), ("score", "same")]
    assert calls["split"] == 2


def test_verify_counts_exactly_the_nodes_it_recomputed(flow, calls):
    _noisy(flow, calls, deterministic=False)
    flow.get("mean", n=5)
    result = flow.verify("mean", n=5)
    assert result.recomputed == ["raw", "mean"]
    assert "(2 nodes recomputed)" in str(result)
    assert calls == {"raw": 2, "sample": 1, "mean": 2}


def test_verify_compares_a_recomputed_digest_with_the_one_stored_under_the_same_key(
        flow, calls):
    _noisy(flow, calls)
    stored = flow.run("mean", n=5).nodes["sample"]
    check = flow.verify("mean", n=5)["sample"]
    assert check.status == "differs"
    assert check.expected == stored.digest
    assert check.actual not in (None, stored.digest)


def test_verify_compares_a_node_whose_entry_is_gone_with_the_digest_its_dependent_recorded(
        flow, calls):
    _analysis(flow, calls)
    run = flow.run("total", n=4)
    flow.cache.tier("memory").delete(run.nodes["scaled"].key)
    result = flow.verify("total", n=4)
    assert result.ok
    assert result["scaled"].status == "same"
    assert (result["scaled"].expected, result["scaled"].actual) == \
        (run.nodes["scaled"].digest, run.nodes["scaled"].digest)


def test_verify_says_a_node_nothing_recorded_could_not_be_compared(flow, calls):
    _analysis(flow, calls)

    @flow.node(cache=False)
    def report(total):
        return f"total {total}"

    result = flow.verify("report", n=4)
    assert result.ok
    assert result["report"].status == "unverified"
    assert result["report"].expected is None


def test_verify_reports_a_node_that_skipped_itself_as_skipped_not_failed(flow, calls):
    _analysis(flow, calls)

    @flow.node
    def report(total):
        raise lf.Skip("nothing to report")

    flow.run("report", n=4)
    result = flow.verify("report", n=4)
    assert result.ok
    assert (result["report"].status, result["report"].reason) == \
        ("skipped", "skipped: nothing to report")


def test_verify_checks_a_node_that_returns_an_output_file(flow, tmp_path):
    out = tmp_path / "report.txt"

    @flow.node
    def report(n: int):
        out.write_text("x" * n)
        return lf.File(out)

    flow.get("report", n=3)
    result = flow.verify("report", n=3)
    assert [(c.node, c.status) for c in result.checks] == [("report", "same")]


@pytest.mark.parametrize("declared", [True, False], ids=["deterministic=False", "undeclared"])
def test_verify_stores_nothing_in_the_flows_cache(tmp_path, calls, declared):
    flow = lf.Flow("stored", cache=lf.Cache(disk=str(tmp_path), remote=None))
    _noisy(flow, calls, **({"deterministic": False} if declared else {}))
    flow.get("mean", n=5)
    before = {tier.name: set(tier.keys()) for tier in flow.cache.tiers}
    assert flow.verify("mean", n=5).ok is declared  # undeclared: new values, new keys
    assert {tier.name: set(tier.keys()) for tier in flow.cache.tiers} == before


def test_verify_records_no_run_in_the_history_and_leaves_last_run(flow, calls):
    _analysis(flow, calls)
    run = flow.run("total", n=4)
    recorded = {r.id for r in lf.history(flow, limit=None)}
    flow.verify("total", n=4)
    assert {r.id for r in lf.history(flow, limit=None)} == recorded
    assert flow.last_run is run


def test_verify_recomputes_on_the_executor_it_is_given(flow, calls):
    _analysis(flow, calls)
    flow.get("total", n=4)
    result = flow.verify("total", n=4, executor="processes", max_workers=1)
    assert result.ok and result.recomputed == ["raw", "scaled", "total"]
    assert calls == {"raw": 1, "scaled": 1, "total": 1}  # counted in the workers' copies


# --------------------------------------------------------------------------- deterministic=False


def test_a_nondeterministic_node_is_recomputed_on_every_request(flow, calls):
    _noisy(flow, calls, deterministic=False)
    first = flow.run("mean", n=5)
    second = flow.run("mean", n=5)
    assert calls == {"raw": 1, "sample": 2, "mean": 2}
    assert second.nodes["raw"].status == "cached"
    assert second.nodes["sample"].status == "completed"
    assert second.nodes["sample"].reason == "deterministic=False"
    assert first["mean"] != second["mean"]


def test_explain_says_a_nondeterministic_node_will_run(flow, calls):
    _noisy(flow, calls, deterministic=False)
    flow.get("mean", n=5)
    explanation = flow.explain("mean", n=5)
    assert explanation["sample"].action == "run"
    assert explanation["sample"].reason == "deterministic=False"


def test_a_nondeterministic_node_is_served_from_the_cache_when_asked(flow, calls):
    _noisy(flow, calls, deterministic=False)
    value = flow.get("mean", n=5)
    with lf.reuse_nondeterministic():
        run = flow.run("mean", n=5)
    assert run["mean"] == value
    assert run.nodes["mean"].status == "cached"
    assert calls == {"raw": 1, "sample": 1, "mean": 1}


def test_verify_skips_a_nondeterministic_node_and_checks_what_it_feeds(flow, calls):
    _noisy(flow, calls, deterministic=False)
    flow.get("mean", n=5)
    result = flow.verify("mean", n=5)
    assert result.ok
    assert [(c.node, c.status) for c in result.checks] == \
        [("raw", "same"), ("sample", "skipped"), ("mean", "same")]


# --------------------------------------------------------------------------- cache audit


def _audited(tmp_path, calls) -> tuple[lf.Flow, lf.Run]:
    """A flow whose cache is on disk only, after one run of ``total``."""
    flow = lf.Flow("audit", cache=lf.Cache(memory=None, disk=str(tmp_path), remote=None))
    _analysis(flow, calls)
    return flow, flow.run("total", n=3)


def _flip_stored_byte(directory, key: str) -> None:
    """Flip one byte of an entry kept inline in the disk tier's SQLite index."""
    with contextlib.closing(sqlite3.connect(directory / "cache.db")) as db, db:
        (blob,) = db.execute("SELECT blob FROM LazyflowEntries WHERE key = ?",
                             (key,)).fetchone()
        flipped = bytearray(blob)
        flipped[-3] ^= 0xFF  # in the value's frames, after the metadata line
        db.execute("UPDATE LazyflowEntries SET blob = ? WHERE key = ?", (bytes(flipped), key))


def test_verify_cache_reports_an_entry_whose_stored_bytes_changed_and_keeps_it(tmp_path, calls):
    flow, run = _audited(tmp_path, calls)
    bad = run.nodes["scaled"].key
    _flip_stored_byte(tmp_path, bad)
    report = verify_cache(flow.cache)["disk"]
    assert [(d["key"], d["node"]) for d in report["damaged"]] == [(bad, "scaled")]
    assert "checksum" in report["damaged"][0]["problem"]
    assert (report["checked"], report["intact"], report["dropped"]) == (3, 2, [])
    assert flow.cache.tier("disk").contains(bad)


def test_verify_cache_with_drop_deletes_the_damaged_entries_only(tmp_path, calls):
    flow, run = _audited(tmp_path, calls)
    bad = run.nodes["scaled"].key
    _flip_stored_byte(tmp_path, bad)
    report = verify_cache(flow.cache, drop=True)["disk"]
    assert report["dropped"] == [bad]
    disk = flow.cache.tier("disk")
    assert not disk.contains(bad)
    assert disk.contains(run.nodes["raw"].key) and disk.contains(run.nodes["total"].key)


def test_verify_cache_reports_a_value_file_that_is_gone(tmp_path, calls):
    flow, _ = _audited(tmp_path, calls)
    key = flow.run("raw", n=50_000).nodes["raw"].key  # large enough for a file of its own
    (path,) = tmp_path.rglob("*.val")
    path.unlink()
    (damaged,) = verify_cache(flow.cache)["disk"]["damaged"]
    assert damaged["key"] == key and "is missing" in damaged["problem"]


def test_verify_cache_keeps_an_entry_whose_class_this_process_cannot_import(
        tmp_path, colleague_module):
    flow = lf.Flow("shapes", cache=lf.Cache(memory=None, disk=str(tmp_path), remote=None))
    circle = colleague_module.module.Circle

    @flow.node
    def shape(radius: int):
        return circle(radius)

    key = flow.run("shape", radius=2).nodes["shape"].key
    colleague_module.leave()
    report = verify_cache(flow.cache, drop=True)["disk"]
    assert (report["checked"], report["intact"], report["damaged"]) == (1, 1, [])
    assert flow.cache.tier("disk").contains(key)


def test_verify_cache_does_not_recompute_digests_so_keeps_a_value_it_cannot_rehash_alike(
        tmp_path, calls):
    flow, run = _audited(tmp_path, calls)
    disk = flow.cache.tier("disk")
    key = run.nodes["scaled"].key
    disk.put(key, [666], disk.meta(key))  # stored bytes as written, but another digest
    report = verify_cache(flow.cache, drop=True)["disk"]
    assert (report["intact"], report["damaged"]) == (3, [])
    assert disk.contains(key)


def test_verify_cache_skips_the_memory_tier_which_holds_objects_not_bytes(flow, calls):
    _analysis(flow, calls)
    flow.run("total", n=3)
    report = verify_cache(flow.cache)["memory"]
    assert (report["checked"], report["skipped"]) == (0, 3)
