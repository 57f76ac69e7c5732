"""`POST /api/v1/agent/logs`: agents ship their services' build and run output.

Authenticated with the agent's credential exactly like the heartbeat (the instance and
stack come from the credential, never from the body). The body is
`{"chunks": [{"service", "stream": "run"|"build", "commit", "data"}]}`; the answer is
`{"accepted": N}`. Chunks are stored in arrival order with a bounded tail per
(instance, service, stream) (`logstore`), and open service pages receive them live.
"""

from typing import Any

from quart import Blueprint, request

from controlplane import tokens
from controlplane.dashboard import logstore
from controlplane.dashboard.common import Dashboard
from controlplane.httpjson import read_json


def register(bp: Blueprint, dash: Dashboard) -> None:
    ctx = dash.ctx

    @bp.post("/api/v1/agent/logs")
    async def agent_logs() -> dict[str, Any]:
        ident = await ctx.directory.authenticate(
            tokens.bearer(request.headers.get("Authorization"))
        )
        chunks = logstore.parse_chunks(await read_json())
        accepted = await logstore.record_chunks(ctx.db, ident.instance_id, ident.stack_id, chunks)
        return {"accepted": accepted}
