"""The proxy core's CPU per request with per-route metrics on and off, in one process.

No sockets and no other processes (whose noise hides a sub-microsecond effect on a
shared machine): the proxy's sans-IO connection classes are driven in memory, as in
tests/agent/proxy/memory.py, by one keep-alive client and a backend stub that answers
each request head in the next read (as on a loop, so the backend connection is pooled).
Two shapes, those of bench/proxy.py's legs: `realistic` (a browser's request with a new
path, query, user agent and cookie; nginx's response with a new request id: no memo
helps) and `fixed` (one repeated request and response: the memos answer). The loop
turns once every 16 requests, as a wake-up serves about that many at full load, so the
proxy's clock (read once per wake-up) costs what it does there. Runs alternate on/off;
medians. On a loaded machine even this swings; counting instructions
is steadier: `valgrind --tool=cachegrind --cache-sim=no` over two request counts.

    .venv/bin/python bench/proxy_metrics_cost.py [--requests 50000] [--runs 7]
"""

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.bus.messages import Route, RouteTable  # noqa: E402
from agent.proxy.client import ClientConnection  # noqa: E402
from agent.proxy.config import ProxyConfig  # noqa: E402
from agent.proxy.server import EXTERNAL, ProxyServer  # noqa: E402
from agent.proxy.upstream import UpstreamConnection  # noqa: E402

# The shapes of bench/proxy.py's legs: a browser's request with a new path, query, user
# agent and cookie; nginx's response with a new request id and cookie (realistic), or
# one repeated request and response (fixed).
REALISTIC_REQUEST = (
    b"GET /app/items/%d/detail?id=%d&sort=%d HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.%d\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-GB,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Cookie: session=s%d; theme=dark; _ga=GA1.2.%d.1700000000\r\n\r\n"
)
RESPONSES = {
    "realistic": b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 29 Nov 2026 17:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n"
    b"X-Request-Id: %032d\r\nSet-Cookie: sid=x; Path=/; HttpOnly; SameSite=Lax\r\n"
    b"Cache-Control: private, no-store\r\n\r\nhello world\n",
    "fixed": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n"
    b"hello world\n",
}


class Sink:
    def __init__(self, on_write=None) -> None:  # type: ignore[no-untyped-def]
        self.on_write = on_write
        self.n = 0

    def write(self, data: bytes) -> None:
        self.n += len(data)
        if self.on_write is not None:
            self.on_write(data)

    def writelines(self, parts) -> None:  # type: ignore[no-untyped-def]
        self.write(b"".join(parts))

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None: ...


# Requests served per wake-up of the loop, as measured at full load (docs/metrics.md,
# "Time resolution"): the proxy reads its clock once per wake-up.
PER_WAKE_UP = 16


def run(metrics: bool, shape: str, n: int) -> float:
    loop = asyncio.new_event_loop()
    server = ProxyServer(EXTERNAL, ProxyConfig(metrics=metrics), loop)
    server.apply_table(RouteTable(version=(1, 1), routes=(Route("web", 9, "/"),)))
    counter = [0]
    answers: list[tuple[UpstreamConnection, bytes]] = []  # delivered after the client's read

    def connect(conn: UpstreamConnection, port: int) -> None:
        def answer(data: bytes) -> None:
            if data.endswith(b"\r\n\r\n"):
                counter[0] += 1
                response = RESPONSES[shape]
                if shape == "realistic":
                    response %= counter[0]
                answers.append((conn, response))

        conn.connection_made(Sink(answer))
        conn.connect_done(None)

    server.connect = connect  # type: ignore[method-assign]
    client = ClientConnection(server)
    client.connection_made(Sink(), "203.0.113.5")
    if shape == "realistic":
        heads = [REALISTIC_REQUEST % (i % 997, i, i % 7, i, i * 7919, i) for i in range(n)]
    else:
        heads = [b"GET /p HTTP/1.1\r\nHost: x\r\nUser-Agent: bench\r\n\r\n"] * n
    start = time.perf_counter()
    for i, head in enumerate(heads):
        client.data_received(head)
        while answers:  # (as on a loop: the backend's answer is a later read)
            conn, data = answers.pop()
            conn.data_received(data)
        if i % PER_WAKE_UP == PER_WAKE_UP - 1:  # the loop turns: the proxy's clock is read anew
            loop.call_soon(loop.stop)
            loop.run_forever()
    took = time.perf_counter() - start
    if metrics:
        assert server.metrics is not None and server.metrics.routes["web"].requests == n
    loop.close()
    return took / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=50000)
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    print(f"{a.requests} requests per run, {a.runs} alternating runs, medians (µs per request)")
    for shape in ("realistic", "fixed"):
        on, off = [], []
        for _ in range(a.runs):
            off.append(run(False, shape, a.requests))
            on.append(run(True, shape, a.requests))
        m_on, m_off = statistics.median(on), statistics.median(off)
        print(f"  {shape:9}  metrics off {m_off:6.2f}  on {m_on:6.2f}  "
              f"cost {m_on - m_off:+.2f} µs ({100 * (m_on / m_off - 1):+.1f}% of the core's time)")  # fmt: skip


if __name__ == "__main__":
    main()
