"""``async def`` nodes: awaited, concurrently, on every executor; ``await flow.aget``."""

from __future__ import annotations

import asyncio
import threading

import pytest

import lazyflow as lf


class Rendezvous:
    """Lets its waiters go only once all ``n`` are waiting at the same time: nodes that
    pass it were in flight together (run one after another, the first would time out)."""

    def __init__(self, n: int) -> None:
        self.n, self.arrived = n, 0
        self.all_here: asyncio.Event | None = None

    async def wait(self) -> None:
        if self.all_here is None:
            self.all_here = asyncio.Event()
        self.arrived += 1
        if self.arrived == self.n:
            self.all_here.set()
        await asyncio.wait_for(self.all_here.wait(), timeout=10)


lf.register_hasher(Rendezvous, lambda r: "rendezvous")


@pytest.fixture
def fan(flow, calls):
    """Twenty independent async nodes that can only finish together, and a sync sum."""
    together = Rendezvous(20)
    for i in range(20):
        async def fetch(i=i):
            calls["fetch"] += 1
            await together.wait()
            return i

        flow.node(name=f"fetch{i}")(fetch)
    flow.node(name="total", inputs={f"p{i}": f"fetch{i}" for i in range(20)})(
        _summing(20))
    return flow


def _summing(n):
    namespace: dict = {}
    exec(f"def total({', '.join(f'p{i}' for i in range(n))}):\n"
         f"    return {' + '.join(f'p{i}' for i in range(n))}\n", namespace)
    return namespace["total"]


def test_an_async_node_is_awaited_and_its_value_cached(flow, calls):
    @flow.node
    async def answer(prompt: str):
        calls["answer"] += 1
        await asyncio.sleep(0)
        return prompt.upper()

    assert flow.get("answer", prompt="hi") == "HI"
    assert flow.run("answer", prompt="hi").nodes["answer"].status == "cached"
    assert calls["answer"] == 1


def test_independent_async_nodes_wait_concurrently_under_the_default_executor(fan, calls):
    assert fan.get("total") == sum(range(20))
    assert calls["fetch"] == 20


def test_sync_and_async_nodes_mix(flow):
    @flow.node
    def n():
        return 3

    @flow.node
    async def doubled(n):
        return n * 2

    @flow.node
    def shown(doubled):
        return f"{doubled}!"

    assert flow.get("shown") == "6!"


def test_an_async_nodes_records_match_the_synchronous_path(flow):
    @flow.node
    async def answer():
        lf.report(tokens=3)
        return 1

    record = flow.run("answer").nodes["answer"]
    assert (record.status, record.metrics, record.attempts) == ("completed", {"tokens": 3}, 1)
    assert record.digest == lf.hash_value(1)


def test_an_async_node_is_retried_with_its_policy(flow):
    attempts = []

    @flow.node(retries=2, retry_delay=0)
    async def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("reset")
        return "ok"

    run = flow.run("flaky")
    assert run["flaky"] == "ok" and run.nodes["flaky"].attempts == 3


def test_an_async_node_past_its_timeout_is_cancelled(flow):
    cancelled = threading.Event()

    @flow.node(timeout=0.2)
    async def slow():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(lf.NodeTimeout):
        flow.get("slow")
    assert cancelled.wait(5)


def test_an_async_node_runs_inside_a_running_event_loop(flow):
    @flow.node
    async def answer():
        await asyncio.sleep(0)
        return 42

    async def notebook_cell():  # a Jupyter cell runs with the kernel's loop running
        return flow.get("answer")

    assert asyncio.run(notebook_cell()) == 42


def test_aget_lets_a_notebook_await_a_request_without_blocking_its_loop(flow):
    released = threading.Event()

    @flow.node
    def waits_for_the_notebook():
        return released.wait(timeout=10)  # only a task on the notebook's loop releases it

    async def notebook_cell():
        async def release_soon():
            await asyncio.sleep(0)
            released.set()

        releasing = asyncio.ensure_future(release_soon())
        value = await flow.aget("waits_for_the_notebook")
        await releasing
        return value

    assert asyncio.run(notebook_cell()) is True


def test_arun_returns_the_run(flow):
    @flow.node
    async def answer():
        return 1

    run = asyncio.run(flow.arun("answer"))
    assert run.nodes["answer"].status == "completed"


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_async_nodes_run_on_other_executors(flow, executor):
    @flow.node
    async def answer(n: int):
        await asyncio.sleep(0)
        return n + 1

    assert flow.get("answer", n=1, executor=executor) == 2


def test_an_async_map_node_awaits_its_elements_concurrently(flow):
    together = Rendezvous(10)

    @flow.node(map="items")
    async def fetch(items, together=together):
        await together.wait()
        return items * 2

    assert flow.get("fetch", items=list(range(10))) == [i * 2 for i in range(10)]


def test_in_an_ipython_shell_async_nodes_run_and_a_cell_can_await_a_request(shell):
    shell.run_cell("\n".join([
        "import asyncio, lazyflow as lf",
        "flow = lf.Flow('cells', cache=lf.Cache(disk=None))",
        "@flow.node",
        "async def answer(n: int):",
        "    await asyncio.sleep(0)",
        "    return n * 2",
    ])).raise_error()
    shell.run_cell("direct = flow.get('answer', n=2)").raise_error()
    shell.run_cell("awaited = await flow.aget('answer', n=3)").raise_error()  # top-level await
    assert (shell.user_ns["direct"], shell.user_ns["awaited"]) == (4, 6)


def test_the_documented_http_example_fetches_quotes_from_a_local_server(flow):
    import http.server
    import json

    import aiohttp  # installed with s3fs (aiobotocore), which the tests use

    class Prices(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = json.dumps({"symbol": self.path.strip("/"), "price": 100}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Prices)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        @flow.node(map="symbols", retries=2)
        async def quotes(symbols, base: str = base):
            async with aiohttp.ClientSession() as session, \
                    session.get(f"{base}/{symbols}") as response:
                response.raise_for_status()
                return (await response.json())["price"]

        assert flow.get("quotes", symbols=["AAPL", "MSFT", "NVDA"]) == [100, 100, 100]
    finally:
        server.shutdown()
