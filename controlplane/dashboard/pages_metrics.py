"""The Metrics tab: charts of one service (req/s, error rate, p50/p95 latency, CPU,
memory, build time and peak memory) or of the servers (CPU, memory, disk, load), over
the stack's servers or one, for the last hour, day or week; the per-service sparklines
of the overview; and the service page's charts of one server's service (the last hour)
with its recent builds.

The charts are server-side SVG (`charts.py`) inside the page's live region, so the
existing server-sent events refresh them: an agent's metrics batch is a change of its
stack (`live.py` watches the newest metric point), the page re-fetches the region.
"""

import time
from typing import Any

from markupsafe import Markup
from quart import Blueprint, request

from controlplane.dashboard.charts import Line, clock, fmt, line_chart, sparkline
from controlplane.dashboard.common import Dashboard, load_stack, render, stack_servers
from controlplane.errors import ApiError
from controlplane.metrics.api import stack_series
from controlplane.metrics.store import read_builds
from controlplane.routes import Routes

RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
SERVICE_CHARTS = (
    ("rps", "Requests per second", "", [Line("rps", "req/s", "a")]),
    ("errors", "Error rate", "%", [Line("error_pct", "5xx", "bad")]),
    ("latency", "Latency", "ms", [Line("p50_ms", "p50", "a"), Line("p95_ms", "p95", "b")]),
    ("cpu", "CPU (cores)", "", [Line("cpu", "cores", "a")]),
    ("memory", "Memory", "bytes", [Line("mem", "RSS", "a")]),
)
BUILD_CHARTS = (
    ("build-time", "Build time", "s", [Line("build_s", "per build", "a")]),
    ("build-memory", "Build peak memory", "bytes", [Line("build_rss", "peak", "b")]),
)
BUILDS_SHOWN = 10
SERVER_CHARTS = (
    ("cpu", "CPU", "%", [Line("cpu_pct", "busy", "a")]),
    ("memory", "Memory", "bytes", [Line("mem", "used", "a"), Line("mem_total", "total", "b")]),
    ("disk", "Disk (state directory)", "bytes",
     [Line("disk_used", "used", "a"), Line("disk_total", "size", "b")]),
    ("load", "Load (1 min)", "", [Line("load1", "load", "a")]),
)  # fmt: skip


def _charts(body: dict[str, Any], server: bool) -> list[Markup]:
    points = body["points"]
    for p in points:
        p["error_pct"] = round(100 * p.get("error_rate", 0.0), 3)
    out = []
    for key, title, unit, lines in SERVER_CHARTS if server else SERVICE_CHARTS + BUILD_CHARTS:
        out.append(
            line_chart(f"chart-{key}", title, unit, lines, points, body["from"], body["to"],
                       body["step"])
        )  # fmt: skip
    return out


async def sparklines(dash: Dashboard, stack_id: str, services: list[str]) -> dict[str, Markup]:
    """req/s over the last hour, per service (the overview's sparklines)."""
    out = {}
    for name in services:
        body = await stack_series(dash.ctx, stack_id, {"service": name})
        out[name] = sparkline(f"{name} req/s", body["points"], "rps", body["from"], body["to"],
                              body["step"])  # fmt: skip
    return out


async def service_metrics(
    dash: Dashboard, stack_id: str, instance_id: str, service: str
) -> dict[str, Any]:
    """The service page's charts (this server, the last hour) and its latest builds."""
    now = int(time.time())
    args = {"service": service, "instance": instance_id, "from": str(now - 3600),
            "to": str(now)}  # fmt: skip
    body = await stack_series(dash.ctx, stack_id, args)
    found = await read_builds(dash.ctx.db, now - RANGES["7d"], now, stack_id, service, instance_id)
    builds = [
        {"t": p.t, "at": clock(p.t), "count": p.builds, "seconds": fmt(p.build_s / p.builds, "s"),
         "peak": fmt(p.build_rss, "bytes")}
        for _, _, p in reversed(found[-BUILDS_SHOWN:])
    ]  # fmt: skip
    return {"charts": _charts(body, server=False)[: len(SERVICE_CHARTS)], "builds": builds}


routes = Routes()


def register(bp: Blueprint, dash: Dashboard) -> None:
    routes.bind(bp, dash)


@routes.get("/stacks/<stack_id>/metrics")
async def metrics(dash: Dashboard, stack_id: str) -> tuple[str, int]:
    stack = await load_stack(dash, stack_id)
    services = [s["name"] for s in stack.document["services"]]
    servers = await stack_servers(dash, stack_id, live_only=True)
    service = request.args.get("service", "")
    if service not in services:
        service = ""
    instance = request.args.get("instance", "")
    if instance not in {i for i, _ in servers}:
        instance = ""
    span = request.args.get("range", "1h")
    if span not in RANGES:
        span = "1h"
    now = int(time.time())
    args = {"service": service, "instance": instance, "from": str(now - RANGES[span]),
            "to": str(now)}  # fmt: skip
    try:
        body = await stack_series(dash.ctx, stack_id, args)
        charts, error = _charts(body, server=not service), None
    except ApiError as exc:
        charts, error, body = [], exc.detail, {}
    query = {"service": service, "instance": instance, "range": span}
    return await render(
        "dashboard/metrics.html",
        stack=stack,
        doc=stack.document,
        services=services,
        servers=servers,
        query=query,
        ranges=list(RANGES),
        charts=charts,
        chart_error=error,
        series=body,
        partials={"live": "dashboard/_metrics_live.html"},
        live_stack=stack.id,
        tab="metrics",
    )
