"""Every way a proxied request can fail, and the one place that turns it into a response.

A failure is a small exception class carrying its status; `response_for` renders the
page (HTML-escaped detail, `Connection: close` when the connection must not be reused),
and `upstream_failure` classifies a socket error from a backend: refused or reset -> 502,
timed out -> 504. The client and upstream protocols never build error responses
themselves.
"""

import errno
import html

REASONS = {
    400: b"Bad Request",
    404: b"Not Found",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


class ProxyFailure(Exception):
    """Base class: `status` is the HTTP status; `close` says the connection must close."""

    status = 502
    close = False

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ProxyFailure):
    status = 400
    close = True  # the parser is in an error state: nothing after this can be trusted


class UnsupportedFraming(ProxyFailure):
    """A transfer coding the proxy cannot frame (anything but `chunked`)."""

    status = 501
    close = True


class VersionNotSupported(ProxyFailure):
    status = 505
    close = True


class HeadTooLarge(ProxyFailure):
    status = 431
    close = True


class HeadTimeout(ProxyFailure):
    status = 408
    close = True


class NoRoute(ProxyFailure):
    status = 404


class NoBackend(ProxyFailure):
    """The service exists but has no running backend (not deployed yet, or paused too long)."""

    status = 503


class UpstreamUnavailable(ProxyFailure):
    """The backend refused or reset the connection, or answered with garbage."""

    status = 502


class UpstreamTimeout(ProxyFailure):
    status = 504


def upstream_failure(exc: BaseException | None, service: str, port: int) -> ProxyFailure:
    """Classify what went wrong talking to a backend."""
    where = f"service {service!r} at 127.0.0.1:{port}"
    if isinstance(exc, TimeoutError) or (isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT):
        return UpstreamTimeout(f"{where} did not answer in time")
    if isinstance(exc, ConnectionRefusedError):
        return UpstreamUnavailable(f"{where} refused the connection (is it running?)")
    if exc is None:
        return UpstreamUnavailable(f"{where} closed the connection without a response")
    return UpstreamUnavailable(f"{where} failed: {exc}")


def response_for(failure: ProxyFailure, keep_alive: bool = True) -> bytes:
    """The complete response for `failure` (status line, headers, small HTML page)."""
    status = failure.status
    reason = REASONS.get(status, b"Error")
    body = (
        "<!doctype html><title>{s} {r}</title><h1>{s} {r}</h1><p>{d}</p>\n".format(
            s=status, r=reason.decode(), d=html.escape(failure.detail, quote=False)
        )
    ).encode()
    close = failure.close or not keep_alive
    head = b"HTTP/1.1 %d %s\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n" % (
        status,
        reason,
        len(body),
    )
    if status == 503:
        head += b"Retry-After: 5\r\n"
    head += b"Connection: close\r\n\r\n" if close else b"\r\n"
    return head + body
