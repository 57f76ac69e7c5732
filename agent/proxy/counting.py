"""Counting a finished exchange into the server's per-route metrics: one call per request.

This is `RouteMetrics.record` (agent/metrics/routes.py) inlined for the proxy's hot path:
it reads what it needs straight off the `Exchange`, with one clock read, and adds plain
integers to the route's preallocated lists (histogram buckets by `bisect` on a tuple).
The two must count the same; tests/agent/proxy/test_metrics.py checks the totals.
"""

from bisect import bisect_left
from time import perf_counter

from agent.metrics.routes import LATENCY_BUCKETS_S, RouteMetrics, RouteStats
from agent.proxy.exchange import Exchange

FIRST = LATENCY_BUCKETS_S[0]


def count(metrics: RouteMetrics, ex: Exchange) -> None:
    """Record `ex`, whose response was just written (or failed)."""
    started = ex.started
    total = perf_counter() - started
    target = ex.target
    service = target.service if target is not None else ""
    stats = metrics.routes.get(service)
    if stats is None:
        stats = metrics.routes[service] = RouteStats()
    status = ex.status
    stats.responses[status // 100 if status < 600 else 0] += 1
    stats.bytes_in += len(ex.head) + ex.bytes_in
    stats.bytes_out += ex.bytes_out
    error = ex.error
    if error is not None:
        stats.errors[error] = stats.errors.get(error, 0) + 1
    head_at = ex.head_at
    if head_at:  # a backend's response head came (-1: with the whole response)
        upstream = head_at - started if head_at > 0 else total
        hist = stats.upstream
        # (most answers take less than the first bound: that bucket without a search)
        hist.counts[0 if upstream <= FIRST else bisect_left(LATENCY_BUCKETS_S, upstream)] += 1
        hist.sum_s += upstream
    hist = stats.total
    hist.counts[0 if total <= FIRST else bisect_left(LATENCY_BUCKETS_S, total)] += 1
    hist.sum_s += total
