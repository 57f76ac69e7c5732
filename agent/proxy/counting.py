"""Counting a finished exchange into the server's per-route metrics: one call per request.

This is `RouteMetrics.record` (agent/metrics/routes.py) inlined for the proxy's hot path:
it reads what it needs straight off the `Exchange` and adds plain numbers in place into
the route's `Meter` (which its target carries); its time is the server's clock of this
wake-up of the loop (`ProxyServer.clock`), passed in. The common case, a backend's
response whole in one read (`head_at` < 0: its upstream time is its total time), is
four adds: its status class's `same` histogram bucket (the first, or found by `bisect`),
the sum, and the bytes either way. The two must count the same:
tests/agent/proxy/test_counting.py checks them against each other.

Each bytecode instruction here costs what a branch mispredict does when the proxy
serves varied traffic (about 6 ns: bench/proxy_metrics_cost.py), so the count is
written for the fewest: slots rather than list subscripts, the first bucket tested
before any bisect.
"""

from bisect import bisect_left

from agent.metrics.routes import (
    LATENCY_BUCKETS_S,
    SAME_ROW,
    RouteMetrics,
    bucket,
    status_class,
)
from agent.proxy.exchange import Exchange

FIRST = LATENCY_BUCKETS_S[0]


def count(metrics: RouteMetrics, ex: Exchange, now: float) -> None:
    """Record `ex`, whose response was just written (or failed) at `now` (the
    server's clock, `ProxyServer.clock`)."""
    total = now - ex.started
    if ex.head_at < 0.0:  # a backend's response, whole in one read: upstream = total
        m = ex.target.meter  # type: ignore[union-attr]  # (a backend answered: routed)
        if total <= FIRST:
            m.same[SAME_ROW[ex.status]] += 1
        else:
            m.same[SAME_ROW[ex.status] + bisect_left(LATENCY_BUCKETS_S, total)] += 1
        m.same_sum += total
        m.bytes_in += ex.bytes_in
        m.bytes_out += ex.bytes_out
        return
    count_apart(metrics, ex, total)


def count_apart(metrics: RouteMetrics, ex: Exchange, total: float) -> None:
    """An exchange whose upstream and total times differ: a response that came in more
    than one read, or one the proxy answered itself (no route, no backend, a backend
    that failed before its response head: no upstream time, and the failure's kind)."""
    target = ex.target
    m = target.meter if target is not None else metrics.meter("")
    m.responses[status_class(ex.status)] += 1
    error = ex.error
    if error is not None:
        m.errors[error] = m.errors.get(error, 0) + 1
    m.bytes_in += ex.bytes_in
    m.bytes_out += ex.bytes_out
    m.total[bucket(total)] += 1
    m.total_sum += total
    head_at = ex.head_at
    if head_at:  # a backend's response head came, before the end of the response
        upstream = head_at - ex.started
        m.upstream[bucket(upstream)] += 1
        m.upstream_sum += upstream
