"""The external proxy as a real process between real sockets."""

import hashlib
import json
import socket
import threading
import time

import pytest
import requests

from agent.bus.messages import Route
from tests.agent.proxy.conftest import route_to
from tests.agent.proxy.harness import Backend, BusPublisher, ProxyProcess
from tests.support.ports import free_port


def raw_exchange(
    port: int, payload: bytes, read_until: bytes | None = None, timeout: float = 5
) -> bytes:
    """Send raw bytes, read until `read_until` appears or the proxy closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        data = b""
        while read_until is None or read_until not in data:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
        return data


def route_usual(bus: BusPublisher, proxy: ProxyProcess, backend_a: Backend) -> None:
    """The table most tests here use (and the ones that change it restore): everything to
    backend a, `/api` stripped."""
    route_to(
        bus,
        proxy,
        [
            Route("web", backend_a.port, "/"),
            Route("api", backend_a.port, "/api", strip_prefix=True),
        ],
        "/",
        "a",
    )


@pytest.fixture(scope="module")
def routed(bus: BusPublisher, proxy: ProxyProcess, backend_a: Backend) -> ProxyProcess:
    route_usual(bus, proxy, backend_a)
    return proxy


def url(p: ProxyProcess, path: str) -> str:
    return f"http://127.0.0.1:{p.port}{path}"


def test_routing_stripping_and_forwarded_headers(routed: ProxyProcess) -> None:
    r = requests.get(
        url(routed, "/api/users?id=1"), headers={"Connection": "keep-alive, X-Hop", "X-Hop": "1"}
    )
    info = r.json()
    assert info["path"] == "/users?id=1"
    headers = {n.lower(): v for n, v in info["headers"]}
    assert headers["host"] == f"127.0.0.1:{routed.port}"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == f"127.0.0.1:{routed.port}"
    assert "x-hop" not in headers and "connection" not in headers
    assert requests.get(url(routed, "/apix")).json()["path"] == "/apix"
    assert requests.get(url(routed, "/api")).json()["path"] == "/"


def test_no_route_is_404_page(bus: BusPublisher, proxy: ProxyProcess, backend_a: Backend) -> None:
    route_to(bus, proxy, [Route("api", backend_a.port, "/api")], "/api", "a")
    try:
        # (/api reached "a" under the previous table too: wait for the new one, bounded)
        deadline = time.monotonic() + 10
        while (r := requests.get(url(proxy, "/nothing/here"))).status_code != 404:
            assert time.monotonic() < deadline, "the table without / was never applied"
            time.sleep(0.05)
        assert "no route for path /nothing/here" in r.text
    finally:
        route_usual(bus, proxy, backend_a)


def test_keep_alive_reuses_backend_connections(routed: ProxyProcess) -> None:
    with requests.Session() as s:
        conns = {s.get(url(routed, f"/k{i}")).json()["conn"] for i in range(20)}
    # sequential requests on one client connection ride one pooled backend connection
    assert len(conns) == 1


def test_pipelined_requests_are_answered_in_order(routed: ProxyProcess) -> None:
    reqs = (
        b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
        + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    data = raw_exchange(routed.port, reqs)
    assert data.count(b"HTTP/1.1 200 OK") == 6
    paths = [
        json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])["path"]
        for part in data.split(b"HTTP/1.1 200 OK")[1:]
    ]
    assert paths == ["/p0", "/p1", "/p2", "/p3", "/p4", "/last"]


def test_pipelined_errors_keep_order(
    routed: ProxyProcess, bus: BusPublisher, backend_a: Backend
) -> None:
    reqs = (
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    data = raw_exchange(routed.port, reqs)
    assert data.count(b"HTTP/1.1 200 OK") == 2


def test_chunked_and_length_uploads_stream(routed: ProxyProcess) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    r = requests.post(url(routed, "/upload"), data=body)
    assert r.json() == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    r = requests.post(
        url(routed, "/upload"), data=iter([body[i : i + 10000] for i in range(0, len(body), 10000)])
    )
    assert r.json() == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_large_upload_and_download_with_bounded_memory(routed: ProxyProcess) -> None:
    size = 1024 * 1024 * 1024  # the figure: 1 GiB each way
    block = b"z" * (1024 * 1024)
    digest = hashlib.sha256()
    for _ in range(size // len(block)):
        digest.update(block)
    base = routed.rss_kib()
    peak_before = routed.peak_rss_kib()
    with socket.create_connection(("127.0.0.1", routed.port)) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // len(block)):
            s.sendall(block)
        reply = b""
        while b"}" not in reply:
            reply += s.recv(65536)
    info = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert info == {"bytes": size, "sha256": digest.hexdigest()}
    got = 0
    with requests.get(url(routed, f"/download?n={size}"), stream=True) as r:
        for piece in r.iter_content(1024 * 1024):
            got += len(piece)
    assert got == size
    growth = routed.peak_rss_kib() - max(base, peak_before)
    assert growth < 24 * 1024, f"proxy memory grew by {growth} KiB while streaming"


def test_server_sent_events_arrive_chunk_by_chunk(routed: ProxyProcess) -> None:
    arrivals: list[float] = []
    with requests.get(url(routed, "/sse"), stream=True) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        for line in r.iter_lines():
            if line.startswith(b"data:"):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 5
    # the backend writes one event every 0.3 s: buffering would deliver them together
    assert arrivals[-1] - arrivals[0] > 0.9


def test_close_delimited_response_is_rechunked(routed: ProxyProcess) -> None:
    with requests.Session() as s:
        r = s.get(url(routed, "/close"))
        assert r.text == "until close"
        assert r.headers["Transfer-Encoding"] == "chunked"
        assert s.get(url(routed, "/after")).json()["path"] == "/after"  # same client connection
    data = raw_exchange(routed.port, b"GET /close HTTP/1.0\r\n\r\n")
    assert data.endswith(b"\r\n\r\nuntil close") and b"Connection: close" in data


def test_head_request(routed: ProxyProcess) -> None:
    with requests.Session() as s:
        r = s.head(url(routed, "/x"))
        assert r.status_code == 200 and int(r.headers["Content-Length"]) > 0
        assert s.get(url(routed, "/y")).json()["path"] == "/y"


def test_malformed_requests_are_400(routed: ProxyProcess) -> None:
    for bad in (
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    ):
        data = raw_exchange(routed.port, bad)
        assert data.startswith(b"HTTP/1.1 400 "), (bad, data)
        assert b"Connection: close" in data


def test_oversized_head_is_431(routed: ProxyProcess) -> None:
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"
    assert raw_exchange(routed.port, big).startswith(b"HTTP/1.1 431 ")
    many = (
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(5000))
        + b"\r\n"
    )
    assert raw_exchange(routed.port, many).startswith(b"HTTP/1.1 431 ")
    # a head that never ends is refused as soon as it is too large
    assert raw_exchange(routed.port, b"GET / HTTP/1.1\r\nX: " + b"b" * 100000).startswith(
        b"HTTP/1.1 431 "
    )


def test_slow_loris_is_cut_off(routed: ProxyProcess) -> None:
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", routed.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")
        data = b""
        for _ in range(40):  # one header byte every 0.1 s would take 4 s; head_timeout is 1 s
            try:
                s.sendall(b"X")
            except OSError:
                break
            time.sleep(0.1)
        try:
            while chunk := s.recv(4096):
                data += chunk
        except OSError:
            pass
    assert data.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - start < 4


def test_idle_keep_alive_connection_is_closed(routed: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", routed.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(8)
        data = b""
        while chunk := s.recv(4096):  # the idle timeout (5 s) closes it after the answer
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")


def test_refused_backend_is_502_and_missing_backend_503(
    bus: BusPublisher, proxy: ProxyProcess, backend_a: Backend
) -> None:
    dead = free_port()
    route_to(
        bus,
        proxy,
        [
            Route("web", backend_a.port, "/"),
            Route("dead", dead, "/dead"),
            Route("new", None, "/new"),
        ],
        "/",
        "a",
    )
    r = requests.get(url(proxy, "/dead/x"))
    assert r.status_code == 502 and "refused" in r.text and "'dead'" in r.text
    r = requests.get(url(proxy, "/new"))
    assert r.status_code == 503 and "no running backend" in r.text


def test_backend_killed_mid_response(
    bus: BusPublisher, proxy: ProxyProcess, backend_a: Backend
) -> None:
    victim = Backend("victim")
    try:
        route_to(
            bus,
            proxy,
            [Route("web", backend_a.port, "/"), Route("v", victim.port, "/v", strip_prefix=True)],
            "/",
            "a",
        )
        # before any response byte: a clean 502
        result: dict[str, requests.Response] = {}
        t = threading.Thread(
            target=lambda: result.setdefault("r", requests.get(url(proxy, "/v/hang"), timeout=10))
        )
        t.start()
        time.sleep(0.5)
        victim.kill()
        t.join()
        assert result["r"].status_code == 502
    finally:
        victim.kill()
    victim = Backend("victim2")
    try:
        route_to(
            bus,
            proxy,
            [Route("web", backend_a.port, "/"), Route("v", victim.port, "/v", strip_prefix=True)],
            "/",
            "a",
        )
        # after part of the body: the client sees the response cut short, never a fake end
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            s.sendall(b"GET /v/partial HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"0123456789" not in data:
                data += s.recv(4096)
            victim.kill()
            while True:
                try:
                    chunk = s.recv(4096)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 ") and b"Content-Length: 1000000" in data
        assert data.endswith(b"0123456789")
    finally:
        victim.kill()
    # the proxy is still fine
    assert requests.get(url(proxy, "/ok")).status_code == 200


def test_upstream_timeout_is_504(routed: ProxyProcess) -> None:
    r = requests.get(url(routed, "/hang"), timeout=10)
    assert r.status_code == 504


def test_early_response_before_body_is_read(routed: ProxyProcess) -> None:
    r = requests.post(url(routed, "/early"), data=b"x" * 100)
    assert r.json() == {"early": True}


def test_route_swap_under_load_fails_nothing(
    bus: BusPublisher, proxy: ProxyProcess, backend_a: Backend, backend_b: Backend
) -> None:
    route_to(bus, proxy, [Route("web", backend_a.port, "/")], "/", "a")
    stop = threading.Event()
    failures: list[str] = []
    seen: list[set[str]] = []

    def hammer() -> None:
        names: set[str] = set()
        seen.append(names)
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    r = s.get(url(proxy, "/load"), timeout=5)
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:100]}")
                    names.add(r.headers["X-Backend"])
                except requests.RequestException as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        bus.publish([Route("web", backend_b.port, "/")])
        time.sleep(1.0)
        after: list[str] = []
        with requests.Session() as s:
            # the very head the load sends, remembered before the swap: it must move too
            for _ in range(10):
                after.append(s.get(url(proxy, "/load"), timeout=5).headers["X-Backend"])
        assert set(after) == {"b"}
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert {"a", "b"} <= set().union(*seen)
    route_usual(bus, proxy, backend_a)


def test_paused_service_holds_requests_until_unpaused(
    bus: BusPublisher, proxy: ProxyProcess, backend_a: Backend, backend_b: Backend
) -> None:
    route_to(bus, proxy, [Route("web", backend_a.port, "/")], "/", "a")
    bus.publish([Route("web", backend_a.port, "/", paused=True)])
    time.sleep(0.3)
    result: dict[str, requests.Response] = {}
    t = threading.Thread(
        target=lambda: result.setdefault("r", requests.get(url(proxy, "/held"), timeout=10))
    )
    t.start()
    time.sleep(0.5)
    assert t.is_alive()  # held, not failed
    bus.publish([Route("web", backend_b.port, "/")])
    t.join()
    assert result["r"].status_code == 200 and result["r"].headers["X-Backend"] == "b"
    # a pause that outlasts the deploy timeout (1.5 s here) ends in 503
    bus.publish([Route("web", backend_b.port, "/", paused=True)])
    time.sleep(0.3)
    r = requests.get(url(proxy, "/held"), timeout=10)
    assert r.status_code == 503 and "redeployed" in r.text
    route_usual(bus, proxy, backend_a)


def test_client_half_close_still_gets_its_answer(routed: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", routed.port), timeout=5) as s:
        s.sendall(b"GET /half HTTP/1.1\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and b'"/half"' in data


def test_http10_keep_alive_client(routed: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", routed.port), timeout=5) as s:
        for i in range(2):
            s.sendall(b"GET /ten%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % i)
            data = b""
            while b"}" not in data:
                data += s.recv(65536)
            assert b"Connection: keep-alive" in data and b"/ten%d" % i in data
    # the same HTTP/1.0 head on fresh connections (a head seen before is replayed from
    # the proxy's memo only when it is HTTP/1.1): answered as HTTP/1.0 every time
    for _ in range(2):
        data = raw_exchange(routed.port, b"GET /close HTTP/1.0\r\n\r\n")
        assert b"Transfer-Encoding" not in data and b"Connection: close" in data
        assert data.startswith(b"HTTP/1.1 200 ")


def test_expect_100_continue_is_relayed(routed: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", routed.port), timeout=5) as s:
        s.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += s.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        s.sendall(b"hello")
        data = interim.split(b"\r\n\r\n", 1)[1]
        while b"}" not in data:
            data += s.recv(4096)
    assert data.startswith(b"HTTP/1.1 200 ") and b'"bytes": 5' in data


def test_client_that_stops_reading_is_cut_off(routed: ProxyProcess) -> None:
    size = 512 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", routed.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /download?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        time.sleep(4)  # send_timeout is 2 s here: the proxy gives up on us
        got = 0
        try:
            while chunk := s.recv(1024 * 1024):
                got += len(chunk)
        except ConnectionResetError:
            pass
    assert got < size
    assert requests.get(url(routed, "/still-fine")).status_code == 200


def _from_address(port: int, source: str, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
        s.sendall(payload)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def test_remembered_heads_carry_each_clients_address(routed: ProxyProcess) -> None:
    # byte-identical heads from three addresses: the first is parsed and remembered, the
    # others replayed; each must still name its own client
    head = (
        b"GET /same HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.7\r\n"
        b"Connection: close\r\n\r\n"
    )
    for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.2"):
        data = _from_address(routed.port, source, head)
        info = json.loads(data.split(b"\r\n\r\n", 1)[1])
        headers = {n.lower(): v for n, v in info["headers"]}
        assert headers["x-forwarded-for"] == f"198.51.100.7, {source}"
        assert info["path"] == "/same"


def test_head_of_a_request_with_a_body_is_never_replayed(routed: ProxyProcess) -> None:
    # a head whose body comes in a later read must wait for that body every time
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", routed.port), timeout=5) as s:
            s.sendall(head)
            time.sleep(0.05)
            s.sendall(b"hello")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")
        assert json.loads(data.split(b"\r\n\r\n", 1)[1]) == {
            "bytes": 5,
            "sha256": hashlib.sha256(b"hello").hexdigest(),
        }


def test_a_head_answered_as_http10_is_not_replayed_to_http11_clients(routed: ProxyProcess) -> None:
    # on a connection that began as HTTP/1.0, a Host-less HTTP/1.1 head passes (the
    # connection's version rules); seen twice there, it must still be refused elsewhere
    hostless = b"GET /nohost HTTP/1.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", routed.port), timeout=5) as s:
        s.sendall(b"GET /first HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        data = b""
        while b"/first" not in data:
            data += s.recv(65536)
        for _ in range(2):
            s.sendall(hostless)
            data = b""
            while b"/nohost" not in data:
                data += s.recv(65536)
    assert raw_exchange(routed.port, hostless).startswith(b"HTTP/1.1 400 ")


def _read_response(s: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """One Content-Length response from a keep-alive connection: (head, body, left over)."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(rest) < length:
        chunk = s.recv(65536)
        assert chunk, f"connection closed mid-body: {head!r}"
        rest += chunk
    return head, rest[:length], rest[length:]


def test_a_header_block_seen_before_is_routed_by_each_requests_own_line(
    bus: BusPublisher, proxy: ProxyProcess, backend_a: Backend, backend_b: Backend
) -> None:
    # one client repeating its header block while its paths change: from the second
    # request on the block's rewrite comes from the memo, yet every request line is
    # routed (and stripped) on its own, and a line the memo cannot judge is parsed
    route_to(
        bus,
        proxy,
        [
            Route("web", backend_a.port, "/web"),
            Route("api", backend_b.port, "/api", strip_prefix=True),
        ],
        "/web",
        "a",
    )
    block = b"\r\nHost: memo.test\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n"
    lines = [
        (b"GET /web/1", "a", "/web/1"),
        (b"GET /web/2", "a", "/web/2"),
        (b"GET /api/x?y=1", "b", "/x?y=1"),
        (b"GET /nowhere", None, "no route for path /nowhere"),
        (b"GET /web/a%20b;c", "a", "/web/a%20b;c"),
        (b"GET /api", "b", "/"),
        (b'GET /web/"q"', "a", '/web/"q"'),  # not plain: the parser's path
        (b"GET /webx", None, "no route for path /webx"),
    ]
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
            left = b""
            for line, backend, expected in lines:
                s.sendall(line + b" HTTP/1.1" + block)
                head, body, left = _read_response(s, left)
                if backend is None:
                    assert head.startswith(b"HTTP/1.1 404 ") and expected in body.decode()
                    continue
                assert head.startswith(b"HTTP/1.1 200 ")
                info = json.loads(body)
                headers = {n.lower(): v for n, v in info["headers"]}
                assert (info["name"], info["path"]) == (backend, expected), line
                assert headers["x-forwarded-for"] == "198.51.100.7, 127.0.0.1"
                assert headers["host"] == "memo.test"
    finally:
        route_usual(bus, proxy, backend_a)
