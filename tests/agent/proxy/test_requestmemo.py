"""The request memo without sockets: a remembered head is rebuilt exactly for any client,
and a remembered header block for any client and any plain request line."""

import httptools
import pytest

from agent.proxy.headers import rewrite_request
from agent.proxy.requestmemo import MAX_REMEMBERED, VERSION, RequestMemo, plain_line
from agent.proxy.routing import Target

TARGET = Target("web", 8001)

HEADS = [
    [(b"Host", b"example.com"), (b"Accept", b"*/*")],
    # the client's own X-Forwarded-* (kept from trusted peers, replaced otherwise)
    [
        (b"Host", b"example.com"),
        (b"X-Forwarded-For", b"198.51.100.7"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"public.example"),
    ],
    # no Host (HTTP/1.0 shape), and a value that looks like the line the memo splits on
    [(b"X-Note", b"X-Forwarded-Proto: x"), (b"Cookie", b"a=1 HTTP/1.1")],
    # an upgrade request keeps its Upgrade line after the forwarded headers
    [(b"Host", b"h"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")],
]
ADDRESSES = [b"203.0.113.9", b"127.0.0.1", b"2001:db8::1", b"10.1.2.3"]
LINES = [(b"GET", b"/p?q=1"), (b"HEAD", b"/"), (b"GET", b"/a/b;c=d/%7Ee@f:g?h=i&j=k'l(m)*+,$!")]


@pytest.mark.parametrize("headers", HEADS)
@pytest.mark.parametrize("trusted", [False, True])
def test_remembered_pieces_are_rewrite_request_for_every_address_and_line(
    headers: list[tuple[bytes, bytes]], trusted: bool
) -> None:
    upgrade = any(n == b"Upgrade" for n, _ in headers)
    memo = RequestMemo()
    first = ADDRESSES[0]
    head, _, _ = rewrite_request(b"HEAD", b"/first", headers, first, trusted, upgrade)
    memo.remember(b"raw", b"block", trusted, head, first, TARGET, True, True)
    whole, block = memo.heads[trusted].get(b"raw"), memo.blocks[trusted].get(b"block")
    assert whole is not None and block is not None
    assert not memo.heads[not trusted] and not memo.blocks[not trusted]
    assert whole[2:] == (TARGET, True, True) and block[2:] == (TARGET, True, False)
    for address in ADDRESSES:
        assert (
            whole[0] + address + whole[1]
            == rewrite_request(b"HEAD", b"/first", headers, address, trusted, upgrade)[0]
        )
        for method, url in LINES:
            expected, _, _ = rewrite_request(method, url, headers, address, trusted, upgrade)
            assert b"".join((method, b" ", url, block[0], address, block[1])) == expected


def test_memo_is_bounded_and_skips_long_keys() -> None:
    memo = RequestMemo(max_entries=2)
    head, _, _ = rewrite_request(b"GET", b"/", [(b"Host", b"h")], b"1.2.3.4", False, False)
    for raw in (b"a", b"b", b"c"):
        memo.remember(raw, b"block " + raw, False, head, b"1.2.3.4", TARGET, True, False)
    # each table filled at two entries and was dropped before the third went in
    assert list(memo.heads[False]) == [b"c"] and list(memo.blocks[False]) == [b"block c"]
    long_key = b"x" * (MAX_REMEMBERED + 1)
    memo.remember(long_key, long_key, False, head, b"1.2.3.4", TARGET, True, False)
    assert long_key not in memo.heads[False] and long_key not in memo.blocks[False]
    memo.remember(None, b"d", False, head, b"1.2.3.4", TARGET, True, False)
    assert list(memo.heads[False]) == [b"c"]  # None: not remembered
    memo.clear()
    assert not memo.heads[False] and not memo.blocks[False]


def test_a_key_is_admitted_on_its_second_sighting() -> None:
    memo = RequestMemo(max_entries=2)
    assert [memo.seen_before(b"a"), memo.seen_before(b"a")] == [False, True]
    assert not memo.seen_before(b"x" * (MAX_REMEMBERED + 1))
    assert not memo.seen_before(b"x" * (MAX_REMEMBERED + 1))  # too long: never noted
    assert [memo.seen_before(b"b"), memo.seen_before(b"c")] == [False, False]
    assert not memo.seen_before(b"a")  # the full set was dropped
    memo.clear()
    assert not memo.seen_before(b"c")


@pytest.mark.parametrize(
    "line",
    [b"GET /", b"HEAD /x/y?z=1&w=%20", b"GET //double/slash", b"GET /a:b@c;d=e,f!g$h'i(j)k*l+m~n"],
)
def test_plain_request_lines_are_read_as_llhttp_reads_them(line: bytes) -> None:
    seen: dict[str, object] = {}

    class Callbacks:
        def on_url(self, url: bytes) -> None:
            seen["url"] = url

    head = line + VERSION + b"Host: h\r\n\r\n"
    parser = httptools.HttpRequestParser(Callbacks())
    parser.feed_data(head)
    plain = plain_line(head, 0, head.find(VERSION))
    assert plain is not None
    assert plain.groups() == (parser.get_method(), seen["url"])


@pytest.mark.parametrize(
    "line",
    [
        b"POST / HTTP/1.1",  # a method that may carry a body
        b"get / HTTP/1.1",  # methods are case-sensitive
        b"GET / HTTP/1.0",
        b"GET /  HTTP/1.1",  # two spaces
        b"GET http://h/ HTTP/1.1",  # absolute form: the host comes from the target
        b"GET * HTTP/1.1",
        b"GET /a#frag HTTP/1.1",
        b'GET /"quoted" HTTP/1.1',
        b"GET /a\tb HTTP/1.1",
        b"GET /caf\xc3\xa9 HTTP/1.1",
        b"GET  HTTP/1.1",
        b" HTTP/1.1",
        # a version line in a header, after an HTTP/1.0 request line
        b"GET / HTTP/1.0\r\nX-A: b HTTP/1.1",
    ],
)
def test_other_request_lines_are_left_to_the_parser(line: bytes) -> None:
    head = line + b"\r\nHost: h\r\n\r\n"
    assert plain_line(head, 0, head.find(VERSION)) is None
