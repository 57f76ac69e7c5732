"""Issue 19, the dashboard: traffic through a real proxy becomes chart points.

A real external proxy counts the requests, pushes its snapshots over the agent's bus to
the reconciler's real shipping loop (`agent/reconciler/metricsship.py`, every 4 s
here: under the per-instance limit), which posts them to the control plane; the Metrics
tab and the overview's sparklines then show them, updated over server-sent events without a reload.
A build recorded in the loop's build log reaches the service page's builds table. The
24 h and 7 d ranges read one-minute and hourly rollups, written here from points of 3 h
and 3 days ago with the control plane's own rollup functions. Screenshots at 1280 and
390 px, light and dark; at 390 px nothing is wider than the screen.
(`test_flow.py` runs a whole agent; here the reconciler's other loops add nothing.)"""

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from agent.bus.endpoints import BusEndpoints
from agent.bus.messages import Route
from agent.metrics.builds import BuildLog, FinishedBuild
from agent.reconciler.cpclient import ControlPlaneClient
from agent.reconciler.metricsship import ship_metrics
from agent.reconciler.store import Store
from controlplane.db import Database
from controlplane.dburl import parse_db_url
from controlplane.metrics.points import HOUR, MINUTE, Point, rollup
from controlplane.metrics.store import row_of
from controlplane.models import MetricPoint
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

    def __init__(self, state: Path, base_url: str, credential: str, builds: BuildLog) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.store = Store(state / "agent.sqlite3")
        client = ControlPlaneClient(base_url, credential)

        async def ready() -> ControlPlaneClient:
            return client

        async def start() -> "asyncio.Task[None]":
            return asyncio.create_task(
                ship_metrics(
                    BusEndpoints(state / "run"), self.store, state, ready, 4.0, builds=builds
                ),
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
    builds = BuildLog()
    builds.record(FinishedBuild("web", 12.5, 150 << 20, ok=True))
    shipper = Shipper(state, server.url, agent.credential, builds)
    proxy = ProxyProcess(state, "proxy", config=FAST)
    try:
        routes = [Route("api", api_backend.port, "/api"), Route("web", web_backend.port, "/")]
        route_to(bus, proxy, routes, "/api/probe", "api")  # probes count for api only
        yield {"stack": stack, "agent": agent, "proxy": proxy, "builds": builds,
               "shipper": shipper}  # fmt: skip
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


def fits(page: Any, width: int) -> None:
    """Nothing on the page is wider than a `width` px screen (no sideways scrolling)."""
    page.set_viewport_size({"width": width, "height": 860})
    wide = page.evaluate("document.documentElement.scrollWidth")  # (reading it lays out)
    culprits = page.evaluate(
        """w => [...document.querySelectorAll('body *')]
               .filter(e => e.getBoundingClientRect().right > w)
               .slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className)""",
        width,
    )
    assert wide <= width, f"{page.url} is {wide} px wide at {width} px: {culprits}"
    page.set_viewport_size({"width": 1280, "height": 860})


def snap_both_schemes(page: Any, name: str) -> None:
    """Screenshots at 1280 and 390 px, light and dark; readable at 390 px."""
    fits(page, 390)
    snap(page, name)
    page.emulate_media(color_scheme="dark")
    snap(page, f"{name}-dark")
    page.emulate_media(color_scheme="light")


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
    snap_both_schemes(page, "metrics-service")

    # the servers' own figures come from /proc through the same loop
    page.goto(f"{server.url}/stacks/{stack_id}/metrics")
    expect(page.locator("#chart-cpu tr[data-t]").first).to_be_attached(timeout=15000)
    assert_accessible(page)
    snap_both_schemes(page, "metrics-servers")

    # the overview's sparkline for web has points
    page.goto(f"{server.url}/stacks/{stack_id}")
    spark = page.locator('[data-spark="web"] svg')
    expect(spark).to_be_visible()
    assert float(spark.get_attribute("data-latest") or 0) > 0
    # drawn in a colour: its stroke comes from a variable that must reach the overview
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for part in ("chart-line", "chart-dot"):
            stroke = page.evaluate(  # one script: the live region may be swapped meanwhile
                "sel => getComputedStyle(document.querySelector(sel)).stroke",
                f'[data-spark="web"] svg path.{part}',
            )
            assert stroke.startswith("rgb"), (scheme, part, stroke)
    page.emulate_media(color_scheme="light")
    snap(page, "overview-sparklines")


def test_service_page_shows_its_charts_and_builds(
    context: Any, server: Server, traffic: dict[str, Any]
) -> None:
    stack_id, agent = traffic["stack"]["id"], traffic["agent"]
    page = context.new_page()
    log_in(page, server.url)
    page.goto(f"{server.url}/stacks/{stack_id}/metrics?service=web&range=1h")
    built = page.locator('#chart-build-time td[data-key="build_s"][data-value="12.5"]')
    expect(built).to_have_count(1, timeout=15000)  # recorded at start, shipped with a batch
    expect(page.locator('#chart-build-memory td[data-key="build_rss"]').first).to_be_attached()

    page.goto(f"{server.url}/stacks/{stack_id}/instances/{agent.instance_id}/services/web")
    expect(page.locator("#service-metrics #chart-rps")).to_be_visible()
    expect(page.locator("#service-metrics #chart-memory")).to_be_visible()
    rows = page.locator("#builds tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator('[data-key="build_s"]')).to_have_text("12.5 s")
    expect(rows.first.locator('[data-key="build_rss"]')).to_have_text("150.0 MiB")
    page.evaluate("window.__sameDocument = true")
    # another build finishes: the page shows it without a reload
    failed = FinishedBuild("web", 3.0, 40 << 20, ok=False)
    traffic["shipper"].loop.call_soon_threadsafe(traffic["builds"].record, failed)
    expect(rows).to_have_count(2, timeout=20000)
    expect(rows.first.locator('[data-key="build_s"]')).to_have_text("3.0 s")
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    assert_accessible(page)
    snap_both_schemes(page, "service-page-metrics")


def web_point(t: int, requests: int) -> tuple[str, Point]:
    lat = [0, requests] + [0] * 10
    return "", Point("web", t, 30.0, requests, 0, 10 * requests, 100 * requests, lat,
                     0.007 * requests, 1.0, 20 << 20)  # fmt: skip


def store_rollups(
    db_url: str, stack_id: str, instance_id: str, rows: dict[int, list[Point]]
) -> None:
    async def write() -> None:
        db = Database(parse_db_url(db_url))
        try:
            async with db.write() as session:
                for res, points in rows.items():
                    await session.execute(
                        MetricPoint.__table__.insert(),
                        [row_of(stack_id, instance_id, res, p) for p in points],
                    )
        finally:
            await db.close()

    # Playwright's sync API runs an event loop in this thread: asyncio.run elsewhere
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, write()).result(30)


def test_day_and_week_ranges_read_the_rollups(
    context: Any, server: Server, traffic: dict[str, Any]
) -> None:
    stack_id = traffic["stack"]["id"]
    other = FakeAgent(server, stack_id, "edge-2")  # a server of its own: no live traffic
    hour = int(time.time()) // 3600 * 3600
    hours_ago, days_ago = hour - 3 * 3600 + 600, hour - 3 * 86400 + 600
    raw = [web_point(hours_ago, 120), web_point(hours_ago + 30, 240), web_point(days_ago, 500)]
    minutes = rollup(raw, MINUTE)  # what the rollup task writes, with its own functions
    hours = rollup(minutes, HOUR)
    store_rollups(server.db_url, stack_id, other.instance_id, {
        MINUTE: [p for _, p in minutes if p.t > hour - 86400],  # a day of minutes is kept
        HOUR: [p for _, p in hours],
    })  # fmt: skip
    page = context.new_page()
    log_in(page, server.url)
    base = f"{server.url}/stacks/{stack_id}/metrics?service=web&instance={other.instance_id}"
    for span, step, sent in (("1h", 30, 0), ("24h", 720, 360), ("7d", 7200, 860)):
        page.goto(f"{base}&range={span}")
        expect(page.locator("#metrics-summary")).to_contain_text(f"every {step} s")
        assert chart_requests(page, "chart-rps") == sent, span
    # the week's chart: 3 days ago and 3 hours ago, each in its own 2-hour bucket
    values = page.locator('#chart-rps td[data-key="rps"]').evaluate_all(
        "cells => cells.map(c => Number(c.getAttribute('data-value')))"
    )
    assert len(values) == 2 and values[1] == round(360 / 60, 4)
    assert_accessible(page)
    snap_both_schemes(page, "metrics-week")
