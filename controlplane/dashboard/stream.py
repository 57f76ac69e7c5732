"""`GET /live`: the server-sent event stream an open page listens to.

Query: `stack=ID` (or empty for every stack), and on a service page `logs=INSTANCE/SERVICE`
with `after=SEQ`, the last log chunk the page already shows. Events:
- `hello`      sent first: the page knows it is connected (and refreshes its regions if
               this is a reconnect, to catch what it missed);
- `change`     `{"stack", "kinds"}`: the page re-fetches its live regions;
- `log`        `{"seq", "stream", "commit", "data"}`: appended to the log view;
- `resync`     the page fell behind (queue overflow): re-fetch everything.
A comment every `KEEPALIVE_S` keeps proxies from closing an idle stream and re-checks the
session, so a logged-out browser's stream ends within that time.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from quart import Blueprint, Response, abort, request
from sqlalchemy import select

from controlplane.dashboard import users
from controlplane.dashboard.auth import SESSION_COOKIE
from controlplane.dashboard.common import Dashboard
from controlplane.dashboard.live import Change, LogChunkOut
from controlplane.models import LogChunk
from controlplane.routes import Routes

KEEPALIVE_S = 15.0
RETRY_MS = 1500


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


routes = Routes()


def register(bp: Blueprint, dash: Dashboard) -> None:
    routes.bind(bp, dash)


async def catch_up(dash: Dashboard, instance: str, service: str, after: int) -> list[LogChunk]:
    async with dash.ctx.db.read() as session:
        return list(
            await session.scalars(
                select(LogChunk)
                .where(
                    LogChunk.instance_id == instance,
                    LogChunk.service == service,
                    LogChunk.seq > after,
                )
                .order_by(LogChunk.seq)
            )
        )


@routes.get("/live")
async def live(dash: Dashboard) -> Response:
    stack_id = request.args.get("stack") or None
    logs = request.args.get("logs") or ""
    instance, _, service = logs.partition("/")
    after_raw = request.args.get("after", "0")
    if (logs and not service) or not after_raw.isdigit():
        abort(400)
    after = int(after_raw)
    cookie = request.cookies.get(SESSION_COOKIE)

    def log_event(seq: int, stream: str, commit: str | None, data: str) -> str:
        return sse("log", {"seq": seq, "stream": stream, "commit": commit, "data": data})

    async def events() -> AsyncIterator[str]:
        async with dash.hub.subscribe(stack_id, instance or None, service or None) as sub:
            yield f"retry: {RETRY_MS}\n" + sse("hello", {"stack": stack_id})
            last = after
            if instance:
                for row in await catch_up(dash, instance, service, after):
                    yield log_event(row.seq, row.stream, row.commit, row.data)
                    last = row.seq
            while True:
                try:
                    item = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    if await users.lookup_session(dash.ctx.db, cookie) is None:
                        return
                    yield ": keepalive\n\n"
                    continue
                if item is None:  # the server is stopping
                    return
                if sub.overflowed:
                    sub.overflowed = False
                    yield sse("resync", {})
                if isinstance(item, Change):
                    yield sse("change", {"stack": item.stack_id, "kinds": sorted(item.kinds)})
                elif isinstance(item, LogChunkOut) and item.seq > last:
                    yield log_event(item.seq, item.stream, item.commit, item.data)
                    last = item.seq

    resp = Response(events(), content_type="text/event-stream; charset=utf-8")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    resp.timeout = None  # type: ignore[attr-defined]
    return resp
