"""Notification pages: the channels (global and per stack) with a form to add one, and a
channel's page with its settings, delivery log, backlog, "Send test" and delete. Changes
go through `notify.channels` / `notify.store` exactly as the API's do and are audited."""

from typing import Any

from quart import Blueprint, abort, redirect, request
from quart.typing import ResponseReturnValue
from werkzeug.datastructures import MultiDict

from controlplane import audit, stacks
from controlplane.dashboard.common import Dashboard, current_login, render
from controlplane.errors import ApiError
from controlplane.notify import channels, outbox, store
from controlplane.notify.events import EVENTS
from controlplane.notify.notifier import send_test
from controlplane.routes import Routes

NOTICES = {
    "added": "Channel added. Send a test message to check it.",
    "tested": "Test message queued; it appears in the delivery log when sent.",
    "deleted": "Channel deleted.",
    "enabled": "Channel enabled.",
    "disabled": "Channel disabled: nothing is queued for it until it is enabled again.",
}
INT_FIELDS = ("rate_per_hour", "group_window_s", "smtp_port")


def body_from_form(form: "MultiDict[str, str]") -> dict[str, Any]:
    """The API body a channel form describes (blank fields left out, so defaults apply)."""
    body: dict[str, Any] = {"events": form.getlist("events")}
    for key in ("name", "kind", "url", "secret", "smtp_host", "from", "username", "password"):
        if form.get(key, "").strip():
            body[key] = form[key].strip() if key != "password" else form[key]
    for key in INT_FIELDS:
        raw = form.get(key, "").strip()
        if raw:
            body[key] = int(raw) if raw.isdigit() else raw
    if form.get("to", "").strip():
        body["to"] = [a.strip() for a in form["to"].split(",") if a.strip()]
    body["stack"] = form.get("stack") or None
    body["starttls"] = form.get("starttls") == "on" or form.get("kind") != "email"
    return body


routes = Routes()


def register(bp: Blueprint, dash: Dashboard) -> None:
    routes.bind(bp, dash)


async def channel_or_404(dash: Dashboard, channel_id: str) -> Any:
    try:
        return await store.get(dash.ctx.db, channel_id)
    except ApiError:
        abort(404)


async def list_page(dash: Dashboard, status: int = 200, **extra: Any) -> tuple[str, int]:
    rows = await store.list_channels(dash.ctx.db)
    all_stacks = await stacks.list_all(dash.ctx.db)
    return await render(
        "dashboard/notifications.html",
        status,
        channels=rows,
        stacks={s.id: s.name for s in all_stacks},
        events=[(k, v) for k, v in EVENTS.items() if k != "test"],
        kinds=channels.KINDS,
        notice=NOTICES.get(request.args.get("notice", "")),
        nav="notifications",
        **{"form": {}, "errors": {}, **extra},
    )


@routes.get("/notifications")
async def notifications(dash: Dashboard) -> tuple[str, int]:
    return await list_page(dash)


@routes.post("/notifications")
async def add_channel(dash: Dashboard) -> ResponseReturnValue:
    form = await request.form
    try:
        spec = channels.parse_channel(body_from_form(form), creating=True)
        row = await store.create(dash.ctx.db, spec, dash.ctx.keyring)
    except ApiError as exc:
        field = (exc.field or "name").split("[")[0]
        values = {k: form.get(k, "") for k in form if k != "password"}
        values["events"] = form.getlist("events")  # type: ignore[assignment]
        return await list_page(dash, 422, form=values, errors={field: exc.detail})
    await audit.record_request(dash.ctx.db, "channel.create", stack_id=row.stack_id, target=row.id,
                               detail={"name": row.name, "kind": row.kind})  # fmt: skip
    return redirect(f"/notifications/{row.id}?notice=added")


@routes.get("/notifications/<channel_id>")
async def channel_page(dash: Dashboard, channel_id: str) -> tuple[str, int]:
    row = await channel_or_404(dash, channel_id)
    stack_name = None
    if row.stack_id:
        stack_name = (await stacks.get(dash.ctx.db, row.stack_id)).name
    backlog = await outbox.backlog(dash.ctx.db, row.id)  # first: see api_notify.list_deliveries
    return await render(
        "dashboard/channel.html",
        channel=row,
        stack_name=stack_name,
        deliveries=await outbox.deliveries(dash.ctx.db, row.id),
        backlog=backlog,
        notice=NOTICES.get(request.args.get("notice", "")),
        nav="notifications",
    )


@routes.post("/notifications/<channel_id>/test")
async def test_channel(dash: Dashboard, channel_id: str) -> ResponseReturnValue:
    row = await channel_or_404(dash, channel_id)
    await send_test(dash.ctx.db, row.id, dash.ctx.notifier, f"user:{current_login().user_name}")
    return redirect(f"/notifications/{row.id}?notice=tested")


@routes.post("/notifications/<channel_id>/enabled")
async def set_enabled(dash: Dashboard, channel_id: str) -> ResponseReturnValue:
    row = await channel_or_404(dash, channel_id)
    on = (await request.form).get("enabled") == "1"
    row = await store.set_enabled(dash.ctx.db, row.id, on)
    await audit.record_request(dash.ctx.db, "channel.update", stack_id=row.stack_id, target=row.id,
                               detail={"name": row.name, "enabled": on})  # fmt: skip
    return redirect(f"/notifications/{row.id}?notice={'enabled' if on else 'disabled'}")


@routes.post("/notifications/<channel_id>/delete")
async def delete_channel(dash: Dashboard, channel_id: str) -> ResponseReturnValue:
    try:
        row = await store.delete(dash.ctx.db, channel_id)
    except ApiError:
        abort(404)
    await audit.record_request(dash.ctx.db, "channel.delete", stack_id=row.stack_id, target=row.id,
                               detail={"name": row.name, "kind": row.kind})  # fmt: skip
    return redirect("/notifications?notice=deleted")
