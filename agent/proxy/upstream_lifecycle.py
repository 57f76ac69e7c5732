"""The rarer paths of a backend connection: connecting, failures, timeouts, the end.

`UpstreamConnection` methods kept in their own module (upstream.py holds the response
path): the connect attempt's outcome, a client leaving mid-exchange, the backend
closing (which ends a read-until-close body, or is retried once when a reused
connection died before answering an idempotent request), the switch to a tunnel after
`101`, and broken or timed-out exchanges.
"""

from typing import TYPE_CHECKING

from agent.proxy.errors import ProxyFailure, UpstreamTimeout, UpstreamUnavailable, upstream_failure
from agent.proxy.exchange import Exchange
from agent.proxy.headers import BODY_CHUNKED, BODY_NONE
from agent.proxy.states import U_CLOSED, U_CONNECTING, U_IDLE, U_TUNNEL

if TYPE_CHECKING:
    from agent.proxy.upstream import UpstreamConnection

IDEMPOTENT = (b"GET ", b"HEAD ", b"OPTIONS ")  # methods retried after a stale connection


def connect_done(conn: "UpstreamConnection", exc: BaseException | None) -> None:
    """The connect attempt ended: connected (`connection_made` came first) or `exc`."""
    conn.cancel_connect = None
    ex = conn.ex
    if exc is not None:
        conn.state = U_CLOSED
        conn.pool.conns.discard(conn)
        if ex is not None and not ex.discard:
            ex.upstream = None
            target = ex.target
            failure = upstream_failure(exc, target.service if target else "?", conn.port)
            ex.client.upstream_failed(ex, failure)
        return
    if ex is None or ex.discard:  # the client left while we were connecting
        conn.ex = None
        conn.pool.release(conn)
        return
    conn.attach(ex)


def client_gone(conn: "UpstreamConnection", ex: Exchange) -> None:
    """The client closed mid-exchange: this connection is in an unknown state."""
    if conn.ex is ex:
        if conn.state == U_CONNECTING:
            return  # connect_done sees ex.discard and pools the connection
        conn.ex = None
        conn.client = None
        conn.close()


def eof_received(conn: "UpstreamConnection") -> bool | None:
    if conn.state == U_TUNNEL:
        client = conn.client
        if client is not None and not client.closed:
            client.out.write_eof()
        return True
    return None


def connection_lost(conn: "UpstreamConnection", exc: Exception | None) -> None:
    state = conn.state
    conn.state = U_CLOSED
    conn.pool.forget(conn)
    ex = conn.ex
    if state == U_TUNNEL:
        client = conn.client
        if client is not None:
            client.close()
        return
    if ex is None:
        return
    client = ex.client
    if ex.response_started:
        if not conn.delimited and not conn.interim:
            # a read-until-close body ends here: that is success
            if ex.framing == BODY_CHUNKED:
                client.out.write(b"0\r\n\r\n")
            conn.ex = None
            ex.upstream = None
            ex.keep_alive = ex.keep_alive and ex.request_done
            client.response_done(ex)
        else:
            ex.upstream = None
            client.abort()  # truncated: the client must see it as incomplete
        return
    ex.upstream = None
    conn.ex = None
    if (
        conn.reused
        and not ex.retried
        and ex.request_done
        and not ex.body_seen
        and ex.head.startswith(IDEMPOTENT)
    ):
        ex.retried = True  # a stale pooled connection: try once more on a fresh one,
        conn.pool.retry(ex)  # to the route's current target (nginx does the same)
        return
    target = ex.target
    failure = upstream_failure(exc, target.service if target else "?", conn.port)
    client.upstream_failed(ex, failure)


def tunnel(conn: "UpstreamConnection", rest: bytes) -> None:
    ex = conn.ex
    if ex is None or not ex.upgrade or ex.framing != BODY_NONE:
        conn._broken("switched protocols without being asked")
        return
    conn.state = U_TUNNEL
    conn.deadline = 0.0
    client = ex.client
    if rest:
        client.out.write(rest)
    client.become_tunnel(conn)


def broken(conn: "UpstreamConnection", why: str) -> None:
    conn._drop_exchange(UpstreamUnavailable, why)


def drop_exchange(conn: "UpstreamConnection", failure: type[ProxyFailure], why: str) -> None:
    """Close this connection; its exchange gets an error page, or is cut off when the
    response had already begun (a status line was sent: no error page is possible)."""
    ex = conn.ex
    conn.ex = None
    conn.close()
    if ex is None:
        return
    ex.upstream = None
    if ex.response_started:
        ex.client.abort()
    else:
        service = ex.target.service if ex.target else "?"
        ex.client.upstream_failed(
            ex, failure(f"service {service!r} at 127.0.0.1:{conn.port} {why}")
        )


def on_timeout(conn: "UpstreamConnection") -> None:
    state = conn.state
    if state == U_CONNECTING:
        if conn.cancel_connect is not None:
            conn.cancel_connect()  # connect_done answers 504
        return
    if state == U_IDLE:
        conn.close()
        return
    conn._drop_exchange(UpstreamTimeout, "timed out")
