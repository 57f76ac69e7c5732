"""The proxy's inlined per-exchange count records what RouteMetrics.record records."""

from time import perf_counter

import pytest

from agent.metrics.routes import RouteMetrics
from agent.proxy.counting import count
from agent.proxy.exchange import Exchange
from agent.proxy.routing import Target


def _exchange(
    target: Target | None, status: int, head_at: float, error: str | None, age: float
) -> Exchange:
    ex = Exchange(None, True, True, False, False)  # type: ignore[arg-type]
    ex.target = target
    ex.head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    ex.bytes_in, ex.bytes_out = 7, 1234
    ex.status, ex.error = status, error
    ex.started = perf_counter() - age
    ex.head_at = ex.started + age / 2 if head_at > 0 else head_at
    return ex


@pytest.mark.parametrize(
    ("target", "status", "head_at", "error", "age"),
    [
        (Target("web", 9), 200, 1.0, None, 0.003),  # head, then body
        (Target("web", 9), 304, -1.0, None, 0.02),  # head and body at once
        (Target("web", 9), 502, 0.0, "UpstreamUnavailable", 0.3),  # no response head
        (None, 404, 0.0, "NoRoute", 0.0001),  # no route: service ""
        (Target("api", 9), 0, 0.0, None, 20.0),  # cut before any status; overflow bucket
    ],
)
def test_count_matches_record(
    target: Target | None, status: int, head_at: float, error: str | None, age: float
) -> None:
    ex = _exchange(target, status, head_at, error, age)
    counted = RouteMetrics()
    count(counted, ex)
    total = counted.routes[target.service if target else ""].total.sum_s  # (its clock read)
    upstream = None
    if ex.head_at:
        upstream = ex.head_at - ex.started if ex.head_at > 0 else total
    recorded = RouteMetrics()
    recorded.record(
        target.service if target else "",
        status,
        len(ex.head) + ex.bytes_in,
        ex.bytes_out,
        upstream,
        total,
        error,
    )
    assert counted.snapshot({}) == recorded.snapshot({})
