"""Rewriting request and response heads between client and backend: pure functions.

Requests: hop-by-hop headers (RFC 9110 7.6.1: `Connection` and every header it names,
`Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`,
`Proxy-Authenticate`, `Proxy-Authorization`) are dropped; `Host` is kept as the client
sent it; `X-Forwarded-For` gets the client address appended; `X-Forwarded-Proto` and
`X-Forwarded-Host` are set to what this hop saw (`http`, the `Host` header), except that
values sent by a loopback peer are kept: on this server the only loopback clients in
front of the proxy are trusted forwarders (Cloudflare Tunnel's cloudflared, which
terminates TLS and says `https`) and local services. Upstream always speaks HTTP/1.1 with
keep-alive; an upgrade request carries `Connection: upgrade` and its `Upgrade` value.

Request framing is never copied from the client's headers: `Content-Length` and
`Transfer-Encoding` are consumed like hop-by-hop headers and written again, last, from
what the parser decided (`Content-Length: <n>` for a length body, `Transfer-Encoding:
chunked` for a chunked one, which the caller re-chunks). A `Connection` header can
name hop-by-hop headers to drop, but never the framing headers, `Host` or the
`X-Forwarded-*` headers this hop writes (`PROTECTED`): such tokens are ignored, so the
framing the backend sees cannot depend on which headers survived filtering.

Responses: the same hop-by-hop removal, then the framing toward the client is chosen:
kept `Content-Length`; otherwise chunked for an HTTP/1.1 client or read-until-close for
an HTTP/1.0 one. `Connection: close` is added when the client connection will close.

These run on every request; they are written as single passes over the header list.
"""

import re

# Framing of a body toward the next hop.
BODY_NONE = 0  # no body follows the head
BODY_LENGTH = 1  # Content-Length bytes, relayed as they come
BODY_CHUNKED = 2  # re-encoded as chunks by the relay
BODY_UNTIL_CLOSE = 3  # until the connection closes (HTTP/1.0 client)

HOP_BY_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    )
)
_REQUEST_SPECIAL = HOP_BY_HOP | {
    b"host",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
}
_RESPONSE_SPECIAL = HOP_BY_HOP | {b"content-length"}
_CONNECTION_OPTIONS = frozenset((b"close", b"keep-alive", b"upgrade", b""))
# Names a Connection header can never remove: framing, routing, and what this hop sets.
PROTECTED = frozenset(
    (
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    )
)


class HeadError(ValueError):
    """A request head that parses but cannot be forwarded (duplicate Host...)."""


class UnsupportedCoding(HeadError):
    """A Transfer-Encoding other than plain `chunked` (RFC 9112 6.1: 501)."""


# Body framing of a request, as the parser decided it (the third item of rewrite_request)
NO_BODY = -1
CHUNKED = -2


def _listed(tokens: bytes) -> set[bytes]:
    """Header names listed in a Connection value, beyond the standard options."""
    names = {t.strip() for t in tokens.lower().split(b",")}
    return names - _CONNECTION_OPTIONS - PROTECTED


# Request header names by kind. Names repeat across requests in the same spelling, so
# the kind of each spelling is memoised (bounded) instead of lower()-ing every name.
K_ORDINARY = 0
K_HOST = 1
K_XFF = 2
K_XFP = 3
K_XFH = 4
K_CONNECTION = 5
K_TRANSFER_ENCODING = 6
K_UPGRADE = 7
K_HOP = 8  # any other hop-by-hop header: dropped
K_CONTENT_LENGTH = 9
_KIND_OF_LOWER = {
    b"host": K_HOST,
    b"x-forwarded-for": K_XFF,
    b"x-forwarded-proto": K_XFP,
    b"x-forwarded-host": K_XFH,
    b"connection": K_CONNECTION,
    b"transfer-encoding": K_TRANSFER_ENCODING,
    b"upgrade": K_UPGRADE,
    b"content-length": K_CONTENT_LENGTH,
    **{name: K_HOP for name in HOP_BY_HOP - {b"connection", b"transfer-encoding", b"upgrade"}},
}
_name_kinds: dict[bytes, int] = dict(_KIND_OF_LOWER)
_NAME_KINDS_MAX = 4096


def _kind(name: bytes) -> int:
    kind = _KIND_OF_LOWER.get(name.lower(), K_ORDINARY)
    if len(_name_kinds) >= _NAME_KINDS_MAX:
        _name_kinds.clear()
        _name_kinds.update(_KIND_OF_LOWER)
    _name_kinds[name] = kind
    return kind


def rewrite_request(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    client_ip: bytes,
    trusted_peer: bool,
    upgrade: bool,
) -> tuple[bytes, bytes | None, int]:
    """Build the upstream head from the headers llhttp accepted (it refuses repeated or
    malformed Content-Length, one beside Transfer-Encoding, and codings not ending in
    chunked). Returns `(head, host, body)`: the bytes to send, the client's Host (None
    when absent) and the body framing the head declares: NO_BODY, CHUNKED (the caller
    re-chunks) or a length. Raises HeadError for heads that must be refused (several
    Host headers; UnsupportedCoding for codings beside chunked)."""
    kinds = _name_kinds
    # the upstream head is built as the headers are read; slot 4 takes the Host line
    # (Host first, as clients send it), and one join makes the bytes
    parts = [method, b" ", target, b" HTTP/1.1\r\n", b""]
    host: bytes | None = None
    xff: bytes | None = None
    proto: bytes | None = None
    fwd_host: bytes | None = None
    upgrade_value: bytes | None = None
    connection: bytes = b""
    body = NO_BODY
    for name, value in headers:
        kind = kinds.get(name)
        if kind is None:
            kind = _kind(name)
        if not kind:
            parts += (name, b": ", value, b"\r\n")
        elif kind == K_HOST:
            if host is not None:
                raise HeadError("several Host headers")
            host = value
        elif kind == K_XFF:
            xff = value if xff is None else xff + b", " + value
        elif kind == K_XFP:
            proto = value
        elif kind == K_XFH:
            fwd_host = value
        elif kind == K_CONNECTION:
            connection = value if not connection else connection + b"," + value
        elif kind == K_CONTENT_LENGTH:
            body = int(value)  # llhttp accepted it: one header, digits and OWS only
        elif kind == K_TRANSFER_ENCODING:
            if value.strip().lower() != b"chunked":
                raise UnsupportedCoding(f"Transfer-Encoding {value.decode('latin-1')!r}")
            body = CHUNKED
        elif kind == K_UPGRADE:
            upgrade_value = value
        # every other hop-by-hop header is dropped
    if connection and connection.lower() not in _CONNECTION_OPTIONS:
        listed = _listed(connection)
        if listed:  # rare: the client named extra hop-by-hop headers; drop those too
            fewer = [(n, v) for n, v in headers if n.lower() not in listed]
            if len(fewer) != len(headers):
                return rewrite_request(method, target, fewer, client_ip, trusted_peer, upgrade)
    if not trusted_peer or not proto:
        proto = b"http"
    if not trusted_peer or not fwd_host:
        fwd_host = host
    if xff:
        client_ip = xff + b", " + client_ip
    # (an HTTP/1.0 request may lack Host; upstream is HTTP/1.1, which needs one: RFC
    # 9112 3.2 says an empty one when there is no authority)
    parts[4] = b"Host: " + host + b"\r\n" if host is not None else b"Host: \r\n"
    parts += (b"X-Forwarded-For: ", client_ip, b"\r\nX-Forwarded-Proto: ", proto)
    if fwd_host:
        parts += (b"\r\nX-Forwarded-Host: ", fwd_host)
    if upgrade and upgrade_value:
        parts += (b"\r\nConnection: upgrade\r\nUpgrade: ", upgrade_value)
    if body >= 0:
        parts.append(b"\r\nContent-Length: %d" % body)
    elif body == CHUNKED:
        parts.append(b"\r\nTransfer-Encoding: chunked")
    parts.append(b"\r\n\r\n")
    return b"".join(parts), host, body


def rewrite_response(
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    client_keep_alive: bool,
    client_http11: bool,
    no_body: bool,
) -> tuple[bytes, int, bool]:
    """Build the response head for the client.

    `no_body`: the response carries no body whatever its headers say (HEAD request, 1xx,
    204, 304). Returns `(head, framing, keep_alive)` where framing is a BODY_* constant
    and keep_alive says whether the client connection stays open afterwards.
    """
    out = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    append = out.append
    has_length = False
    upgrade_value: bytes | None = None
    connection = b""
    codings = b""
    special = _RESPONSE_SPECIAL
    for name, value in headers:
        lname = name.lower()
        if lname not in special:
            append(name + b": " + value + b"\r\n")
        elif lname == b"content-length":
            has_length = True
            append(name + b": " + value + b"\r\n")
        elif lname == b"connection":
            connection = value if not connection else connection + b"," + value
        elif lname == b"upgrade":
            upgrade_value = value
        elif lname == b"transfer-encoding":
            codings = value if not codings else codings + b", " + value
    if connection and connection.lower() not in _CONNECTION_OPTIONS:
        listed = _listed(connection)
        if listed:
            kept = [(n, v) for n, v in headers if n.lower() not in listed]
            if len(kept) != len(headers):
                return rewrite_response(
                    status, reason, kept, client_keep_alive, client_http11, no_body
                )
    if status == 101:
        append(b"Connection: upgrade\r\nUpgrade: " + (upgrade_value or b"") + b"\r\n\r\n")
        return b"".join(out), BODY_NONE, False
    keep_alive = client_keep_alive
    coded, chunked_last = transfer_codings(codings)
    if no_body:
        framing = BODY_NONE
    elif coded and not (chunked_last and client_http11):
        # RFC 9112 6.3 (4): a coding other than chunked last runs until the close; the
        # coding stays named so the client can decode it
        framing = BODY_UNTIL_CLOSE
        keep_alive = False
        append(b"Transfer-Encoding: " + coded + b"\r\n")
    elif coded:
        framing = BODY_CHUNKED
        append(b"Transfer-Encoding: " + coded + b", chunked\r\n")
    elif has_length and not codings:
        framing = BODY_LENGTH
    elif client_http11:
        framing = BODY_CHUNKED
        append(b"Transfer-Encoding: chunked\r\n")
    else:
        framing = BODY_UNTIL_CLOSE
        keep_alive = False
    if not keep_alive:
        append(b"Connection: close\r\n")
    elif not client_http11:
        append(b"Connection: keep-alive\r\n")
    append(b"\r\n")
    return b"".join(out), framing, keep_alive


# C-level searches over the raw head and its lower-cased copy (llhttp refuses whitespace
# before a colon, so `\r\n<name>:` is exact) cost less than a parser callback plus a
# lower() per header line: one substitution cuts the hop-by-hop lines.
_HOP_NAMES = b"|".join(sorted(HOP_BY_HOP))
_SPECIAL_RE = re.compile(rb"\r\n(" + _HOP_NAMES + rb"|content-length):")
_HOP_LINE_ANYCASE_RE = re.compile(rb"\r\n(?:" + _HOP_NAMES + rb"):[^\r\n]*", re.IGNORECASE)
# a Connection line (in the lower-cased head) naming more than close/keep-alive/upgrade
_ODD_CONNECTION_RE = re.compile(
    rb"\r\nconnection:(?![ \t]*(?:close|keep-alive|upgrade)?[ \t]*\r\n)"
)
# the one Transfer-Encoding line is exactly `chunked` (llhttp then frames by chunks)
_TE_CHUNKED_RE = re.compile(rb"\r\ntransfer-encoding:[ \t]*chunked[ \t]*\r\n")


def split_head(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """`b"HTTP/1.1 200 OK\\r\\nA: b\\r\\n"` -> (status line, [(name, value)])."""
    lines = raw.split(b"\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            headers.append((name.strip(), value.strip()))
    return lines[0], headers


def transfer_codings(value: bytes) -> tuple[bytes, bool]:
    """A response's Transfer-Encoding value -> (the codings before a final `chunked`, or
    all of them when chunked is not last; whether chunked is last)."""
    if not value:
        return b"", False
    tokens = [t.strip() for t in value.split(b",") if t.strip()]
    chunked_last = bool(tokens) and tokens[-1].lower() == b"chunked"
    if chunked_last:
        tokens.pop()
    return b", ".join(tokens), chunked_last


def _rewrite_parsed(
    raw: bytes, status: int, client_keep_alive: bool, client_http11: bool, no_body: bool
) -> tuple[bytes, int, bool, bool]:
    """The general path for rare shapes (101, Connection naming headers, HTTP/1.0)."""
    line, headers = split_head(raw)
    reason = line.split(b" ", 2)[2] if line.count(b" ") >= 2 else b""
    head, framing, keep = rewrite_response(
        status, reason, headers, client_keep_alive, client_http11, no_body
    )
    # how the backend delimits its body (RFC 9112 6.3): chunked last, else a length; a
    # Transfer-Encoding without chunked last, or neither header, means until the close
    codings = b", ".join(v for n, v in headers if n.lower() == b"transfer-encoding")
    if codings:
        delimited = transfer_codings(codings)[1]
    else:
        delimited = any(n.lower() == b"content-length" for n, _ in headers)
    return head, framing, keep, no_body or delimited


def rewrite_response_head(
    raw: bytes,
    status: int,
    client_keep_alive: bool,
    client_http11: bool,
    no_body: bool,
) -> tuple[bytes, int, bool, bool]:
    """`rewrite_response` for a raw head as received (status line + header lines, each
    ending in CRLF, without the blank line). Same result, plus `delimited`: whether the
    backend framed its body (length or chunks) rather than closing the connection.
    """
    if status == 101 or not raw.startswith(b"HTTP/1.1 "):
        return _rewrite_parsed(raw, status, client_keep_alive, client_http11, no_body)
    low = raw.lower()
    found = _SPECIAL_RE.findall(low)  # the special names present, in order
    has_length = b"content-length" in found
    chunked = b"transfer-encoding" in found
    if chunked and (found.count(b"transfer-encoding") > 1 or not _TE_CHUNKED_RE.search(low)):
        # a coding other than chunked alone (gzip...): rare, the general path keeps it
        return _rewrite_parsed(raw, status, client_keep_alive, client_http11, no_body)
    hops = len(found) - found.count(b"content-length")
    body = raw
    if hops == 1 and b"connection" in found:
        # the common case (`Connection: keep-alive`): cut that one line
        at = low.find(b"\r\nconnection:")
        eol = low.find(b"\r\n", at + 2)
        if low[at + 13 : eol].strip() not in _CONNECTION_OPTIONS:
            # it names more hop-by-hop headers: take the general path
            return _rewrite_parsed(raw, status, client_keep_alive, client_http11, no_body)
        body = raw[:at] + raw[eol:]
    elif hops:
        if b"connection" in found and _ODD_CONNECTION_RE.search(low):
            return _rewrite_parsed(raw, status, client_keep_alive, client_http11, no_body)
        body = _HOP_LINE_ANYCASE_RE.sub(b"", raw)  # cut the hop-by-hop lines
    keep_alive = client_keep_alive
    if no_body:
        framing = BODY_NONE
        tail = b""
    elif has_length:
        framing = BODY_LENGTH
        tail = b""
    elif client_http11:
        framing = BODY_CHUNKED
        tail = b"Transfer-Encoding: chunked\r\n"
    else:
        framing = BODY_UNTIL_CLOSE
        keep_alive = False
        tail = b""
    if not keep_alive:
        tail += b"Connection: close\r\n\r\n"
    elif not client_http11:
        tail += b"Connection: keep-alive\r\n\r\n"
    else:
        tail += b"\r\n"
    return body + tail, framing, keep_alive, no_body or has_length or chunked
