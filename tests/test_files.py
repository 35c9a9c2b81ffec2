"""File inputs and outputs: keyed by content, fast on unchanged stats, restored when deleted."""

from __future__ import annotations

import os
import shutil
import time
import types

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

import lazyflow as lf
from lazyflow.model import files

OLD = 1_600_000_000  # an mtime far in the past: outside the racy window


@pytest.fixture
def later(monkeypatch):
    """Files are hashed as if 3 s from now: a file changed just now is out of the racy
    window (its ctime, which nobody can set back, is now)."""
    monkeypatch.setattr(files, "time", types.SimpleNamespace(
        time_ns=lambda: time.time_ns() + 3 * 10**9))


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n")
    return path


@pytest.fixture
def counted(flow, calls):
    @flow.node
    def raw(path: lf.File):
        calls["raw"] += 1
        return path.read_text()

    @flow.node
    def lines(raw):
        calls["lines"] += 1
        return raw.splitlines()

    return flow


def test_touching_a_file_without_changing_content_recomputes_nothing(counted, calls, csv):
    counted.get("lines", path=lf.File(csv))
    os.utime(csv, ns=(OLD * 10**9, OLD * 10**9))
    run = counted.run("lines", path=lf.File(csv))
    assert run.nodes["lines"].status == "cached"
    assert calls == {"raw": 1, "lines": 1}


def test_changing_one_byte_recomputes_its_dependents(counted, calls, csv):
    counted.get("lines", path=lf.File(csv))
    csv.write_text("a,b\n1,3\n")
    assert counted.get("lines", path=lf.File(csv)) == ["a,b", "1,3"]
    assert calls == {"raw": 2, "lines": 2}


def test_an_unchanged_file_is_not_read_again(counted, csv, monkeypatch, later):
    os.utime(csv, ns=(OLD * 10**9, OLD * 10**9))
    counted.get("lines", path=lf.File(csv))
    reads = []
    real = files._read_digest
    monkeypatch.setattr(files, "_read_digest", lambda p: reads.append(p) or real(p))
    counted.get("lines", path=lf.File(csv))
    assert reads == []


def test_a_same_size_edit_within_the_mtime_tick_is_still_seen(csv):
    before = lf.File(csv).digest
    stat = os.stat(csv)
    csv.write_text("a,b\n9,9\n")
    os.utime(csv, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    assert lf.File(csv).digest != before


def test_an_edit_that_puts_the_old_mtime_back_is_seen(csv, later):
    os.utime(csv, ns=(OLD * 10**9, OLD * 10**9))
    before = lf.File(csv).digest
    csv.write_text("a,b\n9,9\n")  # same size, same inode: cp -p, rsync -t, tar restore mtimes
    os.utime(csv, ns=(OLD * 10**9, OLD * 10**9))
    assert lf.File(csv).digest == files._read_digest(str(csv)) != before


def test_a_file_recreated_on_the_same_inode_with_the_old_mtime_is_seen(csv, later):
    os.utime(csv, ns=(OLD * 10**9, OLD * 10**9))
    before = lf.File(csv).digest
    csv.unlink()
    csv.write_text("a,b\n9,9\n")
    os.utime(csv, ns=(OLD * 10**9, OLD * 10**9))
    assert lf.File(csv).digest == files._read_digest(str(csv)) != before


def test_a_node_reading_a_file_edited_with_its_mtime_put_back_recomputes(
        counted, calls, csv, later):
    os.utime(csv, ns=(OLD * 10**9, OLD * 10**9))
    counted.get("lines", path=lf.File(csv))
    csv.write_text("a,b\n1,3\n")
    os.utime(csv, ns=(OLD * 10**9, OLD * 10**9))
    assert counted.get("lines", path=lf.File(csv)) == ["a,b", "1,3"]


def test_a_file_default_is_an_input_keyed_by_content(flow, calls, csv):
    @flow.node
    def size(path=lf.File(csv)):  # noqa: B008 - a File default is the documented use
        calls["size"] += 1
        return len(path.read_bytes())

    flow.get("size")
    csv.write_text("longer content\n")
    assert flow.get("size") == 15 and calls["size"] == 2


def test_a_missing_file_hashes_as_missing_and_appearing_invalidates(flow, calls, tmp_path):
    path = tmp_path / "later.txt"

    @flow.node
    def present(path: lf.File):
        calls["present"] += 1
        return path.exists()

    assert flow.get("present", path=lf.File(path)) is False
    path.write_text("x")
    assert flow.get("present", path=lf.File(path)) is True


def test_a_dir_changes_when_a_file_is_added_but_not_when_touched(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    before = lf.Dir(tmp_path).digest
    os.utime(tmp_path / "a.txt", ns=(OLD * 10**9, OLD * 10**9))
    assert lf.Dir(tmp_path).digest == before
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")
    assert lf.Dir(tmp_path).digest != before


def test_a_dir_sees_edits_to_files_in_a_linked_folder(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "x.txt").write_text("a")
    root = tmp_path / "root"
    root.mkdir()
    (root / "data").symlink_to(shared, target_is_directory=True)
    before = lf.Dir(root).digest
    (shared / "x.txt").write_text("b")
    assert lf.Dir(root).files() == [root / "data" / "x.txt"]
    assert lf.Dir(root).digest != before


def test_a_link_back_to_a_parent_folder_is_walked_once(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert lf.Dir(tmp_path).files() == [tmp_path / "a.txt"]


def test_a_dir_input_recomputes_dependents_when_a_file_inside_changes(flow, calls, tmp_path):
    (tmp_path / "a.txt").write_text("1")

    @flow.node
    def total(folder: lf.Dir):
        calls["total"] += 1
        return sum(int(p.read_text()) for p in folder.files())

    assert flow.get("total", folder=lf.Dir(tmp_path)) == 1
    assert flow.get("total", folder=lf.Dir(tmp_path)) == 1
    (tmp_path / "b.txt").write_text("2")
    assert flow.get("total", folder=lf.Dir(tmp_path)) == 3
    assert calls["total"] == 2


def test_a_deleted_output_file_is_restored_from_the_cache_without_recomputing(
        flow, calls, tmp_path):
    out = tmp_path / "out" / "report.txt"

    @flow.node
    def report(n: int):
        calls["report"] += 1
        out.parent.mkdir(exist_ok=True)
        out.write_text(f"n={n}")
        return lf.File(out)

    flow.get("report", n=3)
    out.unlink()
    result = flow.get("report", n=3)
    assert result == lf.File(out) and out.read_text() == "n=3"
    assert calls["report"] == 1


def test_an_overwritten_output_file_is_put_back_for_its_dependents(flow, calls, tmp_path):
    out = tmp_path / "model.bin"

    @flow.node(outputs=("model", "score"))
    def fit(n: int):
        calls["fit"] += 1
        out.write_bytes(bytes(n))
        return lf.File(out), n

    @flow.node
    def size(model, tag: str):
        calls["size"] += 1
        return len(model.read_bytes())

    assert flow.get("size", n=4, tag="a") == 4
    out.write_bytes(b"garbage")
    assert flow.get("size", n=4, tag="b") == 4
    assert calls == {"fit": 1, "size": 2}


def _report_dir(flow, calls, root):
    @flow.node
    def pages(n: int):
        calls["pages"] += 1
        for i in range(n):
            (root / "sub").mkdir(parents=True, exist_ok=True)
            (root / "sub" / f"page{i}.txt").write_text(f"page {i} of {n}")
        (root / "index.txt").write_text(f"{n} pages")
        return lf.Dir(root)


def test_a_deleted_output_directory_is_restored_from_disk_without_recomputing(calls, tmp_path):
    flow = lf.Flow("dirs", cache=lf.Cache(disk=str(tmp_path / "cache")))
    root = tmp_path / "report"
    _report_dir(flow, calls, root)
    flow.get("pages", n=2)
    shutil.rmtree(root)
    flow.cache.clear("memory")  # as after a kernel restart: the value comes back from disk
    assert flow.get("pages", n=2) == lf.Dir(root)
    assert sorted(p.relative_to(root).as_posix() for p in lf.Dir(root).files()) == \
        ["index.txt", "sub/page0.txt", "sub/page1.txt"]
    assert (root / "sub" / "page1.txt").read_text() == "page 1 of 2"
    assert calls["pages"] == 1


def test_a_changed_file_of_an_output_directory_is_put_back(flow, calls, tmp_path):
    root = tmp_path / "report"
    _report_dir(flow, calls, root)
    flow.get("pages", n=2)
    (root / "index.txt").write_text("tampered")
    flow.get("pages", n=2)
    assert (root / "index.txt").read_text() == "2 pages" and calls["pages"] == 1


def test_files_added_to_an_output_directory_are_left_in_place_with_a_warning(
        flow, calls, tmp_path):
    root = tmp_path / "report"
    _report_dir(flow, calls, root)
    flow.get("pages", n=1)
    (root / "notes.txt").write_text("mine")
    (root / "index.txt").unlink()
    with pytest.warns(lf.CacheWarning, match=r"did not write \(notes.txt\)"):
        flow.get("pages", n=1)
    assert (root / "notes.txt").read_text() == "mine"
    assert (root / "index.txt").read_text() == "1 pages" and calls["pages"] == 1


def test_the_warning_about_files_added_to_an_output_directory_names_its_node(
        flow, calls, tmp_path):
    root = tmp_path / "report"
    _report_dir(flow, calls, root)
    flow.get("pages", n=1)
    (root / "notes.txt").write_text("mine")
    (root / "index.txt").unlink()
    with pytest.warns(lf.CacheWarning, match=r"holds files node 'pages' did not write"):
        flow.get("pages", n=1)


def test_returning_a_directory_that_was_not_created_names_the_fix(flow, tmp_path):
    @flow.node
    def ghost():
        return lf.Dir(tmp_path / "never")

    with pytest.raises(lf.OutputError, match="create it before returning it"):
        flow.get("ghost")


def test_returning_a_file_that_was_not_written_names_the_fix(flow, tmp_path):
    @flow.node
    def ghost():
        return lf.File(tmp_path / "never.txt")

    with pytest.raises(lf.OutputError, match="write it before returning it"):
        flow.get("ghost")


def test_a_file_is_path_like_and_compares_by_path(csv):
    f = lf.File(csv)
    with open(f) as handle:
        assert handle.read() == "a,b\n1,2\n"
    assert f == lf.File(str(csv)) and f != lf.Dir(str(csv))
    assert repr(f) == f"File({str(csv)!r})"


@given(st.binary(max_size=4096), st.binary(max_size=4096))
def test_a_file_digest_is_the_xxh3_of_its_bytes_and_tracks_content(tmp_path_factory, a, b):
    path = tmp_path_factory.mktemp("h") / "f.bin"
    path.write_bytes(a)
    first = lf.hash_value(lf.File(path))
    assert lf.File(path).digest == xxhash.xxh3_128_hexdigest(a)
    path.write_bytes(b)
    assert (lf.hash_value(lf.File(path)) == first) == (a == b)


# --------------------------------------------------------------------------- untracked paths


@pytest.fixture
def by_name(flow, calls):
    """A node that reads a file through a plain-text path: keyed by the path's text."""
    @flow.node
    def raw(path):
        calls["raw"] += 1
        with open(path) as f:
            return f.read()

    return flow


def test_a_str_input_naming_an_existing_file_warns_with_the_fix(by_name, csv, monkeypatch):
    monkeypatch.chdir(csv.parent)
    message = ("node 'raw' input 'path' names an existing file 'data.csv'; lazyflow keys the "
               "path, not the file's content: pass lf.File('data.csv') to re-run when the file "
               "changes")
    with pytest.warns(lf.CacheWarning) as caught:
        by_name.get("raw", path="data.csv")
    assert [str(w.message) for w in caught] == [message]


def test_the_warning_is_given_once_per_node_and_parameter(by_name, csv, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("x\n")
    with pytest.warns(lf.CacheWarning, match="names an existing file"):
        by_name.get("raw", path=str(csv))
    by_name.get("raw", path=str(csv))  # warnings are errors here: none may follow
    by_name.get("raw", path=str(other))


def test_a_redefined_node_is_warned_about_again(by_name, csv):
    with pytest.warns(lf.CacheWarning, match="'raw' input 'path'"):
        by_name.get("raw", path=str(csv))
    with pytest.warns(lf.DefinitionWarning):  # defined at another line than the fixture's
        by_name.node(name="raw")(lambda path: path)
    with pytest.warns(lf.CacheWarning, match="'raw' input 'path'"):
        by_name.get("raw", path=str(csv))


def test_a_pathlib_path_naming_a_directory_suggests_lf_dir(flow, tmp_path):
    flow.node(name="listing")(lambda folder: sorted(os.listdir(folder)))
    with pytest.warns(lf.CacheWarning, match=r"input 'folder' names an existing directory .*"
                                             r"pass lf\.Dir\(.*\) to re-run when the directory "
                                             r"changes"):
        flow.get("listing", folder=tmp_path)


def test_a_default_naming_an_existing_file_warns_too(flow, csv):
    flow.node(name="raw")(lambda path=str(csv): path)
    with pytest.warns(lf.CacheWarning, match="'raw' input 'path' names an existing file"):
        flow.get("raw")


def test_the_stale_result_the_warning_is_about_and_lf_file_as_the_cure(by_name, calls, csv):
    with pytest.warns(lf.CacheWarning):
        assert by_name.get("raw", path=str(csv)) == "a,b\n1,2\n"
    csv.write_text("a,b\n9,9\n")
    assert by_name.get("raw", path=str(csv)) == "a,b\n1,2\n"  # keyed by the text: stale
    assert by_name.get("raw", path=lf.File(csv)) == "a,b\n9,9\n"  # no warning: content keyed


def test_text_that_does_not_look_like_a_path_is_never_looked_up(flow, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "label").write_text("an existing file named like a label")
    flow.node(name="tag")(lambda label: label.upper())
    assert flow.get("tag", label="label") == "LABEL"  # no separator, no extension: no warning


def test_a_missing_path_does_not_warn_and_is_looked_up_once(by_name, tmp_path):
    later = tmp_path / "later.csv"
    with pytest.warns(lf.DefinitionWarning):
        by_name.node(name="raw")(lambda path: path)
    by_name.get("raw", path=str(later))
    later.write_text("now it exists\n")
    by_name.get("raw", path="elsewhere")
    # looked up once per node, parameter and value: asking again never stats again
    assert by_name.get("raw", path=str(later)) == str(later)
