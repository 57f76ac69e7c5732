"""One request/response pair as it travels through the proxy.

An `Exchange` is created when a request head is complete and lives until its response
has been written (or has failed). It holds what both sides need: the rewritten upstream
head, the chosen target, body framing, and body bytes that arrived before a backend
connection was ready (`pending`, bounded by pausing the client). A plain slotted class:
one is allocated per request.
"""

from typing import TYPE_CHECKING

from agent.proxy.errors import ProxyFailure
from agent.proxy.headers import BODY_NONE
from agent.proxy.routing import Target

if TYPE_CHECKING:
    from agent.proxy.client import ClientConnection
    from agent.proxy.upstream import UpstreamConnection

# Bytes of request body buffered for a backend that is not connected yet before the
# client is paused.
PENDING_LIMIT = 256 * 1024


class Exchange:
    __slots__ = (
        "client",
        "keep_alive",
        "http11",
        "is_head",
        "upgrade",
        "head",
        "target",
        "chunked",
        "failure",
        "pending",
        "pending_bytes",
        "request_done",
        "body_seen",
        "discard",
        "upstream",
        "response_started",
        "framing",
        "retried",
        "hold_deadline",
    )

    def __init__(
        self,
        client: "ClientConnection",
        keep_alive: bool,
        http11: bool,
        is_head: bool,
        upgrade: bool,
    ) -> None:
        self.client = client
        self.keep_alive = keep_alive
        self.http11 = http11
        self.is_head = is_head
        self.upgrade = upgrade
        self.head = b""
        self.target: Target | None = None
        self.chunked = False
        self.failure: ProxyFailure | None = None
        self.pending: list[bytes] | None = None
        self.pending_bytes = 0
        self.request_done = False
        self.body_seen = False
        self.discard = False  # response already finished: drop the rest of the body
        self.upstream: UpstreamConnection | None = None
        self.response_started = False
        self.framing = BODY_NONE
        self.retried = False
        self.hold_deadline = 0.0
