"""One request/response pair as it travels through the proxy.

An `Exchange` is created when a request head is complete and lives until its response
has been written (or has failed). It holds what both sides need: the rewritten upstream
head, the chosen target, body framing, and body bytes that arrived before a backend
connection was ready (`pending`, bounded by pausing the client). One is allocated per request.
"""

from typing import TYPE_CHECKING

from agent.proxy.errors import ProxyFailure
from agent.proxy.headers import BODY_NONE
from agent.proxy.routing import Target

if TYPE_CHECKING:
    from agent.proxy.sides import ClientSide, UpstreamSide

# Bytes of request body buffered for a backend that is not connected yet before the
# client is paused.
PENDING_LIMIT = 256 * 1024


class Exchange:
    # Rarely changed fields are class-level defaults: creating an exchange then sets
    # only five attributes (no __slots__ on purpose: it made creation slower).
    head = b""
    target: Target | None = None
    chunked = False  # the body is re-chunked upstream (the parser saw chunked)
    body_left = 0  # Content-Length bytes declared upstream and not yet relayed
    failure: ProxyFailure | None = None
    pending: list[bytes] | None = None
    pending_bytes = 0
    request_done = False
    body_seen = False
    discard = False  # response already finished: drop the rest of the body
    upstream: "UpstreamSide | None" = None
    response_started = False
    framing = BODY_NONE
    retried = False
    hold_deadline = 0.0
    # metrics (agent/metrics/routes.py): set only when the server counts
    status = 0  # the response's status, or the failure's
    error: str | None = None  # the failure's kind
    started = 0.0  # the server's clock (ProxyServer.clock) when the head was read
    # the clock after the read that carried the backend's response head; -1 while that
    # read is parsed, and for good when the response ended in it (upstream = total)
    head_at = 0.0
    # the request head as forwarded, then its body's bytes (set with the head, so that
    # counting reads an attribute of the exchange's own: a class default reads slower)
    bytes_in = 0
    bytes_out = 0  # response body bytes

    def __init__(
        self,
        client: "ClientSide",
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


def _seed_attribute_names() -> None:
    """Give `Exchange`'s shared table of attribute names every name, at import.

    CPython keeps an instance's attributes in a table of names shared by its class, and
    the table stops taking new names once a few dozen instances exist. An exchange that
    then sets a name the table lacks gets a dict of its own, and every attribute access
    on it is slower: with 50 requests in flight before the first response, the names a
    response sets (`framing`, `status`, ...) came too late, and every later exchange
    paid for it. Which names come first depends on traffic, so set them all once here.
    """
    seed = Exchange(None, False, False, False, False)  # type: ignore[arg-type]
    for name, default in vars(Exchange).items():
        if not name.startswith("__"):
            setattr(seed, name, default)


_seed_attribute_names()
