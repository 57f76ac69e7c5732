"""Counting a finished exchange into the server's per-route metrics: one count per request.

This is `RouteMetrics.record` (agent/metrics/routes.py) written for the proxy's hot
path: it reads what it needs straight off the `Exchange` and adds plain numbers in place
into the route's `Meter` (which its target carries). Its time is the server's clock of
this wake-up of the loop (`ProxyServer.clock`). The common case, a backend's response
whole in one read (`head_at` < 0: its upstream time is its total time), is four adds
inlined in `ClientConnection.response_done`: its status class's `same` histogram bucket
(the first, or found by `bisect`), the sum, and the bytes either way. `count_apart`
here counts every other exchange. Both must count what `record` does:
tests/agent/proxy/test_counting.py checks them against it.

Each bytecode instruction of the count costs some 6 ns under varied traffic, 2-3 times
what it does when requests repeat (bench/proxy_metrics_cost.py: the metrics' 84
instructions a request cost 0.53 µs in its realistic shape, their 97 in the fixed one
0.24 µs), so the count is written for the fewest: a meter's slots rather than list
subscripts, the first bucket tested before any `bisect`, no call in the common case.
"""

from agent.metrics.routes import (
    LATENCY_BUCKETS_S,
    RouteMetrics,
    bucket,
    status_class,
)
from agent.proxy.exchange import Exchange

FIRST = LATENCY_BUCKETS_S[0]  # the first bucket's bound: most responses come in under it


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
