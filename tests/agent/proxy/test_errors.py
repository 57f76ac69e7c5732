"""Failure -> response mapping, without sockets."""

import errno

from agent.proxy.errors import (
    BadRequest,
    HeadTooLarge,
    NoBackend,
    NoRoute,
    UpstreamTimeout,
    UpstreamUnavailable,
    response_for,
    upstream_failure,
)


def test_classification() -> None:
    assert isinstance(upstream_failure(ConnectionRefusedError(), "api", 5000), UpstreamUnavailable)
    assert isinstance(upstream_failure(ConnectionResetError(), "api", 5000), UpstreamUnavailable)
    assert isinstance(upstream_failure(None, "api", 5000), UpstreamUnavailable)
    assert isinstance(upstream_failure(TimeoutError(), "api", 5000), UpstreamTimeout)
    assert isinstance(upstream_failure(OSError(errno.ETIMEDOUT, "t"), "api", 5000), UpstreamTimeout)
    failure = upstream_failure(ConnectionRefusedError(), "api", 5000)
    assert failure.status == 502 and "'api'" in failure.detail and "5000" in failure.detail


def test_statuses() -> None:
    statuses = {
        cls("x").status
        for cls in (
            BadRequest,
            HeadTooLarge,
            NoRoute,
            NoBackend,
            UpstreamUnavailable,
            UpstreamTimeout,
        )
    }
    assert statuses == {400, 431, 404, 503, 502, 504}


def test_response_is_complete_and_escaped() -> None:
    raw = response_for(NoRoute("no service for host <script>"), keep_alive=True)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"Connection: close" not in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert b"&lt;script&gt;" in body and b"<script>" not in body


def test_fatal_failures_close() -> None:
    assert b"Connection: close" in response_for(BadRequest("bad"))
    assert b"Connection: close" in response_for(NoRoute("x"), keep_alive=False)
    assert b"Retry-After" in response_for(NoBackend("x"))
