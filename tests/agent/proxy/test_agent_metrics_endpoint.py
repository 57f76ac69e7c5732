"""The agent's own /metrics on loopback (`--metrics-bind`): real proxies' counters (the
external and the internal one, each under its own label) through the bus to the
reconciler's metrics loop, scraped and parsed with prometheus_client's parser."""

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from agent.bus.endpoints import BusEndpoints
from agent.bus.messages import Route
from agent.reconciler.metricsship import ship_metrics
from agent.reconciler.store import Store
from agent.settings import check_loopback
from tests.agent.proxy.conftest import FAST, route_to
from tests.agent.proxy.harness import Backend, BusPublisher, ProxyProcess
from tests.support.ports import free_port
from tests.support.prom import Samples, parse_samples


@pytest.fixture(scope="module")
def endpoint(state_dir: Path, bus: BusPublisher) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    store = Store(state_dir / "agent.sqlite3")
    bind = f"127.0.0.1:{free_port()}"

    async def start() -> "asyncio.Task[None]":
        return asyncio.create_task(
            ship_metrics(BusEndpoints(state_dir / "run"), store, state_dir, None, serve_on=bind)
        )

    task = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    sock = state_dir / "run" / "bus-metrics.sock"
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.chmod(sock, 0o666)  # the proxy runs as an unprivileged user
    yield f"http://{bind}/metrics"

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    store.close()


def samples(url: str) -> Samples:
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    return parse_samples(resp.text)


def test_scrape_counts_the_traffic(
    endpoint: str, state_dir: Path, bus: BusPublisher, backend_a: Backend, backend_b: Backend
) -> None:
    proxy = ProxyProcess(state_dir, "proxy", config=FAST)
    try:
        route_to(bus, proxy, [Route("a", backend_a.port, "/a"), Route("b", backend_b.port, "/b")],
                 "/a/probe", "a")  # fmt: skip
        with requests.Session() as s:
            for i in range(60):
                assert s.get(f"http://127.0.0.1:{proxy.port}/b/{i}").status_code == 200
        key = (
            "berth_proxy_requests_total",
            (("code", "2xx"), ("proxy", "external"), ("service", "b")),
        )
        deadline = time.monotonic() + 15
        got = samples(endpoint)
        while got.get(key) != 60 and time.monotonic() < deadline:
            time.sleep(0.2)
            got = samples(endpoint)
        assert got.get(key) == 60
        inf = (
            "berth_proxy_request_seconds_bucket",
            (("le", "+Inf"), ("proxy", "external"), ("service", "b")),
        )
        assert got[inf] == 60
        assert got[("berth_server_memory_total_bytes", ())] > 0
        assert requests.get(endpoint.replace("/metrics", "/other"), timeout=5).status_code == 404
    finally:
        proxy.stop()


def test_metrics_bind_must_be_loopback() -> None:
    check_loopback("127.0.0.1:9101", "--metrics-bind")
    check_loopback("[::1]:9101", "--metrics-bind")
    for bad in ("0.0.0.0:9101", "10.0.0.5:9101", "example.com:9101"):
        with pytest.raises(ValueError, match="--metrics-bind must be a loopback address"):
            check_loopback(bad, "--metrics-bind")


def test_the_internal_proxys_traffic_is_counted_as_its_own(
    endpoint: str, state_dir: Path, bus: BusPublisher, backend_a: Backend, backend_b: Backend
) -> None:
    internal = ProxyProcess(state_dir, "internal-proxy", config=FAST)
    try:
        bus.publish([Route("a", backend_a.port, "/a"), Route("b", backend_b.port, "/b")])
        url = f"http://127.0.0.1:{internal.port}/x"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # probes go to "a": "b" counts only what follows
            if requests.get(url, headers={"Host": "a.svc.internal"}, timeout=2).ok:
                break
            time.sleep(0.05)
        with requests.Session() as s:
            for _ in range(40):
                r = s.get(url, headers={"Host": "b.svc.internal"}, timeout=5)
                assert r.headers["X-Backend"] == "b"
        key = (
            "berth_proxy_requests_total",
            (("code", "2xx"), ("proxy", "internal"), ("service", "b")),
        )
        deadline = time.monotonic() + 15
        got = samples(endpoint)
        while got.get(key) != 40 and time.monotonic() < deadline:
            time.sleep(0.2)
            got = samples(endpoint)
        assert got.get(key) == 40
        external_b = ("berth_proxy_requests_total",
                      (("code", "2xx"), ("proxy", "external"), ("service", "b")))  # fmt: skip
        assert got.get(external_b) in (None, 60)  # the external proxy's own, if it ran before
    finally:
        internal.stop()
