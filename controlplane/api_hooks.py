"""Git push webhooks: `POST /api/v1/hooks/git/{stack_id}` re-resolves the stack's refs.

The git host signs the raw body with the stack's secret (HMAC-SHA256, GitHub's
``X-Hub-Signature-256: sha256=<hex>``); an unsigned or wrongly signed call is 401 and
does nothing. The payload itself is not trusted or needed: a push only tells us to look,
and `git ls-remote` says what the refs are now. `verify_signature` is pure. A signed
delivery is acted on once per delivery id and at most so often per stack
(`deliveries.DeliveryGuard`): a replayed one answers `"duplicate": true`, a flood 429.
"""

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from quart import Blueprint, request

from controlplane import audit, stacks
from controlplane.context import AppContext
from controlplane.deliveries import DELIVERY_HEADERS, DeliveryGuard
from controlplane.errors import NotFound, Unauthorized
from controlplane.models import Stack
from controlplane.routes import Routes


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(sign(secret, body), header.strip())


@dataclass(frozen=True)
class Hooks:
    """What the webhook handler works with: the app's context and this process's guard."""

    ctx: AppContext
    guard: DeliveryGuard


routes = Routes()


def blueprint(ctx: AppContext) -> Blueprint:
    bp = Blueprint("api_hooks", __name__)
    routes.bind(bp, Hooks(ctx, DeliveryGuard(ctx.db, ctx.settings.limits.webhooks_per_minute)))
    return bp


def _signed_stack(stack: Stack | None, body: bytes) -> Stack:
    # the same answer for an unknown stack and a bad signature: no probing for ids
    if stack is None or not verify_signature(
        stack.webhook_secret, body, request.headers.get("X-Hub-Signature-256")
    ):
        raise Unauthorized(
            "missing or wrong X-Hub-Signature-256 (HMAC-SHA256 of the body with the "
            "stack's webhook secret: GET /api/v1/stacks/{id}/webhook)"
        )
    return stack


@routes.post("/git/<stack_id>")
async def git_push(hooks: Hooks, stack_id: str) -> dict[str, Any]:
    ctx = hooks.ctx
    body: bytes = await request.get_data(as_text=False)  # type: ignore[assignment]
    try:
        found: Stack | None = await stacks.get(ctx.db, stack_id)
    except NotFound:
        found = None
    stack = _signed_stack(found, body)
    if request.headers.get("X-GitHub-Event") == "ping":
        return {"ok": True, "changed": False, "version": stack.version}
    delivery_id = next(filter(None, map(request.headers.get, DELIVERY_HEADERS)), None)
    if (await hooks.guard.admit(stack_id, delivery_id)).duplicate:
        return {"ok": True, "changed": False, "version": stack.version, "duplicate": True}
    before = stack
    stack, changed = await stacks.refresh(
        ctx.db, ctx, stack_id, "webhook", ctx.settings.file_repo_roots
    )
    await audit.record_request(
        ctx.db, "stack.webhook", audit.Actor("webhook", "git push"),
        **audit.versions(before, stack, changed, event=request.headers.get("X-GitHub-Event")),
    )  # fmt: skip
    return {"ok": True, "changed": changed, "version": stack.version}
