"""The web dashboard: server-rendered pages and live updates over SSE.

`blueprint(ctx)` returns one blueprint with the pages (`/`, `/login`, `/stacks/...`) and
the live stream (`/live`). (The agents' `POST /api/v1/agent/logs` is in `api_agent.py`.) The per-process state
(`Dashboard`: the live hub, and the login throttle whose counts are in the database) is
created here and handed to each part; the hub stops with the app.

Every page but `/login` needs a session (`auth.require_login`, run before each request);
every POST must carry the session's CSRF token. The parts, by subject: `pages_stacks`
(list, overview, edit, versions and rollback), `pages_instances` (instances, service
detail, install tokens), `pages_events` (timeline), `pages_changes` (audit trail, version
diffs), `pages_notify` (notification channels, delivery log, send test), `stream` (SSE).
"""

from quart import Blueprint

from controlplane.context import AppContext
from controlplane.dashboard import (
    auth,
    pages_changes,
    pages_events,
    pages_instances,
    pages_metrics,
    pages_notify,
    pages_stacks,
    stream,
)
from controlplane.dashboard.common import Dashboard
from controlplane.dashboard.live import LiveHub
from controlplane.dashboard.login_failures import LoginThrottle
from controlplane.dashboard.throttle import LOGIN_POLICIES


def blueprint(ctx: AppContext) -> Blueprint:
    dash = Dashboard(
        ctx,
        LiveHub(ctx.db, heartbeat_interval_s=ctx.settings.heartbeat_interval_s),
        LoginThrottle(ctx.db, policies=LOGIN_POLICIES),
    )
    bp = Blueprint("dashboard", __name__)
    auth.register(bp, dash)
    pages_stacks.register(bp, dash)
    pages_instances.register(bp, dash)
    pages_metrics.register(bp, dash)
    pages_events.register(bp, dash)
    pages_changes.register(bp, dash)
    pages_notify.register(bp, dash)
    stream.register(bp, dash)

    @bp.after_app_serving
    async def _stop_live() -> None:
        await dash.hub.stop()

    return bp


__all__ = ["Dashboard", "blueprint"]
