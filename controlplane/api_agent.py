"""The agent API under /api/v1/agent, all of it: register, desired state (ETag, long poll),
heartbeat, events, logs (and metrics: `metrics/intake.py`, registered with the metrics
blueprint).

The agents' hottest calls have a second door: `agentfastpath.py`, an ASGI layer in front of
Quart, answers `GET desired-state` (304, 200, long polls) and `POST heartbeat` and
`POST metrics` with plain Content-Length bodies before Quart sees them, for a fraction
of the CPU. It calls the same functions as the routes here (`heartbeat_answer`,
`longpoll.hold`, `metrics.intake.intake`, the directory's `authenticate` and
`document`), so the two doors cannot answer differently
(tests/controlplane/test_fastpath.py asks both). Anything else an agent sends, and every
request the fast path declines (chunked bodies, odd query strings), is answered here.

Every route but `register` authenticates the agent's credential; an agent can read only
its own stack's document and write only its own instance's status, because the instance
and stack come from the credential, never from the request. Events and log bytes are
bounded per instance per minute and kept only for the stack's own services (`ingest`).
Log chunks are stored in arrival order with a bounded tail per (instance, service,
stream) (`dashboard/logstore.py`), and open service pages receive them live.
"""

from dataclasses import dataclass
from typing import Any

from quart import Blueprint, Response, request

from controlplane import audit, enrollment, ingest, longpoll, status, tokens
from controlplane.agentdirectory import AgentIdentity
from controlplane.context import AppContext
from controlplane.dashboard import logstore
from controlplane.errors import BadRequest, Unprocessable
from controlplane.httpjson import etag_matches, json_object, parse_wait, read_json
from controlplane.routes import Routes

routes = Routes()


@dataclass(frozen=True)
class AgentApi:
    """What the routes work with: the app's context, the per-minute ingest budget, and the
    retention of events and logs."""

    ctx: AppContext
    meter: ingest.IngestMeter
    retention: ingest.Retention


def blueprint(ctx: AppContext) -> Blueprint:
    bp = Blueprint("api_agent", __name__)
    limits = ctx.settings.limits
    api = AgentApi(ctx, ingest.IngestMeter(ctx.db, limits), ingest.Retention(ctx.db, limits))
    routes.bind(bp, api)
    return bp


async def _identify(api: AgentApi) -> AgentIdentity:
    credential = tokens.bearer(request.headers.get("Authorization"))
    return await api.ctx.directory.authenticate(credential)


@routes.post("/register")
async def register(api: AgentApi) -> tuple[dict[str, Any], int]:
    db = api.ctx.db
    body = json_object(await read_json())
    token, hostname = body.get("token"), body.get("hostname")
    if not isinstance(token, str) or not token:
        raise BadRequest("must be the install token (a string)", field="token")
    if not isinstance(hostname, str) or not 1 <= len(hostname) <= 255:
        raise Unprocessable("must be the server's hostname (1-255 characters)", field="hostname")
    reg = await enrollment.register(db, token, hostname)
    await audit.record_request(
        db, "install_token.use", audit.Actor("agent", hostname),
        stack_id=reg.stack_id, target=reg.instance_id,
    )  # fmt: skip
    return reg.to_json(), 201


@routes.get("/desired-state")
async def desired_state(api: AgentApi) -> Response:
    ctx = api.ctx
    ident = await _identify(api)
    wait_s = parse_wait(request.args.get("wait"), ctx.settings.max_wait_s)
    if_none_match = request.headers.get("If-None-Match")
    current = ident.doc_hash
    if wait_s:  # re-identifying also notices a revocation

        async def current_hash() -> str:
            return (await _identify(api)).doc_hash

        current = await longpoll.hold(
            ctx.watcher, ident.stack_id, if_none_match, current, wait_s, current_hash
        )
    if etag_matches(if_none_match, current):
        return _not_modified(current)
    found = await ctx.directory.document(ident.stack_id)
    if found is None:  # deleted meanwhile: the next call is refused
        return _not_modified(current)
    doc_hash, body = found
    return Response(
        body, status=200, content_type="application/json", headers={"ETag": f'"{doc_hash}"'}
    )


async def heartbeat_answer(ctx: AppContext, ident: AgentIdentity, body: Any) -> dict[str, Any]:
    """Store a heartbeat (group commit) and answer it; also called by the fast path."""
    hb = status.parse_heartbeat(body)
    await ctx.heartbeats.record(ident.instance_id, hb)
    reply = status.heartbeat_answer(ident.doc_hash, ctx.settings.heartbeat_interval_s)
    upgrade = await ctx.rollouts.signal(ident.stack_id, ident.instance_id)
    if upgrade is not None:  # this server's turn in its stack's rolling agent upgrade
        reply["upgrade"] = upgrade
    return reply


@routes.post("/heartbeat")
async def heartbeat(api: AgentApi) -> dict[str, Any]:
    ident = await _identify(api)
    return await heartbeat_answer(api.ctx, ident, await read_json())


@routes.post("/events")
async def events(api: AgentApi) -> dict[str, Any]:
    ident = await _identify(api)
    batch = status.parse_events(await read_json())
    await api.meter.charge(ident.instance_id, events=len(batch))
    known = await ingest.known_services(api.ctx.directory, ident.stack_id)
    refused = [
        {"id": e.id, "field": f"events[{i}].service", "detail": "not a service of this stack"}
        for i, e in enumerate(batch)
        if ingest.unknown_service(e.service, known)
    ]
    kept = [e for e in batch if not ingest.unknown_service(e.service, known)]
    await status.record_events(api.ctx.db, ident.instance_id, ident.stack_id, kept)
    await api.retention.prune()
    # every id may be forgotten by the agent: stored, or refused for good
    answer: dict[str, Any] = {"accepted": list(dict.fromkeys(e.id for e in batch))}
    if refused:
        answer["refused"] = refused
    return answer


@routes.post("/logs")
async def agent_logs(api: AgentApi) -> dict[str, Any]:
    """`{"chunks": [{"service", "stream": "run"|"build", "commit", "data"}]}` → `{"accepted":
    N}` (plus `refused`: chunks of services the stack does not have, dropped)."""
    ident = await _identify(api)
    chunks = logstore.parse_chunks(await read_json())
    await api.meter.charge(ident.instance_id, log_bytes=sum(len(c.data.encode()) for c in chunks))
    known = await ingest.known_services(api.ctx.directory, ident.stack_id)
    kept = [c for c in chunks if c.service in known]
    db = api.ctx.db
    accepted = await logstore.record_chunks(db, ident.instance_id, ident.stack_id, kept)
    await api.retention.prune()
    answer: dict[str, Any] = {"accepted": accepted}
    if len(kept) < len(chunks):
        refused = sorted({c.service for c in chunks if c.service not in known})
        answer["refused"] = {"services": refused, "detail": "not services of this stack"}
    return answer


def _not_modified(etag: str) -> Response:
    resp = Response(status=304, headers={"ETag": f'"{etag}"'})
    del resp.headers["Content-Type"]
    return resp
