"""The rarer paths of a client connection: failures, held requests, timeouts, the end.

`ClientConnection` methods kept in their own module (client.py holds the request path):
error answers in their turn, the sweeper deadline handling, the peer half-closing or
going away, and the socket's write-side flow control.
"""

from typing import TYPE_CHECKING

from httptools import HttpParserError

from agent.proxy.errors import BadRequest, HeadTimeout, ProxyFailure, response_for
from agent.proxy.exchange import Exchange
from agent.proxy.states import P_BODY, P_HEAD, P_IDLE, R_PIPELINE

if TYPE_CHECKING:
    from agent.proxy.client import ClientConnection


def eof_received(conn: "ClientConnection") -> bool | None:
    if conn.tunnel is not None:
        if conn.tunnel.out.can_write_eof():
            conn.tunnel.out.write_eof()
        return True  # the other direction may still flow
    if conn.current is not None:
        # the client stopped sending but still waits for its answer
        conn.current.keep_alive = False
        for ex in conn.queue:
            ex.keep_alive = False
        return True
    return None


def connection_lost(conn: "ClientConnection", exc: Exception | None) -> None:
    conn.closed = True
    server = conn.server
    server.clients.discard(conn)
    if conn.counted:
        conn.counted = False
        ip = conn.client_ip.decode()
        left = server.per_address[ip] - 1
        if left:
            server.per_address[ip] = left
        else:
            del server.per_address[ip]
    tunnel = conn.tunnel
    if tunnel is not None:
        tunnel.close()
    for ex in (conn.current, *conn.queue):
        if ex is None:
            continue
        ex.discard = True
        up = ex.upstream
        if up is not None:
            up.client_gone(ex)
        elif ex.hold_deadline:
            conn.server.unhold(ex)
    conn.queue.clear()
    conn.current = None


def pause_writing(conn: "ClientConnection") -> None:
    conn.write_paused = True
    conn.deadline = conn.server.now + conn.server.config.send_timeout
    ex = conn.current
    if ex is not None and ex.upstream is not None:
        ex.upstream.pause_reading()


def resume_writing(conn: "ClientConnection") -> None:
    conn.write_paused = False
    conn._rearm()
    ex = conn.current
    if ex is not None and ex.upstream is not None:
        ex.upstream.resume_reading()


def start(conn: "ClientConnection", ex: Exchange) -> None:
    """Send `ex` on its way; finishes it at once when it is an error answer."""
    if ex.failure is not None:
        conn._answer_failure(ex, ex.failure)
        return
    target = ex.target
    assert target is not None
    if target.paused:
        conn.server.hold(ex)
        return
    conn.server.pool.send(ex)


def resume_held(conn: "ClientConnection", ex: Exchange) -> None:
    """The server unpaused `ex`'s service (or gave up): carry on."""
    if conn.closed or ex.discard:
        return
    conn._start(ex)


def upstream_failed(conn: "ClientConnection", ex: Exchange, failure: ProxyFailure) -> None:
    """The backend could not answer `ex` (nothing of the response was sent yet)."""
    if not ex.request_done:
        ex.keep_alive = False  # the rest of its body is still on the wire
    conn._answer_failure(ex, failure)


def answer_failure(conn: "ClientConnection", ex: Exchange, failure: ProxyFailure) -> None:
    if conn.closed:
        return
    conn._write_failure(ex, failure)
    conn.response_done(ex)


def write_failure(conn: "ClientConnection", ex: Exchange, failure: ProxyFailure) -> None:
    keep = ex.keep_alive and not failure.close
    conn.out.write(response_for(failure, keep))
    ex.keep_alive = keep
    ex.response_started = True
    ex.status = failure.status
    ex.error = type(failure).__name__
    if not ex.request_done:
        ex.discard = True


def rearm(conn: "ClientConnection") -> None:
    """Set the deadline that the current state implies."""
    config = conn.server.config
    now = conn.server.now
    if conn.write_paused:
        conn.deadline = now + config.send_timeout
    elif conn.pstate == P_HEAD:
        pass  # the head timeout runs from the head's first byte, never extended
    elif conn.pstate == P_BODY:
        conn.deadline = now + config.body_timeout
    elif conn.pstate == P_IDLE and conn.current is None:
        conn.deadline = now + config.idle_timeout
    else:
        conn.deadline = 0.0  # waiting for a backend: its own deadline applies


def on_timeout(conn: "ClientConnection") -> None:
    """Called by the sweeper when `deadline` has passed."""
    if conn.closed:
        return
    if conn.write_paused:
        conn.abort()  # the client stopped reading its response
    elif conn.pstate == P_HEAD and conn.current is None:
        conn._fail_fatal(HeadTimeout("the request head did not arrive in time"))
    elif conn.read_pauses:
        conn._rearm()  # we paused reading ourselves; the backend's deadline governs
    elif conn.pstate == P_BODY and conn.current is not None:
        ex = conn.current
        if not ex.response_started and ex.upstream is None:
            conn._fail_fatal(HeadTimeout("the request body did not arrive in time"))
        else:
            conn.abort()
    elif conn.pstate in (P_HEAD, P_BODY):
        conn.abort()
    elif conn.current is None:
        conn.close()  # idle keep-alive connection


def parse_failed(conn: "ClientConnection", exc: HttpParserError) -> None:
    cause = exc.__context__
    if isinstance(cause, ProxyFailure):
        conn._fail_fatal(cause)
    else:
        conn._fail_fatal(BadRequest(f"malformed request: {exc}"))


def fail_fatal(conn: "ClientConnection", failure: ProxyFailure) -> None:
    """Nothing more can be read from this client: answer `failure` in its turn (after
    the answers to the requests before it) and close. A request whose body broke
    after it went upstream cannot be answered any more: the connection is cut."""
    if conn.closed:
        return
    conn.finished = True  # whatever follows is not parsed
    ex = conn.current
    if ex is None:
        conn.out.write(response_for(failure, keep_alive=False))
        conn.close()
        return
    bad = conn.parsing
    conn.parsing = None
    if bad is not None and (bad is ex or bad in conn.queue):
        if bad.upstream is not None or bad.response_started:
            conn.abort()
            return
        if bad is ex:
            conn.out.write(response_for(failure, keep_alive=False))
            conn.close()
            return
        bad.pending = None  # queued and never sent: it gets the error answer
    else:
        bad = Exchange(conn, False, True, False, False)
        conn.queue.append(bad)
    bad.failure = failure
    bad.keep_alive = False
    bad.request_done = True
    conn.pause_reading(R_PIPELINE)
