"""Shared fixtures: flows with isolated caches, call counters that keys ignore, rendezvous,
a disk tier that loses entries on cue."""

from __future__ import annotations

import os
import pathlib
import sys
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from bucket import Requests
from doubles import PicklingExecutor
from hypothesis import HealthCheck, settings

import lazyflow as lf
from lazyflow.cache.disk import DiskTier

# The conformance suites are inherited by test modules, not collected themselves: pytest
# rewrites their asserts too, so a failure shows the values compared.
pytest.register_assert_rewrite("executor_conformance")

# Property tests judge results, never speed. Hypothesis's defaults fail a test whose
# example takes over 200 ms, or whose data takes too long to generate: a loaded two-core
# CI machine did exactly that to a correct test (one example paused for 520 ms).
settings.register_profile("lazyflow", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("lazyflow")

# Started with stdin closed (`<&-`, as some CI runners do), Python sets sys.__stdin__ to
# None, and pytest's captured stdin then fails every import of IPython (which asks it for
# its encoding): give it /dev/null, as a shell's `</dev/null` would have.
if sys.__stdin__ is None:
    sys.__stdin__ = open(os.devnull)  # noqa: SIM115 - stdin stays open for the session


class Calls(Counter):
    """Counts node executions; hashes to a constant so reading it never invalidates a node."""


lf.register_hasher(Calls, lambda calls: "calls")


@pytest.fixture
def calls() -> Calls:
    """A fresh execution counter: ``calls["node"]`` is how often it ran."""
    return Calls()


@pytest.fixture
def flow() -> lf.Flow:
    """A flow whose cache lives in memory only (no disk, no remote)."""
    return lf.Flow("test", cache=lf.Cache(disk=None))


@pytest.fixture
def pickling_executor() -> PicklingExecutor:
    """An executor that pickles every task before calling it (process semantics, inline)."""
    return PicklingExecutor()


# --------------------------------------------------------------------------- cache isolation


@pytest.fixture(autouse=True)
def _isolated_cache_settings(tmp_path_factory: pytest.TempPathFactory,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test's default cache lives in a fresh temporary directory, with no remote.

    ``lf.Flow(...)`` with the default cache writes to ``./.lazyflow`` otherwise:
    tests must neither litter the repository nor share entries.
    """
    monkeypatch.setenv("LAZYFLOW_CACHE_DIR", str(tmp_path_factory.mktemp("lazyflow-cache")))
    for variable in ("LAZYFLOW_REMOTE", "LAZYFLOW_REMOTE_OPTIONS", "LAZYFLOW_MEMORY",
                     "LAZYFLOW_DISK_LIMIT", "LAZYFLOW_SIGNING_KEY", "LAZYFLOW_TRUSTED_KEYS",
                     "LAZYFLOW_REMOTE_READ_ONLY"):
        monkeypatch.delenv(variable, raising=False)


# --------------------------------------------------------------------------- real S3 (moto)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real moto S3 server on 127.0.0.1 (free port); yields its endpoint URL.

    Credentials are dummy values in the environment, inherited by subprocesses.
    """
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    with pytest.MonkeyPatch.context() as mp:
        for variable, value in (("AWS_ACCESS_KEY_ID", "testing"),
                                ("AWS_SECRET_ACCESS_KEY", "testing"),
                                ("AWS_DEFAULT_REGION", "us-east-1")):
            mp.setenv(variable, value)
        mp.delenv("AWS_PROFILE", raising=False)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_options(s3_server: str) -> dict[str, object]:
    """``remote_options`` for s3fs pointing at the moto server."""
    return {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}


@pytest.fixture
def s3_url(s3_options: dict[str, object]) -> str:
    """A fresh, empty bucket on the moto server, as ``s3://<bucket>/lazyflow``."""
    import uuid

    import s3fs

    bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**s3_options).mkdir(bucket)
    return f"s3://{bucket}/lazyflow"


@pytest.fixture
def shell():
    """A real IPython ``InteractiveShell`` with ``%load_ext lazyflow`` and a fresh namespace."""
    from IPython.core.interactiveshell import InteractiveShell

    main = sys.modules["__main__"]  # IPython swaps in its own, which has no __spec__:
    ip = InteractiveShell.instance()  # multiprocessing's spawn (later tests) needs the real one
    ip.reset(new_session=False)
    ip.extension_manager.load_extension("lazyflow")
    yield ip
    ip.reset(new_session=False)
    sys.modules["__main__"] = main


@pytest.fixture
def jupyterlab(tmp_path):
    """A real JupyterLab server on 127.0.0.1 (free port, no token) serving ``tmp_path/lab``.

    Yields ``(base_url, root_dir)``; the server and its kernels stop afterwards.
    """
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    root = tmp_path / "lab"
    root.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)  # no "get Jupyter news?" pop-up over the screenshots
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
         f"--ServerApp.root_dir={root}", "--IdentityProvider.token=",
         "--ServerApp.password=", "--LabApp.check_for_updates_class="
         "jupyterlab.NeverCheckForUpdate", f"--LabApp.workspaces_dir={tmp_path / 'ws'}"],
        env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "lab.log").open("w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # poll readiness: the server says nothing machine-readable before this
        try:
            with urllib.request.urlopen(f"{url}/api/status", timeout=2):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("JupyterLab did not start: "
                                   + (tmp_path / "lab.log").read_text()[-2000:]) from None
            time.sleep(0.2)
    yield url, root
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture
def meeting(tmp_path):
    """A two-party rendezvous that works across threads and processes, without sleeps.

    ``meet("left")`` and ``meet("right")`` each return only once the other side
    has arrived (both ends of a named pipe must be open), so two nodes that
    both call it prove they were running at the same time.
    """
    path = str(tmp_path / "meeting")
    os.mkfifo(path)

    def meet(side: str) -> None:
        with open(path, "w" if side == "left" else "r"):
            pass

    return meet


@pytest.fixture
def ledger(tmp_path):
    """A call log that works across processes: ``ledger.path`` is appended to by nodes."""
    return Ledger(str(tmp_path / "ledger"))


class Ledger:
    """Lines appended by nodes (one per call); ``count(name)`` reads them back."""

    def __init__(self, path: str) -> None:
        self.path = path

    def note(self, name: str) -> None:
        """Record one call of ``name`` (call it from inside a node, in any process)."""
        with open(self.path, "a") as f:
            f.write(name + "\n")

    def count(self, name: str) -> int:
        """How many times ``note(name)`` was called."""
        if not os.path.exists(self.path):
            return 0
        with open(self.path) as f:
            return sum(1 for line in f if line.rstrip("\n") == name)


lf.register_hasher(Ledger, lambda ledger: "ledger")


class LosingTier(DiskTier):
    """A real disk tier that loses chosen entries at the moment their value is read.

    This is the race between the lookup that made a node a hit and the load of its value:
    another process deleted the entry, the size limit evicted it, or its file got damaged.
    Every value lives in a file (``min_file_size=0``), so it can be damaged.
    """

    def __init__(self, directory) -> None:
        super().__init__(directory, size_limit=10**9, min_file_size=0)
        self.doomed: dict[str, tuple[str, int]] = {}

    def lose(self, key: str, how: str = "delete", *, after: int = 0) -> None:
        """The next read of ``key`` (after ``after`` good ones) finds it deleted
        (``"delete"``) or damaged (``"damage"``)."""
        self.doomed[key] = (how, after)

    def entry(self, key: str):  # what ``get`` and the hierarchy's loads read through
        how, after = self.doomed.pop(key, ("", 0))
        if after:
            self.doomed[key] = (how, after - 1)
        elif how == "delete":
            self.delete(key)
        elif how == "damage":
            path = pathlib.Path(self._cache.get(key, retry=True).path)
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))
        return super().entry(key)


@pytest.fixture
def losing(tmp_path) -> tuple[lf.Flow, LosingTier]:
    """A flow whose only cache tier is a :class:`LosingTier` in ``tmp_path``."""
    tier = LosingTier(tmp_path / "cache")
    return lf.Flow("losing", cache=lf.Cache(tiers=[tier])), tier


@pytest.fixture(scope="session")
def dask_client():
    """A real dask.distributed cluster on loopback: two worker processes with nannies."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                  host="127.0.0.1", dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        yield client


# --------------------------------------------------------------------------- a colleague's module


class ColleagueModule:
    """A module of a colleague's project, importable here only until :meth:`leave`.

    Values of its class ``Circle`` are pickled by reference (``module.Circle``), as
    values of any installed or project module are; after ``leave`` this process can
    no longer unpickle them, as a CLI run outside that project cannot.
    """

    def __init__(self, folder, monkeypatch: pytest.MonkeyPatch) -> None:
        import importlib
        import uuid

        self.name = f"colleague_{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{self.name}.py").write_text(
            "class Circle:\n"
            "    def __init__(self, radius):\n"
            "        self.radius = radius\n")
        self._monkeypatch = monkeypatch
        monkeypatch.syspath_prepend(str(folder))
        self.module = importlib.import_module(self.name)
        self._folder = str(folder)

    def leave(self) -> None:
        """Make the module unimportable in this process."""
        import importlib

        sys.path.remove(self._folder)
        sys.modules.pop(self.name, None)
        importlib.invalidate_caches()


@pytest.fixture
def colleague_module(tmp_path, monkeypatch) -> ColleagueModule:
    """A module only importable until ``.leave()``: see :class:`ColleagueModule`."""
    return ColleagueModule(tmp_path / "colleague", monkeypatch)


# --------------------------------------------------------------------------- remotes, counted


@pytest.fixture(params=["s3", "file"])
def remote(request, tmp_path) -> tuple[str, dict[str, object]]:
    """A fresh remote on the moto S3 server, then on a local folder (a shared mount)."""
    if request.param == "file":
        return f"file://{tmp_path / 'mount'}", {}
    return request.getfixturevalue("s3_url"), request.getfixturevalue("s3_options")


@pytest.fixture
def s3_requests(s3_server, tmp_path, monkeypatch) -> Requests:
    """What the moto server answers, recorded by it."""
    from moto.moto_api import recorder

    path = tmp_path / "requests.jsonl"
    monkeypatch.setattr(recorder, "_location", str(path))
    return Requests(path)


# --------------------------------------------------------------------------- a clock moved by hand


class Clock:
    """The wall clock lazyflow reads (``time.time``), moved by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """``time.time`` as a :class:`Clock` for the test (``max_age=`` without sleeping)."""
    fake = Clock()
    monkeypatch.setattr(time, "time", fake)
    return fake
