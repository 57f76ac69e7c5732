"""Notification channels (admin API), global or for one stack.

    GET    /api/v1/notifications/channels[?stack=ID]
    POST   /api/v1/notifications/channels
    GET    /api/v1/notifications/channels/{id}
    PUT    /api/v1/notifications/channels/{id}
    DELETE /api/v1/notifications/channels/{id}
    POST   /api/v1/notifications/channels/{id}/test
    GET    /api/v1/notifications/channels/{id}/deliveries
    GET    /api/v1/notifications/events

Changes are recorded in the audit trail (`channel.*`). Channel logic is in
`controlplane.notify.channels` / `store`; this module only translates HTTP.
"""

from functools import partial
from typing import Any

from quart import Blueprint, g, request

from controlplane import audit
from controlplane.context import AppContext
from controlplane.httpjson import read_json
from controlplane.models import iso
from controlplane.notify import channels, outbox, store
from controlplane.notify.events import EVENTS
from controlplane.notify.notifier import send_test
from controlplane.routes import Routes


def delivery_json(d: Any) -> dict[str, Any]:
    return {"id": d.id, "at": iso(d.at), "ok": d.ok, "attempt": d.attempt, "events": d.events,
            "batch": d.batch, "summary": d.summary, "error": d.error}  # fmt: skip


routes = Routes()


def blueprint(ctx: AppContext) -> Blueprint:
    bp = Blueprint("api_notify", __name__)
    bp.before_request(partial(_admin_only, ctx))
    routes.bind(bp, ctx)
    return bp


async def _admin_only(ctx: AppContext) -> None:
    await audit.authenticate_admin(ctx.db)


@routes.get("/events")
async def list_events(ctx: AppContext) -> dict[str, Any]:
    return {"events": [{"name": k, "description": v} for k, v in EVENTS.items() if k != "test"]}


@routes.get("/channels")
async def list_channels(ctx: AppContext) -> dict[str, Any]:
    rows = await store.list_channels(ctx.db, request.args.get("stack") or None)
    return {"channels": [channels.channel_json(r) for r in rows]}


@routes.post("/channels")
async def create_channel(ctx: AppContext) -> tuple[dict[str, Any], int, dict[str, str]]:
    spec = channels.parse_channel(await read_json(), creating=True)
    row = await store.create(ctx.db, spec, ctx.keyring)
    await audit.record_request(
        ctx.db, "channel.create", stack_id=row.stack_id, target=row.id,
        detail={"name": row.name, "kind": row.kind},
    )  # fmt: skip
    return (
        channels.channel_json(row),
        201,
        {"Location": f"/api/v1/notifications/channels/{row.id}"},
    )


@routes.get("/channels/<channel_id>")
async def get_channel(ctx: AppContext, channel_id: str) -> dict[str, Any]:
    return channels.channel_json(await store.get(ctx.db, channel_id))


@routes.put("/channels/<channel_id>")
async def replace_channel(ctx: AppContext, channel_id: str) -> dict[str, Any]:
    found = await store.get(ctx.db, channel_id)
    spec = channels.parse_channel(await read_json(), creating=False)
    row = await store.update(ctx.db, found.id, spec, ctx.keyring)
    await audit.record_request(
        ctx.db, "channel.update", stack_id=row.stack_id, target=row.id,
        detail={"name": row.name, "kind": row.kind, "enabled": row.enabled},
    )  # fmt: skip
    return channels.channel_json(row)


@routes.delete("/channels/<channel_id>")
async def delete_channel(ctx: AppContext, channel_id: str) -> tuple[str, int]:
    row = await store.delete(ctx.db, channel_id)
    await audit.record_request(
        ctx.db, "channel.delete", stack_id=row.stack_id, target=row.id,
        detail={"name": row.name, "kind": row.kind},
    )  # fmt: skip
    return "", 204


@routes.post("/channels/<channel_id>/test")
async def test_channel(ctx: AppContext, channel_id: str) -> tuple[dict[str, Any], int]:
    row = await store.get(ctx.db, channel_id)
    actor = g.get("audit_actor")
    key = await send_test(ctx.db, row.id, ctx.notifier, str(actor or "admin"))
    return {"queued": True, "key": key}, 202


@routes.get("/channels/<channel_id>/deliveries")
async def list_deliveries(ctx: AppContext, channel_id: str) -> dict[str, Any]:
    row = await store.get(ctx.db, channel_id)
    # the backlog first: a send's state and its delivery row commit together, so the
    # log read after it holds every delivery the backlog already counts
    backlog = await outbox.backlog(ctx.db, row.id)
    rows = await outbox.deliveries(ctx.db, row.id)
    return {"deliveries": [delivery_json(d) for d in rows], "backlog": backlog}
