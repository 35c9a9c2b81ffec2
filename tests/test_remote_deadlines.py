"""Every remote operation has a deadline: a remote that never answers costs one deadline per
run, warns once, and the run completes from the local tiers.

The remotes here are real: an S3 endpoint on loopback that accepts connections and never
answers (s3fs would retry against it for more than 25 minutes), metadata files that are
FIFOs nobody writes to (a hung mount), and an fsspec memory filesystem whose puts stall
until the test lets them land (an upload cut off at its deadline).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest
from chains import define_array_chain
from doubles import PicklingExecutor
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import register_implementation

import lazyflow as lf
from lazyflow.cache.base import NO_VALUE, TierOfflineError
from lazyflow.cache.config import ConfigError
from lazyflow.cache.remote import RemoteTier

KEY = "ab" * 16
DEADLINE = 0.5  # seconds; each test waits it out at most once or twice


# --------------------------------------------------------------------------- a silent S3 endpoint


class SilentServer:
    """A TCP server on loopback that accepts connections, holds them and never answers.

    Counts the connections it accepted (every S3 request that reached it); holds at most
    ``limit`` of them and closes any beyond. A request abandoned at its deadline may still be
    on its way (an s3fs client is built on the first call): ``settled`` waits for the count
    expected, and ``stop`` accepts what is queued before it closes everything.
    """

    def __init__(self, limit: int = 64) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._limit = limit
        self._held: list[socket.socket] = []
        self._contacts = 0
        self._contacted = threading.Condition()
        self._wake: tuple[str, int] | None = None
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    @property
    def contacts(self) -> int:
        """Connections accepted so far."""
        with self._contacted:
            return self._contacts

    def settled(self, expected: int) -> int:
        """The number of contacts once ``expected`` have arrived (or after a minute), with
        the server stopped: later requests count no more."""
        with self._contacted:
            self._contacted.wait_for(lambda: self._contacts >= expected, timeout=60)
        self.stop()
        return self.contacts

    def stop(self) -> None:
        """Accept the connections already queued, then close them all and the listener."""
        if self._thread.is_alive():
            with socket.socket() as wake:  # queued last: its arrival means the queue is drained
                wake.bind(("127.0.0.1", 0))
                self._wake = wake.getsockname()
                wake.connect(("127.0.0.1", self.port))
                self._thread.join(timeout=30)
        for conn in self._held:
            conn.close()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            conn, peer = self._listener.accept()
            if peer == self._wake:
                conn.close()
                return
            with self._contacted:
                self._contacts += 1
                self._contacted.notify_all()
                held = len(self._held) < self._limit
            if held:
                self._held.append(conn)
            else:
                conn.close()


@pytest.fixture
def silent_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[SilentServer]:
    """A silent S3 endpoint; botocore is kept from looking for credentials elsewhere."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    server = SilentServer()
    yield server
    server.stop()


def _silent_options(server: SilentServer) -> dict[str, object]:
    """s3fs with its default retries (they would take minutes) under a short deadline."""
    return {"endpoint_url": f"http://127.0.0.1:{server.port}", "key": "k", "secret": "s",
            "lazyflow_timeout": DEADLINE}


def _silent_flow(server: SilentServer, tmp_path, calls) -> lf.Flow:
    cache = lf.Cache(memory=None, disk=str(tmp_path / "disk"), remote="s3://silent/lf",
                     remote_options=_silent_options(server))
    return define_array_chain(lf.Flow("silent", cache=cache), calls)


@pytest.mark.timeout(120)
def test_a_remote_that_never_answers_warns_once_and_the_run_computes_locally(
        silent_server, tmp_path, calls):
    flow = _silent_flow(silent_server, tmp_path, calls)
    with pytest.warns(lf.CacheWarning) as caught:
        run = flow.run("total", n=100)
    assert run.status == "completed" and run["total"] == 4950.0
    assert calls == {"raw": 1, "total": 1}
    (warning,) = caught
    assert "s3://silent/lf" in str(warning.message)
    assert "(read metadata) within 0.5 s" in str(warning.message)


@pytest.mark.timeout(120)
def test_a_remote_past_its_deadline_is_not_contacted_again_in_that_run(
        silent_server, tmp_path, calls):
    flow = _silent_flow(silent_server, tmp_path, calls)
    with pytest.warns(lf.CacheWarning):
        flow.run("total", n=100)  # lookups of two nodes, two records, two uploads
    assert silent_server.settled(1) == 1


@pytest.mark.timeout(120)
def test_a_later_run_tries_the_remote_again(silent_server, tmp_path, calls):
    flow = _silent_flow(silent_server, tmp_path, calls)
    with pytest.warns(lf.CacheWarning):
        flow.run("total", n=100)
    with pytest.warns(lf.CacheWarning) as caught:
        run = flow.run("total", n=200)  # a miss on disk: the remote is asked again
    assert run["total"] == 19900.0 and len(caught) == 1
    assert silent_server.settled(2) == 2


@pytest.mark.timeout(120)
def test_a_background_upload_past_its_deadline_warns_once_when_flushed(silent_server):
    tier = RemoteTier("s3://silent/lf", _silent_options(silent_server))
    tier.put(KEY, list(range(10)), {"digest": "d"})
    tier.put("cd" * 16, NO_VALUE, {"digest": "e"})
    with pytest.warns(lf.CacheWarning) as caught:
        tier.flush()
    (warning,) = caught
    assert "(upload" in str(warning.message) and "within 0.5 s" in str(warning.message)
    assert tier.outage is not None


@pytest.mark.timeout(120)
def test_an_offline_tier_fails_fast_without_contacting_the_remote(silent_server):
    tier = RemoteTier("s3://silent/lf", _silent_options(silent_server), background=False)
    with pytest.warns(lf.CacheWarning), pytest.raises(TierOfflineError):
        tier.meta(KEY)
    for operation in (lambda: tier.meta(KEY), lambda: tier.put(KEY, 1, {"digest": "d"}),
                      lambda: tier.get(KEY), lambda: list(tier.keys())):
        with pytest.raises(TierOfflineError, match="offline for the rest of this run"):
            operation()
    assert silent_server.settled(1) == 1  # the first call only


# --------------------------------------------------------------------------- a hung mount


@contextlib.contextmanager
def _hung(paths: list[str]) -> Iterator[None]:
    """Replace each file by a FIFO nobody writes to: opening it blocks, as on a hung mount.

    On exit each FIFO gets a writer that closes at once, so blocked readers see an end of file
    and their (abandoned) threads finish.
    """
    for path in paths:
        os.unlink(path)
        os.mkfifo(path)
    try:
        yield
    finally:
        for path in paths:
            with contextlib.suppress(OSError):  # ENXIO: no reader is blocked on this one
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.timeout(120)
def test_a_hung_mount_is_skipped_after_one_deadline(tmp_path, calls):
    def flow(disk: str | None) -> lf.Flow:
        cache = lf.Cache(memory=None, disk=disk, remote=f"file://{tmp_path / 'mount'}",
                         remote_options={"lazyflow_timeout": DEADLINE})
        return define_array_chain(lf.Flow("mount", cache=cache), calls)

    flow(disk=None).get("total", n=100)
    metadata = [str(p) for p in (tmp_path / "mount").rglob("*.json")]
    with _hung(metadata), pytest.warns(lf.CacheWarning) as caught:
        value = flow(disk=str(tmp_path / "disk")).get("total", n=100)
    assert value == 4950.0 and calls == {"raw": 2, "total": 2}
    (warning,) = caught
    assert "(read metadata) within 0.5 s" in str(warning.message)


# --------------------------------------------------------------------------- cut-off uploads


class StalledMemoryFileSystem(MemoryFileSystem):
    """A memory filesystem whose puts of chosen objects wait until the test releases them."""

    protocol = "lazyflow-stalled"
    store: dict = {}  # fsspec's memory filesystem keeps its files as class state: its own
    pseudo_dirs = [""]
    stalls: str = ""  # "value" or "metadata": puts of those objects wait for ``release``
    release = threading.Event()
    landed = threading.Event()

    def pipe_file(self, path, value, *args, **kwargs):
        kind = "metadata" if path.endswith(".json") else "value"
        stalled = kind == self.stalls
        if stalled:
            self.release.wait(timeout=60)
        super().pipe_file(path, value, *args, **kwargs)
        if stalled:
            self.landed.set()


register_implementation(StalledMemoryFileSystem.protocol, StalledMemoryFileSystem, clobber=True)


@pytest.fixture
def stalled_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh root on the stalling filesystem; whatever stalls is released at teardown."""
    monkeypatch.setattr(StalledMemoryFileSystem, "release", threading.Event())
    monkeypatch.setattr(StalledMemoryFileSystem, "landed", threading.Event())
    yield f"{StalledMemoryFileSystem.protocol}://{uuid.uuid4().hex}/lf"
    StalledMemoryFileSystem.release.set()


def _cut_off_put(url: str, stalls: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put a value whose upload of its ``stalls`` object ("value" or "metadata") passes its
    deadline, then let that upload land late, as on a slow remote."""
    monkeypatch.setattr(StalledMemoryFileSystem, "stalls", stalls)
    tier = RemoteTier(url, {"lazyflow_timeout": DEADLINE}, background=False)
    with pytest.warns(lf.CacheWarning), pytest.raises(TierOfflineError):
        tier.put(KEY, list(range(5000)), {"digest": "d"})  # 10 KB flat, > 4 KiB: a content object
    StalledMemoryFileSystem.release.set()
    assert StalledMemoryFileSystem.landed.wait(timeout=60)


def test_a_value_upload_cut_off_at_its_deadline_leaves_no_entry(stalled_url, monkeypatch):
    _cut_off_put(stalled_url, "value", monkeypatch)
    reader = RemoteTier(stalled_url, background=False)  # another process, or the next run
    assert reader.meta(KEY) is None
    assert reader.remove_orphans() == 1  # the value that landed late, which prune removes


def test_a_metadata_upload_that_lands_after_its_deadline_reads_back_right(stalled_url,
                                                                           monkeypatch):
    _cut_off_put(stalled_url, "metadata", monkeypatch)
    reader = RemoteTier(stalled_url, background=False)
    assert reader.get(KEY) == list(range(5000))


# --------------------------------------------------------------------------- configuration


def test_the_deadline_defaults_to_ten_seconds():
    assert RemoteTier("memory://lf-default-deadline").timeout == 10.0


def test_the_deadline_option_is_lazyflows_and_never_reaches_fsspec():
    options = {"lazyflow_timeout": 2, "endpoint_url": "http://127.0.0.1:9", "key": "k",
               "secret": "s"}  # s3fs would fail its first call on an unknown option
    tier = RemoteTier("s3://bucket/lf", options)  # contacts nothing yet
    assert tier.timeout == 2.0
    assert "lazyflow_timeout" not in tier.fs.storage_options
    assert tier.options["lazyflow_timeout"] == 2  # kept for workers that reopen the tier


def test_the_deadline_can_be_set_in_lazyflow_toml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lazyflow.toml").write_text(
        'remote = "memory://lf-toml-deadline"\n[remote_options]\nlazyflow_timeout = 3\n')
    assert lf.Cache(memory=None, disk=None).tier("remote").timeout == 3.0


@pytest.mark.parametrize("bad", [0, -1, "soon", True, float("nan")])
def test_a_deadline_that_is_not_a_positive_number_says_what_to_write(bad):
    with pytest.raises(ConfigError, match=r"remote_options\['lazyflow_timeout'\] must be a "
                                          r"positive number of seconds, such as 5"):
        RemoteTier("memory://lf-bad-deadline", {"lazyflow_timeout": bad})


# --------------------------------------------------------------------------- shared-cache executors


class InlineSharingExecutor(PicklingExecutor):
    """Runs each task inline on a pickled copy, and says it shares the cache as Dask does:
    nodes become shared tasks that read inputs from and write results to the remote."""

    name = "inline-sharing"
    shares_cache = True


@pytest.mark.timeout(120)
def test_a_shared_cache_executor_runs_nodes_by_value_once_the_remote_is_offline(
        silent_server, tmp_path, calls):
    flow = _silent_flow(silent_server, tmp_path, calls)
    with pytest.warns(lf.CacheWarning) as caught:
        run = flow.run("total", n=100, executor=InlineSharingExecutor())
    assert run.status == "completed" and run["total"] == 4950.0 and len(caught) == 1
    assert silent_server.settled(1) == 1
