"""What changed and who changed it: the audit trail and version diffs (admin API).

    GET  /api/v1/audit?actor=&stack=&action=&since=&until=&before=&limit=
    GET  /api/v1/stacks/{id}/versions/{a}/diff/{b}
    POST /api/v1/stacks/preview      a stack body -> the diff it would make (nothing saved)

Handlers translate HTTP to calls into `audit`, `diffs` and `stacks`.
"""

from functools import partial
from typing import Any

from quart import Blueprint, request
from sqlalchemy import select

from controlplane import audit, diffs, stacks
from controlplane.context import AppContext
from controlplane.httpjson import read_json
from controlplane.models import Stack
from controlplane.routes import Routes

routes = Routes()


def blueprint(ctx: AppContext) -> Blueprint:
    bp = Blueprint("api_changes", __name__)
    bp.before_request(partial(_admin_only, ctx))
    routes.bind(bp, ctx)
    return bp


async def _admin_only(ctx: AppContext) -> None:
    await audit.authenticate_admin(ctx.db)


@routes.get("/audit")
async def list_audit(ctx: AppContext) -> dict[str, Any]:
    q = audit.parse_query(request.args.to_dict())
    rows, next_before = await audit.query(ctx.db, q)
    return {
        "records": [audit.record_json(r) for r in rows],
        "next_before": next_before,
        "retention_days": ctx.settings.audit_retention_days,
    }


@routes.get("/stacks/<stack_id>/versions/<int:a>/diff/<int:b>")
async def version_diff(ctx: AppContext, stack_id: str, a: int, b: int) -> dict[str, Any]:
    before = await stacks.version_document(ctx.db, stack_id, a)
    after = await stacks.version_document(ctx.db, stack_id, b)
    return {"stack_id": stack_id, **diffs.diff_documents(before, after)}


@routes.post("/stacks/preview")
async def preview(ctx: AppContext) -> dict[str, Any]:
    """The diff that saving this body would make (refs resolved, nothing stored)."""
    prepared = await stacks.prepare(await read_json(), ctx.settings.file_repo_roots)
    async with ctx.db.read() as session:
        current = await session.scalar(select(Stack).where(Stack.name == prepared.spec.name))
    content, after = stacks.proposed(current, prepared, ctx.keyring)
    if current is None:
        return {"stack_id": None, "exists": False, **diffs.diff_documents(None, after)}
    diff = diffs.diff_documents(current.document, after)
    # equal content is no change, whatever the document's fresh seals look like
    diff["empty"] = diff["empty"] or content == current.content_hash
    return {"stack_id": current.id, "exists": True, **diff}
