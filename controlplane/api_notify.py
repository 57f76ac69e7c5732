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

from typing import Any

from quart import Blueprint, g, request

from controlplane import audit
from controlplane.context import AppContext
from controlplane.httpjson import read_json
from controlplane.models import iso
from controlplane.notify import channels, outbox, store
from controlplane.notify.events import EVENTS
from controlplane.notify.notifier import send_test


def delivery_json(d: Any) -> dict[str, Any]:
    return {"id": d.id, "at": iso(d.at), "ok": d.ok, "attempt": d.attempt, "events": d.events,
            "batch": d.batch, "summary": d.summary, "error": d.error}  # fmt: skip


def blueprint(ctx: AppContext) -> Blueprint:
    bp = Blueprint("api_notify", __name__)
    db = ctx.db

    @bp.before_request
    async def _admin_only() -> None:
        await audit.authenticate_admin(db)

    @bp.get("/events")
    async def list_events() -> dict[str, Any]:
        return {"events": [{"name": k, "description": v} for k, v in EVENTS.items() if k != "test"]}

    @bp.get("/channels")
    async def list_channels() -> dict[str, Any]:
        rows = await store.list_channels(db, request.args.get("stack") or None)
        return {"channels": [channels.channel_json(r) for r in rows]}

    @bp.post("/channels")
    async def create_channel() -> tuple[dict[str, Any], int, dict[str, str]]:
        spec = channels.parse_channel(await read_json(), creating=True)
        row = await store.create(db, spec, ctx.keyring)
        await audit.record_request(
            db, "channel.create", stack_id=row.stack_id, target=row.id,
            detail={"name": row.name, "kind": row.kind},
        )  # fmt: skip
        return (
            channels.channel_json(row),
            201,
            {"Location": f"/api/v1/notifications/channels/{row.id}"},
        )

    @bp.get("/channels/<channel_id>")
    async def get_channel(channel_id: str) -> dict[str, Any]:
        return channels.channel_json(await store.get(db, channel_id))

    @bp.put("/channels/<channel_id>")
    async def replace_channel(channel_id: str) -> dict[str, Any]:
        found = await store.get(db, channel_id)
        spec = channels.parse_channel(await read_json(), creating=False)
        row = await store.update(db, found.id, spec, ctx.keyring)
        await audit.record_request(
            db, "channel.update", stack_id=row.stack_id, target=row.id,
            detail={"name": row.name, "kind": row.kind, "enabled": row.enabled},
        )  # fmt: skip
        return channels.channel_json(row)

    @bp.delete("/channels/<channel_id>")
    async def delete_channel(channel_id: str) -> tuple[str, int]:
        row = await store.delete(db, channel_id)
        await audit.record_request(
            db, "channel.delete", stack_id=row.stack_id, target=row.id,
            detail={"name": row.name, "kind": row.kind},
        )  # fmt: skip
        return "", 204

    @bp.post("/channels/<channel_id>/test")
    async def test_channel(channel_id: str) -> tuple[dict[str, Any], int]:
        row = await store.get(db, channel_id)
        actor = g.get("audit_actor")
        key = await send_test(db, row.id, ctx.notifier, str(actor or "admin"))
        return {"queued": True, "key": key}, 202

    @bp.get("/channels/<channel_id>/deliveries")
    async def list_deliveries(channel_id: str) -> dict[str, Any]:
        row = await store.get(db, channel_id)
        # the backlog first: a send's state and its delivery row commit together, so the
        # log read after it holds every delivery the backlog already counts
        backlog = await outbox.backlog(db, row.id)
        rows = await outbox.deliveries(db, row.id)
        return {"deliveries": [delivery_json(d) for d in rows], "backlog": backlog}

    return bp
