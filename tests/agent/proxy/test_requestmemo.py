"""The request memo without sockets: a remembered head is rebuilt exactly for any client."""

import pytest

from agent.proxy.headers import rewrite_request
from agent.proxy.requestmemo import MAX_REMEMBERED_HEAD, RequestMemo
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
    [(b"X-Note", b"X-Forwarded-Proto: x"), (b"Cookie", b"a=1")],
    # an upgrade request keeps its Upgrade line after the forwarded headers
    [(b"Host", b"h"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")],
]
ADDRESSES = [b"203.0.113.9", b"127.0.0.1", b"2001:db8::1", b"10.1.2.3"]


@pytest.mark.parametrize("headers", HEADS)
@pytest.mark.parametrize("trusted", [False, True])
def test_remembered_head_is_rewrite_request_for_every_address(
    headers: list[tuple[bytes, bytes]], trusted: bool
) -> None:
    upgrade = any(n == b"Upgrade" for n, _ in headers)
    memo = RequestMemo()
    first = ADDRESSES[0]
    head, _, _ = rewrite_request(b"GET", b"/p?q=1", headers, first, trusted, upgrade)
    memo.remember(b"raw", trusted, head, first, TARGET, True, False)
    hit = memo.lookup(b"raw", trusted)
    assert hit is not None and memo.lookup(b"raw", not trusted) is None
    prefix, suffix, target, keep_alive, is_head = hit
    assert (target, keep_alive, is_head) == (TARGET, True, False)
    for address in ADDRESSES:
        expected, _, _ = rewrite_request(b"GET", b"/p?q=1", headers, address, trusted, upgrade)
        assert prefix + address + suffix == expected


def test_memo_is_bounded_and_skips_long_heads() -> None:
    memo = RequestMemo(max_entries=2)
    head, _, _ = rewrite_request(b"GET", b"/", [(b"Host", b"h")], b"1.2.3.4", False, False)
    for raw in (b"a", b"b", b"c"):
        memo.remember(raw, False, head, b"1.2.3.4", TARGET, True, False)
    # the table filled at two entries and was dropped before the third went in
    assert [memo.lookup(r, False) is not None for r in (b"a", b"b", b"c")] == [False, False, True]
    long_raw = b"x" * (MAX_REMEMBERED_HEAD + 1)
    memo.remember(long_raw, False, head, b"1.2.3.4", TARGET, True, False)
    assert memo.lookup(long_raw, False) is None
    memo.clear()
    assert memo.lookup(b"c", False) is None


def test_a_head_is_admitted_on_its_second_sighting() -> None:
    memo = RequestMemo(max_entries=2)
    assert [memo.seen_before(b"a"), memo.seen_before(b"a")] == [False, True]
    assert not memo.seen_before(b"x" * (MAX_REMEMBERED_HEAD + 1))
    assert not memo.seen_before(b"x" * (MAX_REMEMBERED_HEAD + 1))  # too long: never noted
    assert [memo.seen_before(b"b"), memo.seen_before(b"c")] == [False, False]
    assert not memo.seen_before(b"a")  # the full set was dropped
    memo.clear()
    assert not memo.seen_before(b"c")
