"""Stack pages: the list, the overview, the edit form (new and existing), versions and
rollback, and re-resolving refs. Saves go through `controlplane.stacks` exactly as the API
does (validate, resolve refs, publish, wake agents), so both paths store identical
documents; a rejected save re-renders the form with what the user typed and the error
next to its field. Pages show documents through `masked_document`: never a secret's value."""

from typing import Any

from quart import Blueprint, redirect, request
from quart.typing import ResponseReturnValue
from sqlalchemy import select

from controlplane import audit, stacks, status
from controlplane.dashboard import forms
from controlplane.dashboard.common import Dashboard, load_stack, render
from controlplane.dashboard.pages_metrics import sparklines
from controlplane.dashboard.views import stack_picture
from controlplane.errors import ApiError
from controlplane.models import Instance, Stack, utcnow
from controlplane.routes import Routes
from controlplane.secrets import masked_document
from controlplane.stacks import Prepared

NOTICES = {
    "created": "Stack created. Create an install token to add a server.",
    "saved": "Saved as a new version; agents are picking it up.",
    "unchanged": "Nothing changed: the stack is already at this content.",
    "refreshed": "Refs re-resolved: a new version with the moved commits.",
    "current": "Every ref still points at the same commit; nothing to deploy.",
    "rolledback": "Rolled back: a new version with the earlier content.",
    "revoked": "Instance revoked: its agent can no longer call in.",
}
SECURITY_MODES = (
    ("tunnel-only", "tunnel-only (no inbound ports)"),
    ("proxy-only", "proxy-only (proxy port open)"),
    ("open", "open (firewall unchanged)"),
)


async def _instances(dash: Dashboard, stack_id: str) -> list[Instance]:
    async with dash.ctx.db.read() as session:
        return list(
            await session.scalars(
                select(Instance).where(Instance.stack_id == stack_id).order_by(Instance.created_at)
            )
        )


def _stack_form_context(form: forms.StackForm, errors: dict[str, str]) -> dict[str, Any]:
    return {
        "form": form.with_blank_rows(),
        "errors": errors,
        "security_modes": SECURITY_MODES,
        "describe": lambda name: forms.describe_field(name, form),
    }


routes = Routes()


def register(bp: Blueprint, dash: Dashboard) -> None:
    routes.bind(bp, dash)


def _beat_s(dash: Dashboard) -> float:
    return dash.ctx.settings.heartbeat_interval_s  # stale/offline count missed heartbeats


@routes.get("/")
async def stacks_list(dash: Dashboard) -> tuple[str, int]:
    now = utcnow()
    rows = []
    for stack in await stacks.list_all(dash.ctx.db):
        instances = await _instances(dash, stack.id)
        rows.append((stack, stack_picture(stack.document, instances, now, _beat_s(dash))))
    return await render(
        "dashboard/stacks.html",
        rows=rows,
        partials={"live": "dashboard/_stacks_live.html"},
        live_stack="",
    )


async def _overview(
    dash: Dashboard, stack_id: str, status_code: int = 200, *, live: bool = False, **extra: Any
) -> tuple[str, int]:
    """The stack's overview page; `live` adds the sparklines and the live region (a normal
    view), `extra` a notice or an error."""
    stack = await load_stack(dash, stack_id)
    instances = await _instances(dash, stack_id)
    picture = stack_picture(stack.document, instances, utcnow(), _beat_s(dash))
    if live:
        extra["sparks"] = await sparklines(dash, stack_id, list(picture.services))
        extra["partials"] = {"live": "dashboard/_overview_live.html"}
    events = await status.list_events(dash.ctx.db, stack_id, status.EventQuery(limit=12))
    return await render(
        "dashboard/overview.html",
        status_code,
        stack=stack,
        doc=masked_document(stack.document),
        picture=picture,
        events=events["events"],
        hostnames={i.id: i.hostname for i in picture.instances},
        live_stack=stack.id,
        tab="overview",
        **extra,
    )


@routes.get("/stacks/<stack_id>")
async def overview(dash: Dashboard, stack_id: str) -> tuple[str, int]:
    notice = NOTICES.get(request.args.get("notice", ""))
    return await _overview(dash, stack_id, live=True, notice=notice)


async def _overview_error(dash: Dashboard, stack_id: str, exc: ApiError) -> tuple[str, int]:
    error = f"{exc.field + ': ' if exc.field else ''}{exc.detail}"
    return await _overview(dash, stack_id, exc.status, error=error)


# edit -------------------------------------------------------------------------------


async def _edit_page(
    stack: Stack | None, form: forms.StackForm, errors: dict[str, str], status_code: int = 200
) -> tuple[str, int]:
    return await render(
        "dashboard/edit.html", status_code, stack=stack, **_stack_form_context(form, errors),
        tab="edit",
    )  # fmt: skip


@routes.get("/stacks/new")
async def new_stack(dash: Dashboard) -> tuple[str, int]:
    return await _edit_page(None, forms.StackForm(services=[forms.ServiceForm()]), {})


@routes.get("/stacks/<stack_id>/edit")
async def edit_stack(dash: Dashboard, stack_id: str) -> tuple[str, int]:
    stack = await load_stack(dash, stack_id)
    return await _edit_page(stack, forms.from_stack(masked_document(stack.document)), {})


async def _store(dash: Dashboard, stack: Stack | None, prepared: Prepared) -> ResponseReturnValue:
    """Create or publish `prepared`, audit it and redirect to the overview with a notice."""
    db = dash.ctx.db
    if stack is None:
        created = await stacks.create(db, dash.ctx, prepared, dash.ctx.keyring)
        await audit.record_request(db, "stack.create", stack_id=created.id, version_to=1)
        return redirect(f"/stacks/{created.id}?notice=created")
    saved, changed = await stacks.publish(db, dash.ctx, stack.id, prepared, "update",
                                          dash.ctx.keyring)  # fmt: skip
    await audit.record_request(db, "stack.update", **audit.versions(stack, saved, changed))
    return redirect(f"/stacks/{saved.id}?notice={'saved' if changed else 'unchanged'}")


async def _save(dash: Dashboard, stack_id: str | None) -> ResponseReturnValue:
    stack = await load_stack(dash, stack_id) if stack_id else None
    data = await request.form
    parsed = forms.parse_form(data)
    action = data.get("action", "save")
    if action != "save":  # add/remove buttons: re-render, nothing is saved or lost
        return await _edit_page(stack, forms.apply_action(parsed.form, action), {})
    errors = dict(parsed.errors)
    if not errors:
        try:
            spec = stacks.validate(parsed.body, dash.ctx.settings.file_repo_roots)
            return await _store(dash, stack, Prepared(spec, await stacks.resolve(spec)))
        except ApiError as exc:
            errors[forms.input_for_error(exc.field or "", parsed.form)] = exc.detail
    return await _edit_page(stack, parsed.form, errors, 422)


@routes.post("/stacks/new")
async def create_stack(dash: Dashboard) -> ResponseReturnValue:
    return await _save(dash, None)


@routes.post("/stacks/<stack_id>/edit")
async def update_stack(dash: Dashboard, stack_id: str) -> ResponseReturnValue:
    return await _save(dash, stack_id)


@routes.post("/stacks/<stack_id>/refresh")
async def refresh_stack(dash: Dashboard, stack_id: str) -> ResponseReturnValue:
    before = await load_stack(dash, stack_id)
    try:
        stack, changed = await stacks.refresh(
            dash.ctx.db, dash.ctx, stack_id, "refresh", dash.ctx.settings.file_repo_roots
        )
    except ApiError as exc:
        return await _overview_error(dash, stack_id, exc)
    await audit.record_request(
        dash.ctx.db, "stack.refresh", **audit.versions(before, stack, changed)
    )
    return redirect(f"/stacks/{stack_id}?notice={'refreshed' if changed else 'current'}")


# versions and rollback --------------------------------------------------------------


@routes.get("/stacks/<stack_id>/versions")
async def versions(dash: Dashboard, stack_id: str) -> tuple[str, int]:
    stack = await load_stack(dash, stack_id)
    rows = await stacks.versions(dash.ctx.db, stack_id)
    return await render(
        "dashboard/versions.html",
        stack=stack,
        versions=rows,
        live_stack=stack.id,
        tab="versions",
    )


@routes.post("/stacks/<stack_id>/rollback")
async def rollback(dash: Dashboard, stack_id: str) -> ResponseReturnValue:
    before = await load_stack(dash, stack_id)
    raw = (await request.form).get("version", "")
    if not raw.isdigit():
        return await _overview_error(
            dash, stack_id, ApiError("pick a version to roll back to", field="version")
        )
    try:
        stack, changed = await stacks.rollback(dash.ctx.db, dash.ctx, stack_id, int(raw))
    except ApiError as exc:
        return await _overview_error(dash, stack_id, exc)
    await audit.record_request(
        dash.ctx.db, "stack.rollback", **audit.versions(before, stack, changed, restored=int(raw))
    )
    return redirect(f"/stacks/{stack_id}?notice={'rolledback' if changed else 'unchanged'}")
