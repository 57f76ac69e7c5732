"""Issue 19, the dashboard: traffic through a real proxy becomes chart points.

A real external proxy counts the requests, pushes its snapshots over the agent's bus to
the reconciler's real shipping loop (`agent/reconciler/metricsship.py`, every 4 s
here: under the per-instance limit), which posts them to the control plane; the Metrics
tab and the overview's sparklines then show them, updated over server-sent events without a reload.
(`test_flow.py` runs a whole agent; here the reconciler's other loops add nothing.)"""

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from agent.bus.endpoints import BusEndpoints
from agent.bus.messages import Route
from agent.reconciler.cpclient import ControlPlaneClient
from agent.reconciler.metricsship import ship_metrics
from agent.reconciler.store import Store
from tests.agent.proxy.conftest import FAST, route_to
from tests.agent.proxy.harness import (
    Backend,
    BusPublisher,
    ProxyProcess,
    make_state_dir,
    remove_state_dir,
)
from tests.dashboard.a11y import assert_accessible
from tests.dashboard.conftest import FakeAgent, Server, log_in, snap
from tests.support.gitrepo import commit_files, init_repo

SENT = 400


class Shipper:
    """The reconciler's metrics loop on its own event loop thread."""

    def __init__(self, state: Path, base_url: str, credential: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.store = Store(state / "agent.sqlite3")
        client = ControlPlaneClient(base_url, credential)

        async def ready() -> ControlPlaneClient:
            return client

        async def start() -> "asyncio.Task[None]":
            return asyncio.create_task(
                ship_metrics(BusEndpoints(state / "run"), self.store, state, ready, 4.0),
                name="test-ship-metrics",
            )

        self.task = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        sock = state / "run" / "bus-metrics.sock"
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.chmod(sock, 0o666)  # the proxy runs as an unprivileged user

    def stop(self) -> None:
        async def cancel() -> None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.store.close()


@pytest.fixture(scope="module")
def traffic(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.controlplane.harness import stack_body

    repo = init_repo(tmp_path_factory.mktemp("git") / "charts")
    commit_files(repo, {"app.py": "print('v1')\n"}, "v1")
    stack = server.api.post("/stacks", json=stack_body("charts", repo)).json()
    agent = FakeAgent(server, stack["id"], "edge-1")
    state = make_state_dir()
    bus = BusPublisher(state / "run")
    api_backend, web_backend = Backend("api"), Backend("web")
    shipper = Shipper(state, server.url, agent.credential)
    proxy = ProxyProcess(state, "proxy", config=FAST)
    try:
        routes = [Route("api", api_backend.port, "/api"), Route("web", web_backend.port, "/")]
        route_to(bus, proxy, routes, "/api/probe", "api")  # probes count for api only
        yield {"stack": stack, "agent": agent, "proxy": proxy}
    finally:
        proxy.stop()
        shipper.stop()
        api_backend.kill()
        web_backend.kill()
        bus.close()
        remove_state_dir(state)


def chart_requests(page: Any, chart: str) -> int:
    values = page.locator(f"#{chart} tr[data-t]").evaluate_all(
        "rows => rows.map(r => Number(r.getAttribute('data-requests') || 0))"
    )
    return int(sum(values))


def test_charts_show_the_traffic_sent_and_update_live(
    context: Any, server: Server, traffic: dict[str, Any]
) -> None:
    stack_id = traffic["stack"]["id"]
    page = context.new_page()
    log_in(page, server.url)
    page.goto(f"{server.url}/stacks/{stack_id}/metrics?service=web&range=1h")
    expect(page.locator("#chart-rps")).to_be_visible()
    assert chart_requests(page, "chart-rps") == 0
    page.evaluate("window.__sameDocument = true")

    base = f"http://127.0.0.1:{traffic['proxy'].port}"
    with requests.Session() as s:
        for i in range(SENT):
            assert s.get(f"{base}/page/{i}", timeout=10).status_code == 200

    # the proxy snapshots every 5 s, the loop ships every 4 s, the page follows SSE
    deadline = time.monotonic() + 30
    shown = 0
    while time.monotonic() < deadline:
        shown = chart_requests(page, "chart-rps")
        if shown >= SENT:
            break
        page.wait_for_timeout(200)
    api = server.api.get(f"/stacks/{stack_id}/metrics", params={"service": "web"}).json()
    assert abs(shown - SENT) <= SENT * 0.01, f"chart shows {shown} of {SENT} requests; API: {api}"
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    latest_rps = page.locator('#chart-rps [data-latest="rps"]').inner_text()
    assert latest_rps != "—"
    lat = page.locator('#chart-latency tr[data-t] td[data-key="p95_ms"]').evaluate_all(
        "cells => cells.map(c => c.getAttribute('data-value')).filter(v => v)"
    )
    assert lat, "no latency points"
    assert_accessible(page)
    snap(page, "metrics-service")
    page.emulate_media(color_scheme="dark")
    snap(page, "metrics-service-dark")
    page.emulate_media(color_scheme="light")

    # the servers' own figures come from /proc through the same loop
    page.goto(f"{server.url}/stacks/{stack_id}/metrics")
    expect(page.locator("#chart-cpu tr[data-t]").first).to_be_attached(timeout=15000)
    assert_accessible(page)
    snap(page, "metrics-servers")

    # the overview's sparkline for web has points
    page.goto(f"{server.url}/stacks/{stack_id}")
    spark = page.locator('[data-spark="web"] svg')
    expect(spark).to_be_visible()
    assert float(spark.get_attribute("data-latest") or 0) > 0
    snap(page, "overview-sparklines")
