"""Attacks on the team cache: colleagues — real processes, each with its own memory and disk
tiers — sharing one remote (the moto S3 server, or a folder as a shared mount). Whatever one
colleague left there, a hit must be what the other's own code computes now, an entry must
read back as it was written, and what cannot be used must give a clear error or a
recomputation, never a traceback from deep inside."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pandas as pd
import pytest

import lazyflow as lf

_SCRIPT = """
import json, sys, warnings
import lazyflow as lf
import {module}

warnings.simplefilter("ignore", lf.CacheWarning)  # what a colleague's remote says is not judged here
url, options, disk, target, inputs = sys.argv[1:6]
flow = {module}.make(url, json.loads(options), disk)
try:
    run = flow.run(target, **eval(inputs))
except Exception as e:  # what the colleague is told: its type and message
    print(json.dumps([type(e).__name__, str(e), None]))
else:
    flow.cache.flush()
    print(json.dumps([repr(run[target]), run.nodes[target].status, run.nodes[target].tier]))
"""


class Colleague:
    """A colleague's project: the flow module ``team_<id>.py`` (its ``make(url, options,
    disk)`` builds the flow) in a folder of its own, run in a new process on its own disk
    tier, with ``site`` folders put first on its path (packages only it has)."""

    def __init__(self, folder: Path, flow_module: str, *, site: tuple[Path, ...] = ()) -> None:
        folder.mkdir(parents=True)
        self.folder, self.site = folder, site
        self.module = f"team_{uuid.uuid4().hex[:8]}"
        (folder / f"{self.module}.py").write_text(textwrap.dedent(flow_module))
        (folder / "request.py").write_text(_SCRIPT.format(module=self.module))

    def run(self, remote: tuple[str, dict[str, object]], target: str,
            inputs: str = "{}") -> tuple[str, str, str | None]:
        """``target`` of the flow with ``inputs`` (a Python expression of a dict, evaluated
        there): its value's ``repr``, status and tier; or the type and message of the
        exception the request raised, and ``None``."""
        import json

        url, options = remote
        path = os.pathsep.join([*map(str, self.site), str(self.folder),
                                os.environ.get("PYTHONPATH", "")])
        done = subprocess.run(
            [sys.executable, str(self.folder / "request.py"), url, json.dumps(options),
             str(self.folder / "disk"), target, inputs],
            capture_output=True, text=True, timeout=120, cwd=self.folder,
            env={**os.environ, "PYTHONPATH": path, "LAZYFLOW_HISTORY": "off"})
        assert done.returncode == 0, done.stderr
        value, status, tier = json.loads(done.stdout.splitlines()[-1])
        return value, status, tier


def _flow_module(body: str, *, before: str = "") -> str:
    """A flow module: ``before`` at module level, then ``make`` defining the nodes of ``body``
    on a flow ``team`` whose cache is a disk tier and the remote."""
    return textwrap.dedent(before) + textwrap.dedent("""
        import lazyflow as lf

        def make(url, options, disk):
            flow = lf.Flow("team", cache=lf.Cache(memory=None, disk=disk, remote=url,
                                                  remote_options=options))
        """) + textwrap.indent(textwrap.dedent(body), "    ") + "    return flow\n"


def _installed(site: Path, package: str, code: str, version: str | None) -> Path:
    """``package`` with ``code`` installed in the site-packages folder ``site`` (by pip, with
    a ``dist-info`` naming ``version``; ``None``: copied there by hand, no metadata)."""
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text(textwrap.dedent(code))
    if version is not None:
        info = site / f"{package}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        (info / "RECORD").write_text(f"{package}/__init__.py,,\n")
    return site


# --------------------------------------------------------------------------- code


_EDITS = {
    "a helper": ("def helper(x):\n    return x * {k}\n", "helper(n)"),
    "a module global": ("K = {k}\n", "n * K"),
    "a helper's default": ("def helper(x, k={k}):\n    return x * k\n", "helper(n)"),
}


@pytest.mark.parametrize("edit", list(_EDITS))
def test_colleagues_whose_code_differs_in_one_place_each_get_what_their_own_computes(
        remote, tmp_path, edit):
    before, expression = _EDITS[edit]
    colleagues = [Colleague(tmp_path / name, _flow_module(f"""
        @flow.node
        def out(n=1):
            return {expression}
        """, before=before.format(k=k))) for name, k in (("a", 2), ("b", 3))]
    assert colleagues[0].run(remote, "out", "{'n': 5}") == ("10", "completed", None)
    assert colleagues[1].run(remote, "out", "{'n': 5}") == ("15", "completed", None)
    assert colleagues[0].run(remote, "out", "{'n': 5}") == ("10", "cached", "disk")


# --------------------------------------------------------------------------- packages


@pytest.mark.parametrize("version", [("1.0", "2.0"), (None, None)],
                         ids=["versions installed by pip", "copies without metadata"])
def test_colleagues_with_other_code_of_an_installed_package_each_get_what_theirs_computes(
        tmp_path, version):
    remote = (f"file://{tmp_path / 'mount'}", {})
    package = f"units_{uuid.uuid4().hex[:8]}"
    flow = _flow_module(f"""
        import {package}

        @flow.node
        def scaled(n=1):
            return {package}.scale(n)
        """)
    colleagues = [
        Colleague(tmp_path / name, flow, site=(_installed(
            tmp_path / f"site-{name}" / "site-packages", package,
            f"def scale(x):\n    return x * {factor}\n", installed),))
        for name, factor, installed in (("a", 2, version[0]), ("b", 3, version[1]))]
    assert colleagues[0].run(remote, "scaled", "{'n': 5}") == ("10", "completed", None)
    assert colleagues[1].run(remote, "scaled", "{'n': 5}") == ("15", "completed", None)


# --------------------------------------------------------------------------- freshness


def _prices_flow(max_age: str, hours_ago: int) -> str:
    """``report`` of ``prices`` (pulled from the colleague's own ``prices.txt``, declared
    with ``max_age``), in a process whose clock reads ``hours_ago`` hours back."""
    return _flow_module(f"""
        @flow.node(max_age={max_age!r})
        def prices():
            with open("prices.txt") as f:
                return int(f.read())

        @flow.node
        def report(prices):
            return prices * 10
        """, before=f"""
        import time
        _now = time.time
        time.time = lambda: _now() - {hours_ago} * 3600
        """)


def test_a_colleagues_cached_result_is_not_served_past_the_max_age_this_process_declares(
        tmp_path):
    remote = (f"file://{tmp_path / 'mount'}", {})
    earlier = Colleague(tmp_path / "a", _prices_flow("1d", hours_ago=2))
    now = Colleague(tmp_path / "b", _prices_flow("1h", hours_ago=0))
    (earlier.folder / "prices.txt").write_text("1")
    (now.folder / "prices.txt").write_text("2")  # the prices have moved since
    assert earlier.run(remote, "report") == ("10", "completed", None)
    assert now.run(remote, "report") == ("20", "completed", None)


def _checked_flow(check: str) -> str:
    """``report`` of ``prices``, whose result must pass ``check``."""
    return _flow_module(f"""
        @flow.node(check={check})
        def prices():
            return 7

        @flow.node
        def report(prices):
            return prices * 10
        """)


def test_a_colleagues_cached_result_is_not_served_from_an_input_this_processs_check_rejects(
        tmp_path):
    remote = (f"file://{tmp_path / 'mount'}", {})
    lenient = Colleague(tmp_path / "a", _checked_flow("lambda p: p > 0"))
    strict = Colleague(tmp_path / "b", _checked_flow("lambda p: p < 5"))
    assert lenient.run(remote, "report") == ("70", "completed", None)
    error, message, _ = strict.run(remote, "report")
    assert (error, message.split(":")[0]) == ("CheckError", "node 'prices'")


# --------------------------------------------------------------------------- values read back


def test_a_colleagues_utc_frame_reads_back_with_the_time_zone_it_was_computed_with(tmp_path):
    remote = (f"file://{tmp_path / 'mount'}", {})
    flow = _flow_module("""
        @flow.node
        def stamps(n=2):
            return pd.DataFrame({"at": pd.date_range("2024-01-01", periods=n, tz="UTC")})
        """, before="import pandas as pd\n")
    assert Colleague(tmp_path / "a", flow).run(remote, "stamps")[1] == "completed"
    computed = pd.DataFrame({"at": pd.date_range("2024-01-01", periods=2, tz="UTC")})
    reader = lf.Cache(memory=None, disk=None, remote=remote[0])
    stored = list(reader.tier("remote").keys())  # RemoteTier is no dict: keys() lists the remote
    (value,) = [reader.load(key)[0] for key in stored
                if reader.lookup(key)[0].get("node") == "stamps"]
    assert lf.hash_value(value) == lf.hash_value(computed)


def test_an_equal_but_different_upstream_value_never_takes_a_colleagues_result(tmp_path):
    remote = (f"file://{tmp_path / 'mount'}", {})
    flow = _flow_module("""
        @flow.node
        def zero(sign=1):
            return sign * 0.0  # -0.0 for a negative sign: equal to 0.0, but not the same

        @flow.node
        def side(zero):
            return math.copysign(1, zero)
        """, before="import math\n")
    negative, positive = Colleague(tmp_path / "a", flow), Colleague(tmp_path / "b", flow)
    assert negative.run(remote, "side", "{'sign': -1}") == ("-1.0", "completed", None)
    assert positive.run(remote, "side", "{'sign': 1}") == ("1.0", "completed", None)
    assert positive.run(remote, "side", "{'sign': -1}") == ("-1.0", "cached", "remote")


# --------------------------------------------------------------------------- a read-only reader


def test_a_read_only_colleague_skips_a_damaged_entry_leaves_it_and_computes_the_value(
        tmp_path, monkeypatch):
    import importlib

    mount = tmp_path / "mount"
    remote = (f"file://{mount}", {})
    writer = Colleague(tmp_path / "a", _flow_module("""
        @flow.node
        def total(n=1):
            return n * 10
        """))
    writer.run(remote, "total", "{'n': 4}")
    (entry,) = mount.glob("ac/*/*")
    entry.write_bytes(entry.read_bytes()[:-5])  # torn on the shared drive
    damaged = entry.read_bytes()
    monkeypatch.syspath_prepend(str(writer.folder))  # the same project, here read-only
    monkeypatch.setenv("LAZYFLOW_REMOTE_READ_ONLY", "1")
    reader = importlib.import_module(writer.module).make(remote[0], {}, None)
    with pytest.warns(lf.CacheWarning, match="skipped remote cache entry .* stays, the remote "
                                             "being read-only"):
        run = reader.run("total", n=4)
    assert (run["total"], run.nodes["total"].status) == (40, "completed")
    assert entry.read_bytes() == damaged
