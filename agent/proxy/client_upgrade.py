"""A client connection's protocol upgrade: from the request to the tunnel.

`ClientConnection` methods kept in their own module. After an upgrade request, bytes
the client sends are held until the backend answers; a `101` turns the connection
into a tunnel copying bytes both ways, anything else closes it.
"""

from typing import TYPE_CHECKING

from agent.proxy.sides import UpstreamSide
from agent.proxy.states import P_UPGRADE, R_PENDING, R_PIPELINE

if TYPE_CHECKING:
    from agent.proxy.client import ClientConnection


def upgrade_requested(conn: "ClientConnection", rest: bytes) -> None:
    ex = conn.upgrading  # (may still be queued behind pipelined requests)
    conn.parsing = None
    if conn.closed or ex is None:
        return
    ex.request_done = True
    if ex.failure is not None or ex.response_started:
        conn.close()  # refused upgrade: nothing after it can be parsed as HTTP
        return
    conn.pstate = P_UPGRADE
    conn.deadline = 0.0
    if rest:
        conn._buffer_upgrade(rest)


def buffer_upgrade(conn: "ClientConnection", data: bytes) -> None:
    """Bytes the client sent after its upgrade request, before the backend's 101:
    held until the backend switches protocols (`become_tunnel`), never sent as HTTP.
    A refused upgrade closes the connection with them unsent."""
    ex = conn.upgrading
    if ex is None or ex.discard:
        return
    conn._pend(ex, data)


def become_tunnel(conn: "ClientConnection", up: UpstreamSide) -> None:
    """The backend switched protocols: copy bytes both ways from now on."""
    conn.tunnel = up
    conn.pstate = P_UPGRADE
    conn.deadline = 0.0
    ex = conn.current
    if ex is not None and ex.pending:
        up.out.writelines(ex.pending)
        ex.pending = None
    conn.resume_reading(R_PENDING | R_PIPELINE)
