"""Differential test of the request memo: a request answered from the memo reaches the
backend byte for byte as the parser path sends it, and gets the same answer.

Each case is sent on fresh connections: first through the parser (its block is only
noted), then through the parser again (now remembered), then once more, which the memo
answers when it accepts the input. The backend records the exact bytes of each request.
Inputs the memo must not accept (dot-segments, odd request lines, bodies, HTTP/1.0,
unrouted paths) are in the corpus too: for them every send takes the parser path and
the answers agree all the same. The engine runs in-process so that the test can count
the memo's replays and prove that the memo path was taken.
"""

import socket
from collections.abc import Iterator

import pytest

from agent.bus.messages import Route
from tests.agent.proxy.inprocess import InProcessProxy
from tests.agent.proxy.recorder import RecordingBackend
from tests.agent.proxy.wire import Reader

BLOCK = b" HTTP/1.1\r\nHost: t\r\nUser-Agent: diff/1\r\nAccept: */*\r\n\r\n"

# (request, whether the memo may answer its third send)
HEADS = [
    (b"GET /echo/a" + BLOCK, True),
    (b"HEAD /echo/a" + BLOCK, True),
    (b"GET /api/x?y=1&z=%20" + BLOCK, True),
    (b"GET /api" + BLOCK, True),
    (b"GET /apix" + BLOCK, False),  # no route: 404, never remembered
    (b"GET /echo/~user/a;b=c@d:e!$&'()*+,=" + BLOCK, True),
    (
        b"GET /echo/a HTTP/1.1\r\nHost: t\r\nConnection: x-hop, content-length\r\nX-Hop: 1\r\n\r\n",
        True,
    ),
    (b"GET /echo/a HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n", True),
    (b"GET /echo/a HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", True),
    (b"GET /echo/a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", True),
    (b"OPTIONS /echo/a" + BLOCK, True),
    (b"GET /echo/../api/x" + BLOCK, False),
    (b"GET /echo/%2e%2e/api/x" + BLOCK, False),
    (b"GET /api/./x" + BLOCK, False),
    (b"GET /nowhere" + BLOCK, False),
    (b"GET /echo/a HTTP/1.0\r\nHost: t\r\n\r\n", False),
    (b"GET  /echo/a" + BLOCK, True),  # llhttp accepts it; the whole head is replayed
    (b"POST /echo/a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc", False),
]
# (a block, the request lines it is sent under: first, remembered, replayed)
BLOCKS = [
    (BLOCK, [b"GET /echo/2", b"GET /echo/1", b"GET /echo/2"]),
    (BLOCK, [b"GET /api/q?x=1", b"GET /api/r", b"GET /api/q?x=1"]),
    (BLOCK, [b"HEAD /echo/h", b"GET /echo/g", b"HEAD /echo/h"]),
    (BLOCK, [b"GET /echo/%2e%2e/api", b"GET /echo/z", b"GET /echo/%2e%2e/api"]),
    (BLOCK, [b"GET /echo/../api", b"GET /echo/y", b"GET /echo/../api"]),
    (BLOCK, [b"GET /nowhere/a", b"GET /echo/x", b"GET /nowhere/a"]),
]


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[InProcessProxy, RecordingBackend]]:
    recorder = RecordingBackend()
    routes = [
        Route("echo", recorder.port, "/echo"),
        Route("api", recorder.port, "/api", strip_prefix=True),
    ]
    proxy = InProcessProxy(routes)
    yield proxy, recorder
    proxy.close()
    recorder.close()


def _send(proxy: InProcessProxy, recorder: RecordingBackend, data: bytes) -> tuple[object, bytes]:
    """(status and body the client got, bytes the backend got) for one request."""
    before = len(recorder.complete())
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(data)
        r = Reader(s).response(data.split(b" ", 1)[0])
    answer = (r.status, r.body) if r is not None else None
    seen = recorder.complete()[before:]
    return answer, b"".join(x.raw for x in seen)


def _replays(proxy: InProcessProxy) -> int:
    return proxy.call(lambda: proxy.server.requests.replays)


@pytest.mark.parametrize("data,replayed", HEADS, ids=[h[:40].decode() for h, _ in HEADS])
def test_a_remembered_head_sends_what_the_parser_sends(
    setup: tuple[InProcessProxy, RecordingBackend], data: bytes, replayed: bool
) -> None:
    proxy, recorder = setup
    proxy.call(proxy.server.requests.clear)
    results = []
    counts = []
    for _ in range(3):
        counts.append(_replays(proxy))
        results.append(_send(proxy, recorder, data))
    counts.append(_replays(proxy))
    assert results[0] == results[1] == results[2]
    assert counts[3] - counts[2] == int(replayed), "the memo path was (not) taken"
    assert counts[2] == counts[0]  # the first two went through the parser
    assert recorder.errors() == []


@pytest.mark.parametrize("block,lines", BLOCKS, ids=[ls[0].decode() for _, ls in BLOCKS])
def test_a_remembered_block_sends_what_the_parser_sends(
    setup: tuple[InProcessProxy, RecordingBackend], block: bytes, lines: list[bytes]
) -> None:
    proxy, recorder = setup
    proxy.call(proxy.server.requests.clear)
    first = _send(proxy, recorder, lines[0] + block)
    _send(proxy, recorder, lines[1] + block)
    _send(proxy, recorder, lines[1] + block)  # the block is remembered now
    before = _replays(proxy)
    again = _send(proxy, recorder, lines[2] + block)
    assert again == first
    routable = b".." not in lines[2] and b"%2e" not in lines[2] and b"nowhere" not in lines[2]
    assert _replays(proxy) - before == int(routable)
