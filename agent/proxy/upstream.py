"""The backend side: the logic of one keep-alive connection to `127.0.0.1:<port>`.

`UpstreamConnection` is a plain class, driven like the client side (`sides`): the pool
(`pool.UpstreamPool`) opens it and hands it exchanges, its driver feeds it the socket's
bytes and events, and it acts through its `Sink` (`out`) and the client side's
interface (`sides.ClientSide`). It writes the
exchange's head and any pending body, parses the response with httptools, and writes
the rewritten head and the body to the client as each piece arrives (re-chunked when
the client gets chunks). At the end of a response that left the connection clean it goes
back to the pool.

The response head is taken raw from the bytes read (a response always starts a read or
follows a 1xx head on it, since requests are never pipelined to a backend) and rewritten
through a memo (`headcache.ResponseHeadCache`); the parser registers no per-header
callback. When a read holds a head the parser accepted before plus exactly its
Content-Length body, it is relayed in one write without parsing again. Whatever the
client receives in a read's worth of parsing leaves in a single write.

Route swaps: every port has an epoch. When the route table moves a service off a port
(or gives the port to another service) the epoch is bumped, idle connections to it are
closed, and busy ones are closed instead of pooled when their exchange ends. In-flight
requests thus finish on the old backend while new ones only ever reach the new one.

A pooled connection may have been closed by the backend just as it is reused; when that
connection dies before a single response byte and the request is idempotent (GET, HEAD,
OPTIONS) without a body, it is retried once on a fresh connection to its service's
*current* target, which is what makes backend restarts and swaps invisible.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from agent.proxy import upstream_lifecycle
from agent.proxy.exchange import Exchange
from agent.proxy.headers import BODY_CHUNKED
from agent.proxy.sides import NOT_CONNECTED, ClientSide, Sink
from agent.proxy.states import U_ACTIVE, U_CLOSED, U_CONNECTING, U_IDLE, U_SWITCHING, U_TUNNEL

if TYPE_CHECKING:
    from agent.proxy.pool import UpstreamPool

MAX_RESPONSE_HEAD = 64 * 1024  # a backend's head beyond this is garbage: 502


class UpstreamConnection:
    __slots__ = (
        "pool",
        "port",
        "epoch",
        "out",
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
        "cancel_connect",
        "pending_out",
        "heads",
        "head_tables",
        "timed",
        "done",
    )

    def __init__(self, pool: "UpstreamPool", port: int, epoch: int) -> None:
        self.pool = pool
        self.port = port
        self.epoch = epoch
        self.out: Sink = NOT_CONNECTED
        self.parser = HttpResponseParser(self)
        self.state = U_CONNECTING
        self.deadline = 0.0
        self.ex: Exchange | None = None
        self.client: ClientSide | None = None
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
        self.cancel_connect: Callable[[], object] | None = None  # while connecting
        # Response bytes produced while parsing one read, written in one go afterwards:
        # a head and a small body leave in one send instead of two.
        self.pending_out: list[bytes] = []
        self.heads = pool.heads
        self.timed = pool.server.metrics is not None  # record response-head times
        self.head_tables = pool.heads.tables
        # The response ended inside the read being parsed: finished (True: reusable) once
        # the read is parsed, so that bytes after it (a body a 204 cannot have) are seen
        # before the connection goes back to the pool. None: not ended.
        self.done: bool | None = None

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
        out = self.out
        if pending and not ex.upgrade:  # (an upgrade's pending bytes wait for its 101)
            ex.pending = None
            ex.pending_bytes = 0
            out.writelines((ex.head, *pending))
            client.resume_reading(4)  # R_PENDING
        else:
            out.write(ex.head)
        if client.write_paused:
            self.pause_reading()

    def _flush(self) -> None:
        out = self.pending_out
        client = self.client
        if client is not None and not client.closed:
            if len(out) == 1:
                client.out.write(out[0])
            else:
                client.out.write(b"".join(out))
        out.clear()

    def _finish_done(self) -> None:
        reusable = self.done
        self.done = None
        self._finish(bool(reusable))

    def _finish(self, reusable: bool) -> None:
        ex = self.ex
        assert ex is not None
        if self.pending_out:
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

    # -- events from the socket ---------------------------------------------------------

    def connection_made(self, out: Sink) -> None:
        self.out = out

    def data_received(self, data: bytes) -> None:
        if self.state == U_TUNNEL:
            self.client.out.write(data)  # type: ignore[union-attr]
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
                        if self.timed:  # (llhttp accepted this head: "HTTP/1.x NNN ")
                            ex.status = (data[9] - 48) * 100  # its class is enough
                            ex.head_at = -1.0  # head and body at once: upstream = total
                            ex.bytes_out = hit[4]
                        ex.keep_alive = hit[2]
                        ex.framing = hit[1]
                        ex.response_started = True
                        self.delimited = True
                        client = self.client
                        if not client.closed:  # type: ignore[union-attr]
                            client.out.write(hit[0] + data[end + 4 :])  # type: ignore[union-attr]
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
            if self.done is not None:  # bytes after a whole response: never reused
                self.done = False
                self._finish_done()
                return
            self._flush()
            self._broken(f"sent an invalid response ({exc})")
            return
        if self.done is not None:
            self._finish_done()
            return
        if self.timed:
            ex = self.ex
            if ex is not None and ex.head_at < 0:
                # The head came in this read and the response goes on: its time is now
                # (the clock of this wake-up, only for responses that do not arrive whole).
                server = self.pool.server
                ex.head_at = server.tick or server.clock()
        if self.pending_out:
            self._flush()
        if self.in_head and len(self.hbuf) - self.hpos > MAX_RESPONSE_HEAD:
            self._broken(f"sent a response head over {MAX_RESPONSE_HEAD} bytes")
        elif self.state == U_SWITCHING:
            self._tunnel(b"")  # a 101 llhttp did not treat as an upgrade

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.client is not None:
            self.client.pause_reading(2)  # R_UPSTREAM

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.client is not None:
            self.client.resume_reading(2)

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.out.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.out.resume_reading()

    # -- parser callbacks --------------------------------------------------------------

    def on_headers_complete(self) -> None:
        ex = self.ex
        if ex is None or self.done is not None:
            self.done = False  # another response after a complete one: garbage
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
                self.pending_out.append(
                    self.heads.rewrite(raw, status, True, True, False, False)[0]
                )
            return
        self.in_head = False
        self.hbuf = b""
        ex.status = status
        if self.timed:
            ex.head_at = -1.0  # (timed after this read, unless the response ends in it)
        head, framing, keep, self.delimited, _ = self.heads.rewrite(
            raw, status, ex.keep_alive, ex.http11, ex.is_head, self.parser.should_keep_alive()
        )
        ex.keep_alive = keep
        ex.framing = framing
        ex.response_started = True
        if status == 101:
            self.state = U_SWITCHING
        self.pending_out.append(head)
        if ex.is_head and status != 101:
            # llhttp would wait for Content-Length body bytes that never come after a
            # HEAD: done here, and the next response starts on a fresh parser (this one
            # reports any bytes left in the read as body: garbage, see on_body).
            self.done = self.parser.should_keep_alive()
            self.parser = HttpResponseParser(self)

    def on_body(self, body: bytes) -> None:
        ex = self.ex
        if ex is None or self.done is not None:
            self.done = False
            return
        ex.bytes_out += len(body)
        if ex.framing == BODY_CHUNKED:
            self.pending_out += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            self.pending_out.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        ex = self.ex
        if ex is None or self.state == U_SWITCHING:
            return  # after a 101 the parser hands over to the tunnel
        if self.done is not None:
            return  # a HEAD response's old parser (whatever follows is flagged elsewhere)
        if ex.framing == BODY_CHUNKED:
            self.pending_out.append(b"0\r\n\r\n")
        self.done = self.parser.should_keep_alive()

    # -- tunnels, failures, timeouts -------------------------------------------------

    def close(self) -> None:
        if self.state != U_CLOSED:
            self.state = U_CLOSED
            self.pool.forget(self)
            self.out.close()

    # the rarer paths, in their own modules (see their docstrings)
    connect_done = upstream_lifecycle.connect_done
    client_gone = upstream_lifecycle.client_gone
    eof_received = upstream_lifecycle.eof_received
    connection_lost = upstream_lifecycle.connection_lost
    _tunnel = upstream_lifecycle.tunnel
    _broken = upstream_lifecycle.broken
    _drop_exchange = upstream_lifecycle.drop_exchange
    on_timeout = upstream_lifecycle.on_timeout
