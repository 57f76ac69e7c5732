"""The proxy's per-exchange count (inlined in ClientConnection.response_done, and
`count_apart`) records what RouteMetrics.record records."""

import asyncio
from collections.abc import Callable

import pytest
import uvloop

from agent.bus.messages import Route, RouteTable
from agent.metrics.routes import RouteMetrics
from agent.proxy.client import ClientConnection
from agent.proxy.config import ProxyConfig
from agent.proxy.exchange import Exchange
from agent.proxy.routing import Target, make_target
from agent.proxy.server import EXTERNAL, ProxyServer
from agent.proxy.upstream import UpstreamConnection
from tests.agent.proxy.memory import MemorySink


def _exchange(
    target: Target | None, status: int, head_at: float, error: str | None, age: float
) -> Exchange:
    ex = Exchange(None, True, True, False, False)  # type: ignore[arg-type]
    ex.target = target
    ex.head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    ex.bytes_in, ex.bytes_out = len(ex.head) + 7, 1234  # the head, then a body
    ex.status, ex.error = status, error
    ex.started = 0.0  # (so that the total time is exactly `age`)
    ex.head_at = ex.started + age / 2 if head_at > 0 else head_at
    return ex


def _counted(ex: Exchange, server: ProxyServer, now: float) -> None:
    """Count `ex` as the proxy does: its client's response_done, at the clock `now`."""
    client = ClientConnection(server)
    client.connection_made(MemorySink(), "203.0.113.5")
    ex.client = client
    ex.keep_alive = False
    client.current = ex
    server.tick = now  # (the clock of this wake-up)
    client.response_done(ex)


@pytest.mark.parametrize(
    ("service", "status", "head_at", "error", "age"),
    [
        ("web", 200, 1.0, None, 0.003),  # head, then body
        ("web", 304, -1.0, None, 0.02),  # head and body at once
        ("web", 200, -1.0, None, 0.0001),  # at once, in the first bucket
        ("web", 200, -1.0, None, 0.005),  # at once, on the first bound (inclusive)
        ("web", 404, -1.0, None, 0.0001),  # a backend's 404: no error kind
        ("web", 503, -1.0, None, 7.0),  # at once, in the last bounded bucket
        ("web", 502, 0.0, "UpstreamUnavailable", 0.3),  # no response head
        (None, 404, 0.0, "NoRoute", 0.0001),  # no route: service ""
        ("api", 0, 0.0, None, 20.0),  # cut before any status; overflow bucket
    ],
)
def test_count_matches_record(
    service: str | None, status: int, head_at: float, error: str | None, age: float
) -> None:
    loop = asyncio.new_event_loop()
    try:
        server = ProxyServer(EXTERNAL, ProxyConfig(), loop)
        counted = server.metrics
        assert counted is not None
        target = make_target(Route(service, 9, "/"), counted) if service else None
        ex = _exchange(target, status, head_at, error, age)
        now = ex.started + age
        _counted(ex, server, now)
    finally:
        loop.close()
    total = now - ex.started
    upstream = None
    if ex.head_at:
        upstream = ex.head_at - ex.started if ex.head_at > 0 else total
    recorded = RouteMetrics()
    recorded.record(service or "", status, ex.bytes_in, ex.bytes_out, upstream,
                    total, error)  # fmt: skip
    assert counted.snapshot({}) == recorded.snapshot({})


def test_a_target_counts_into_its_servers_meter_across_tables() -> None:
    meters = RouteMetrics()
    first = make_target(Route("web", 9, "/"), meters)
    second = make_target(Route("web", 10, "/"), meters)  # the next route table's
    assert first.meter is second.meter is meters.meter("web")
    assert first != second and first == Target("web", 9)  # (the meter is not compared)


def _served(pieces_after_head: list[bytes], pause_s: float) -> RouteMetrics:
    """One request through a real ProxyServer in memory; the backend's answer arrives
    as a head read, then `pieces_after_head` as reads `pause_s` apart."""
    loop = asyncio.new_event_loop()
    try:
        server = ProxyServer(EXTERNAL, ProxyConfig(), loop)
        server.apply_table(RouteTable(version=(1, 1), routes=(Route("web", 9, "/"),)))
        backends: list[UpstreamConnection] = []

        def connect(conn: UpstreamConnection, port: int) -> None:
            conn.connection_made(MemorySink())
            conn.connect_done(None)
            backends.append(conn)

        server.connect = connect  # type: ignore[method-assign]
        client = ClientConnection(server)
        client.connection_made(MemorySink(), "203.0.113.5")
        client.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        (backend,) = backends
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        backend.data_received(head if pieces_after_head else head + b"hello")
        for piece in pieces_after_head:
            # the backend takes its time over the body: each read is a wake-up of its own
            loop.run_until_complete(asyncio.sleep(pause_s))
            backend.data_received(piece)
        assert server.metrics is not None
        return server.metrics
    finally:
        loop.close()


def test_upstream_time_ends_at_the_head_when_the_body_comes_later() -> None:
    web = _served([b"hel", b"lo"], 0.04).routes["web"]
    assert web.responses[2] == 1
    assert web.upstream.counts[0] == 1  # the head came at once: under 5 ms
    assert sum(web.total.counts[:4]) == 0 and sum(web.total.counts) == 1  # over 50 ms
    assert web.upstream.sum_s < 0.005 < 0.08 <= web.total.sum_s


def test_a_response_whole_in_one_read_has_upstream_time_equal_to_total() -> None:
    web = _served([], 0).routes["web"]
    assert web.upstream == web.total and sum(web.total.counts) == 1


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_the_clock_is_read_once_per_wake_up_of_the_loop(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    loop = new_loop()  # (the proxy runs on uvloop)
    try:
        server = ProxyServer(EXTERNAL, ProxyConfig(), loop)
        assert server.tick == 0.0
        first = server.clock()
        assert server.tick == first  # what the rest of this wake-up reads
        loop.run_until_complete(asyncio.sleep(0.002))  # the loop turns: forgotten
        assert server.tick == 0.0
        assert server.clock() >= first + 0.002
    finally:
        loop.close()
