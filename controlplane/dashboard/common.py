"""What every dashboard page shares: the per-process `Dashboard`, the logged-in user of the
current request, rendering with the common template variables, and small lookups."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from quart import abort, g, render_template, request
from sqlalchemy import select

from controlplane.context import AppContext
from controlplane.dashboard.live import LiveHub
from controlplane.dashboard.login_failures import LoginThrottle
from controlplane.dashboard.users import LoggedIn
from controlplane.dashboard.views import ago, short
from controlplane.models import Instance, Stack, iso, utcnow


@dataclass
class Dashboard:
    ctx: AppContext
    hub: LiveHub
    throttle: LoginThrottle

    def public_url(self) -> str:
        return self.ctx.settings.public_url or request.host_url.rstrip("/")


def current_login() -> LoggedIn:
    login: LoggedIn | None = g.get("login")
    if login is None:  # require_login runs first; reaching here is a bug, not a user error
        abort(401)
    return login


def when(value: datetime | None, now: datetime | None = None) -> dict[str, str | None]:
    """A timestamp for templates: ISO (for <time datetime>), absolute and relative text."""
    return {
        "iso": iso(value),
        "abs": value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else None,
        "rel": ago(value, now or utcnow()),
    }


async def render(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
    """Render a page (or, with ?fragment=NAME, only that live region's partial)."""
    fragment = request.args.get("fragment")
    partials = context.pop("partials", {})
    if fragment:
        if fragment not in partials:
            abort(404)
        template = partials[fragment]
    login: LoggedIn | None = g.get("login")
    html = await render_template(
        template,
        login=login,
        csrf_token=login.csrf_token if login else g.get("login_csrf", ""),
        when=when,
        short=short,
        now=utcnow(),
        **context,
    )
    return html, status


async def load_stack(dash: Dashboard, stack_id: str) -> Stack:
    async with dash.ctx.db.read() as session:
        stack = await session.get(Stack, stack_id)
    if stack is None:
        abort(404)
    return stack


async def stack_servers(
    dash: Dashboard, stack_id: str, *, live_only: bool = False
) -> list[tuple[str, str]]:
    """(instance id, hostname) of the stack's servers, oldest first; `live_only` leaves
    out revoked ones (a filter offers them no more; past events still name them)."""
    query = select(Instance.id, Instance.hostname).where(Instance.stack_id == stack_id)
    if live_only:
        query = query.where(Instance.revoked_at.is_(None))
    async with dash.ctx.db.read() as session:
        return [(i, h) for i, h in await session.execute(query.order_by(Instance.created_at))]
