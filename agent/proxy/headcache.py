"""A memo of rewritten response heads (`headers.rewrite_response_head`), keyed by the raw head.

See `ResponseHeadCache`. The backend side (upstream.py) looks a head up before parsing
a read, so a repeated response (a static file, a fixed-size API answer) costs one dict
lookup and one write.
"""

from agent.proxy.headers import BODY_LENGTH, rewrite_response_head

# A memoised rewrite: (head for the client, framing, client keep-alive, delimited,
# fast_length). fast_length >= 0 says the response is exactly this head plus that many
# body bytes on a connection that stays usable, so a read holding all of it can be
# relayed without parsing it again; -1 says it must go through the parser.
CachedHead = tuple[bytes, int, bool, bool, int]


MAX_CACHED_HEAD = 4096  # longer response heads are rewritten every time


class ResponseHeadCache:
    """Memoises `rewrite_response_head` (a pure function of its arguments).

    Backends repeat their response heads byte for byte (a static file, an API answer of
    a fixed size) until the `Date` header ticks, so a lookup keyed by the raw head
    replaces the rewrite for most responses. Only heads that llhttp accepted are stored,
    and only when seen a second time: a head carrying a per-response value (a request
    id, a session cookie) never repeats, and storing it would only cost time (a set
    insert notes the first sighting). Bounded: a full table is simply dropped.
    """

    __slots__ = ("tables", "max_entries", "first_sightings")

    def __init__(self, max_entries: int = 256) -> None:
        # one table per (client keep-alive, client HTTP/1.1, HEAD request) combination
        self.tables: list[dict[bytes, CachedHead]] = [{} for _ in range(8)]
        self.max_entries = max_entries
        self.first_sightings: set[bytes] = set()

    def lookup(
        self, raw: bytes, client_keep_alive: bool, client_http11: bool, is_head: bool
    ) -> CachedHead | None:
        return self.tables[client_keep_alive << 2 | client_http11 << 1 | is_head].get(raw)

    def rewrite(
        self,
        raw: bytes,
        status: int,
        client_keep_alive: bool,
        client_http11: bool,
        is_head: bool,
        upstream_keep_alive: bool,
    ) -> CachedHead:
        table = self.tables[client_keep_alive << 2 | client_http11 << 1 | is_head]
        hit = table.get(raw)
        if hit is None:
            no_body = is_head or status in (204, 304) or status < 200
            head, framing, keep, delimited = rewrite_response_head(
                raw, status, client_keep_alive, client_http11, no_body
            )
            seen = self.first_sightings
            if raw not in seen or len(raw) > MAX_CACHED_HEAD:
                if len(raw) > MAX_CACHED_HEAD:
                    return head, framing, keep, delimited, -1  # (bounds the memory held)
                if len(seen) >= self.max_entries:
                    seen.clear()
                seen.add(raw)
                return head, framing, keep, delimited, -1
            fast_length = -1
            if framing == BODY_LENGTH and upstream_keep_alive and status >= 200:
                fast_length = _content_length(raw)
            hit = (head, framing, keep, delimited, fast_length)
            if len(table) >= self.max_entries:
                table.clear()
            table[raw] = hit
        return hit


def _content_length(raw: bytes) -> int:
    """The single Content-Length of a raw head, or -1 (absent, repeated, odd)."""
    low = raw.lower()
    at = low.find(b"\r\ncontent-length:")
    if at == -1 or low.find(b"\r\ncontent-length:", at + 1) != -1:
        return -1
    value = low[at + 17 : low.index(b"\r\n", at + 2)].strip()
    return int(value) if value.isdigit() else -1
