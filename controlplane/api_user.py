"""The user (admin) API under /api/v1: stacks, install tokens, status, history, tokens.

Every route needs `Authorization: Bearer <admin token>` (checked once in `before_request`).
Handlers only translate HTTP to calls into `stacks`, `enrollment` and `status`. Every
document shown passes through `secrets.masked_document`: a secret's value never leaves.
"""

from functools import partial
from typing import Any

from quart import Blueprint, Response, jsonify, request

from controlplane import agentupgrades, audit, enrollment, stacks, status
from controlplane.context import AppContext
from controlplane.enrollment import MAX_TTL_S, MIN_TTL_S, install_command
from controlplane.errors import NotFound, Unprocessable
from controlplane.httpjson import json_object, read_json
from controlplane.models import iso
from controlplane.routes import Routes
from controlplane.secrets import masked_document

routes = Routes()


def blueprint(ctx: AppContext) -> Blueprint:
    bp = Blueprint("api_user", __name__)
    bp.before_request(partial(_admin_only, ctx))
    routes.bind(bp, ctx)
    return bp


async def _admin_only(ctx: AppContext) -> None:
    await audit.authenticate_admin(ctx.db)


def _public_url(ctx: AppContext) -> str:
    return ctx.settings.public_url or request.host_url.rstrip("/")


# stacks ---------------------------------------------------------------------------


@routes.get("/stacks")
async def list_stacks(ctx: AppContext) -> dict[str, Any]:
    return {"stacks": [stacks.stack_json(s) for s in await stacks.list_all(ctx.db)]}


@routes.post("/stacks")
async def create_stack(ctx: AppContext) -> tuple[dict[str, Any], int, dict[str, str]]:
    prepared = await stacks.prepare(await read_json(), ctx.settings.file_repo_roots)
    stack = await stacks.create(ctx.db, ctx, prepared, ctx.keyring)
    await audit.record_request(
        ctx.db, "stack.create", stack_id=stack.id, stack_name=stack.name, version_to=1
    )
    return stacks.stack_json(stack), 201, {"Location": f"/api/v1/stacks/{stack.id}"}


@routes.get("/stacks/<stack_id>")
async def get_stack(ctx: AppContext, stack_id: str) -> dict[str, Any]:
    return stacks.stack_json(await stacks.get(ctx.db, stack_id))


@routes.put("/stacks/<stack_id>")
async def replace_stack(ctx: AppContext, stack_id: str) -> dict[str, Any]:
    before = await stacks.get(ctx.db, stack_id)  # 404 before a slow git ls-remote
    prepared = await stacks.prepare(await read_json(), ctx.settings.file_repo_roots)
    stack, changed = await stacks.publish(ctx.db, ctx, stack_id, prepared, "update", ctx.keyring)
    await audit.record_request(ctx.db, "stack.update", **audit.versions(before, stack, changed))
    return {**stacks.stack_json(stack), "changed": changed}


@routes.delete("/stacks/<stack_id>")
async def delete_stack(ctx: AppContext, stack_id: str) -> tuple[str, int]:
    gone = await stacks.get(ctx.db, stack_id)
    await stacks.delete(ctx.db, ctx, stack_id)
    await audit.record_request(
        ctx.db, "stack.delete", stack_id=gone.id, stack_name=gone.name, version_from=gone.version
    )
    return "", 204


@routes.post("/stacks/<stack_id>/refresh")
async def refresh_stack(ctx: AppContext, stack_id: str) -> dict[str, Any]:
    """Re-resolve every ref; a new version only if some commit moved."""
    before = await stacks.get(ctx.db, stack_id)
    stack, changed = await stacks.refresh(
        ctx.db, ctx, stack_id, file_roots=ctx.settings.file_repo_roots
    )
    await audit.record_request(ctx.db, "stack.refresh", **audit.versions(before, stack, changed))
    return {**stacks.stack_json(stack), "changed": changed}


@routes.get("/stacks/<stack_id>/desired-state")
async def stack_desired_state(ctx: AppContext, stack_id: str) -> Response:
    stack = await stacks.get(ctx.db, stack_id)
    resp = jsonify(masked_document(stack.document))
    resp.headers["ETag"] = f'"{stack.doc_hash}"'
    return resp


@routes.get("/stacks/<stack_id>/webhook")
async def webhook_settings(ctx: AppContext, stack_id: str) -> dict[str, Any]:
    """Where and with which secret a git host should send push events."""
    stack = await stacks.get(ctx.db, stack_id)
    return {
        "url": f"{_public_url(ctx)}/api/v1/hooks/git/{stack.id}",
        "secret": stack.webhook_secret,
        "content_type": "application/json",
        "signature_header": "X-Hub-Signature-256",
    }


# history --------------------------------------------------------------------------


@routes.get("/stacks/<stack_id>/versions")
async def list_versions(ctx: AppContext, stack_id: str) -> dict[str, Any]:
    rows = await stacks.versions(ctx.db, stack_id)
    return {
        "versions": [
            {
                "version": r.version,
                "hash": r.doc_hash,
                "created_at": iso(r.created_at),
                "reason": r.reason,
            }
            for r in rows
        ]
    }


@routes.get("/stacks/<stack_id>/versions/<int:version>")
async def get_version(ctx: AppContext, stack_id: str, version: int) -> dict[str, Any]:
    return masked_document(await stacks.version_document(ctx.db, stack_id, version))


@routes.post("/stacks/<stack_id>/rollback")
async def rollback(ctx: AppContext, stack_id: str) -> dict[str, Any]:
    version = json_object(await read_json()).get("version")
    before = await stacks.get(ctx.db, stack_id)
    stack, changed = await stacks.rollback(ctx.db, ctx, stack_id, version)
    await audit.record_request(
        ctx.db, "stack.rollback", **audit.versions(before, stack, changed, restored=version)
    )
    return {**stacks.stack_json(stack), "changed": changed}


# enrollment -----------------------------------------------------------------------


@routes.post("/stacks/<stack_id>/install-tokens")
async def create_install_token(ctx: AppContext, stack_id: str) -> tuple[dict[str, Any], int]:
    body = json_object(await read_json(allow_empty=True))
    ttl = body.get("ttl_s", ctx.settings.install_token_ttl_s)
    if (
        isinstance(ttl, bool)
        or not isinstance(ttl, int | float)
        or not MIN_TTL_S <= ttl <= MAX_TTL_S
    ):
        raise Unprocessable(
            f"must be a number of seconds from {MIN_TTL_S:g} to {MAX_TTL_S:g}", field="ttl_s"
        )
    new = await enrollment.create_install_token(ctx.db, stack_id, float(ttl))
    await audit.record_request(
        ctx.db, "install_token.create", stack_id=stack_id, target=new.id,
        detail={"expires_at": iso(new.expires_at)},
    )  # fmt: skip
    return {
        "id": new.id,
        "token": new.token,
        "expires_at": iso(new.expires_at),
        "install_command": install_command(_public_url(ctx), new.token),
    }, 201


@routes.get("/stacks/<stack_id>/install-tokens")
async def list_install_tokens(ctx: AppContext, stack_id: str) -> dict[str, Any]:
    await stacks.get(ctx.db, stack_id)
    rows = await enrollment.list_install_tokens(ctx.db, stack_id)
    return {
        "install_tokens": [
            {
                "id": r.id,
                "created_at": iso(r.created_at),
                "expires_at": iso(r.expires_at),
                "used_at": iso(r.used_at),
                "revoked_at": iso(r.revoked_at),
                "instance_id": r.instance_id,
            }
            for r in rows
        ]
    }


@routes.delete("/stacks/<stack_id>/install-tokens/<token_id>")
async def revoke_install_token(ctx: AppContext, stack_id: str, token_id: str) -> tuple[str, int]:
    await enrollment.revoke_install_token(ctx.db, stack_id, token_id)
    await audit.record_request(ctx.db, "install_token.revoke", stack_id=stack_id, target=token_id)
    return "", 204


@routes.delete("/instances/<instance_id>")
async def revoke_instance(ctx: AppContext, instance_id: str) -> tuple[str, int]:
    stack_id = await enrollment.revoke_instance(ctx.db, instance_id)
    ctx.directory.instance_revoked(instance_id)
    await audit.record_request(ctx.db, "instance.revoke", stack_id=stack_id, target=instance_id)
    return "", 204


# status ---------------------------------------------------------------------------


@routes.get("/stacks/<stack_id>/instances")
async def list_instances(ctx: AppContext, stack_id: str) -> dict[str, Any]:
    served = ctx.rollouts.wheelhouse.version()
    return {
        "instances": await status.list_instances(
            ctx.db, stack_id, ctx.settings.heartbeat_interval_s, served
        )
    }


@routes.get("/stacks/<stack_id>/agent-upgrades")
async def get_agent_upgrades(ctx: AppContext, stack_id: str) -> dict[str, Any]:
    served = ctx.rollouts.wheelhouse.version()
    rollout = await agentupgrades.stack_rollout(
        ctx.db, stack_id, served, ctx.settings.heartbeat_interval_s
    )
    return {"auto": rollout.state != "off", **rollout.json()}


@routes.put("/stacks/<stack_id>/agent-upgrades")
async def put_agent_upgrades(ctx: AppContext, stack_id: str) -> dict[str, Any]:
    await agentupgrades.set_auto(ctx.db, stack_id, await read_json())
    ctx.rollouts.forget(stack_id)
    return await get_agent_upgrades(ctx, stack_id)


@routes.get("/stacks/<stack_id>/events")
async def list_events(ctx: AppContext, stack_id: str) -> dict[str, Any]:
    query = status.parse_event_query(request.args.to_dict())
    return await status.list_events(ctx.db, stack_id, query)


# admin tokens ---------------------------------------------------------------------


@routes.get("/tokens")
async def list_admin_tokens(ctx: AppContext) -> dict[str, Any]:
    rows = await enrollment.list_admin_tokens(ctx.db)
    return {
        "tokens": [
            {
                "id": r.id,
                "name": r.name,
                "created_at": iso(r.created_at),
                "revoked_at": iso(r.revoked_at),
            }
            for r in rows
        ]
    }


@routes.delete("/tokens/<token_id>")
async def revoke_admin_token(ctx: AppContext, token_id: str) -> tuple[str, int]:
    if not await enrollment.revoke_admin_token(ctx.db, token_id):
        raise NotFound(f"no active admin token with id or name {token_id!r}")
    await audit.record_request(ctx.db, "admin_token.revoke", target=token_id)
    return "", 204
