"""Per-route counters through a real proxy: traffic in, a snapshot on the bus out."""

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import zmq.asyncio

from agent.bus.endpoints import BusEndpoints
from agent.bus.messages import Route
from agent.bus.metrics import METRICS_INTERVAL_S, MetricsCollector, ProxyMetrics
from tests.agent.proxy.conftest import FAST, route_to
from tests.agent.proxy.harness import Backend, BusPublisher, ProxyProcess


class Collector:
    """The reconciler's end of the metrics socket, on its own event loop thread."""

    def __init__(self, run_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ctx = zmq.asyncio.Context()
        self.collector = MetricsCollector(BusEndpoints(run_dir), ctx=self.ctx)

        async def start() -> "asyncio.Task[None]":
            self.collector.bind()
            return asyncio.create_task(self.collector.run(), name="test-metrics")

        self.task = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        os.chmod(run_dir / "bus-metrics.sock", 0o666)  # the proxy runs as nobody

    def latest(self) -> ProxyMetrics | None:
        return self.collector.latest.get("external")

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.loop.call_soon_threadsafe(self.collector.close)
        time.sleep(0.1)
        self.ctx.term()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def collector(state_dir: Path, bus: BusPublisher) -> Iterator[Collector]:
    c = Collector(state_dir / "run")
    yield c
    c.close()


@pytest.fixture(scope="module")
def counted_proxy(
    state_dir: Path, bus: BusPublisher, collector: Collector
) -> Iterator[ProxyProcess]:
    p = ProxyProcess(state_dir, "proxy", config=FAST)
    yield p
    p.stop()


def test_snapshot_counts_the_traffic_sent(
    counted_proxy: ProxyProcess,
    bus: BusPublisher,
    backend_a: Backend,
    backend_b: Backend,
    collector: Collector,
) -> None:
    routes = [
        Route("a", backend_a.port, "/a"),  # the probe's: how many it took is not known
        Route("b", backend_b.port, "/b"),
        Route("down", None, "/down"),
    ]
    route_to(bus, counted_proxy, routes, "/a/probe", "a")
    base = f"http://127.0.0.1:{counted_proxy.port}"
    # probes answered 404 before the routes arrived count as unrouted: take a baseline
    # from a snapshot made after the probing
    probed = time.time()
    deadline = time.monotonic() + 3 * METRICS_INTERVAL_S
    while time.monotonic() < deadline:
        first = collector.latest()
        if first is not None and first.at > probed:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no snapshot after the probes")
    unrouted = first.routes[""].responses[4] if "" in first.routes else 0
    with requests.Session() as s:
        for i in range(150):
            assert s.get(f"{base}/b/{i}").status_code == 200
        for _ in range(20):
            assert s.get(f"{base}/down").status_code == 503
        for _ in range(10):
            assert s.get(f"{base}/nowhere").status_code == 404
    deadline = time.monotonic() + 3 * METRICS_INTERVAL_S
    snap = collector.latest()
    while time.monotonic() < deadline:
        snap = collector.latest()
        if snap and "b" in snap.routes and snap.routes["b"].requests >= 150:
            break
        time.sleep(0.1)
    assert snap is not None, "no snapshot arrived from the proxy"
    a = snap.routes["b"]
    assert a.responses[2] == a.requests == 150
    assert a.responses[5] == 0 and not a.errors
    assert a.bytes_out > 0 and a.bytes_in > 150 * len("GET /b/0 HTTP/1.1\r\n")
    assert sum(a.total.counts) == a.requests  # every request timed, in total
    assert sum(a.upstream.counts) == a.requests  # and to the backend's response head
    down = snap.routes["down"]
    assert down.responses[5] == 20 and down.errors == {"NoBackend": 20}
    assert sum(down.upstream.counts) == 0  # no backend answered
    assert snap.routes[""].responses[4] - unrouted == 10
    assert snap.routes[""].errors == {"NoRoute": unrouted + 10}
    assert a.in_flight == 0
