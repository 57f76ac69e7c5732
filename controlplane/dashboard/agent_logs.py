"""`POST /api/v1/agent/logs`: agents ship their services' build and run output.

Authenticated with the agent's credential exactly like the heartbeat (the instance and
stack come from the credential, never from the body). The body is
`{"chunks": [{"service", "stream": "run"|"build", "commit", "data"}]}`; the answer is
`{"accepted": N}` (plus `refused`: chunks of services the stack does not have, dropped).
Log bytes are bounded per instance per minute (429 with Retry-After: `ingest`). Chunks
are stored in arrival order with a bounded tail per (instance, service, stream)
(`logstore`), and open service pages receive them live.
"""

from typing import Any

from quart import Blueprint, request

from controlplane import ingest, tokens
from controlplane.dashboard import logstore
from controlplane.dashboard.common import Dashboard
from controlplane.httpjson import read_json


def register(bp: Blueprint, dash: Dashboard) -> None:
    ctx = dash.ctx
    meter = ingest.IngestMeter(ctx.db, ctx.settings.limits)
    retention = ingest.Retention(ctx.db, ctx.settings.limits)

    @bp.post("/api/v1/agent/logs")
    async def agent_logs() -> dict[str, Any]:
        ident = await ctx.directory.authenticate(
            tokens.bearer(request.headers.get("Authorization"))
        )
        chunks = logstore.parse_chunks(await read_json())
        await meter.charge(ident.instance_id, log_bytes=sum(len(c.data.encode()) for c in chunks))
        known = await ingest.known_services(ctx.directory, ident.stack_id)
        kept = [c for c in chunks if c.service in known]
        accepted = await logstore.record_chunks(ctx.db, ident.instance_id, ident.stack_id, kept)
        await retention.prune()
        answer: dict[str, Any] = {"accepted": accepted}
        if len(kept) < len(chunks):
            refused = sorted({c.service for c in chunks if c.service not in known})
            answer["refused"] = {"services": refused, "detail": "not services of this stack"}
        return answer
