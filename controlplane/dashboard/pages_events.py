"""The event timeline of a stack: newest first, filtered by instance, service and type,
paged with the `seq` cursor of `status.list_events` (?before=SEQ)."""

from quart import Blueprint, request
from sqlalchemy import select

from controlplane import status
from controlplane.dashboard.common import Dashboard, load_stack, render, stack_servers
from controlplane.errors import ApiError
from controlplane.models import Event
from controlplane.routes import Routes

PAGE_SIZE = 50


routes = Routes()


def register(bp: Blueprint, dash: Dashboard) -> None:
    routes.bind(bp, dash)


@routes.get("/stacks/<stack_id>/events")
async def events(dash: Dashboard, stack_id: str) -> tuple[str, int]:
    stack = await load_stack(dash, stack_id)
    args = {k: v for k, v in request.args.items() if k in ("instance", "service", "type", "before")}
    error = None
    try:
        query = status.parse_event_query({**args, "limit": str(PAGE_SIZE)})
    except ApiError as exc:
        error, query = f"{exc.field}: {exc.detail}", status.EventQuery(limit=PAGE_SIZE)
    page = await status.list_events(dash.ctx.db, stack_id, query)
    hosts = dict(await stack_servers(dash, stack_id))
    async with dash.ctx.db.read() as session:
        types = sorted(
            await session.scalars(select(Event.type).where(Event.stack_id == stack_id).distinct())
        )
    services = sorted({s["name"] for s in stack.document["services"]})
    filters = {k: v for k, v in args.items() if k != "before" and v}
    return await render(
        "dashboard/events.html",
        400 if error else 200,
        stack=stack,
        events=page["events"],
        next_before=page["next_before"],
        first_page=query.before is None,
        hostnames=hosts,
        services=services,
        types=types,
        filters=filters,
        error=error,
        partials={"live": "dashboard/_events_live.html"},
        live_stack=stack.id,
        tab="events",
    )
