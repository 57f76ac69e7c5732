"""DNS over TCP under hostile clients (issue 15.14), over real loopback sockets: the
server runs in-process on its own event loop with a short idle timeout and a small cap."""

import asyncio
import gc
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import dns.message
import dns.query

from agent.dns.answers import AnswerBook
from agent.dns.server import BookHolder, DnsServer, bind_sockets
from agent.dns.zone import Zone

IDLE_S = 1.0
CAP = 4
QUERY = dns.message.make_query("api.svc.internal", "A").to_wire()
FRAME = len(QUERY).to_bytes(2, "big") + QUERY


def wait_for(cond, timeout_s: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@contextmanager
def server() -> Iterator[tuple[DnsServer, int]]:
    udp, tcp = bind_sockets("127.0.0.1", 0)
    port = tcp.getsockname()[1]
    holder = BookHolder(AnswerBook(Zone(services=frozenset({"api"}), serial=1)))
    srv = DnsServer(udp, tcp, holder, idle_timeout_s=IDLE_S, max_tcp_connections=CAP)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="dns-test", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(srv.start(), loop).result(5)
    try:
        yield srv, port
        wait_for(lambda: srv.tcp_connections == 0)  # every handler has finished
    finally:
        asyncio.run_coroutine_threadsafe(srv.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        gc.collect()  # finished connections' writers close their transports on this loop
        loop.close()
        udp.close()
        tcp.close()


def answered(port: int) -> bool:
    reply = dns.query.tcp(dns.message.make_query("api.svc.internal", "A"), "127.0.0.1",
                          port=port, timeout=3)  # fmt: skip
    return bool(reply.answer)


def test_a_client_that_never_reads_is_cut_off_after_the_idle_timeout() -> None:
    with server() as (srv, port):
        hog = socket.socket()
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills quickly
        hog.connect(("127.0.0.1", port))
        hog.settimeout(0.5)
        burst = FRAME * 2000
        sent_until_blocked = 0
        try:  # queries until the server stops reading: its answers have nowhere to go
            while sent_until_blocked < 200_000_000:
                sent_until_blocked += hog.send(burst)
        except TimeoutError:
            pass
        assert srv.tcp_connections == 1
        # the server gives up on the connection (before the fix: held forever)
        wait_for(lambda: srv.tcp_connections == 0)
        hog.settimeout(5)
        try:
            while hog.recv(1 << 20):
                pass  # answers sent before the cut, then the end
        except ConnectionResetError:
            pass
        hog.close()
        assert answered(port)  # and everyone else is still served


def test_connections_beyond_the_cap_are_refused_and_the_cap_frees_up() -> None:
    with server() as (srv, port):
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(CAP)]
        wait_for(lambda: srv.tcp_connections == CAP)
        extra = socket.create_connection(("127.0.0.1", port))
        extra.settimeout(5)
        extra.sendall(FRAME)
        try:
            assert extra.recv(512) == b""  # closed without an answer
        except ConnectionResetError:
            pass
        extra.close()
        assert srv.tcp_connections == CAP
        # idle connections are closed after the idle timeout, and the slots come back
        wait_for(lambda: srv.tcp_connections == 0)
        for s in idle:
            s.settimeout(5)
            assert s.recv(512) == b""
            s.close()
        assert answered(port)


def _read_frame(sock: socket.socket) -> bytes:
    data = b""
    while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_stopping_answers_the_query_of_a_connection_accepted_just_before() -> None:
    """A restart must cut no TCP query (issue 16): on close, a connection that has sent
    nothing yet still gets its first query answered; one idle after an answer is closed."""
    udp, tcp = bind_sockets("127.0.0.1", 0)
    port = tcp.getsockname()[1]
    holder = BookHolder(AnswerBook(Zone(services=frozenset({"api"}), serial=1)))
    srv = DnsServer(udp, tcp, holder, idle_timeout_s=10.0)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="dns-drain", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(srv.start(), loop).result(5)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as served, \
                socket.create_connection(("127.0.0.1", port), timeout=5) as fresh:  # fmt: skip
            served.sendall(FRAME)
            assert len(_read_frame(served)) > 2
            wait_for(lambda: srv.tcp_connections == 2)
            closing = asyncio.run_coroutine_threadsafe(srv.close(drain_s=5.0), loop)
            assert served.recv(1) == b""  # idle after its answer: closed at once
            fresh.sendall(FRAME)  # sent after close() began
            reply = dns.message.from_wire(_read_frame(fresh)[2:])
            assert reply.answer
            closing.result(5)
            assert srv.tcp_connections == 0
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        gc.collect()
        loop.close()
        udp.close()
        tcp.close()
