"""Server pages: the instances of a stack (and revoking one; each agent's version against
the one the wheelhouse serves, and the stack's rolling agent upgrade), one service on one server
(state, health history, restarts, build log and live run log), and the install page
(one-time install tokens with the one-line command)."""

from quart import Blueprint, Response, abort, redirect, request
from sqlalchemy import select

from agent import version as versions
from agent.schema.report import stored_services
from controlplane import agentupgrades, audit, enrollment, status
from controlplane.dashboard import logstore
from controlplane.dashboard.common import Dashboard, load_stack, render
from controlplane.dashboard.pages_metrics import service_metrics
from controlplane.dashboard.views import cell, instance_view
from controlplane.enrollment import MAX_TTL_S, MIN_TTL_S, install_command
from controlplane.models import Instance, utcnow
from controlplane.routes import Routes

TTL_CHOICES = ((3600, "1 hour"), (6 * 3600, "6 hours"), (86400, "1 day"), (7 * 86400, "7 days"))


routes = Routes()


def register(bp: Blueprint, dash: Dashboard) -> None:
    routes.bind(bp, dash)


async def load_instance(dash: Dashboard, stack_id: str, instance_id: str) -> Instance:
    async with dash.ctx.db.read() as session:
        row = await session.get(Instance, instance_id)
    if row is None or row.stack_id != stack_id:
        abort(404)
    return row


@routes.get("/stacks/<stack_id>/instances")
async def instances(dash: Dashboard, stack_id: str) -> tuple[str, int]:
    stack = await load_stack(dash, stack_id)
    doc = stack.document
    desired = {s["name"]: s["commit"] for s in doc["services"]}
    now = utcnow()
    async with dash.ctx.db.read() as session:
        rows = list(
            await session.scalars(
                select(Instance).where(Instance.stack_id == stack_id).order_by(Instance.created_at)
            )
        )
    beat_s = dash.ctx.settings.heartbeat_interval_s
    views = [instance_view(r, desired, beat_s, now) for r in rows]
    served = dash.ctx.rollouts.wheelhouse.version()
    rollout = await agentupgrades.stack_rollout(dash.ctx.db, stack_id, served, beat_s)
    return await render(
        "dashboard/instances.html",
        stack=stack,
        doc=doc,
        instances=views,
        served=served,
        behind={v.id: versions.is_behind(v.agent_version, served) for v in views},
        rollout=rollout,
        partials={"live": "dashboard/_instances_live.html"},
        live_stack=stack.id,
        tab="instances",
    )


@routes.post("/stacks/<stack_id>/agent-upgrades")
async def agent_upgrades(dash: Dashboard, stack_id: str) -> Response:
    auto = (await request.form).get("auto") == "on"
    await agentupgrades.set_auto(dash.ctx.db, stack_id, {"auto": auto})
    dash.ctx.rollouts.forget(stack_id)
    return redirect(f"/stacks/{stack_id}/instances")  # type: ignore[return-value]


@routes.post("/stacks/<stack_id>/instances/<instance_id>/revoke")
async def revoke(dash: Dashboard, stack_id: str, instance_id: str) -> Response:
    await load_instance(dash, stack_id, instance_id)
    await enrollment.revoke_instance(dash.ctx.db, instance_id)
    dash.ctx.directory.instance_revoked(instance_id)
    await audit.record_request(
        dash.ctx.db, "instance.revoke", stack_id=stack_id, target=instance_id
    )
    return redirect(f"/stacks/{stack_id}/instances?notice=revoked")  # type: ignore[return-value]


@routes.get("/stacks/<stack_id>/instances/<instance_id>/services/<service>")
async def service_detail(
    dash: Dashboard, stack_id: str, instance_id: str, service: str
) -> tuple[str, int]:
    stack = await load_stack(dash, stack_id)
    row = await load_instance(dash, stack_id, instance_id)
    doc = stack.document
    spec = next((s for s in doc["services"] if s["name"] == service), None)
    snap = next((s for s in stored_services(row.services) if s.name == service), None)
    if spec is None and snap is None:
        abort(404)
    inst = instance_view(
        row, {s["name"]: s["commit"] for s in doc["services"]},
        dash.ctx.settings.heartbeat_interval_s, utcnow(),
    )  # fmt: skip
    svc = cell(snap, spec["commit"] if spec else None) if snap else None
    health = await status.list_events(
        dash.ctx.db, stack_id,
        status.EventQuery(instance=instance_id, service=service, type="health", limit=20),
    )  # fmt: skip
    recent = await status.list_events(
        dash.ctx.db, stack_id, status.EventQuery(instance=instance_id, service=service, limit=20)
    )
    build = await logstore.read_tail(dash.ctx.db, instance_id, service, "build")
    run = await logstore.read_tail(dash.ctx.db, instance_id, service, "run")
    return await render(
        "dashboard/service.html",
        stack=stack,
        inst=inst,
        service=service,
        spec=spec,
        svc=svc,
        health_events=health["events"],
        events=recent["events"],
        build=build,
        run=run,
        metrics=await service_metrics(dash, stack_id, instance_id, service),
        partials={"live": "dashboard/_service_live.html"},
        live_stack=stack.id,
        live_logs=f"{instance_id}/{service}",
        log_after=max(build.last_seq, run.last_seq),
        tab="instances",
    )


# install ----------------------------------------------------------------------------


async def install_page(
    dash: Dashboard,
    stack_id: str,
    new: enrollment.NewInstallToken | None = None,
    error: str | None = None,
) -> tuple[str, int]:
    stack = await load_stack(dash, stack_id)
    tokens = await enrollment.list_install_tokens(dash.ctx.db, stack_id)
    return await render(
        "dashboard/install.html",
        422 if error else 200,
        stack=stack,
        tokens=list(reversed(tokens)),
        new=new,
        command=install_command(dash.public_url(), new.token) if new else None,
        error=error,
        ttl_choices=TTL_CHOICES,
        default_ttl=int(dash.ctx.settings.install_token_ttl_s),
        live_stack=stack.id,
        tab="install",
    )


@routes.get("/stacks/<stack_id>/install")
async def install(dash: Dashboard, stack_id: str) -> tuple[str, int]:
    return await install_page(dash, stack_id)


@routes.post("/stacks/<stack_id>/install")
async def create_token(dash: Dashboard, stack_id: str) -> tuple[str, int]:
    await load_stack(dash, stack_id)
    raw = (await request.form).get("ttl_s", "")
    if not raw.isdigit() or not MIN_TTL_S <= int(raw) <= MAX_TTL_S:
        return await install_page(
            dash, stack_id, error=f"Lifetime must be {MIN_TTL_S:g} to {MAX_TTL_S:g} seconds."
        )
    new = await enrollment.create_install_token(dash.ctx.db, stack_id, float(raw))
    await audit.record_request(
        dash.ctx.db, "install_token.create", stack_id=stack_id, target=new.id
    )
    return await install_page(dash, stack_id, new=new)


@routes.post("/stacks/<stack_id>/install/<token_id>/revoke")
async def revoke_token(dash: Dashboard, stack_id: str, token_id: str) -> Response:
    await enrollment.revoke_install_token(dash.ctx.db, stack_id, token_id)
    await audit.record_request(
        dash.ctx.db, "install_token.revoke", stack_id=stack_id, target=token_id
    )
    return redirect(f"/stacks/{stack_id}/install")  # type: ignore[return-value]
