"""Header rewriting, without sockets."""

import pytest

from agent.proxy.headcache import ResponseHeadCache
from agent.proxy.headers import (
    BODY_CHUNKED,
    BODY_LENGTH,
    BODY_NONE,
    BODY_UNTIL_CLOSE,
    CHUNKED,
    NO_BODY,
    HeadError,
    UnsupportedCoding,
    rewrite_request,
    rewrite_response,
    rewrite_response_head,
    split_head,
)


def lines(head: bytes) -> list[bytes]:
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].split(b"\r\n")


def header_map(head: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for line in lines(head)[1:]:
        name, _, value = line.partition(b": ")
        assert name.lower() not in out, f"duplicate {name!r}"
        out[name.lower()] = value
    return out


def test_request_drops_hop_by_hop_and_sets_forwarded() -> None:
    head, host, body = rewrite_request(
        b"GET",
        b"/x?y=1",
        [
            (b"Host", b"example.com"),
            (b"Connection", b"keep-alive, X-Secret"),
            (b"Keep-Alive", b"timeout=5"),
            (b"X-Secret", b"hop"),
            (b"TE", b"trailers"),
            (b"Proxy-Authorization", b"Basic Zm9v"),
            (b"Proxy-Connection", b"keep-alive"),
            (b"Accept", b"*/*"),
        ],
        b"203.0.113.9",
        False,
        False,
    )
    assert lines(head)[0] == b"GET /x?y=1 HTTP/1.1"
    h = header_map(head)
    assert host == b"example.com"
    assert body == NO_BODY
    assert h[b"host"] == b"example.com"
    assert h[b"accept"] == b"*/*"
    for gone in (
        b"connection",
        b"keep-alive",
        b"x-secret",
        b"te",
        b"proxy-authorization",
        b"proxy-connection",
    ):
        assert gone not in h
    assert h[b"x-forwarded-for"] == b"203.0.113.9"
    assert h[b"x-forwarded-proto"] == b"http"
    assert h[b"x-forwarded-host"] == b"example.com"


def test_forwarded_for_is_appended_and_untrusted_proto_replaced() -> None:
    head, _, _ = rewrite_request(
        b"GET",
        b"/",
        [
            (b"Host", b"h"),
            (b"X-Forwarded-For", b"1.1.1.1"),
            (b"X-Forwarded-For", b"2.2.2.2"),
            (b"X-Forwarded-Proto", b"https"),
            (b"X-Forwarded-Host", b"spoofed"),
        ],
        b"198.51.100.7",
        False,
        False,
    )
    h = header_map(head)
    assert h[b"x-forwarded-for"] == b"1.1.1.1, 2.2.2.2, 198.51.100.7"
    assert h[b"x-forwarded-proto"] == b"http"
    assert h[b"x-forwarded-host"] == b"h"


def test_loopback_forwarder_keeps_its_proto_and_host() -> None:
    head, _, _ = rewrite_request(
        b"GET",
        b"/",
        [
            (b"Host", b"127.0.0.1:8080"),
            (b"X-Forwarded-Proto", b"https"),
            (b"X-Forwarded-Host", b"app.example.com"),
        ],
        b"127.0.0.1",
        True,
        False,
    )
    h = header_map(head)
    assert h[b"x-forwarded-proto"] == b"https"
    assert h[b"x-forwarded-host"] == b"app.example.com"
    assert h[b"host"] == b"127.0.0.1:8080"


def test_chunked_request_is_rechunked_and_upgrade_kept() -> None:
    head, _, body = rewrite_request(
        b"POST",
        b"/up",
        [(b"Host", b"h"), (b"Transfer-Encoding", b"chunked")],
        b"1.2.3.4",
        False,
        False,
    )
    assert body == CHUNKED
    assert header_map(head)[b"transfer-encoding"] == b"chunked"
    head, _, _ = rewrite_request(
        b"GET",
        b"/ws",
        [
            (b"Host", b"h"),
            (b"Connection", b"Upgrade"),
            (b"Upgrade", b"websocket"),
            (b"Sec-WebSocket-Key", b"k"),
        ],
        b"1.2.3.4",
        False,
        True,
    )
    h = header_map(head)
    assert h[b"connection"] == b"upgrade"
    assert h[b"upgrade"] == b"websocket"
    assert h[b"sec-websocket-key"] == b"k"


def test_upgrade_header_without_upgrade_request_is_dropped() -> None:
    head, _, _ = rewrite_request(
        b"GET", b"/", [(b"Host", b"h"), (b"Upgrade", b"h2c")], b"1.2.3.4", False, False
    )
    assert b"upgrade" not in header_map(head)


def test_several_hosts_are_refused() -> None:
    with pytest.raises(HeadError, match="Host"):
        rewrite_request(b"GET", b"/", [(b"Host", b"a"), (b"host", b"b")], b"1.2.3.4", False, False)


def test_missing_host_is_reported_and_sent_empty() -> None:
    head, host, _ = rewrite_request(b"GET", b"/", [], b"1.2.3.4", False, False)
    assert host is None
    assert b"x-forwarded-host" not in header_map(head)
    assert header_map(head)[b"host"] == b""  # HTTP/1.1 upstream needs one (RFC 9112 3.2)


def test_framing_is_written_from_the_parsed_length_never_dropped() -> None:
    for connection in (b"content-length", b"Content-Length, close", b"keep-alive, x-a"):
        head, _, body = rewrite_request(
            b"POST",
            b"/",
            [(b"Host", b"h"), (b"Connection", connection), (b"Content-Length", b"49 ")],
            b"1.2.3.4",
            False,
            False,
        )
        assert body == 49
        assert header_map(head)[b"content-length"] == b"49"
    head, _, body = rewrite_request(
        b"POST",
        b"/",
        [
            (b"Host", b"h"),
            (b"Connection", b"transfer-encoding, host, x-forwarded-for"),
            (b"Transfer-Encoding", b"chunked"),
            (b"X-Forwarded-For", b"10.0.0.1"),
        ],
        b"1.2.3.4",
        False,
        False,
    )
    h = header_map(head)
    assert (body, h[b"transfer-encoding"], h[b"host"]) == (CHUNKED, b"chunked", b"h")
    assert h[b"x-forwarded-for"] == b"10.0.0.1, 1.2.3.4"


def test_codings_other_than_chunked_are_refused() -> None:
    for coding in (b"gzip, chunked", b"identity, chunked", b"chunked, chunked"):
        with pytest.raises(UnsupportedCoding):
            rewrite_request(
                b"POST", b"/", [(b"Host", b"h"), (b"Transfer-Encoding", coding)], b"1", False, False
            )


def test_response_keeps_length_and_drops_hop_by_hop() -> None:
    head, framing, keep = rewrite_response(
        200,
        b"OK",
        [
            (b"Content-Length", b"5"),
            (b"Connection", b"keep-alive"),
            (b"Keep-Alive", b"timeout=4"),
            (b"Server", b"x"),
        ],
        True,
        True,
        False,
    )
    assert lines(head)[0] == b"HTTP/1.1 200 OK"
    h = header_map(head)
    assert h == {b"content-length": b"5", b"server": b"x"}
    assert (framing, keep) == (BODY_LENGTH, True)


def test_response_framing_choices() -> None:
    # chunked or close-delimited upstream -> chunked to an HTTP/1.1 client
    head, framing, keep = rewrite_response(
        200, b"OK", [(b"Transfer-Encoding", b"chunked")], True, True, False
    )
    assert framing == BODY_CHUNKED and keep
    assert header_map(head)[b"transfer-encoding"] == b"chunked"
    head, framing, keep = rewrite_response(200, b"OK", [], True, True, False)
    assert framing == BODY_CHUNKED and keep
    # ... and read-until-close to an HTTP/1.0 client
    head, framing, keep = rewrite_response(
        200, b"OK", [(b"Transfer-Encoding", b"chunked")], True, False, False
    )
    assert framing == BODY_UNTIL_CLOSE and not keep
    assert header_map(head)[b"connection"] == b"close"
    assert b"transfer-encoding" not in header_map(head)
    # HTTP/1.0 keep-alive client is told so
    head, framing, keep = rewrite_response(
        200, b"OK", [(b"Content-Length", b"0")], True, False, False
    )
    assert keep and header_map(head)[b"connection"] == b"keep-alive"
    # HEAD / 204 / 304: no body whatever the headers say
    head, framing, keep = rewrite_response(
        200, b"OK", [(b"Content-Length", b"99")], True, True, True
    )
    assert framing == BODY_NONE and header_map(head)[b"content-length"] == b"99"
    # a client that asked to close
    head, framing, keep = rewrite_response(
        200, b"OK", [(b"Content-Length", b"0")], False, True, False
    )
    assert not keep and header_map(head)[b"connection"] == b"close"


def test_switching_protocols_keeps_upgrade_headers() -> None:
    head, framing, keep = rewrite_response(
        101,
        b"Switching Protocols",
        [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", b"abc"),
        ],
        True,
        True,
        False,
    )
    h = header_map(head)
    assert h[b"upgrade"] == b"websocket" and h[b"connection"] == b"upgrade"
    assert h[b"sec-websocket-accept"] == b"abc"
    assert framing == BODY_NONE and not keep


def test_response_drops_headers_named_by_connection() -> None:
    head, _, _ = rewrite_response(
        200,
        b"OK",
        [(b"Connection", b"X-Internal"), (b"X-Internal", b"1"), (b"Content-Length", b"0")],
        True,
        True,
        False,
    )
    assert b"x-internal" not in header_map(head)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 12\r\nConnection: keep-alive\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n",
        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nCONNECTION: Keep-Alive\r\nTE: x\r\nTrailer: y\r\n",
        b"HTTP/1.1 404 Not Found\r\n",
        b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: X-Private\r\nX-Private: secret\r\nContent-Length: 0\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nSet-Cookie: a=b\r\nUpgrade: h2c\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        b"HTTP/1.1 200 OK\r\nX-Te: 1\r\nX-Connection: keep\r\nContent-Length: 1\r\n",
        # hop-by-hop names in any case, values with optional whitespace, and Connection
        # values that name headers (the general path) or nothing
        b"HTTP/1.1 200 OK\r\nCONNECTION: Keep-Alive \r\nKEEP-ALIVE: timeout=5\r\nA: b\r\n",
        b"HTTP/1.1 200 OK\r\nConnection:\t close\t\r\nContent-Length: 0\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection:close\r\n",
        b"HTTP/1.1 200 OK\r\nConnection:x-a\r\nX-A: 1\r\n",
        b"HTTP/1.1 200 OK\r\nConnection:\r\nTE: trailers\r\nTrailer: X\r\nA: b\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nA: b\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: x-b\r\nX-B: 1\r\n",
        b"HTTP/1.1 200 OK\r\nX-Keep-Alive: 1\r\nProxy-Connection: keep-alive\r\n"
        b"Upgrade-Insecure: 1\r\nContent-Length: 3\r\n",
    ],
)
@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize("http11", [True, False])
@pytest.mark.parametrize("no_body", [True, False])
def test_raw_head_rewrite_matches_the_general_one(
    raw: bytes, keep_alive: bool, http11: bool, no_body: bool
) -> None:
    line, headers = split_head(raw)
    status = int(line.split(b" ")[1])
    reason = line.split(b" ", 2)[2]
    expected = rewrite_response(status, reason, headers, keep_alive, http11, no_body)
    head, framing, keep, delimited = rewrite_response_head(raw, status, keep_alive, http11, no_body)
    # the fast path keeps the status line as received; the general one rebuilds it
    assert header_map(head) == header_map(expected[0])
    assert (framing, keep) == expected[1:]
    names = {n.lower() for n, _ in headers}
    assert delimited == (no_body or bool(names & {b"content-length", b"transfer-encoding"}))


def test_head_cache_memoises_and_says_when_the_parser_can_be_skipped() -> None:
    cache = ResponseHeadCache(max_entries=2)
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: keep-alive\r\n"
    assert cache.lookup(raw, True, True, False) is None
    first = cache.rewrite(raw, 200, True, True, False, True)
    assert cache.lookup(raw, True, True, False) is None  # a head seen once is not stored
    entry = cache.rewrite(raw, 200, True, True, False, True)
    assert first[:4] == entry[:4] and first[4] == -1
    assert entry == (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", BODY_LENGTH, True, True, 12)
    assert cache.lookup(raw, True, True, False) is entry
    assert cache.lookup(raw, False, True, False) is None  # other client shape, other table
    # no fast path: upstream closes, HEAD, chunked, 204, interim
    assert cache.rewrite(raw, 200, True, True, False, False)[4] == 12  # memoised as first seen

    def twice(c: ResponseHeadCache, *args: object) -> tuple[object, ...]:
        c.rewrite(*args)  # type: ignore[arg-type]
        return c.rewrite(*args)  # type: ignore[arg-type]

    assert twice(ResponseHeadCache(), raw, 200, True, True, False, False)[4] == -1
    assert twice(ResponseHeadCache(), raw, 200, True, True, True, True)[4] == -1
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
    assert twice(ResponseHeadCache(), chunked, 200, True, True, False, True)[4] == -1
    empty = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n"
    assert twice(ResponseHeadCache(), empty, 204, True, True, False, True)[1] == BODY_NONE
    # bounded: a full table starts over
    twice(cache, raw + b"X-A: 1\r\n", 200, True, True, False, True)
    twice(cache, raw + b"X-B: 1\r\n", 200, True, True, False, True)
    assert cache.lookup(raw, True, True, False) is None


@pytest.mark.parametrize(
    ("te", "http11", "framing", "sent", "delimited"),
    [
        # RFC 9112 6.3 (4): chunked not last -> until the close, the coding kept
        (b"gzip", True, BODY_UNTIL_CLOSE, b"gzip", False),
        (b"gzip", False, BODY_UNTIL_CLOSE, b"gzip", False),
        (b"chunked, gzip", True, BODY_UNTIL_CLOSE, b"chunked, gzip", False),
        # chunked last: chunks are re-made for the client, the other codings kept
        (b"gzip, chunked", True, BODY_CHUNKED, b"gzip, chunked", True),
        (b"gzip, chunked", False, BODY_UNTIL_CLOSE, b"gzip", True),
        (b"chunked", True, BODY_CHUNKED, b"chunked", True),
    ],
)
def test_response_transfer_codings_frame_per_rfc_9112(
    te: bytes, http11: bool, framing: int, sent: bytes, delimited: bool
) -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + te + b"\r\nX-A: 1\r\n"
    head, got_framing, keep, got_delimited = rewrite_response_head(raw, 200, True, http11, False)
    assert (got_framing, got_delimited) == (framing, delimited)
    assert header_map(head)[b"transfer-encoding"] == sent
    assert keep == (framing != BODY_UNTIL_CLOSE)
    if not keep:
        assert header_map(head)[b"connection"] == b"close"
