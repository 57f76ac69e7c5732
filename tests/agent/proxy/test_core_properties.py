"""Property-based tests of the connection logic, driven in memory (`memory.Harness`).

* Splits: a valid stream of requests, cut into reads at random points, reaches the
  backends as the same requests (line, headers in order and spelling, body) and the
  client gets the same bytes back. (Chunked bodies are re-chunked as they arrive, so
  their chunk boundaries follow the reads: the comparison is of what a strict parser,
  h11, reads from the upstream bytes.) A warm request memo gives the same result.
* Mutations: random damage to valid streams never makes the proxy send a backend
  anything but requests that its own parser (llhttp, replayed here on the same bytes)
  read from the client, in order, with exactly their bodies: every upstream byte parses
  (h11), nothing extra appears, and a backend connection left inside a request was
  closed by the proxy.

`make test` runs a bounded number of examples; `make fuzz-proxy` runs many more
(BERTH_FUZZ_EXAMPLES, see docs/proxy.md).
"""

import os
import re

import h11
import httptools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.bus.messages import Route
from tests.agent.proxy.memory import Harness

EXAMPLES = int(os.environ.get("BERTH_FUZZ_EXAMPLES", "60"))
PROFILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROUTES = [Route("echo", 9001, "/echo"), Route("api", 9002, "/api", strip_prefix=True)]

token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~", min_size=1, max_size=8)
OPTIONAL_HEADERS = [
    (b"User-Agent", b"prop/1.0"),
    (b"Cookie", b"a=1; b=2"),
    (b"Accept", b"*/*"),
    (b"X-Forwarded-For", b"10.0.0.1"),
    (b"Connection", b"keep-alive"),
    (b"Connection", b"x-hop"),
    (b"X-Hop", b"1"),
    (b"Connection", b"content-length"),
    (b"Connection", b"Transfer-Encoding, host"),
    (b"Expect", b"100-continue"),
    (b"Keep-Alive", b"timeout=5"),
]


@st.composite
def request(draw: st.DrawFn, last: bool) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS"]))
    path = draw(st.sampled_from([b"/echo/", b"/api/", b"/echo"])) + draw(token).encode()
    if draw(st.booleans()):
        path += b"?q=" + draw(token).encode()
    headers = [(b"Host", b"t"), *draw(st.lists(st.sampled_from(OPTIONAL_HEADERS), max_size=4))]
    if last and draw(st.booleans()):
        headers.append((b"Connection", b"close"))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = draw(st.binary(max_size=40)) if framing != "none" else b""
    encoded = body
    if framing == "length":
        headers.append((b"Content-Length", b"%d" % len(body)))
    elif framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=3))))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        ext = draw(st.sampled_from([b"", b";x=1", b";name"]))
        encoded = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in pieces if p)
        trailer = draw(st.sampled_from([b"", b"X-Trailer: 1\r\n"]))
        encoded += b"0\r\n" + trailer + b"\r\n"
    head = method + b" " + path + b" HTTP/1.1\r\n"
    head += b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    return head + b"\r\n" + encoded


@st.composite
def stream(draw: st.DrawFn) -> list[bytes]:
    n = draw(st.integers(1, 4))
    return [draw(request(last=i == n - 1)) for i in range(n)]


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def _seen(h: Harness, since: dict[int, int] | None = None) -> tuple[list[object], bytes]:
    """What a strict parser read upstream (line, raw headers, body), and what the client
    got; upstream bytes are read from the offsets in `since` (by backend index) on."""
    out: list[object] = []
    for i, backend in enumerate(h.backends):
        assert backend.error is None, backend.error
        parser = h11.Connection(h11.SERVER)
        parser.receive_data(bytes(backend.sink.data[(since or {}).get(i, 0) :]))
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Request):
                out.append((event.method, event.target, list(event.headers.raw_items())))
            elif isinstance(event, h11.Data):
                out.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                out.append("end")
                parser.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                parser.send(h11.EndOfMessage())
                if parser.their_state is h11.DONE:
                    parser.start_next_cycle()
    # adjacent body pieces are one body whatever the reads were
    merged: list[object] = []
    for item in out:
        if isinstance(item, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] = merged[-1] + item
        else:
            merged.append(item)
    return merged, bytes(h.sink.data)


def _run(pieces: list[bytes], h: Harness | None = None) -> tuple[list[object], bytes]:
    h = h or Harness(ROUTES)
    try:
        h.feed(pieces)
        return _seen(h)
    finally:
        h.close()


@PROFILE
@given(reqs=stream(), data=st.data())
def test_any_split_sends_the_same_requests(reqs: list[bytes], data: st.DataObject) -> None:
    whole = b"".join(reqs)
    cuts = data.draw(st.lists(st.integers(1, len(whole) - 1), max_size=10))
    expected = _run([whole])
    assert _run(_cut(whole, cuts)) == expected
    # one read per request (what a memo can answer), on a proxy that has seen them before
    warm = Harness(ROUTES)
    warm.feed(reqs)
    warm.new_client()
    since = {i: len(b.sink.data) for i, b in enumerate(warm.backends)}
    warm.feed(reqs)
    assert _seen(warm, since) == expected
    warm.close()


SNIPPETS = [
    b"\r\n",
    b"\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 7\r\n",
    b"Connection: content-length\r\n",
    b"Connection: transfer-encoding\r\n",
    b"0\r\n\r\n",
    b"GET /echo/smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    b" chunked",
    b",",
    b"\x00",
    b"ff\r\n",
    b"/../",
    b"Upgrade: websocket\r\nConnection: upgrade\r\n",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(b"".join(draw(stream())))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["replace", "insert", "delete"]))
        if kind == "replace" and at < len(data):
            data[at] = draw(st.sampled_from(b"\r\n \t:;,0123456789abcdefxX-"))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(SNIPPETS))
        else:
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


def _llhttp_requests(data: bytes) -> list[tuple[bytes, bytes]]:
    """(method, body) of every request llhttp completes in `data`, up to its first error."""

    class Events:
        def __init__(self) -> None:
            self.done: list[tuple[bytes, bytes]] = []
            self.body = b""

        def on_message_begin(self) -> None:
            self.body = b""

        def on_body(self, body: bytes) -> None:
            self.body += body

        def on_message_complete(self) -> None:
            self.done.append((parser.get_method(), self.body))

    events = Events()
    parser = httptools.HttpRequestParser(events)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError:
        pass
    return events.done


@PROFILE
@given(data=mutated(), cuts=st.lists(st.integers(1, 400), max_size=6))
def test_mutations_never_desync(data: bytes, cuts: list[int]) -> None:
    h = Harness(ROUTES)
    try:
        h.feed(_cut(data, cuts))
        h.client_leaves()
        parsed = _llhttp_requests(data)
        for backend in h.backends:
            assert backend.error is None, (backend.error, bytes(backend.sink.data))
            if backend.partial is not None:  # left inside a request: must have been cut
                assert backend.sink.closed, bytes(backend.sink.data)
            # every request a backend got is one llhttp read, in order, with its body
            forwarded = [(m, body) for m, _, body in backend.requests]
            it = iter(parsed)
            for request in forwarded:
                assert any(request == candidate for candidate in it), (forwarded, parsed)
    finally:
        h.close()


def test_pipelined_error_answers_keep_their_place() -> None:
    """Found by the split property: with a request in flight, an error answer queued
    behind it, then a request, then another error answer, the second error was written
    before the backend's answer to the request ahead of it."""
    reqs = [
        b"GET /echo/0 HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /echo0 HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /echo/1 HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /echo0 HTTP/1.1\r\nHost: t\r\n\r\n",
    ]
    _, answers = _run([b"".join(reqs)])
    order = re.findall(rb"HTTP/1\.1 (\d{3}) ", answers)
    assert order == [b"200", b"404", b"200", b"404"]
    assert answers.index(b"GET /echo/1") < answers.rindex(b"404 Not Found")


def test_a_bad_request_behind_one_in_flight_is_answered_after_it() -> None:
    """Found by the split property: a malformed pipelined request used to cut the
    connection under the answer still coming for the request before it."""
    _, answers = _run(
        [b"GET /echo/0 HTTP/1.1\r\nHost: t\r\n\r\nGET /echo/. HTTP/1.1\r\nHost: t\r\n\r\n"]
    )
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"200", b"400"]
    assert answers.index(b"GET /echo/0") < answers.index(b"400 Bad Request")
