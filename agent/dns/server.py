"""UDP and TCP I/O around `AnswerBook.answer`; no DNS logic lives here.

Sockets are bound by `bind_sockets` first, so that the process can drop root right
after, then served on the running asyncio loop (uvloop in production):

* UDP: a plain `DatagramProtocol` whose `datagram_received` answers inline. (A blocking
  `recvfrom`/`sendto` loop in a thread measured the same with `bench/dns.py`: dnsperf,
  not the responder, is the limit on this hardware, so the simpler form stays.)
* TCP (RFC 7766): 2-byte length framing, several queries per connection, an idle timeout
  and a cap on concurrent connections. The idle timeout bounds writing too: a client that
  sends queries but never reads its answers is cut off (abort: its unsent answers are
  dropped) once an answer has waited that long, so it cannot hold a connection slot.

The current `AnswerBook` sits in a `BookHolder`; swapping it is one attribute assignment,
atomic for the loop. Any exception while answering costs that one
query only (logged, rate-limited), never the responder.
"""

import asyncio
import logging
import socket
import time

from agent.dns.answers import AnswerBook

log = logging.getLogger(__name__)

TCP_IDLE_TIMEOUT_S = 10.0
TCP_DRAIN_S = 3.0  # on stop: how long open TCP connections may take to finish their query
MAX_TCP_CONNECTIONS = 256
UDP_RCVBUF = 4 * 1024 * 1024  # absorbs bursts: a full buffer means lost queries
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; Python does not export it


class BookHolder:
    """The answer book in use; replaced whole when the zone changes."""

    def __init__(self, book: AnswerBook) -> None:
        self.book = book
        self._last_error_log = 0.0

    def answer(self, data: bytes) -> bytes | None:
        try:
            return self.book.answer(data)
        except Exception:  # a bug must cost one query, never the responder
            now = time.monotonic()
            if now - self._last_error_log > 10.0:
                self._last_error_log = now
                log.exception("failed to answer a %d-byte query (dropped)", len(data))
            return None


def bind_sockets(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """Bind the UDP and TCP sockets on host:port (before dropping privileges)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        for s in (udp, tcp):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:  # root may exceed rmem_max; others get what the sysctl allows
            udp.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, UDP_RCVBUF)
        except OSError:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        udp.bind((host, port))
        tcp.bind((host, port))
        tcp.listen(128)
    except OSError:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, holder: BookHolder) -> None:
        self._holder = holder
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self._holder.answer(data)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)


class DnsServer:
    """Serves `holder` on the bound sockets until `close()`."""

    def __init__(
        self,
        udp: socket.socket,
        tcp: socket.socket,
        holder: BookHolder,
        idle_timeout_s: float = TCP_IDLE_TIMEOUT_S,
        max_tcp_connections: int = MAX_TCP_CONNECTIONS,
    ) -> None:
        self._udp = udp
        self._tcp = tcp
        self.holder = holder
        self._idle_timeout_s = idle_timeout_s
        self._max_tcp = max_tcp_connections
        self._transport: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp_clients = 0
        # open TCP connections -> True while waiting for another query after answering one
        self._between_queries: dict[asyncio.StreamWriter, bool] = {}
        self._closing = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self.holder), sock=self._udp
        )
        self._tcp_server = await asyncio.start_server(self._serve_tcp, sock=self._tcp)

    @property
    def tcp_connections(self) -> int:
        """TCP connections being served now."""
        return self._tcp_clients

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_clients >= self._max_tcp:
            writer.transport.abort()  # over the cap: refused at once, nothing queued
            return
        self._tcp_clients += 1
        idle = self._idle_timeout_s
        served = 0
        try:
            while True:
                if self._closing and served:
                    break  # stopping: every query this connection sent is answered
                self._between_queries[writer] = served > 0
                length = await asyncio.wait_for(reader.readexactly(2), idle)
                self._between_queries[writer] = False
                size = int.from_bytes(length, "big")
                data = await asyncio.wait_for(reader.readexactly(size), idle)
                reply = self.holder.answer(data)
                if reply is None:  # not a query: nothing sensible to say on this stream
                    break
                writer.write(len(reply).to_bytes(2, "big") + reply)
                served += 1
                try:
                    await asyncio.wait_for(writer.drain(), idle)
                except TimeoutError:  # a client that never reads its answers
                    writer.transport.abort()  # close() would wait for them to be sent
                    break
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            self._tcp_clients -= 1
            self._between_queries.pop(writer, None)
            writer.close()

    async def close(self, drain_s: float = TCP_DRAIN_S) -> None:
        """Stop accepting, then let open TCP connections finish (bounded by `drain_s`):
        one between queries is closed, one that is reading a query gets its answer, and
        one accepted just before that has sent nothing yet gets its first query answered
        (or a restart would cut it: the listening socket lives on in the next process)."""
        if self._tcp_server is not None:
            self._tcp_server.close()
        if self._transport is not None:
            self._transport.close()  # queued datagrams wait in the kept socket
        self._closing = True
        await asyncio.sleep(0)  # connections accepted just now start their handlers
        for writer, between in list(self._between_queries.items()):
            if between:
                writer.transport.abort()
        deadline = time.monotonic() + drain_s
        while self._tcp_clients and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for writer in list(self._between_queries):
            writer.transport.abort()
        await asyncio.sleep(0)
