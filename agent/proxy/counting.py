"""Counting a finished exchange into the server's per-route metrics: one call per request.

This is `RouteMetrics.record` (agent/metrics/routes.py) inlined for the proxy's hot path:
it reads what it needs straight off the `Exchange`, with one clock read, and adds plain
numbers into the route's meter by constant subscripts (histogram buckets by `bisect` on a
tuple, none for a latency under the first bound). A response that came whole in one read
(`head_at` < 0) is one histogram update, not two. The two must count the same:
tests/agent/proxy/test_counting.py checks them against each other.
"""

from bisect import bisect_left
from time import perf_counter

from agent.metrics.routes import (
    BYTES_IN,
    BYTES_OUT,
    ERRORS,
    LATENCY_BUCKETS_S,
    SAME_SUM,
    STATUS_SLOT,
    TOTAL,
    TOTAL_SUM,
    UPSTREAM,
    UPSTREAM_SUM,
    RouteMetrics,
)
from agent.proxy.exchange import Exchange

FIRST = LATENCY_BUCKETS_S[0]


def count(metrics: RouteMetrics, ex: Exchange) -> None:
    """Record `ex`, whose response was just written (or failed)."""
    total = perf_counter() - ex.started
    status = ex.status
    if status >= 400 and ex.error is not None:
        count_failure(metrics, ex, total)
        return
    m = ex.target.meter  # type: ignore[union-attr]  # (only a failure has no target)
    m[STATUS_SLOT[status]] += 1
    m[BYTES_IN] += len(ex.head) + ex.bytes_in
    m[BYTES_OUT] += ex.bytes_out
    head_at = ex.head_at
    if head_at < 0.0:  # the backend's head came with the whole response: upstream = total
        m[0 if total <= FIRST else bisect_left(LATENCY_BUCKETS_S, total)] += 1  # (SAME: 0)
        m[SAME_SUM] += total
        return
    m[TOTAL if total <= FIRST else TOTAL + bisect_left(LATENCY_BUCKETS_S, total)] += 1
    m[TOTAL_SUM] += total
    if head_at:  # a backend's response head came, before the end of the response
        upstream = head_at - ex.started
        m[UPSTREAM + bisect_left(LATENCY_BUCKETS_S, upstream)] += 1
        m[UPSTREAM_SUM] += upstream


def count_failure(metrics: RouteMetrics, ex: Exchange, total: float) -> None:
    """An exchange the proxy answered itself (no route, no backend, a backend that
    failed before its response head): no upstream time, and the failure's kind."""
    target = ex.target
    m = target.meter if target is not None else metrics.meter("")
    m[STATUS_SLOT[ex.status]] += 1
    errors = m[ERRORS]
    errors[ex.error] = errors.get(ex.error, 0) + 1  # type: ignore[index]
    m[BYTES_IN] += len(ex.head) + ex.bytes_in
    m[BYTES_OUT] += ex.bytes_out
    m[TOTAL + bisect_left(LATENCY_BUCKETS_S, total)] += 1
    m[TOTAL_SUM] += total
