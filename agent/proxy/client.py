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

from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser, parse_url

from agent.proxy.counting import count
from agent.proxy.errors import (
    BadRequest,
    HeadTimeout,
    HeadTooLarge,
    NoBackend,
    NoRoute,
    ProxyFailure,
    UnsupportedFraming,
    VersionNotSupported,
    response_for,
)
from agent.proxy.exchange import PENDING_LIMIT, Exchange
from agent.proxy.headers import CHUNKED, HeadError, UnsupportedCoding, rewrite_request
from agent.proxy.requestmemo import MAX_LOOKED_UP, VERSION, Remembered, plain_line
from agent.proxy.routing import BadPath, Target, route_path
from agent.proxy.sides import NOT_CONNECTED, Sink, UpstreamSide

if TYPE_CHECKING:
    from agent.proxy.server import ProxyServer

# Where the parser is in the current request (deadline meaning in brackets).
P_IDLE = 0  # between requests [idle timeout when nothing is in flight]
P_HEAD = 1  # request head arriving [head timeout, from its first byte]
P_BODY = 2  # request body arriving [body timeout, between reads]
P_UPGRADE = 3  # upgrade request sent; waiting for the backend's answer [none]

# Reasons to stop reading from the client (a bit mask: reading resumes when all clear).
R_PIPELINE = 1  # requests queued behind the one being answered
R_UPSTREAM = 2  # the backend is not reading the request body fast enough
R_PENDING = 4  # too much body buffered while the backend connection is opened


class ClientConnection:
    __slots__ = (
        "server",
        "out",
        "parser",
        "url",
        "headers",
        "pstate",
        "deadline",
        "raw_head",
        "chunk_len",
        "current",
        "parsing",
        "queue",
        "read_pauses",
        "write_paused",
        "tunnel",
        "closed",
        "client_ip",
        "trusted",
        "config",
        "http11",
        "heads",
        "blocks",
        "upgrading",
        "finished",
        "counted",
    )

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

    def _replay_head(self, hit: Remembered) -> bool:
        """Start the request whose head was remembered whole; False: parse it."""
        prefix, suffix, target, keep_alive, is_head = hit
        # (a remembered target is running and unpaused: the memo is emptied with every
        # new route table)
        return self._start_remembered(prefix + self.client_ip + suffix, target, keep_alive, is_head)

    def _replay_block(self, data: bytes, at: int, hit: Remembered) -> bool:
        """Start the request in `data`, a remembered header block under a new request
        line; False: parse it."""
        plain = plain_line(data, 0, at)
        if plain is None or len(data) > self.config.max_head_bytes:
            return False
        method, url = plain.groups()
        prefix, suffix, target, keep_alive, _ = hit
        server = self.server
        if server.external:
            try:
                match = route_path(server.paths, url)
            except BadPath:
                return False  # the parser's path answers it with the 400 page
            if match is None:
                return False  # the parser's path answers it with the 404 page
            target, url = match
            if target.paused or target.port is None:
                return False
        # (the internal proxy's target came with the Host header)
        head = b"".join((method, b" ", url, prefix, self.client_ip, suffix))
        return self._start_remembered(head, target, keep_alive, method == b"HEAD")

    def _start_remembered(
        self, head: bytes, target: Target, keep_alive: bool, is_head: bool
    ) -> bool:
        server = self.server
        if self.http11 is False or server.draining:
            return False
        self.http11 = True
        server.requests.replays += 1
        if not keep_alive:
            self.finished = True  # as on_message_complete would say for a closing request
        ex = Exchange(self, keep_alive, True, is_head, False)
        if server.metrics is not None:
            ex.started = perf_counter()
        ex.head = head
        ex.target = target
        ex.request_done = True
        self.current = ex
        if not self.write_paused:
            self.deadline = 0.0  # waiting for the backend: its own deadline applies
        server.pool.send(ex)
        return True

    def _remember(self, data: bytes, at: int, block: bytes) -> None:
        """A request began and completed within `data` (the parser is idle again): remember
        it, and its header block `data[at:]`, if `data` is exactly its head, which then
        means it had no body."""
        memo = self.server.requests
        if not memo.seen_before(block):
            return  # (ever-new heads stop here, at the cost of a set insert)
        ex = self.current
        if (
            ex is None
            or ex.failure is not None
            or not self.http11  # answered as HTTP/1.0: not what a replay does
            or self.server.draining
            or data.find(b"\r\n\r\n") != len(data) - 4
            or data.find(b"\r\n", 0, at) != -1  # " HTTP/1.1" must end the request line
        ):
            return
        target = ex.target
        if target is None or target.paused or target.port is None:
            return
        # The block is seen again: the head is likely to repeat too (a poller) and costs
        # one entry; the block is replayed only under plain request lines.
        memo.remember(
            data,
            block if plain_line(data, 0, at) is not None else None,
            self.trusted,
            ex.head,
            self.client_ip,
            target,
            ex.keep_alive,
            ex.is_head,
        )

    def eof_received(self) -> bool | None:
        if self.tunnel is not None:
            if self.tunnel.out.can_write_eof():
                self.tunnel.out.write_eof()
            return True  # the other direction may still flow
        if self.current is not None:
            # the client stopped sending but still waits for its answer
            self.current.keep_alive = False
            for ex in self.queue:
                ex.keep_alive = False
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        server = self.server
        server.clients.discard(self)
        if self.counted:
            self.counted = False
            ip = self.client_ip.decode()
            left = server.per_address[ip] - 1
            if left:
                server.per_address[ip] = left
            else:
                del server.per_address[ip]
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.close()
        for ex in (self.current, *self.queue):
            if ex is None:
                continue
            ex.discard = True
            up = ex.upstream
            if up is not None:
                up.client_gone(ex)
            elif ex.hold_deadline:
                self.server.unhold(ex)
        self.queue.clear()
        self.current = None

    def pause_writing(self) -> None:
        self.write_paused = True
        self.deadline = self.server.now + self.server.config.send_timeout
        ex = self.current
        if ex is not None and ex.upstream is not None:
            ex.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._rearm()
        ex = self.current
        if ex is not None and ex.upstream is not None:
            ex.upstream.resume_reading()

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
        if server.metrics is not None:
            ex.started = perf_counter()
        self.parsing = ex
        self.pstate = P_BODY
        self.deadline = server.now + config.body_timeout
        host_from_url = None
        if url[0] != 47:  # not "/": absolute form or "*"
            url, host_from_url = _origin_form(url)
        target = None
        try:
            if server.external:
                match = route_path(server.paths, url)
                if match is None:
                    ex.failure = NoRoute(f"no route for path {url.decode('latin-1')}")
                else:
                    target, url = match
                ex.head, host, body = rewrite_request(
                    method, url, headers, self.client_ip, self.trusted, upgrade
                )
            else:
                ex.head, host, body = rewrite_request(
                    method, url, headers, self.client_ip, self.trusted, upgrade
                )
                route_host = host_from_url or host
                if route_host is not None:
                    target = server.hosts.match(route_host)
                if target is None:
                    shown = (route_host or b"(none)").decode("latin-1")
                    ex.failure = NoRoute(f"no service for host {shown}")
        except UnsupportedCoding as err:
            raise UnsupportedFraming(f"unsupported {err}") from err
        except (HeadError, BadPath) as err:
            raise BadRequest(str(err)) from err
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

    def _start(self, ex: Exchange) -> None:
        """Send `ex` on its way; finishes it at once when it is an error answer."""
        if ex.failure is not None:
            self._answer_failure(ex, ex.failure)
            return
        target = ex.target
        assert target is not None
        if target.paused:
            self.server.hold(ex)
            return
        self.server.pool.send(ex)

    def resume_held(self, ex: Exchange) -> None:
        """The server unpaused `ex`'s service (or gave up): carry on."""
        if self.closed or ex.discard:
            return
        self._start(ex)

    def upstream_failed(self, ex: Exchange, failure: ProxyFailure) -> None:
        """The backend could not answer `ex` (nothing of the response was sent yet)."""
        if not ex.request_done:
            ex.keep_alive = False  # the rest of its body is still on the wire
        self._answer_failure(ex, failure)

    def _answer_failure(self, ex: Exchange, failure: ProxyFailure) -> None:
        if self.closed:
            return
        self._write_failure(ex, failure)
        self.response_done(ex)

    def _write_failure(self, ex: Exchange, failure: ProxyFailure) -> None:
        keep = ex.keep_alive and not failure.close
        self.out.write(response_for(failure, keep))
        ex.keep_alive = keep
        ex.response_started = True
        ex.status = failure.status
        ex.error = type(failure).__name__
        if not ex.request_done:
            ex.discard = True

    def response_done(self, ex: Exchange) -> None:
        """The whole response of the current exchange was written."""
        if self.closed or ex is not self.current:
            return
        metrics = self.server.metrics
        if metrics is not None:
            count(metrics, ex)
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
            if metrics is not None:
                count(metrics, nxt)
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

    def _upgrade_requested(self, rest: bytes) -> None:
        ex = self.upgrading  # (may still be queued behind pipelined requests)
        self.parsing = None
        if self.closed or ex is None:
            return
        ex.request_done = True
        if ex.failure is not None or ex.response_started:
            self.close()  # refused upgrade: nothing after it can be parsed as HTTP
            return
        self.pstate = P_UPGRADE
        self.deadline = 0.0
        if rest:
            self._buffer_upgrade(rest)

    def _buffer_upgrade(self, data: bytes) -> None:
        """Bytes the client sent after its upgrade request, before the backend's 101:
        held until the backend switches protocols (`become_tunnel`), never sent as HTTP.
        A refused upgrade closes the connection with them unsent."""
        ex = self.upgrading
        if ex is None or ex.discard:
            return
        self._pend(ex, data)

    def become_tunnel(self, up: UpstreamSide) -> None:
        """The backend switched protocols: copy bytes both ways from now on."""
        self.tunnel = up
        self.pstate = P_UPGRADE
        self.deadline = 0.0
        ex = self.current
        if ex is not None and ex.pending:
            up.out.writelines(ex.pending)
            ex.pending = None
        self.resume_reading(R_PENDING | R_PIPELINE)

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

    def _rearm(self) -> None:
        """Set the deadline that the current state implies."""
        config = self.server.config
        now = self.server.now
        if self.write_paused:
            self.deadline = now + config.send_timeout
        elif self.pstate == P_HEAD:
            pass  # the head timeout runs from the head's first byte, never extended
        elif self.pstate == P_BODY:
            self.deadline = now + config.body_timeout
        elif self.pstate == P_IDLE and self.current is None:
            self.deadline = now + config.idle_timeout
        else:
            self.deadline = 0.0  # waiting for a backend: its own deadline applies

    def on_timeout(self) -> None:
        """Called by the sweeper when `deadline` has passed."""
        if self.closed:
            return
        if self.write_paused:
            self.abort()  # the client stopped reading its response
        elif self.pstate == P_HEAD and self.current is None:
            self._fail_fatal(HeadTimeout("the request head did not arrive in time"))
        elif self.read_pauses:
            self._rearm()  # we paused reading ourselves; the backend's deadline governs
        elif self.pstate == P_BODY and self.current is not None:
            ex = self.current
            if not ex.response_started and ex.upstream is None:
                self._fail_fatal(HeadTimeout("the request body did not arrive in time"))
            else:
                self.abort()
        elif self.pstate in (P_HEAD, P_BODY):
            self.abort()
        elif self.current is None:
            self.close()  # idle keep-alive connection

    def _parse_failed(self, exc: HttpParserError) -> None:
        cause = exc.__context__
        if isinstance(cause, ProxyFailure):
            self._fail_fatal(cause)
        else:
            self._fail_fatal(BadRequest(f"malformed request: {exc}"))

    def _fail_fatal(self, failure: ProxyFailure) -> None:
        """Nothing more can be read from this client: answer `failure` in its turn (after
        the answers to the requests before it) and close. A request whose body broke
        after it went upstream cannot be answered any more: the connection is cut."""
        if self.closed:
            return
        self.finished = True  # whatever follows is not parsed
        ex = self.current
        if ex is None:
            self.out.write(response_for(failure, keep_alive=False))
            self.close()
            return
        bad = self.parsing
        self.parsing = None
        if bad is not None and (bad is ex or bad in self.queue):
            if bad.upstream is not None or bad.response_started:
                self.abort()
                return
            if bad is ex:
                self.out.write(response_for(failure, keep_alive=False))
                self.close()
                return
            bad.pending = None  # queued and never sent: it gets the error answer
        else:
            bad = Exchange(self, False, True, False, False)
            self.queue.append(bad)
        bad.failure = failure
        bad.keep_alive = False
        bad.request_done = True
        self.pause_reading(R_PIPELINE)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.out.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.out.abort()


def _origin_form(url: bytes) -> tuple[bytes, bytes | None]:
    """`http://h:1/p?q` -> (`/p?q`, `h:1`); `*` stays `*` (OPTIONS *)."""
    if url == b"*":
        return url, None
    try:
        parsed = parse_url(url)
    except HttpParserError:
        return url, None
    path = parsed.path or b"/"
    if parsed.query:
        path += b"?" + parsed.query
    host = parsed.host
    if host and parsed.port:
        host += b":%d" % parsed.port
    return path, host or None
