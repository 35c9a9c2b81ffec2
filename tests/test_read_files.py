"""A file a node's code reads by a constant path is part of its key.

``pd.read_csv("data.csv")`` inside a node is the most common way a notebook reads
data; keyed by the path's text, an edit to the file was served the old result. The
code's string constants handed to a reader (``keys/bytecode.py``) are keyed by the
file's content and re-checked by one ``stat`` a request (``keys/fingerprint.py``).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import lazyflow as lf


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    return tmp_path


def _status(flow: lf.Flow, node: str) -> str:
    return flow.last_run.nodes[node].status


def test_an_edit_to_a_file_read_by_a_constant_path_runs_the_node_again(here):
    flow = lf.Flow("reads", cache=lf.Cache(disk=None))

    @flow.node
    def rows():
        with open("data.csv") as f:
            return len(f.read().splitlines())

    assert (flow.get("rows"), flow.get("rows"), _status(flow, "rows")) == (2, 2, "cached")
    (here / "data.csv").write_text("a,b\n1,2\n3,4\n")
    assert (flow.get("rows"), _status(flow, "rows")) == (3, "completed")


@pytest.mark.parametrize("body", [
    "import pandas as pd\n    return len(pd.read_csv('data.csv'))",
    "return len(pathlib.Path('data.csv').read_text().splitlines()) - 1",
    "return len([line for line in open('data.csv')]) - 1",  # in a comprehension's code
])
def test_the_usual_readers_key_the_file_they_read(here, body):
    namespace = {"pathlib": pathlib}
    exec(f"def rows():\n    {body}\n", namespace)
    flow = lf.Flow("readers", cache=lf.Cache(disk=None))
    flow.node(namespace["rows"], name="rows")
    assert flow.get("rows") == 1
    (here / "data.csv").write_text("a,b\n1,2\n3,4\n")
    assert flow.get("rows") == 2


def test_a_file_touched_but_unchanged_is_still_a_hit(here):
    flow = lf.Flow("touched", cache=lf.Cache(disk=None))

    @flow.node
    def text():
        return pathlib.Path("data.csv").read_text()

    flow.get("text")
    os.utime(here / "data.csv", ns=(1, 1))
    flow.get("text")
    assert _status(flow, "text") == "cached"


def test_a_file_a_node_writes_by_a_constant_path_does_not_key_it(here):
    flow = lf.Flow("writes", cache=lf.Cache(disk=None))

    @flow.node
    def logged(x):
        with open("run.log", "a") as log:
            log.write(f"{x}\n")
        return x

    flow.get("logged", x=1)
    flow.get("logged", x=1)
    assert _status(flow, "logged") == "cached"
    assert "file:" not in str(dict(lf.fingerprint(logged).components))


def test_a_folder_read_by_a_constant_path_is_not_cached_and_the_warning_names_lf_dir(here):
    (here / "data" / "parts").mkdir(parents=True)
    flow = lf.Flow("folder", cache=lf.Cache(disk=None))

    @flow.node
    def parts(read=False):
        import pandas as pd
        return len(pd.read_parquet("data/parts")) if read else 0  # named, not read here

    with pytest.warns(lf.CacheWarning,
                      match=r"node 'parts'.*folder 'data/parts'.*lf\.Dir\('data/parts'\)"):
        flow.get("parts")
    flow.get("parts")
    assert _status(flow, "parts") == "completed"


def test_a_new_process_recomputes_after_the_file_changed_and_hits_when_it_did_not(here):
    script = textwrap.dedent("""
        import sys, lazyflow as lf
        flow = lf.Flow("reads", cache=lf.Cache(disk="cache"))

        @flow.node
        def rows():
            with open("data.csv") as f:
                return len(f.read().splitlines())

        value = flow.get("rows")
        print(value, flow.last_run.nodes["rows"].status)
        """)
    (here / "run.py").write_text(script)

    def run() -> str:
        return subprocess.run([sys.executable, "run.py"], capture_output=True, text=True,
                              check=True, cwd=here).stdout.strip()

    assert [run(), run()] == ["2 completed", "2 cached"]
    (here / "data.csv").write_text("a,b\n1,2\n3,4\n")
    assert run() == "3 completed"


def test_a_path_built_at_run_time_from_a_constant_prefix_is_not_taken_for_that_prefix(here):
    (here / "data").mkdir()
    (here / "data" / "1.csv").write_text("x\n")
    flow = lf.Flow("built", cache=lf.Cache(disk=None))

    @flow.node
    def text(part=1):
        with open(f"data/{part}.csv") as f:  # "data/" is a folder, but no path of its own
            return f.read()

    assert (flow.get("text"), flow.get("text")) == ("x\n", "x\n")
    assert _status(flow, "text") == "cached"  # neither uncached nor warned as a folder
