"""Counting a finished exchange into the server's per-route metrics: one call per request.

This is `RouteMetrics.record` (agent/metrics/routes.py) inlined for the proxy's hot path:
it reads what it needs straight off the `Exchange` and adds plain numbers into the
route's meter (which its target carries) by constant subscripts; its time is the
server's clock of this wake-up of the loop (`ProxyServer.clock`), passed in. The
common case, a backend's response whole in one read (`head_at` < 0: its upstream time is
its total time), is four adds: its status class's SAME histogram bucket (found by
`bisect` on a tuple, or none for a latency under the first bound), the sum, and the
bytes either way. The two must count the same: tests/agent/proxy/test_counting.py
checks them against each other.
"""

from bisect import bisect_left

from agent.metrics.routes import (
    BYTES_IN,
    BYTES_OUT,
    ERRORS,
    LATENCY_BUCKETS_S,
    SAME_ROW,
    SAME_SUM,
    STATUS_SLOT,
    TOTAL,
    TOTAL_SUM,
    UPSTREAM,
    UPSTREAM_SUM,
    RouteMetrics,
    bucket,
)
from agent.proxy.exchange import Exchange

FIRST = LATENCY_BUCKETS_S[0]


def count(metrics: RouteMetrics, ex: Exchange, now: float) -> None:
    """Record `ex`, whose response was just written (or failed) at `now` (the
    server's clock, `ProxyServer.clock`)."""
    total = now - ex.started
    if ex.head_at < 0.0:  # a backend's response, whole in one read: upstream = total
        m = ex.target.meter  # type: ignore[union-attr]  # (a backend answered: routed)
        m[
            SAME_ROW[ex.status] + (0 if total <= FIRST else bisect_left(LATENCY_BUCKETS_S, total))
        ] += 1
        m[SAME_SUM] += total
        m[BYTES_IN] += ex.bytes_in
        m[BYTES_OUT] += ex.bytes_out
        return
    count_apart(metrics, ex, total)


def count_apart(metrics: RouteMetrics, ex: Exchange, total: float) -> None:
    """An exchange whose upstream and total times differ: a response that came in more
    than one read, or one the proxy answered itself (no route, no backend, a backend
    that failed before its response head: no upstream time, and the failure's kind)."""
    target = ex.target
    m = target.meter if target is not None else metrics.meter("")
    m[STATUS_SLOT[ex.status]] += 1
    error = ex.error
    if error is not None:
        errors = m[ERRORS]
        errors[error] = errors.get(error, 0) + 1
    m[BYTES_IN] += ex.bytes_in
    m[BYTES_OUT] += ex.bytes_out
    m[TOTAL + bucket(total)] += 1
    m[TOTAL_SUM] += total
    head_at = ex.head_at
    if head_at:  # a backend's response head came, before the end of the response
        upstream = head_at - ex.started
        m[UPSTREAM + bucket(upstream)] += 1
        m[UPSTREAM_SUM] += upstream
