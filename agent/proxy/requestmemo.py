"""A memo of request heads already parsed, routed and rewritten.

Clients repeat request heads byte for byte: a browser polling an API, a health checker,
a service fetching the same resource from another. What the proxy makes of a request
head (the upstream head, the target, keep-alive, HEAD or not) is a pure function of its
bytes, of whether the peer is a trusted forwarder, and of the route table; the client's
address only goes into `X-Forwarded-For`, so the upstream head is stored as the two
pieces around it. A read that holds exactly one remembered head, arriving on a
connection with nothing in flight, skips the parser, the router and the rewrite.

Only heads that llhttp accepted as one complete HTTP/1.1 request without a body or an
upgrade, and that were routed to a running backend, are remembered, and only when they
come a second time: a head seen once is merely noted (`first_sightings`), so traffic of
ever-new heads costs a set insert, not a rewrite to store. The memo is emptied whenever
the route table changes, and it is bounded (a full table is simply dropped), in entries
and in the size of a head.
"""

from agent.proxy.routing import Target

# (upstream head before the client address, after it, target, keep-alive, HEAD request)
Remembered = tuple[bytes, bytes, Target, bool, bool]

MAX_REMEMBERED_HEAD = 2048  # longer heads (big cookies) are parsed every time
_XFP_LINE = b"\r\nX-Forwarded-Proto: "


class RequestMemo:
    __slots__ = ("tables", "first_sightings", "max_entries")

    def __init__(self, max_entries: int = 256) -> None:
        # one table for untrusted peers and one for trusted (loopback) ones: the
        # X-Forwarded-* rewrite differs between them
        self.tables: tuple[dict[bytes, Remembered], dict[bytes, Remembered]] = ({}, {})
        self.first_sightings: set[bytes] = set()
        self.max_entries = max_entries

    def lookup(self, raw: bytes, trusted: bool) -> Remembered | None:
        return self.tables[trusted].get(raw)

    def seen_before(self, raw: bytes) -> bool:
        """Whether `raw` was seen before; the first time it is only noted."""
        seen = self.first_sightings
        if raw in seen:
            return True
        if len(raw) <= MAX_REMEMBERED_HEAD:
            if len(seen) >= self.max_entries:
                seen.clear()
            seen.add(raw)
        return False

    def remember(
        self,
        raw: bytes,
        trusted: bool,
        upstream_head: bytes,
        client_ip: bytes,
        target: Target,
        keep_alive: bool,
        is_head: bool,
    ) -> None:
        """Store what `raw` became; `upstream_head` was built for `client_ip`."""
        if len(raw) > MAX_REMEMBERED_HEAD:
            return
        # rewrite_request writes the client address last in X-Forwarded-For, right
        # before the X-Forwarded-Proto line it adds after every forwarded header
        at = upstream_head.rindex(_XFP_LINE) - len(client_ip)
        table = self.tables[trusted]
        if len(table) >= self.max_entries:
            table.clear()
        table[raw] = (
            upstream_head[:at],
            upstream_head[at + len(client_ip) :],
            target,
            keep_alive,
            is_head,
        )

    def clear(self) -> None:
        """Forget everything (in place: connections hold the tables)."""
        for table in self.tables:
            table.clear()
        self.first_sightings.clear()
