"""Metrics endpoints: agents post point batches, people read JSON series.

* `POST /api/v1/agent/metrics` (agent credential): `{"points": [...]}` as built by
  agent/metrics/batch.py; points of services the stack does not have are dropped and
  listed in the answer (`refused`), like events.
* `GET /api/v1/stacks/{id}/metrics?service=&instance=&from=&to=&step=` (admin token):
  `{"stack", "service", "instance", "from", "to", "step", "resolution", "points"}`.

* `GET /metrics` (scrape token or admin token): Prometheus text format (`prom.py`).

The rollup/retention task starts and stops with the server.
"""

import hmac
import os
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from quart import Blueprint, Response, g, request

from controlplane import audit, stacks, tokens
from controlplane.context import AppContext
from controlplane.metrics.intake import intake
from controlplane.metrics.points import series
from controlplane.metrics.prom import (
    CONTENT_TYPE,
    FleetCollector,
    OwnMetrics,
    exposition,
    fleet_builds,
    fleet_points,
    fleet_restarts,
)
from controlplane.metrics.query import parse_query
from controlplane.metrics.store import Rollups, read_points
from controlplane.routes import Routes

SCRAPE_TOKEN_ENV = "BERTH_METRICS_TOKEN"


routes = Routes()  # the agents' batches and people's series
scrape_routes = Routes()  # `GET /metrics`, bound with the app-wide request timer


def blueprint(ctx: AppContext) -> Blueprint:
    bp = Blueprint("metrics", __name__)
    rollups = Rollups(ctx.db)
    bp.before_app_serving(partial(_start_rollups, rollups))
    bp.after_app_serving(rollups.stop)
    routes.bind(bp, ctx)
    return bp


async def _start_rollups(rollups: Rollups) -> None:
    rollups.start()  # in the serving loop: it starts the rollup task there


@routes.post("/agent/metrics")
async def ingest(ctx: AppContext) -> dict[str, Any]:
    ident = await ctx.directory.authenticate(tokens.bearer(request.headers.get("Authorization")))
    # the same function answers it on the agents' fast path (controlplane/agentfastpath.py)
    raw = await request.get_data(as_text=False)
    assert isinstance(raw, bytes)
    return await intake(ctx.metric_writes, ctx.directory, ident, raw)


@routes.get("/stacks/<stack_id>/metrics")
async def read(ctx: AppContext, stack_id: str) -> dict[str, Any]:
    await audit.authenticate_admin(ctx.db)
    await stacks.get(ctx.db, stack_id)  # 404 for an unknown stack
    return await stack_series(ctx, stack_id, request.args)


@dataclass(frozen=True)
class Scrape:
    ctx: AppContext
    own: OwnMetrics  # every request of the app, timed by the blueprint's app-wide hooks


def scrape_blueprint(ctx: AppContext) -> Blueprint:
    """`GET /metrics`: the bearer token must be `BERTH_METRICS_TOKEN` (a scrape-only
    secret from the environment) or an admin token."""
    bp = Blueprint("metrics_scrape", __name__)
    scrape = Scrape(ctx, OwnMetrics())
    scrape.own.time_database(ctx.db)
    bp.before_app_request(_clock_in)
    bp.after_app_request(partial(_clock_out, scrape.own))
    scrape_routes.bind(bp, scrape)
    return bp


async def _clock_in() -> None:
    g.berth_t0 = time.perf_counter()


async def _clock_out(own: OwnMetrics, response: Response) -> Response:
    t0 = g.get("berth_t0")
    if t0 is not None:
        own.request_done(request.method, response.status_code, time.perf_counter() - t0)
    return response


@scrape_routes.get("/metrics")
async def scrape(s: Scrape) -> Response:
    offered = tokens.bearer(request.headers.get("Authorization"))
    scrape_token = os.environ.get(SCRAPE_TOKEN_ENV, "")
    if not (scrape_token and offered and hmac.compare_digest(offered, scrape_token)):
        await audit.authenticate_admin(s.ctx.db)
    now = time.time()
    collector = FleetCollector(
        await fleet_points(s.ctx.db, now),
        s.own,
        s.ctx.watcher.waiting,
        (s.ctx.heartbeats.batches, s.ctx.heartbeats.rows_written),
        await fleet_builds(s.ctx.db, now),
        await fleet_restarts(s.ctx.db),
    )
    return Response(exposition(collector), content_type=CONTENT_TYPE)


async def stack_series(ctx: AppContext, stack_id: str, args: Any) -> dict[str, Any]:
    """The JSON answer of the series endpoint (also used by the dashboard)."""
    q = parse_query(args, time.time())
    points = await read_points(ctx.db, stack_id, q.service, q.res, q.t_from, q.t_to, q.instance)
    return {
        "stack": stack_id,
        "service": q.service,
        "instance": q.instance,
        "from": q.t_from,
        "to": q.t_to,
        "step": q.step,
        "resolution": q.res,
        "points": series(points, q.step, q.service),
    }
