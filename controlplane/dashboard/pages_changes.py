"""Audit and diff pages: the audit trail (filters, older/newer paging) and a field-level
diff between two versions of a stack. Both read through the same functions as the API
(`audit.query`, `diffs.diff_documents`), so page and API never disagree."""

from quart import Blueprint, redirect, request
from quart.typing import ResponseReturnValue

from controlplane import audit, diffs, stacks
from controlplane.dashboard.common import Dashboard, load_stack, render
from controlplane.errors import ApiError
from controlplane.routes import Routes

routes = Routes()


def register(bp: Blueprint, dash: Dashboard) -> None:
    routes.bind(bp, dash)


@routes.get("/audit")
async def audit_page(dash: Dashboard) -> tuple[str, int]:
    filters = {k: v for k, v in request.args.items() if v and k != "fragment"}
    error = None
    try:
        q = audit.parse_query({**filters, "limit": "50"})
        rows, next_before = await audit.query(dash.ctx.db, q)
    except ApiError as exc:
        error, rows, next_before = f"{exc.field}: {exc.detail}", [], None
    older = {k: v for k, v in filters.items() if k != "before"}
    return await render(
        "dashboard/audit.html",
        400 if error else 200,
        records=rows,
        filters=filters,
        older=({**older, "before": str(next_before)} if next_before else None),
        newest=older if "before" in filters else None,
        actions=list(audit.ACTIONS),
        retention_days=dash.ctx.settings.audit_retention_days,
        error=error,
        nav="audit",
    )


@routes.get("/stacks/<stack_id>/versions/diff")
async def diff_form(dash: Dashboard, stack_id: str) -> ResponseReturnValue:
    a, b = request.args.get("a", ""), request.args.get("b", "")
    if not (a.isdigit() and b.isdigit()):
        stack = await load_stack(dash, stack_id)
        return await render(
            "dashboard/diff.html", 400, stack=stack, diff=None, a=a, b=b,
            error="Versions must be whole numbers.", live_stack=stack.id, tab="versions",
        )  # fmt: skip
    return redirect(f"/stacks/{stack_id}/versions/{int(a)}/diff/{int(b)}")


@routes.get("/stacks/<stack_id>/versions/<int:a>/diff/<int:b>")
async def diff_page(dash: Dashboard, stack_id: str, a: int, b: int) -> tuple[str, int]:
    stack = await load_stack(dash, stack_id)
    try:
        before = await stacks.version_document(dash.ctx.db, stack_id, a)
        after = await stacks.version_document(dash.ctx.db, stack_id, b)
    except ApiError as exc:
        return await render(
            "dashboard/diff.html", 404, stack=stack, diff=None, a=a, b=b,
            error=exc.detail, live_stack=stack.id, tab="versions",
        )  # fmt: skip
    return await render(
        "dashboard/diff.html",
        stack=stack,
        diff=diffs.diff_documents(before, after),
        a=a,
        b=b,
        live_stack=stack.id,
        tab="versions",
    )
