"""What the connection logic may ask of a socket, and of the other side of an exchange.

The client side (`client.ClientConnection`) and the backend side
(`upstream.UpstreamConnection`) are plain classes: bytes and events come in as method
calls, and they act by giving commands to a `Sink` (write, pause, resume, close, abort)
and by calling the other side through the small interfaces below. Neither module
imports the other, nor asyncio: `drivers` wires them to asyncio transports, and tests
wire them to in-memory sinks.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from agent.proxy.errors import ProxyFailure
    from agent.proxy.exchange import Exchange


class Sink(Protocol):
    """The commands a connection gives its socket (an asyncio transport in production)."""

    def write(self, data: bytes) -> None: ...
    def writelines(self, parts: Iterable[bytes]) -> None: ...
    def can_write_eof(self) -> bool: ...
    def write_eof(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class _NotConnected:
    """The sink of a connection without a socket yet (a backend being connected): there
    is nothing to pause or close, and writing would lose bytes."""

    def write(self, data: bytes) -> None:
        raise RuntimeError("write on a connection that is not connected")

    def writelines(self, parts: Iterable[bytes]) -> None:
        raise RuntimeError("write on a connection that is not connected")

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise RuntimeError("write_eof on a connection that is not connected")

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


NOT_CONNECTED: Sink = _NotConnected()


class ClientSide(Protocol):
    """What the backend side needs from the client side of its exchange."""

    out: Sink
    closed: bool
    write_paused: bool

    def pause_reading(self, reason: int) -> None: ...
    def resume_reading(self, reason: int) -> None: ...
    def response_done(self, ex: "Exchange") -> None: ...
    def upstream_failed(self, ex: "Exchange", failure: "ProxyFailure") -> None: ...
    def become_tunnel(self, up: "UpstreamSide") -> None: ...
    def resume_held(self, ex: "Exchange") -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class UpstreamSide(Protocol):
    """What the client side needs from the backend connection of its exchange."""

    out: Sink
    deadline: float

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def client_gone(self, ex: "Exchange") -> None: ...
    def close(self) -> None: ...
