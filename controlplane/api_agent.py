"""The agent API under /api/v1/agent: register, desired state (ETag, long poll), heartbeat,
events.

Every route but `register` authenticates the agent's credential; an agent can read only
its own stack's document and write only its own instance's status, because the instance
and stack come from the credential, never from the request. Events are bounded per
instance per minute and kept only for the stack's own services (`ingest`).
"""

from collections.abc import Awaitable
from typing import Any

from quart import Blueprint, Response, request

from controlplane import audit, enrollment, ingest, longpoll, status, tokens
from controlplane.context import AppContext
from controlplane.directory import AgentIdentity
from controlplane.errors import BadRequest, Unprocessable
from controlplane.httpjson import etag_matches, json_object, parse_wait, read_json


def blueprint(ctx: AppContext) -> Blueprint:
    bp = Blueprint("api_agent", __name__)
    db = ctx.db
    meter = ingest.IngestMeter(db, ctx.settings.limits)
    retention = ingest.Retention(db, ctx.settings.limits)

    async def identify() -> AgentIdentity:
        return await ctx.directory.authenticate(tokens.bearer(request.headers.get("Authorization")))

    @bp.post("/register")
    async def register() -> tuple[dict[str, Any], int]:
        body = json_object(await read_json())
        token, hostname = body.get("token"), body.get("hostname")
        if not isinstance(token, str) or not token:
            raise BadRequest("must be the install token (a string)", field="token")
        if not isinstance(hostname, str) or not 1 <= len(hostname) <= 255:
            raise Unprocessable(
                "must be the server's hostname (1-255 characters)", field="hostname"
            )
        reg = await enrollment.register(db, token, hostname)
        await audit.record_request(
            db, "install_token.use", audit.Actor("agent", hostname),
            stack_id=reg.stack_id, target=reg.instance_id,
        )  # fmt: skip
        return {
            "instance_id": reg.instance_id,
            "credential": reg.credential,
            "stack_id": reg.stack_id,
        }, 201

    @bp.get("/desired-state")
    async def desired_state() -> Response:
        ident = await identify()
        wait_s = parse_wait(request.args.get("wait"), ctx.settings.max_wait_s)
        if_none_match = request.headers.get("If-None-Match")
        current = ident.doc_hash
        if wait_s:  # re-identifying also notices a revocation
            current = await longpoll.hold(ctx.watcher, ident.stack_id, if_none_match, current,
                                          wait_s, lambda: _hash_of(identify()))  # fmt: skip
        if etag_matches(if_none_match, current):
            return _not_modified(current)
        found = await ctx.directory.document(ident.stack_id)
        if found is None:  # deleted meanwhile: the next call is refused
            return _not_modified(current)
        doc_hash, body = found
        return Response(
            body, status=200, content_type="application/json", headers={"ETag": f'"{doc_hash}"'}
        )

    @bp.post("/heartbeat")
    async def heartbeat() -> dict[str, Any]:
        ident = await identify()
        hb = status.parse_heartbeat(await read_json())
        await ctx.heartbeats.record(ident.instance_id, hb)
        reply = status.heartbeat_answer(ident.doc_hash, ctx.settings.heartbeat_interval_s)
        upgrade = await ctx.rollouts.signal(ident.stack_id, ident.instance_id)
        if upgrade is not None:  # this server's turn in its stack's rolling agent upgrade
            reply["upgrade"] = upgrade
        return reply

    @bp.post("/events")
    async def events() -> dict[str, Any]:
        ident = await identify()
        batch = status.parse_events(await read_json())
        await meter.charge(ident.instance_id, events=len(batch))
        known = await ingest.known_services(ctx.directory, ident.stack_id)
        refused = [
            {"id": e.id, "field": f"events[{i}].service", "detail": "not a service of this stack"}
            for i, e in enumerate(batch)
            if ingest.unknown_service(e.service, known)
        ]
        kept = [e for e in batch if not ingest.unknown_service(e.service, known)]
        await status.record_events(db, ident.instance_id, ident.stack_id, kept)
        await retention.prune()
        # every id may be forgotten by the agent: stored, or refused for good
        answer: dict[str, Any] = {"accepted": list(dict.fromkeys(e.id for e in batch))}
        if refused:
            answer["refused"] = refused
        return answer

    return bp


async def _hash_of(identity: Awaitable[AgentIdentity]) -> str:
    return (await identity).doc_hash


def _not_modified(etag: str) -> Response:
    resp = Response(status=304, headers={"ETag": f'"{etag}"'})
    del resp.headers["Content-Type"]
    return resp
