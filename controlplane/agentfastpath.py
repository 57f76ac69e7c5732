"""An ASGI fast path for the two requests a fleet sends most, in front of the Quart app.

Every agent sends, each poll interval, `GET /api/v1/agent/desired-state` with
`If-None-Match` (nearly always answered 304) and `POST /api/v1/agent/heartbeat`. Through
Quart each costs its request/response objects, context locals, blueprint routing, hooks and
the JSON provider: most of the CPU of a request. `AgentFastPath` answers exactly these two,
in the common case, straight from the ASGI scope:

- poll: no query string (no long poll), a credential known to the in-memory
  `AgentDirectory`, and an `If-None-Match` naming the current hash → 304 with the ETag.
  Anything else (a 200 with the document, `?wait=`, a malformed request) goes to Quart.
- heartbeat and metric batch: a `Content-Length` within `MAX_BODY_BYTES` (chunked or
  oversized bodies go to Quart, which owns the 413) → authenticate, read the body, and
  answer with the very function the Quart route calls (`api_agent.heartbeat_answer`,
  `metrics.intake.intake`).

The answers, including every error body (`errors.rendered`, which the Quart app's error
handlers use too), are byte-for-byte those of the Quart routes in `api_agent.py`;
`tests/controlplane/test_fastpath.py` checks that by asking both.
Authentication, parsing and storage are the same functions the Quart handlers call, so
the two paths cannot drift in what they accept.
"""

import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from controlplane import api_agent, longpoll, tokens
from controlplane.agentdirectory import AgentIdentity
from controlplane.context import AppContext
from controlplane.errors import ApiError, crash_body, dumps, rendered
from controlplane.httpjson import etag_matches, parse_json_body, parse_wait
from controlplane.metrics.intake import intake
from controlplane.settings import MAX_BODY_BYTES

log = logging.getLogger("controlplane")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]  # Quart types its scope more narrowly
# an agent POST's answer: from the authenticated agent and the raw body, the JSON reply
Answer = Callable[[AgentIdentity, bytes], Awaitable[dict[str, Any]]]

POLL_PATH = "/api/v1/agent/desired-state"
HEARTBEAT_PATH = "/api/v1/agent/heartbeat"
METRICS_PATH = "/api/v1/agent/metrics"
_JSON_HEADERS = [(b"content-type", b"application/json")]
# the query strings answered here: none, or a long poll's `wait=N` alone (else Quart parses)
_WAIT_ONLY = re.compile(rb"(?:wait=[0-9.]*)?\Z")


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of a header (as Werkzeug's `Headers.get` returns), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class AgentFastPath:
    """ASGI app: the agents' hot requests answered here, everything else by `app`."""

    def __init__(self, app: ASGIApp, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx
        self._posts: dict[str, Answer] = {
            HEARTBEAT_PATH: lambda ident, raw: api_agent.heartbeat_answer(ctx, ident, parse_json_body(raw)),
            METRICS_PATH: lambda ident, raw: intake(ctx.metric_writes, ctx.directory, ident, raw),
        }  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            path, method = scope["path"], scope["method"]
            if path == POLL_PATH and method == "GET" and _WAIT_ONLY.match(scope["query_string"]):
                if await self._poll(scope, send):
                    return
            elif path in self._posts and method == "POST" and self._small_body(scope):
                await self._post(scope, receive, send, self._posts[path])
                return
        await self.app(scope, receive, send)

    async def _poll(self, scope: Scope, send: Send) -> bool:
        """Answer a poll, held (`?wait=`) or not, with 304 or the document; False: let
        Quart answer (the stack was deleted meanwhile)."""
        authorization = tokens.bearer(_header(scope, b"authorization"))
        directory = self.ctx.directory

        async def current_hash() -> str:
            return (await directory.authenticate(authorization)).doc_hash

        try:
            ident = await directory.authenticate(authorization)
            query = scope["query_string"]
            wait_s = parse_wait(query[5:].decode() if query else None, self.ctx.settings.max_wait_s)
            if_none_match = _header(scope, b"if-none-match")
            current = ident.doc_hash
            if wait_s:
                current = await longpoll.hold(self.ctx.watcher, ident.stack_id, if_none_match,
                                              current, wait_s, current_hash)  # fmt: skip
            found = None
            if not etag_matches(if_none_match, current):
                found = await directory.document(ident.stack_id)  # e.g. 503: no secret key
        except ApiError as exc:
            await _error(send, exc)
            return True
        if found is None:  # current, or the stack was deleted meanwhile
            await _respond(send, 304, b"", [(b"etag", f'"{current}"'.encode())])
            return True
        doc_hash, body = found
        await _respond(send, 200, body, [*_JSON_HEADERS, (b"etag", f'"{doc_hash}"'.encode())])
        return True

    @staticmethod
    def _small_body(scope: Scope) -> bool:
        """A plain Content-Length body within the limit (the only kind handled here)."""
        length = _header(scope, b"content-length")
        if length is None or not length.isdigit() or int(length) > MAX_BODY_BYTES:
            return False
        return _header(scope, b"transfer-encoding") is None

    async def _post(self, scope: Scope, receive: Receive, send: Send, answer: Answer) -> None:
        try:
            ident = await self.ctx.directory.authenticate(
                tokens.bearer(_header(scope, b"authorization"))
            )
            reply = await answer(ident, await _read_body(receive))
        except ApiError as exc:
            await _error(send, exc)
            return
        except _Disconnected:
            return
        except Exception as exc:  # the same answer as the Quart app's crash handler
            log.exception("unhandled error on POST %s", scope["path"])
            await _respond(send, 500, dumps(crash_body(exc)), _JSON_HEADERS)
            return
        await _respond(send, 200, dumps(reply), _JSON_HEADERS)


class _Disconnected(Exception):
    """The client went away before sending its whole body."""


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _error(send: Send, exc: ApiError) -> None:
    status, body, headers = rendered(exc)
    await _respond(send, status, body, [(k.lower().encode(), v.encode()) for k, v in headers])


async def _respond(send: Send, code: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    if code != 304:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
