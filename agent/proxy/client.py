"""The client side of the proxy: the logic of one accepted connection, without I/O.

`ClientConnection` is a plain class: the driver (`drivers.ClientProtocol`) feeds it the
bytes and events of its socket, and it acts through a `Sink` (`out`: write, pause,
resume, close, abort) and through the backend side's interface (`sides.UpstreamSide`).

httptools parses requests as bytes arrive and calls back `on_url`, `on_header`,
`on_headers_complete`, `on_body`, `on_message_complete`. When a head is complete the
connection routes it (`routing`), rewrites it (`headers`) and starts an `Exchange`:
the pool hands it to an idle keep-alive backend connection (synchronously, the common
case) or opens one. Body bytes are written to the backend as they arrive (re-chunked
when the client sent chunks), so nothing is buffered beyond a transport's high-water
mark: when a backend stops reading, the client is paused, and the other way round.

Pipelined requests are answered in order: a request whose head arrives while another is
being answered waits in `queue`, and reading pauses until the queue drains. After a
`101 Switching Protocols` the connection becomes a tunnel and bytes are copied both ways
without parsing.

Timeouts are not timers: each connection keeps a `deadline` that the server's sweeper
checks a few times per second (arming a timer per request would cost more than the rest
of the request path). The state says what the deadline means.
"""

from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from agent.metrics.routes import LATENCY_BUCKETS_S, SAME_ROW
from agent.proxy import client_head, client_lifecycle, client_replay, client_upgrade
from agent.proxy.counting import FIRST, count_apart
from agent.proxy.errors import (
    BadRequest,
    HeadTooLarge,
    NoBackend,
    VersionNotSupported,
)
from agent.proxy.exchange import PENDING_LIMIT, Exchange
from agent.proxy.headers import CHUNKED
from agent.proxy.requestmemo import MAX_LOOKED_UP, VERSION, Remembered
from agent.proxy.routing import origin_form
from agent.proxy.sides import NOT_CONNECTED, Sink, UpstreamSide
from agent.proxy.states import P_BODY, P_HEAD, P_IDLE, P_UPGRADE, R_PENDING, R_PIPELINE

if TYPE_CHECKING:
    from agent.proxy.server import ProxyServer

_FIELDS = (  # (the slots, as one string: the list stays short)
    "server out parser url headers pstate deadline raw_head chunk_len current parsing queue"
    " read_pauses write_paused tunnel closed client_ip trusted config http11 heads blocks"
    " upgrading finished counted"
)


class ClientConnection:
    __slots__ = tuple(_FIELDS.split())

    def __init__(self, server: "ProxyServer") -> None:
        self.server = server
        self.out: Sink = NOT_CONNECTED
        self.parser = HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.pstate = P_IDLE
        self.deadline = 0.0
        self.raw_head = 0
        self.chunk_len = 0
        self.current: Exchange | None = None  # the exchange being answered
        self.parsing: Exchange | None = None  # the exchange whose body is arriving
        self.queue: deque[Exchange] = deque()
        self.read_pauses = 0
        self.write_paused = False
        self.tunnel: UpstreamSide | None = None
        self.closed = False
        self.client_ip = b"unknown"
        self.trusted = False
        self.config = server.config
        self.http11: bool | None = None  # a client's HTTP version, read once
        # the server's memo tables for this kind of peer
        self.heads: dict[bytes, Remembered] = {}
        self.blocks: dict[bytes, Remembered] = {}
        self.upgrading: Exchange | None = None  # an upgrade request was read: this one
        # the last request was read (it asked to close, or upgraded): nothing after it is
        # HTTP this connection will parse
        self.finished = False
        self.counted = False  # holds a place in the server's per-address count

    # -- events from the socket -----------------------------------------------------

    def connection_made(self, out: Sink, ip: str) -> None:
        """Accepted from `ip`; `out` takes this connection's commands."""
        self.out = out
        self.client_ip = ip.encode()
        # a loopback peer is cloudflared or a local service: keep its X-Forwarded-*
        self.trusted = ip.startswith("127.") or ip == "::1"
        server = self.server
        config = self.config
        if config.cap_loopback or not self.trusted:
            count = server.per_address.get(ip, 0)
            if count >= config.max_conns_per_address:
                server.refusals.refused(ip, server.now)
                self.closed = True
                out.abort()  # over the cap: no request is read from this connection
                return
            server.per_address[ip] = count + 1
            self.counted = True
        self.heads = server.requests.heads[self.trusted]
        self.blocks = server.requests.blocks[self.trusted]
        server.clients.add(self)
        # the first request head must arrive within the head timeout of the accept: a
        # connection that never sends a byte does not hold a descriptor for long
        self.deadline = server.now + config.head_timeout
        # accepted while draining (the listener was closing): its first request is still
        # served, without keep-alive (`ProxyServer.drain`), or a restart would reset it

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.out.write(data)
            return
        if self.finished:
            if self.pstate == P_UPGRADE:
                self._buffer_upgrade(data)
            return  # bytes after a request that closes the connection: ignored
        pstate = self.pstate
        block = None  # a read that may be one whole head: its header block, from ...
        at = -1  # ... this offset, where " HTTP/1.1\r\n" first occurs
        if pstate == P_IDLE:
            if self.current is None and len(data) <= MAX_LOOKED_UP:
                hit = self.heads.get(data)
                if hit is not None:
                    if self._replay_head(hit):
                        return
                else:
                    at = data.find(VERSION)
                    if at > 0:
                        block = data[at:]
                        hit = self.blocks.get(block)
                        if hit is not None and self._replay_block(data, at, hit):
                            return
            # a request begins (a pipelined one may also begin inside a read: it is
            # then timed from the next read on)
            self.pstate = P_HEAD
            self.deadline = self.server.now + self.config.head_timeout
            self.raw_head = 0
        self.chunk_len = len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self._upgrade_requested(data[int(exc.args[0]) :])
            return
        except HttpParserError as exc:
            if not self.finished:  # (llhttp refuses data after a closing request)
                self._parse_failed(exc)
            return
        if self.pstate == P_HEAD and not self.closed:
            # everything read since the head began is head: refuse before it grows
            self.raw_head += len(data)
            if self.raw_head > self.server.config.max_head_bytes:
                self._fail_fatal(HeadTooLarge("request head too large"))
        elif block is not None and self.pstate == P_IDLE:
            self._remember(data, at, block)

    # -- parser callbacks ------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # The hottest function of the proxy: the common path is kept short and flat.
        headers = self.headers
        self.headers = []
        url = self.url
        self.url = b""
        if self.closed:
            return
        server = self.server
        config = self.config
        if self.raw_head + self.chunk_len > config.max_head_bytes:
            size = len(url) + sum(len(n) + len(v) + 4 for n, v in headers)
            if size > config.max_head_bytes:
                raise HeadTooLarge(f"request head of {size} bytes is too large")
        parser = self.parser
        method = parser.get_method()
        upgrade = parser.should_upgrade()
        if upgrade and method == b"CONNECT":
            raise BadRequest("CONNECT is not supported by a reverse proxy")
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise VersionNotSupported(f"HTTP/{version} is not supported")
        http11 = self.http11
        if http11 is None:
            http11 = self.http11 = version == "1.1"
        keep_alive = parser.should_keep_alive() and not upgrade and not server.draining
        ex = Exchange(self, keep_alive, http11, method == b"HEAD", upgrade)
        metered = server.metrics is not None
        if metered:
            ex.started = server.tick or server.clock()
        self.parsing = ex
        self.pstate = P_BODY
        self.deadline = server.now + config.body_timeout
        host_from_url = None
        if url[0] != 47:  # not "/": absolute form or "*"
            url, host_from_url = origin_form(url)
        ex.head, host, body, target = client_head.route_and_rewrite(
            self, ex, method, url, headers, upgrade, host_from_url
        )
        if metered:
            ex.bytes_in = len(ex.head)  # (the body's bytes add to it)
        if body != -1:  # (NO_BODY) the framing the upstream head declares
            if body == CHUNKED:
                if version == "1.0":  # RFC 9112 6.1: faulty framing
                    raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
                ex.chunked = True
            else:
                ex.body_left = body
            if upgrade and body:
                raise BadRequest("an upgrade request cannot carry a body")
        if host is None and http11 and host_from_url is None:
            raise BadRequest("an HTTP/1.1 request needs a Host header")
        if target is not None:
            ex.target = target
            if target.port is None and not target.paused:
                ex.failure = NoBackend(f"service {target.service!r} has no running backend yet")
        if self.current is not None:
            self.queue.append(ex)
            self.pause_reading(R_PIPELINE)
            return
        self.current = ex
        if ex.failure is None and not target.paused:  # type: ignore[union-attr]
            server.pool.send(ex)  # the common case, without _start's detours
        else:
            self._start(ex)

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is None:
            return
        if not ex.chunked:
            left = ex.body_left = ex.body_left - len(body)
            if left < 0:  # never: llhttp counts the same length we declared upstream
                self.abort()
                return
        if ex.discard:
            return
        ex.body_seen = True
        ex.bytes_in += len(body)
        server = self.server
        self.deadline = server.now + server.config.body_timeout
        up = ex.upstream
        if up is not None:
            up.deadline = self.deadline  # a backend taking a long body is not idle
            if ex.chunked:
                up.out.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
            else:
                up.out.write(body)
            return
        self._pend(ex, b"%x\r\n%s\r\n" % (len(body), body) if ex.chunked else body)

    def on_message_complete(self) -> None:
        if self.headers:
            self.headers = []  # trailer fields (llhttp reports them as headers): dropped
        ex = self.parsing
        self.parsing = None
        if ex is not None:
            ex.request_done = True
            if ex.body_left:  # never: the body ended before the length we declared
                self.abort()
                return
            if ex.chunked and not ex.discard:
                up = ex.upstream
                if up is not None:
                    up.out.write(b"0\r\n\r\n")
                else:
                    self._pend(ex, b"0\r\n\r\n")
        if ex is not None and not ex.keep_alive:
            self.finished = True  # the last request of this connection has been read
        if ex is not None and ex.upgrade:
            self.pstate = P_UPGRADE  # whatever follows belongs to the new protocol
            self.upgrading = ex
            self.deadline = 0.0
        else:
            self.pstate = P_IDLE
            if not self.write_paused:  # (inlined _rearm: this runs for every request)
                if self.current is None:
                    self.deadline = self.server.now + self.config.idle_timeout
                else:
                    self.deadline = 0.0

    # -- exchanges ---------------------------------------------------------------------

    def response_done(self, ex: Exchange) -> None:
        """The whole response of the current exchange was written."""
        if self.closed or ex is not self.current:
            return
        server = self.server
        metrics = server.metrics
        if metrics is not None:
            # Count the exchange (agent/proxy/counting.py). Its common case, a backend's
            # response whole in one read (head_at < 0: upstream time = total time), is
            # four adds written here, not called: this runs for every request, and the
            # call was a tenth of the metrics' instructions (docs/metrics.md, "The
            # proxy's cost").
            total = (server.tick or server.clock()) - ex.started
            if ex.head_at < 0.0:
                m = ex.target.meter  # type: ignore[union-attr]  # (a backend answered)
                if total <= FIRST:
                    m.same[SAME_ROW[ex.status]] += 1
                else:
                    m.same[SAME_ROW[ex.status] + bisect_left(LATENCY_BUCKETS_S, total)] += 1
                m.same_sum += total
                m.bytes_in += ex.bytes_in
                m.bytes_out += ex.bytes_out
            else:
                count_apart(metrics, ex, total)
        if not ex.keep_alive:
            self.close()
            return
        # Queued error answers are written here, in order, without recursing; the first
        # request that goes to a backend stops the loop until its response is done.
        while self.queue:
            nxt = self.queue.popleft()
            self.current = nxt
            if not self.queue:
                self.resume_reading(R_PIPELINE)
            if nxt.failure is None:
                self._start(nxt)
                return  # in flight or held: its completion continues the queue
            self._write_failure(nxt, nxt.failure)
            if metrics is not None:  # (the proxy's own answer: no upstream time)
                count_apart(metrics, nxt, (server.tick or server.clock()) - nxt.started)
            if not nxt.keep_alive:
                self.close()
                return
        self.current = None
        if self.pstate == P_IDLE:
            if self.server.draining:
                self.close()
            elif not self.write_paused:
                self.deadline = self.server.now + self.config.idle_timeout
        else:
            self._rearm()

    def _pend(self, ex: Exchange, data: bytes) -> None:
        if ex.pending is None:
            ex.pending = [data]
        else:
            ex.pending.append(data)
        ex.pending_bytes += len(data)
        if ex.pending_bytes > PENDING_LIMIT:
            self.pause_reading(R_PENDING)

    # -- upgrades --------------------------------------------------------------------

    # -- flow control, timeouts, closing ----------------------------------------------

    def pause_reading(self, reason: int) -> None:
        if not self.read_pauses and not self.closed:
            self.out.pause_reading()
        self.read_pauses |= reason

    def resume_reading(self, reason: int) -> None:
        if self.read_pauses & reason:
            self.read_pauses &= ~reason
            if not self.read_pauses and not self.closed:
                self.out.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.out.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.out.abort()

    # the rarer paths, in their own modules (see their docstrings)
    _replay_head = client_replay.replay_head
    _replay_block = client_replay.replay_block
    _start_remembered = client_replay.start_remembered
    _remember = client_replay.remember
    eof_received = client_lifecycle.eof_received
    connection_lost = client_lifecycle.connection_lost
    pause_writing = client_lifecycle.pause_writing
    resume_writing = client_lifecycle.resume_writing
    _start = client_lifecycle.start
    resume_held = client_lifecycle.resume_held
    upstream_failed = client_lifecycle.upstream_failed
    _answer_failure = client_lifecycle.answer_failure
    _write_failure = client_lifecycle.write_failure
    _rearm = client_lifecycle.rearm
    on_timeout = client_lifecycle.on_timeout
    _parse_failed = client_lifecycle.parse_failed
    _fail_fatal = client_lifecycle.fail_fatal
    _upgrade_requested = client_upgrade.upgrade_requested
    _buffer_upgrade = client_upgrade.buffer_upgrade
    become_tunnel = client_upgrade.become_tunnel
