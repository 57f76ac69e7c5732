"""The pool of backend connections: idle keep-alive ones per port, and every open one.

`UpstreamPool.send(ex)` takes an idle connection for the target port (LIFO, so the
warmest socket is reused) or opens a new one through the server's `connect` (the
asyncio driver in production). Route swaps retire a port (`retire`): its idle
connections close and busy ones are not pooled again.
"""

from typing import TYPE_CHECKING

from agent.proxy.exchange import Exchange
from agent.proxy.headers import ResponseHeadCache
from agent.proxy.upstream import U_CLOSED, U_IDLE, UpstreamConnection

if TYPE_CHECKING:
    from agent.proxy.server import ProxyServer


class UpstreamPool:
    """Idle keep-alive connections per backend port, and every open one for the sweeper."""

    def __init__(self, server: "ProxyServer") -> None:
        self.server = server
        self.heads = ResponseHeadCache()
        config = server.config  # frozen: its hot values are read from here
        self.upstream_timeout = config.upstream_timeout
        self.idle_timeout = config.pool_idle_timeout
        self.max_idle = config.pool_max_idle
        self.idle: dict[int, list[UpstreamConnection]] = {}
        self.epochs: dict[int, int] = {}
        self.conns: set[UpstreamConnection] = set()

    def send(self, ex: Exchange) -> None:
        port = ex.target.port  # type: ignore[union-attr]
        assert port is not None
        idle = self.idle.get(port)
        if idle:
            conn = idle.pop()
            conn.reused = True
            conn.attach(ex)
            return
        self.connect(ex, port)

    def connect(self, ex: Exchange, port: int) -> None:
        server = self.server
        conn = UpstreamConnection(self, port, self.epochs.get(port, 0))
        conn.ex = ex
        conn.client = ex.client  # ex.upstream stays None until connected (attach)
        conn.deadline = server.now + server.config.connect_timeout
        self.conns.add(conn)
        server.connect(conn, port)

    def release(self, conn: UpstreamConnection) -> None:
        server = self.server
        port = conn.port
        idle = self.idle.get(port)
        if idle is None:
            idle = self.idle[port] = []
        if (
            server.draining
            or conn.state == U_CLOSED
            or conn.epoch != self.epochs.get(port, 0)
            or len(idle) >= self.max_idle
        ):
            conn.close()
            return
        conn.state = U_IDLE
        conn.deadline = server.now + self.idle_timeout
        if conn.read_paused:
            conn.resume_reading()
        idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        self.conns.discard(conn)
        idle = self.idle.get(conn.port)
        if idle and conn in idle:
            idle.remove(conn)

    def retire(self, port: int) -> None:
        """The port changed hands: never reuse today's connections to it."""
        self.epochs[port] = self.epochs.get(port, 0) + 1
        for conn in self.idle.pop(port, []):
            conn.close()

    def close_idle(self) -> None:
        for conns in list(self.idle.values()):
            for conn in list(conns):
                conn.close()
        self.idle.clear()
