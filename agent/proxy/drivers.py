"""The asyncio side: protocols that feed a connection's logic and carry out its commands.

Each accepted socket gets a `ClientProtocol` and each backend socket an
`UpstreamProtocol`; they only forward the transport's callbacks to the plain
connection classes (`client.ClientConnection`, `upstream.UpstreamConnection`) and hand
them the transport as their `Sink`. `open_upstream` starts a backend connection.
"""

import asyncio
from typing import TYPE_CHECKING

from agent.proxy.client import ClientConnection
from agent.proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from agent.proxy.server import ProxyServer


class _Forwarding(asyncio.Protocol):
    """The transport callbacks both protocols hand to their connection unchanged: bound
    to the connection's own methods, so a read costs no forwarding call (uvloop keeps
    the protocol's `data_received` as it finds it when the transport is made)."""

    __slots__ = (
        "conn",
        "data_received",
        "eof_received",
        "connection_lost",
        "pause_writing",
        "resume_writing",
    )
    conn: ClientConnection | UpstreamConnection

    def _bind(self, conn: ClientConnection | UpstreamConnection) -> None:
        self.conn = conn
        self.data_received = conn.data_received  # type: ignore[method-assign]
        self.eof_received = conn.eof_received  # type: ignore[method-assign]
        self.connection_lost = conn.connection_lost  # type: ignore[method-assign]
        self.pause_writing = conn.pause_writing  # type: ignore[method-assign]
        self.resume_writing = conn.resume_writing  # type: ignore[method-assign]


class ClientProtocol(_Forwarding):
    __slots__ = ()
    conn: ClientConnection

    def __init__(self, server: "ProxyServer") -> None:
        self._bind(ClientConnection(server))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        # uvloop transports are not asyncio.Transport subclasses; same interface
        self.conn.connection_made(transport, str(peer[0]) if peer else "unknown")  # type: ignore[arg-type]


class UpstreamProtocol(_Forwarding):
    __slots__ = ()
    conn: UpstreamConnection

    def __init__(self, conn: UpstreamConnection) -> None:
        self._bind(conn)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn.connection_made(transport)  # type: ignore[arg-type]


def open_upstream(loop: asyncio.AbstractEventLoop, conn: UpstreamConnection, port: int) -> None:
    """Connect `conn` to 127.0.0.1:`port`; it hears `connect_done` either way."""
    task = asyncio.ensure_future(
        loop.create_connection(lambda: UpstreamProtocol(conn), "127.0.0.1", port)
    )

    def done(fut: "asyncio.Task[tuple[asyncio.Transport, UpstreamProtocol]]") -> None:
        if fut.cancelled():
            conn.connect_done(TimeoutError("connect timed out"))
        else:
            conn.connect_done(fut.exception())

    conn.cancel_connect = task.cancel
    task.add_done_callback(done)
