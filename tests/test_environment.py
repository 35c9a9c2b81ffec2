"""The producing environment: recorded with every entry, compared on hits, optionally keyed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import lazyflow as lf
from lazyflow import keys
from lazyflow.keys import environment
from lazyflow.run import NodeRecord


def fake_distribution(folder, name: str, version: str, direct_url: dict | None = None,
                      record: str = "") -> None:
    """An installed distribution as pip leaves it: a ``name-version.dist-info`` folder."""
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text(record)
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))


@pytest.fixture
def fresh_environment(monkeypatch):
    """Read the environment afresh (it is read once per process) after changing sys.path."""
    environment.forget()
    yield monkeypatch
    environment.forget()


_FLOW = """
import lazyflow as lf

def make(disk, scope, memory=None):
    flow = lf.Flow("envs", cache=lf.Cache(memory=memory, disk=disk, scope=scope))

    @flow.node
    def total(n: int):
        return n * 2

    return flow
"""

_SCRIPT = """
import sys, envs_flow
run = envs_flow.make(sys.argv[1], sys.argv[2]).run("total", n=3)
print(run.nodes["total"].status)
"""


def run_elsewhere(tmp_path, scope: str = "code") -> str:
    """Compute ``total`` in a process whose environment has one more package installed."""
    extra = tmp_path / "site"
    if not extra.exists():
        fake_distribution(extra, "colleagues_tool", "1.0")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(extra), os.environ.get(
        "PYTHONPATH", "")])}
    (tmp_path / "envs_flow.py").write_text(_FLOW)
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    script = tmp_path / "elsewhere.py"
    script.write_text(_SCRIPT)
    return subprocess.run([sys.executable, str(script), str(tmp_path / "cache"), scope],
                          env=env, capture_output=True, text=True, check=True).stdout.strip()


def local_flow(tmp_path, scope: str = "code") -> lf.Flow:
    """The very flow ``run_elsewhere`` computes (one module: one code fingerprint)."""
    import importlib

    (tmp_path / "envs_flow.py").write_text(_FLOW)
    sys.path.insert(0, str(tmp_path))
    try:
        sys.modules.pop("envs_flow", None)
        return importlib.import_module("envs_flow").make(str(tmp_path / "cache"), scope)
    finally:
        sys.path.remove(str(tmp_path))


def test_every_stored_entry_names_the_environment_that_computed_it(tmp_path):
    flow = local_flow(tmp_path)
    run = flow.run("total", n=3)
    meta = flow.cache.lookup(run.nodes["total"].key)[0]
    assert meta["env"] == environment.current().digest
    record = flow.cache.find_record(keys.environment_key(meta["env"]))
    assert record["environment"]["python"] == environment.current().python
    assert record["environment"]["packages"]["numpy"] == environment.current().packages["numpy"]


def test_explain_says_what_differs_when_a_hit_was_computed_in_another_environment(tmp_path):
    assert run_elsewhere(tmp_path) == "completed"
    flow = local_flow(tmp_path)
    row = flow.explain("total", n=3).rows[0]
    assert row.action == "hit"
    assert "computed in another environment (colleagues-tool 1.0 -> not installed)" in row.reason
    run = flow.run("total", n=3)
    assert run.nodes["total"].status == "cached"
    assert "colleagues-tool 1.0 -> not installed" in run.nodes["total"].reason


def test_lineage_says_which_entries_were_computed_in_another_environment(tmp_path):
    run_elsewhere(tmp_path)
    tree = local_flow(tmp_path).lineage("total", n=3)
    assert "colleagues-tool 1.0 -> not installed" in tree.environment
    assert "computed in another environment" in str(tree)


def test_a_hit_from_this_environment_says_nothing_of_environments(tmp_path):
    flow = local_flow(tmp_path)
    flow.get("total", n=3)
    assert flow.explain("total", n=3).rows[0].reason == "cached"


def test_a_cache_scoped_by_environment_never_serves_another_environments_result(tmp_path):
    assert run_elsewhere(tmp_path, scope="environment") == "completed"
    flow = local_flow(tmp_path, scope="environment")
    assert flow.run("total", n=3).nodes["total"].status == "completed"
    assert run_elsewhere(tmp_path, scope="environment") == "cached"  # its own entry is kept


def test_keys_are_not_scoped_by_environment_by_default(tmp_path):
    run_elsewhere(tmp_path)
    assert local_flow(tmp_path).run("total", n=3).nodes["total"].status == "cached"


# --------------------------------------------------------------------------- a new process's hits

_WARM = """
import sys, envs_flow
from lazyflow.keys import environment

folders = []  # the distributions' folders read (environment.py)
origin = environment._origin
environment._origin = lambda folder: folders.append(folder) or origin(folder)
run = envs_flow.make(sys.argv[1], "code").run("total", n=3)
print(run.nodes["total"].status, environment.known(), len(folders))
if sys.argv[2] == "read":
    print(run.nodes["total"].reason)
"""


def warm_in_new_process(tmp_path, *, another_environment: bool, read: bool = True,
                        history: bool = False) -> list[str]:
    """Ask for ``total`` (computed by this process) in a new process, in this environment
    or in one with one more package installed; what it printed, line by line: status,
    whether it read its environment, how many distributions' folders it read; then the
    hit's reason (``read``).

    The history is off unless asked for: its writer reads the reason in the background,
    which would read the environment at a moment no test can choose."""
    path = [str(tmp_path)]
    if another_environment:
        if not (tmp_path / "site").exists():
            fake_distribution(tmp_path / "site", "colleagues_tool", "1.0")
        path.append(str(tmp_path / "site"))
    env = {k: v for k, v in os.environ.items() if k != "LAZYFLOW_HISTORY"}
    env["PYTHONPATH"] = os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")])
    if not history:
        env["LAZYFLOW_HISTORY"] = "off"
    (tmp_path / "envs_flow.py").write_text(_FLOW)
    script = tmp_path / "warm.py"
    script.write_text(_WARM)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "cache"),
                          "read" if read else "-"], env=env, capture_output=True, text=True,
                         check=True).stdout
    return out.split("\n")[:-1]


def test_a_hit_in_a_new_process_reads_no_distributions_folder(tmp_path):
    local_flow(tmp_path).get("total", n=3)
    assert warm_in_new_process(tmp_path, another_environment=False, read=False) == \
        ["cached False 0"]


def test_a_hit_in_a_new_process_says_what_differs_when_its_reason_is_read(tmp_path):
    local_flow(tmp_path).get("total", n=3)
    hit, reason = warm_in_new_process(tmp_path, another_environment=True)
    assert hit == "cached False 0"  # the note was left for the reason's first reading
    assert reason == \
        "cached; computed in another environment (colleagues-tool not installed -> 1.0)"


def test_a_hit_in_a_new_process_of_this_environment_says_nothing_of_environments(tmp_path):
    local_flow(tmp_path).get("total", n=3)
    assert warm_in_new_process(tmp_path, another_environment=False) == ["cached False 0", ""]


def test_the_history_of_a_hit_in_a_new_process_says_what_differs(tmp_path):
    flow = local_flow(tmp_path)
    flow.get("total", n=3)
    warm_in_new_process(tmp_path, another_environment=True, read=False, history=True)
    (node,) = lf.history(flow, limit=1)[0].nodes
    assert (node.status, node.reason) == (
        "cached", "cached; computed in another environment (colleagues-tool not installed -> 1.0)")


def test_a_hit_says_what_differs_once_the_environment_is_read(tmp_path, monkeypatch):
    run_elsewhere(tmp_path)
    flow = local_flow(tmp_path)
    environment.current()  # read: the note is worked out with the hit
    noted = []
    monkeypatch.setattr(NodeRecord, "revise_reason_later", lambda *a: noted.append(a))
    record = flow.run("total", n=3).nodes["total"]
    assert record.reason == \
        "cached; computed in another environment (colleagues-tool 1.0 -> not installed)"
    assert noted == []


def test_an_unknown_scope_says_which_scopes_exist():
    with pytest.raises(ValueError, match="choose 'code'.*or 'environment'"):
        lf.Cache(disk=None, scope="machine")


def test_a_repository_install_is_identified_by_its_commit(tmp_path, fresh_environment):
    fake_distribution(tmp_path, "from_git", "0.1",
                      {"url": "https://example.invalid/r.git",
                       "vcs_info": {"vcs": "git", "commit_id": "0123456789abcdef0123"}})
    fresh_environment.syspath_prepend(str(tmp_path))
    assert environment.distribution_token("from-git") == "0.1+vcs.0123456789ab"


def test_a_path_install_changes_its_token_when_its_files_change(tmp_path, fresh_environment):
    direct = {"url": "file:///src/tool", "dir_info": {}}
    fake_distribution(tmp_path / "a", "local_tool", "0.1", direct, record="tool.py,sha256=aaa,10\n")
    fake_distribution(tmp_path / "b", "local_tool", "0.1", direct, record="tool.py,sha256=bbb,10\n")
    fresh_environment.syspath_prepend(str(tmp_path / "a"))
    first = environment.distribution_token("local-tool")
    environment.forget()
    fresh_environment.syspath_prepend(str(tmp_path / "b"))
    second = environment.distribution_token("local-tool")
    assert first.startswith("0.1+record.") and second.startswith("0.1+record.")
    assert first != second


def test_the_environment_digest_is_the_same_in_a_fresh_process():
    code = "from lazyflow.keys import environment; print(environment.current().digest)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "7"})
    assert out.stdout.strip() == environment.current().digest


def test_differences_name_each_change():
    old = {"python": "3.11.7", "platform": "linux-x86_64", "packages": {"a": "1", "b": "2"}}
    new = {"python": "3.11.7", "platform": "linux-x86_64", "packages": {"a": "1", "b": "3"}}
    assert environment.differences(old, new) == ["b 2 -> 3"]
    assert environment.differences(old, old) == []


def test_one_distributions_token_reads_that_distributions_folder_only(tmp_path, fresh_environment):
    for name in ("asked_for", "other"):
        fake_distribution(tmp_path, name, "0.1", {"url": "file:///src", "dir_info": {}},
                          record=f"{name}.py,sha256=aaa,10\n")
    fresh_environment.syspath_prepend(str(tmp_path))
    read: list[str] = []
    origin = environment._origin
    fresh_environment.setattr(environment, "_origin",
                              lambda folder: read.append(os.path.basename(folder)) or origin(folder))
    assert environment.distribution_token("asked-for").startswith("0.1+record.")
    assert read == ["asked_for-0.1.dist-info"]


def test_a_distributions_token_is_the_one_the_environment_records(tmp_path, fresh_environment):
    fake_distribution(tmp_path, "from_git", "0.1",
                      {"url": "https://example.invalid/r.git",
                       "vcs_info": {"vcs": "git", "commit_id": "0123456789abcdef0123"}})
    fresh_environment.syspath_prepend(str(tmp_path))
    token = environment.distribution_token("from-git")
    packages = environment.current().packages
    assert packages["from-git"] == token
    assert all(environment.distribution_token(name) == packages[name] for name in packages)


# --------------------------------------------------------------------------- on a shared remote


_REMOTE_FLOW = """
import lazyflow as lf

def make(url, options):
    flow = lf.Flow("envs", cache=lf.Cache(memory=None, disk=None, remote=url,
                                          remote_options=options))

    @flow.node
    def total(n: int):
        return n * 2

    @flow.node
    def report(total):
        return f"total {total}"

    return flow
"""

_REMOTE_SCRIPT = """
import sys, envs_remote
envs_remote.make(sys.argv[1], eval(sys.argv[2])).get("report", n=3)
"""


def computed_elsewhere_on(url: str, options: dict, tmp_path) -> None:
    """A colleague whose environment has one more package computes ``report`` (and
    ``total``) on the remote ``url``."""
    extra = tmp_path / "site"
    fake_distribution(extra, "colleagues_tool", "1.0")
    (tmp_path / "envs_remote.py").write_text(_REMOTE_FLOW)
    script = tmp_path / "elsewhere_remote.py"
    script.write_text(_REMOTE_SCRIPT)
    path = os.pathsep.join([str(extra), str(tmp_path), os.environ.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, str(script), url, repr(options)], check=True,
                   env={**os.environ, "PYTHONPATH": path, "LAZYFLOW_HISTORY": "off"})


def remote_flow(url: str, options: dict, tmp_path) -> lf.Flow:
    """The very flow ``computed_elsewhere_on`` computes, in this process's environment."""
    import importlib

    sys.path.insert(0, str(tmp_path))
    try:
        sys.modules.pop("envs_remote", None)
        return importlib.import_module("envs_remote").make(url, options)
    finally:
        sys.path.remove(str(tmp_path))


@pytest.mark.s3
@pytest.mark.parametrize("target", ["total", "report"],
                         ids=["the entry carrying the description", "an entry naming it"])
def test_explain_says_what_differs_for_a_colleagues_entry_on_a_shared_remote(
        s3_url, s3_options, tmp_path, target):
    computed_elsewhere_on(s3_url, s3_options, tmp_path)
    row = remote_flow(s3_url, s3_options, tmp_path).explain(target, n=3).rows[-1]
    assert (row.node, row.action, row.tier) == (target, "hit", "remote")
    assert "computed in another environment (colleagues-tool 1.0 -> not installed)" in row.reason


@pytest.mark.s3
def test_a_remote_holds_no_environment_record_when_its_first_entry_carries_the_description(
        s3_url, s3_options):
    namespace: dict[str, object] = {}
    exec(_REMOTE_FLOW, namespace)  # noqa: S102 - the flow a colleague's process runs
    flow = namespace["make"](s3_url, s3_options)
    run = flow.run("report", n=3)
    flow.cache.flush()
    remote = flow.cache.tier("remote")
    here = environment.current()
    assert remote.meta(keys.environment_key(here.digest)) is None
    assert remote.meta(run.nodes["total"].key)["environment"] == here.describe()
    assert remote.meta(run.nodes["report"].key)["env_at"] == run.nodes["total"].key


@pytest.mark.s3
def test_a_carrier_a_colleagues_entry_kept_out_leaves_the_description_in_a_record(
        s3_url, s3_options, monkeypatch):
    from lazyflow.cache.remote import RemoteTier
    from lazyflow.engine.why import environment_note

    first, other = "ab" * 16, "cd" * 16
    RemoteTier(s3_url, s3_options, background=False).put(first, 1, {"digest": "d", "env": "x"})
    here = environment.current()
    mine = RemoteTier(s3_url, s3_options)  # its first put meets the colleague's entry
    mine.put(first, 1, {"digest": "d", "env": here.digest})
    mine.put(other, 2, {"digest": "e", "env": here.digest})
    mine.flush()
    reader = lf.Cache(tiers=[RemoteTier(s3_url, s3_options)])
    meta = reader.lookup(other)[0]
    assert meta["env_at"] == first and reader.lookup(first)[0]["env"] == "x"
    later = environment.Environment(here.python, here.implementation, here.platform,
                                    {**here.packages, "colleagues-tool": "2.0"}, "y" * 32)
    monkeypatch.setattr(environment, "current", lambda: later)  # a reader elsewhere
    assert environment_note(reader, meta) == \
        "; computed in another environment (colleagues-tool not installed -> 2.0)"
