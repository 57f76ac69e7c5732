"""A memo of request heads, and of their header blocks, already parsed and rewritten.

What the proxy makes of a request head is a pure function of its request line, its
header block, whether the peer is a trusted forwarder, and the route table; the client's
address only goes into `X-Forwarded-For`, so an upstream head is stored as the two
pieces around it. Clients repeat themselves in two ways, and the memo has a table for
each (per kind of peer: the X-Forwarded-* rewrite differs for trusted ones):

* `heads`: a whole head byte for byte (a health checker, a poller, a service fetching
  the same resource). A read that is exactly such a head skips the parser, the router
  and the rewrite.
* `blocks`: the same header block under a new request line (a browser fetching a page's
  assets, one service calling another's API). When the line is plain (`plain_line`:
  `GET|HEAD`, an origin-form target of plain characters, `HTTP/1.1`) it is cheap to
  judge and its path cheap to route, so the read skips the parser and the header
  rewrite: the block's key runs from the line's ` HTTP/1.1` to the end of the head, its
  entry holds the rewritten block, and the upstream head is joined from five pieces.
  The internal proxy's target follows from the Host header, so it is stored; the
  external proxy routes each path.

Both apply only to a read holding exactly one head, on a connection with nothing in
flight. Only heads that llhttp accepted as one complete HTTP/1.1 request without a body
or an upgrade, and that were routed to a running backend, are remembered (with their
blocks), and only when their block comes a second time: a block seen once is merely
noted (`first_sightings`), so traffic of ever-new heads costs a set insert, not a
rewrite to store. The memo is emptied whenever the route table changes, and it is
bounded (a full table is simply dropped), in entries and in the size of a key.
"""

import re

from agent.proxy.routing import Target

# (upstream head up to the client address, what follows it, target, keep-alive, HEAD);
# in `blocks` the first piece starts at " HTTP/1.1\r\n" and HEAD is read from the line
Remembered = tuple[bytes, bytes, Target, bool, bool]
Tables = tuple[dict[bytes, Remembered], dict[bytes, Remembered]]  # untrusted, trusted

MAX_REMEMBERED = 2048  # longer heads and blocks (big cookies) are parsed every time
# Longer reads (an upload's first read, say) are not looked up: no remembered head is that
# long, nor a remembered block after a request line of up to the same length.
MAX_LOOKED_UP = 2 * MAX_REMEMBERED
VERSION = b" HTTP/1.1\r\n"
_XFP_LINE = b"\r\nX-Forwarded-Proto: "

# The method and target of a plain request line: single spaces, and a target written in
# RFC 3986 unreserved and sub-delims characters, ":", "@", "/", "?" and "%", which mean
# the same to llhttp, to the router and to any backend. Call as
# `plain_line(data, 0, data.find(VERSION))`: a match's groups are (method, target).
plain_line = re.compile(rb"(GET|HEAD) (/[-A-Za-z0-9._~!$&'()*+,;=:@/?%]*)").fullmatch


class RequestMemo:
    __slots__ = ("heads", "blocks", "first_sightings", "max_entries", "replays")

    def __init__(self, max_entries: int = 256) -> None:
        self.replays = 0  # requests answered from the memo (tests prove it is exercised)
        self.heads: Tables = ({}, {})
        self.blocks: Tables = ({}, {})
        self.first_sightings: set[bytes] = set()
        self.max_entries = max_entries

    def seen_before(self, key: bytes) -> bool:
        """Whether `key` was seen before; the first time it is only noted."""
        seen = self.first_sightings
        if key in seen:
            return True
        if len(key) <= MAX_REMEMBERED:
            if len(seen) >= self.max_entries:
                seen.clear()
            seen.add(key)
        return False

    def remember(
        self,
        head: bytes | None,
        block: bytes | None,
        trusted: bool,
        upstream_head: bytes,
        client_ip: bytes,
        target: Target,
        keep_alive: bool,
        is_head: bool,
    ) -> None:
        """Store what `head` became, and what its `block` (from " HTTP/1.1\\r\\n" on)
        became; `upstream_head` was built for `client_ip`. Either may be None: not
        remembered."""
        # rewrite_request writes the client address last in X-Forwarded-For, right
        # before the X-Forwarded-Proto line it adds after every forwarded header
        at = upstream_head.rindex(_XFP_LINE) - len(client_ip)
        tail = (upstream_head[at + len(client_ip) :], target, keep_alive)
        if head is not None:
            self._put(self.heads[trusted], head, (upstream_head[:at], *tail, is_head))
        if block is not None:
            # the block's part of the upstream head: after the (plain) request target,
            # which holds no space
            start = upstream_head.index(VERSION)
            self._put(self.blocks[trusted], block, (upstream_head[start:at], *tail, False))

    def _put(self, table: dict[bytes, Remembered], key: bytes, entry: Remembered) -> None:
        if len(key) > MAX_REMEMBERED:
            return
        if len(table) >= self.max_entries:
            table.clear()
        table[key] = entry

    def clear(self) -> None:
        """Forget everything (in place: connections hold the tables)."""
        for table in (*self.heads, *self.blocks):
            table.clear()
        self.first_sightings.clear()
