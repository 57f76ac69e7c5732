"""The pool of backend connections: idle keep-alive ones per port, and every open one.

`UpstreamPool.send(ex)` takes an idle connection for the target port (LIFO, so the
warmest socket is reused) or opens a new one through the server's `connect` (the
asyncio driver in production). Route swaps retire a port (`retire`): its idle
connections close and busy ones are not pooled again, and the port stays `stale` until a
live route owns it again. A request that was routed before the swap but reaches the pool
after it (pipelined, or retried) goes to its service's current target instead (`send`,
`retry`): each exchange knows its service.
"""

from typing import TYPE_CHECKING

from agent.proxy.exchange import Exchange
from agent.proxy.headcache import ResponseHeadCache
from agent.proxy.states import U_CLOSED, U_IDLE, U_TUNNEL
from agent.proxy.upstream import UpstreamConnection

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
        self.stale: set[int] = set()  # ports no live (unpaused) route owns

    def send(self, ex: Exchange) -> None:
        port = ex.target.port  # type: ignore[union-attr]
        assert port is not None
        if port in self.stale:  # routed by an older table
            if not self.reroute(ex):
                return
            port = ex.target.port  # type: ignore[union-attr]
            assert port is not None
        idle = self.idle.get(port)
        if idle:
            conn = idle.pop()
            conn.reused = True
            conn.attach(ex)
            return
        self.connect(ex, port)

    def reroute(self, ex: Exchange) -> bool:
        """Point `ex` at its service's current target; False when it is held instead
        (the service is paused). Without a current backend it keeps its target."""
        assert ex.target is not None
        current = self.server.by_service.get(ex.target.service)
        if current is None or current.port is None:
            return True
        if current.paused:
            ex.target = current
            self.server.hold(ex)
            return False
        ex.target = current
        return True

    def retry(self, ex: Exchange) -> None:
        """Send `ex` again on a fresh connection to its service's current target."""
        if self.reroute(ex):
            self.connect(ex, ex.target.port)  # type: ignore[union-attr, arg-type]

    def in_flight(self) -> dict[int, int]:
        """Open requests (and tunnels) per stale port: what a replaced release still
        serves for us."""
        stale = self.stale
        counts: dict[int, int] = {}
        if stale:
            for conn in self.conns:
                port = conn.port
                if port in stale and (conn.ex is not None or conn.state == U_TUNNEL):
                    counts[port] = counts.get(port, 0) + 1
        return counts

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
        self.stale.add(port)
        for conn in self.idle.pop(port, []):
            conn.close()

    def close_idle(self) -> None:
        for conns in list(self.idle.values()):
            for conn in list(conns):
                conn.close()
        self.idle.clear()
