"""Placeholder dashboard: one read-only HTML page listing stacks and their instances.

Another engineer replaces this package with the real dashboard; keep `blueprint(ctx)`.
The page reads the database directly (it is served by the control plane itself) and shows
no secrets. NOTE: it is not behind the admin token yet; the real dashboard adds login.
"""

from html import escape

from quart import Blueprint, Response
from sqlalchemy import select

from controlplane import status
from controlplane.context import AppContext
from controlplane.models import Instance, Stack, iso, utcnow


def blueprint(ctx: AppContext) -> Blueprint:
    bp = Blueprint("dashboard", __name__)

    @bp.get("/")
    async def index() -> Response:
        async with ctx.db.read() as session:
            stacks = list(await session.scalars(select(Stack).order_by(Stack.name)))
            instances = list(await session.scalars(select(Instance).order_by(Instance.created_at)))
        now = utcnow()
        parts = ["<!doctype html><meta charset=utf-8><title>Berth</title><h1>Berth</h1>"]
        if not stacks:
            parts.append("<p>No stacks yet.</p>")
        for stack in stacks:
            poll = float(stack.document["poll_interval_s"])
            parts.append(
                f"<h2>{escape(stack.name)} <small>v{stack.version} · {escape(stack.doc_hash[:12])}</small></h2><ul>"
            )
            for svc in stack.document["services"]:
                parts.append(
                    f"<li>{escape(svc['name'])} {escape(str(svc.get('path') or ''))} @ {escape(svc['commit'][:12])}</li>"
                )
            parts.append(
                "</ul><table><tr><th>instance</th><th>status</th><th>state</th><th>applied</th><th>last seen</th></tr>"
            )
            for inst in (i for i in instances if i.stack_id == stack.id):
                st = (
                    "revoked"
                    if inst.revoked_at
                    else status.instance_status(inst.last_seen, now, poll)
                )
                parts.append(
                    f"<tr><td>{escape(inst.hostname)}</td><td>{st}</td><td>{escape(inst.state or '')}</td>"
                    f"<td>{inst.applied_version or ''}</td><td>{iso(inst.last_seen) or ''}</td></tr>"
                )
            parts.append("</table>")
        return Response("".join(parts), content_type="text/html; charset=utf-8")

    return bp
