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
from controlplane.models import Instance, utcnow
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


def register(bp: Blueprint, dash: Dashboard) -> None:
    db = dash.ctx.db
    beat_s = dash.ctx.settings.heartbeat_interval_s  # stale/offline count missed heartbeats

    @bp.get("/")
    async def stacks_list() -> tuple[str, int]:
        now = utcnow()
        rows = []
        for stack in await stacks.list_all(db):
            picture = stack_picture(stack.document, await _instances(dash, stack.id), now, beat_s)
            rows.append((stack, picture))
        return await render(
            "dashboard/stacks.html",
            rows=rows,
            partials={"live": "dashboard/_stacks_live.html"},
            live_stack="",
        )

    @bp.get("/stacks/<stack_id>")
    async def overview(stack_id: str) -> tuple[str, int]:
        stack = await load_stack(dash, stack_id)
        picture = stack_picture(stack.document, await _instances(dash, stack_id), utcnow(), beat_s)
        events = await status.list_events(db, stack_id, status.EventQuery(limit=12))
        return await render(
            "dashboard/overview.html",
            stack=stack,
            doc=masked_document(stack.document),
            picture=picture,
            events=events["events"],
            hostnames={i.id: i.hostname for i in picture.instances},
            notice=NOTICES.get(request.args.get("notice", "")),
            sparks=await sparklines(dash, stack_id, list(picture.services)),
            partials={"live": "dashboard/_overview_live.html"},
            live_stack=stack.id,
            tab="overview",
        )

    # edit -----------------------------------------------------------------------------

    @bp.get("/stacks/new")
    async def new_stack() -> tuple[str, int]:
        form = forms.StackForm(services=[forms.ServiceForm()])
        return await render(
            "dashboard/edit.html", stack=None, **_stack_form_context(form, {}), tab="edit"
        )

    @bp.get("/stacks/<stack_id>/edit")
    async def edit_stack(stack_id: str) -> tuple[str, int]:
        stack = await load_stack(dash, stack_id)
        form = forms.from_stack(masked_document(stack.document))
        return await render(
            "dashboard/edit.html", stack=stack, **_stack_form_context(form, {}), tab="edit"
        )

    async def save(stack_id: str | None) -> ResponseReturnValue:
        stack = await load_stack(dash, stack_id) if stack_id else None
        data = await request.form
        parsed = forms.parse_form(data)
        action = data.get("action", "save")
        if action != "save":  # add/remove buttons: re-render, nothing is saved or lost
            form = forms.apply_action(parsed.form, action)
            return await render(
                "dashboard/edit.html", stack=stack, **_stack_form_context(form, {}), tab="edit"
            )
        errors = dict(parsed.errors)
        if not errors:
            try:
                spec = stacks.validate(parsed.body, dash.ctx.settings.file_repo_roots)
                commits = await stacks.resolve(spec)
                prepared = Prepared(spec, commits)
                if stack is None:
                    created = await stacks.create(db, prepared, dash.ctx.keyring)
                    dash.ctx.stack_changed(created.id, created.doc_hash)
                    await audit.record_request(
                        db, "stack.create", stack_id=created.id, version_to=1
                    )
                    return redirect(f"/stacks/{created.id}?notice=created")
                saved, changed = await stacks.publish(
                    db, stack.id, prepared, "update", dash.ctx.keyring
                )
                if changed:
                    dash.ctx.stack_changed(saved.id, saved.doc_hash)
                await audit.record_request(
                    db, "stack.update", **audit.versions(stack, saved, changed)
                )
                notice = "saved" if changed else "unchanged"
                return redirect(f"/stacks/{saved.id}?notice={notice}")
            except ApiError as exc:
                errors[forms.input_for_error(exc.field or "", parsed.form)] = exc.detail
        return await render(
            "dashboard/edit.html",
            422,
            stack=stack,
            **_stack_form_context(parsed.form, errors),
            tab="edit",
        )

    @bp.post("/stacks/new")
    async def create_stack() -> ResponseReturnValue:
        return await save(None)

    @bp.post("/stacks/<stack_id>/edit")
    async def update_stack(stack_id: str) -> ResponseReturnValue:
        return await save(stack_id)

    @bp.post("/stacks/<stack_id>/refresh")
    async def refresh_stack(stack_id: str) -> ResponseReturnValue:
        before = await load_stack(dash, stack_id)
        try:
            stack, changed = await stacks.refresh(
                db, stack_id, "refresh", dash.ctx.settings.file_repo_roots
            )
        except ApiError as exc:
            return await _overview_error(stack_id, exc)
        if changed:
            dash.ctx.stack_changed(stack_id, stack.doc_hash)
        await audit.record_request(db, "stack.refresh", **audit.versions(before, stack, changed))
        return redirect(f"/stacks/{stack_id}?notice={'refreshed' if changed else 'current'}")

    async def _overview_error(stack_id: str, exc: ApiError) -> tuple[str, int]:
        stack = await load_stack(dash, stack_id)
        picture = stack_picture(stack.document, await _instances(dash, stack_id), utcnow(), beat_s)
        events = await status.list_events(db, stack_id, status.EventQuery(limit=12))
        return await render(
            "dashboard/overview.html",
            exc.status,
            stack=stack,
            doc=masked_document(stack.document),
            picture=picture,
            events=events["events"],
            hostnames={i.id: i.hostname for i in picture.instances},
            error=f"{exc.field + ': ' if exc.field else ''}{exc.detail}",
            live_stack=stack.id,
            tab="overview",
        )

    # versions and rollback --------------------------------------------------------------

    @bp.get("/stacks/<stack_id>/versions")
    async def versions(stack_id: str) -> tuple[str, int]:
        stack = await load_stack(dash, stack_id)
        rows = await stacks.versions(db, stack_id)
        return await render(
            "dashboard/versions.html",
            stack=stack,
            versions=rows,
            live_stack=stack.id,
            tab="versions",
        )

    @bp.post("/stacks/<stack_id>/rollback")
    async def rollback(stack_id: str) -> ResponseReturnValue:
        before = await load_stack(dash, stack_id)
        raw = (await request.form).get("version", "")
        if not raw.isdigit():
            return await _overview_error(
                stack_id, ApiError("pick a version to roll back to", field="version")
            )
        try:
            old = stacks.spec_of(await stacks.version_document(db, stack_id, int(raw)))
            stack, changed = await stacks.publish(db, stack_id, old, "rollback")
        except ApiError as exc:
            return await _overview_error(stack_id, exc)
        if changed:
            dash.ctx.stack_changed(stack_id, stack.doc_hash)
        await audit.record_request(
            db, "stack.rollback", **audit.versions(before, stack, changed, restored=int(raw))
        )
        return redirect(f"/stacks/{stack_id}?notice={'rolledback' if changed else 'unchanged'}")
