"""The backend side: keep-alive connections to `127.0.0.1:<port>` and their pool.

`UpstreamPool.send(ex)` takes an idle connection for the target port (LIFO, so the
warmest socket is reused) or opens a new one. An `UpstreamConnection` writes the
exchange's head and any pending body, parses the response with httptools, and writes
the rewritten head and the body to the client as each piece arrives (re-chunked when
the client gets chunks). At the end of a response that left the connection clean it goes
back to the pool.

The response head is taken raw from the bytes read (a response always starts a read or
follows a 1xx head on it, since requests are never pipelined to a backend) and rewritten
through a memo (`headers.ResponseHeadCache`); the parser registers no per-header
callback. When a read holds a head the parser accepted before plus exactly its
Content-Length body, it is relayed in one write without parsing again. Whatever the
client receives in a read's worth of parsing leaves in a single write.

Route swaps: every port has an epoch. When the route table moves a service off a port
(or gives the port to another service) the epoch is bumped, idle connections to it are
closed, and busy ones are closed instead of pooled when their exchange ends. In-flight
requests thus finish on the old backend while new ones only ever reach the new one.

A pooled connection may have been closed by the backend just as it is reused; when that
connection dies before a single response byte and the request had no body, the request
is retried once on a fresh connection, which is what makes backend restarts invisible.
"""

import asyncio
from typing import TYPE_CHECKING, Any

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from agent.proxy.errors import ProxyFailure, UpstreamTimeout, UpstreamUnavailable, upstream_failure
from agent.proxy.exchange import Exchange
from agent.proxy.headers import BODY_CHUNKED, BODY_NONE, ResponseHeadCache

if TYPE_CHECKING:
    from agent.proxy.client import ClientConnection
    from agent.proxy.server import ProxyServer

U_CONNECTING = 0
U_IDLE = 1  # in the pool
U_ACTIVE = 2  # an exchange is in flight
U_TUNNEL = 3  # after 101: raw bytes both ways
U_CLOSED = 4
U_SWITCHING = 5  # 101 head parsed; the tunnel starts with the rest of this read

MAX_RESPONSE_HEAD = 64 * 1024  # a backend's head beyond this is garbage: 502


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "pool",
        "port",
        "epoch",
        "transport",
        "parser",
        "state",
        "deadline",
        "ex",
        "client",
        "hbuf",
        "hpos",
        "in_head",
        "interim",
        "delimited",
        "reused",
        "write_paused",
        "read_paused",
        "connect_task",
        "out",
        "heads",
        "head_tables",
    )

    def __init__(self, pool: "UpstreamPool", port: int, epoch: int) -> None:
        self.pool = pool
        self.port = port
        self.epoch = epoch
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.state = U_CONNECTING
        self.deadline = 0.0
        self.ex: Exchange | None = None
        self.client: ClientConnection | None = None
        # The raw response head is cut from the bytes read (responses always start a
        # read or follow a 1xx head) instead of being rebuilt from one parser callback
        # per header line: the parser only validates and frames.
        self.hbuf = b""
        self.hpos = 0
        self.in_head = False
        self.interim = False
        self.delimited = True  # the response has a length or chunks (not read-until-close)
        self.reused = False
        self.write_paused = False
        self.read_paused = False
        self.connect_task: asyncio.Future[Any] | None = None
        # Response bytes produced while parsing one read, written in one go afterwards:
        # a head and a small body leave in one send instead of two.
        self.out: list[bytes] = []
        self.heads = pool.heads
        self.head_tables = pool.heads.tables

    # -- exchange lifecycle ------------------------------------------------------------

    def attach(self, ex: Exchange) -> None:
        """Start sending `ex` on this (connected) connection."""
        self.ex = ex
        client = ex.client
        self.client = client
        ex.upstream = self
        self.state = U_ACTIVE
        self.in_head = True
        self.hbuf = b""
        self.hpos = 0
        pool = self.pool
        self.deadline = pool.server.now + pool.upstream_timeout
        pending = ex.pending
        transport = self.transport
        if pending and not ex.upgrade:  # (an upgrade's pending bytes wait for its 101)
            ex.pending = None
            ex.pending_bytes = 0
            transport.writelines((ex.head, *pending))  # type: ignore[union-attr]
            client.resume_reading(4)  # R_PENDING
        else:
            transport.write(ex.head)  # type: ignore[union-attr]
        if client.write_paused:
            self.pause_reading()

    def connect_done(self, fut: "asyncio.Future[Any]") -> None:
        self.connect_task = None
        ex = self.ex
        if fut.cancelled():
            exc: BaseException | None = TimeoutError("connect timed out")
        else:
            exc = fut.exception()
        if exc is not None:
            self.state = U_CLOSED
            self.pool.conns.discard(self)
            if ex is not None and not ex.discard:
                ex.upstream = None
                target = ex.target
                failure = upstream_failure(exc, target.service if target else "?", self.port)
                ex.client.upstream_failed(ex, failure)
            return
        if ex is None or ex.discard:  # the client left while we were connecting
            self.ex = None
            self.pool.release(self)
            return
        self.attach(ex)

    def _flush(self) -> None:
        out = self.out
        client = self.client
        if client is not None and not client.closed:
            if len(out) == 1:
                client.transport.write(out[0])  # type: ignore[union-attr]
            else:
                client.transport.write(b"".join(out))  # type: ignore[union-attr]
        out.clear()

    def _finish(self, reusable: bool) -> None:
        ex = self.ex
        assert ex is not None
        if self.out:
            self._flush()
        self.ex = None
        ex.upstream = None
        client = self.client
        self.client = None
        if self.write_paused:
            self.write_paused = False
            client.resume_reading(2)  # type: ignore[union-attr]  # R_UPSTREAM
        if not ex.request_done:
            reusable = False  # part of the request body was never sent
            ex.discard = True
        if reusable:
            pool = self.pool
            idle = pool.idle.get(self.port)
            server = pool.server
            if (
                idle is not None
                and self.state == U_ACTIVE
                and not server.draining
                and self.epoch == pool.epochs.get(self.port, 0)
                and len(idle) < pool.max_idle
                and not self.read_paused
            ):
                # (pool.release's common case, inlined)
                self.state = U_IDLE
                self.deadline = server.now + pool.idle_timeout
                idle.append(self)
            else:
                pool.release(self)
        else:
            self.close()
        client.response_done(ex)  # type: ignore[union-attr]

    def client_gone(self, ex: Exchange) -> None:
        """The client closed mid-exchange: this connection is in an unknown state."""
        if self.ex is ex:
            if self.state == U_CONNECTING:
                return  # connect_done sees ex.discard and pools the connection
            self.ex = None
            self.client = None
            self.close()

    # -- transport callbacks --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses; same interface
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.state == U_TUNNEL:
            self.client.transport.write(data)  # type: ignore[union-attr]
            return
        if self.ex is None:
            self.close()  # bytes from an idle backend: not HTTP we can trust
            return
        if self.in_head:
            if self.hbuf:
                self.hbuf += data
            else:
                end = data.find(b"\r\n\r\n")
                if end > 0:
                    ex = self.ex
                    hit = self.head_tables[ex.keep_alive << 2 | ex.http11 << 1 | ex.is_head].get(
                        data[: end + 2]
                    )  # (ResponseHeadCache.lookup, inlined)
                    if hit is not None and hit[4] == len(data) - end - 4:
                        # A head the parser accepted before, followed by exactly its
                        # body: relay it in one write without parsing it again (and
                        # without a deadline update: the connection is done with).
                        self.in_head = False
                        ex.keep_alive = hit[2]
                        ex.framing = hit[1]
                        ex.response_started = True
                        self.delimited = True
                        client = self.client
                        if not client.closed:  # type: ignore[union-attr]
                            client.transport.write(hit[0] + data[end + 4 :])  # type: ignore[union-attr]
                        self._finish(True)
                        return
                self.hbuf = data
                self.hpos = 0
        pool = self.pool
        self.deadline = pool.server.now + pool.upstream_timeout
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self._flush()
            self._tunnel(data[int(exc.args[0]) :])
            return
        except HttpParserError as exc:
            self._flush()
            self._broken(f"sent an invalid response ({exc})")
            return
        if self.out:
            self._flush()
        if self.in_head and len(self.hbuf) - self.hpos > MAX_RESPONSE_HEAD:
            self._broken(f"sent a response head over {MAX_RESPONSE_HEAD} bytes")
        elif self.state == U_SWITCHING:
            self._tunnel(b"")  # a 101 llhttp did not treat as an upgrade

    def eof_received(self) -> bool | None:
        if self.state == U_TUNNEL:
            client = self.client
            if client is not None and client.transport is not None:
                client.transport.write_eof()
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        state = self.state
        self.state = U_CLOSED
        self.pool.forget(self)
        ex = self.ex
        if state == U_TUNNEL:
            client = self.client
            if client is not None:
                client.close()
            return
        if ex is None:
            return
        client = ex.client
        if ex.response_started:
            if not self.delimited and not self.interim:
                # a read-until-close body ends here: that is success
                if ex.framing == BODY_CHUNKED:
                    client.transport.write(b"0\r\n\r\n")  # type: ignore[union-attr]
                self.ex = None
                ex.upstream = None
                ex.keep_alive = ex.keep_alive and ex.request_done
                client.response_done(ex)
            else:
                ex.upstream = None
                client.abort()  # truncated: the client must see it as incomplete
            return
        ex.upstream = None
        self.ex = None
        if self.reused and not ex.retried and ex.request_done and not ex.body_seen:
            ex.retried = True  # a stale pooled connection: try once more on a fresh one
            self.pool.connect(ex, ex.target.port)  # type: ignore[union-attr, arg-type]
            return
        target = ex.target
        failure = upstream_failure(exc, target.service if target else "?", self.port)
        client.upstream_failed(ex, failure)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.client is not None:
            self.client.pause_reading(2)  # R_UPSTREAM

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.client is not None:
            self.client.resume_reading(2)

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    # -- parser callbacks --------------------------------------------------------------

    def on_headers_complete(self) -> None:
        ex = self.ex
        if ex is None:
            return
        buf = self.hbuf
        pos = self.hpos
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            raise ValueError("response head without CRLF line ends")
        raw = buf[pos : end + 2]
        self.hpos = end + 4
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            # 100 Continue, 103 Early Hints: forward to HTTP/1.1 clients, then wait
            self.interim = True
            if ex.http11:
                self.out.append(self.heads.rewrite(raw, status, True, True, False, False)[0])
            return
        self.in_head = False
        self.hbuf = b""
        head, framing, keep, self.delimited, _ = self.heads.rewrite(
            raw, status, ex.keep_alive, ex.http11, ex.is_head, self.parser.should_keep_alive()
        )
        ex.keep_alive = keep
        ex.framing = framing
        ex.response_started = True
        if status == 101:
            self.state = U_SWITCHING
        self.out.append(head)
        if ex.is_head and status != 101:
            # llhttp would wait for Content-Length body bytes that never come after a
            # HEAD: finish here and start the next response on a fresh parser.
            reusable = self.parser.should_keep_alive()
            self.parser = HttpResponseParser(self)
            self._finish(reusable)

    def on_body(self, body: bytes) -> None:
        ex = self.ex
        if ex is None:
            return
        if ex.framing == BODY_CHUNKED:
            self.out += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            self.out.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        ex = self.ex
        if ex is None or self.state == U_SWITCHING:
            return  # after a 101 the parser hands over to the tunnel
        if ex.framing == BODY_CHUNKED:
            self.out.append(b"0\r\n\r\n")
        self._finish(self.parser.should_keep_alive())

    # -- tunnels, failures, timeouts -------------------------------------------------

    def _tunnel(self, rest: bytes) -> None:
        ex = self.ex
        if ex is None or not ex.upgrade or ex.framing != BODY_NONE:
            self._broken("switched protocols without being asked")
            return
        self.state = U_TUNNEL
        self.deadline = 0.0
        client = ex.client
        if rest:
            client.transport.write(rest)  # type: ignore[union-attr]
        client.become_tunnel(self)

    def _broken(self, why: str) -> None:
        self._drop_exchange(UpstreamUnavailable, why)

    def _drop_exchange(self, failure: type[ProxyFailure], why: str) -> None:
        """Close this connection; its exchange gets an error page, or is cut off when the
        response had already begun (a status line was sent: no error page is possible)."""
        ex = self.ex
        self.ex = None
        self.close()
        if ex is None:
            return
        ex.upstream = None
        if ex.response_started:
            ex.client.abort()
        else:
            service = ex.target.service if ex.target else "?"
            ex.client.upstream_failed(
                ex, failure(f"service {service!r} at 127.0.0.1:{self.port} {why}")
            )

    def on_timeout(self) -> None:
        state = self.state
        if state == U_CONNECTING:
            if self.connect_task is not None:
                self.connect_task.cancel()  # connect_done answers 504
            return
        if state == U_IDLE:
            self.close()
            return
        self._drop_exchange(UpstreamTimeout, "timed out")

    def close(self) -> None:
        if self.state != U_CLOSED:
            self.state = U_CLOSED
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()


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
        task = asyncio.ensure_future(server.loop.create_connection(lambda: conn, "127.0.0.1", port))
        conn.connect_task = task
        task.add_done_callback(conn.connect_done)

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
