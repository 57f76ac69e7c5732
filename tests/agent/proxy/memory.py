"""The proxy's connection logic driven in memory, like h11's `ConnectionPair`.

A `Harness` owns a real `ProxyServer` (route table, pool, request memo), one client
connection and the backend connections the pool opens. Its sinks record every command;
backends are h11 servers (the strict reference) that answer each complete request with
`200` and a body naming it. Connecting a backend is deferred to the next `step`, as it
is on a real loop, so body bytes pend while a connection is being opened.
"""

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

import h11

from agent.bus.messages import Route, RouteTable
from agent.proxy.client import ClientConnection
from agent.proxy.config import ProxyConfig
from agent.proxy.server import EXTERNAL, ProxyServer
from agent.proxy.upstream import UpstreamConnection


class MemorySink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.aborted = False
        self.paused = False
        self.eof = False

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.data += data

    def writelines(self, parts: Iterable[bytes]) -> None:
        for part in parts:
            self.write(part)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True


@dataclass
class MemoryBackend:
    conn: UpstreamConnection
    sink: MemorySink = field(default_factory=MemorySink)
    parser: h11.Connection = field(default_factory=lambda: h11.Connection(h11.SERVER))
    read: int = 0
    lost: bool = False
    error: str | None = None
    requests: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)  # complete
    partial: tuple[bytes, bytes, bytes] | None = None  # begun, not complete

    def step(self) -> bool:
        """Read what the proxy wrote, answer complete requests; True if anything moved."""
        new = bytes(self.sink.data[self.read :])
        self.read = len(self.sink.data)
        moved = bool(new)
        if new and self.error is None:
            self.parser.receive_data(new)
            self._events()
        if self.sink.closed and not self.lost:
            self.lost = True
            self.conn.connection_lost(None)
            moved = True
        return moved

    def _events(self) -> None:
        while True:
            try:
                event = self.parser.next_event()
            except h11.RemoteProtocolError as exc:
                self.error = str(exc)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.partial = (event.method, event.target, b"")
            elif isinstance(event, h11.Data) and self.partial is not None:
                m, t, b = self.partial
                self.partial = (m, t, b + event.data)
            elif isinstance(event, h11.EndOfMessage) and self.partial is not None:
                method, target, body = self.partial
                self.requests.append(self.partial)
                self.partial = None
                named = method + b" " + target
                length = b"%d" % len(named)
                answer = b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\n\r\n"
                if method != b"HEAD":
                    answer += named
                self.parser.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                self.parser.send(h11.EndOfMessage())
                if self.parser.our_state is h11.DONE and self.parser.their_state is h11.DONE:
                    self.parser.start_next_cycle()
                self.conn.data_received(answer)
            else:
                return


class Harness:
    def __init__(self, routes: list[Route], kind: str = EXTERNAL) -> None:
        self.loop = asyncio.new_event_loop()  # only for its clock: nothing runs on it
        self.server = ProxyServer(kind, ProxyConfig(), self.loop)
        self.server.apply_table(RouteTable(version=(1, 1), routes=tuple(routes)))
        self.server.connect = self._connect  # type: ignore[method-assign]
        self.connecting: list[UpstreamConnection] = []
        self.backends: list[MemoryBackend] = []
        self.new_client()

    def new_client(self, ip: str = "203.0.113.5") -> None:
        self.sink = MemorySink()
        self.client = ClientConnection(self.server)
        self.client.connection_made(self.sink, ip)
        self.client_lost = False

    def close(self) -> None:
        self.loop.close()

    def _connect(self, conn: UpstreamConnection, port: int) -> None:
        self.connecting.append(conn)

    def step(self) -> bool:
        moved = False
        while self.connecting:
            conn = self.connecting.pop(0)
            backend = MemoryBackend(conn)
            self.backends.append(backend)
            conn.connection_made(backend.sink)
            conn.connect_done(None)
            moved = True
        for backend in list(self.backends):
            moved = backend.step() or moved
        if self.sink.closed and not self.client_lost:
            self.client_lost = True
            self.client.connection_lost(None)
            moved = True
        return moved

    def settle(self) -> None:
        for _ in range(1000):
            if not self.step():
                return
        raise AssertionError("the proxy and its backends never settled")

    def feed(self, pieces: Iterable[bytes]) -> None:
        """Send `pieces` as separate reads, letting everything settle in between; reads
        wait while the proxy has paused reading (as the kernel would hold them)."""
        for piece in pieces:
            self.settle()
            if self.sink.closed:
                return
            assert not self.sink.paused, "reading paused with nothing left to wait for"
            self.client.data_received(piece)
        self.settle()

    def client_leaves(self) -> None:
        """The client's socket goes away (whatever it was in the middle of)."""
        if not self.client_lost:
            self.client_lost = self.sink.closed = True
            self.client.connection_lost(None)
        self.settle()

    def upstream_bytes(self) -> bytes:
        return b"".join(bytes(b.sink.data) for b in self.backends)
