"""Per-route counters and histograms, as plain data (no sockets)."""

from dataclasses import replace

import pytest

from agent.metrics.routes import (
    LATENCY_BUCKETS_S,
    Histogram,
    RouteMetrics,
    RouteStats,
    delta,
    quantile,
)


def test_record_counts_by_status_class_and_error_kind() -> None:
    m = RouteMetrics()
    m.record("web", 200, 100, 1000, 0.004, 0.006, None)
    m.record("web", 404, 50, 10, 0.02, 0.03, None)
    m.record("web", 502, 50, 0, None, 0.5, "UpstreamUnavailable")
    m.record("web", 0, 30, 0, None, 0.1, None)  # cut before any response head
    web = m.routes["web"]
    assert web.responses == [1, 0, 1, 0, 1, 1]
    assert web.requests == 4
    assert (web.bytes_in, web.bytes_out) == (230, 1010)
    assert web.errors == {"UpstreamUnavailable": 1}
    assert sum(web.upstream.counts) == 2  # only exchanges a backend answered
    assert sum(web.total.counts) == 4


def test_bucket_bounds_are_inclusive_upper_bounds() -> None:
    h = Histogram()
    h.observe(0.005)  # exactly the first bound: first bucket (le="0.005")
    h.observe(0.0051)
    h.observe(99.0)  # above the last bound: overflow slot
    assert h.counts[0] == 1 and h.counts[1] == 1 and h.counts[len(LATENCY_BUCKETS_S)] == 1
    assert h.sum_s == pytest.approx(99.0101)


def test_quantile_interpolates_within_the_bucket() -> None:
    h = Histogram()
    for _ in range(100):
        h.observe(0.007)  # all in (0.005, 0.01]
    assert quantile(h, 0.5) == pytest.approx(0.0075)
    assert quantile(Histogram(), 0.5) is None
    h.observe(50.0)
    assert quantile(h, 1.0) == LATENCY_BUCKETS_S[-1]


def test_snapshot_round_trips_and_carries_in_flight() -> None:
    m = RouteMetrics()
    m.record("web", 201, 1, 2, 0.1, 0.2, None)
    snap = m.snapshot({"web": 3, "idle": 1})
    assert snap["web"]["in_flight"] == 3 and snap["idle"]["responses"]["2xx"] == 0
    back = RouteStats.from_dict(snap["web"])
    assert back == replace(m.routes["web"], in_flight=3)


def test_from_dict_names_what_is_wrong() -> None:
    good = RouteMetrics()
    good.record("web", 200, 1, 1, 0.1, 0.1, None)
    d = good.snapshot({})["web"]
    with pytest.raises(ValueError, match="unknown status class"):
        RouteStats.from_dict({**d, "responses": {"6xx": 1}})
    with pytest.raises(ValueError, match="histogram counts"):
        RouteStats.from_dict({**d, "total": {"counts": [1], "sum": 0.1}})


def test_delta_between_snapshots_and_after_a_restart() -> None:
    m = RouteMetrics()
    m.record("web", 200, 10, 10, 0.01, 0.02, None)
    first = RouteStats.from_dict(m.snapshot({})["web"])
    m.record("web", 500, 5, 5, 0.2, 0.3, "UpstreamTimeout")
    second = RouteStats.from_dict(m.snapshot({"web": 1})["web"])
    d = delta(second, first)
    assert d.responses == [0, 0, 0, 0, 0, 1]
    assert (d.bytes_in, d.bytes_out, d.in_flight) == (5, 5, 1)
    assert d.errors == {"UpstreamTimeout": 1}
    assert sum(d.total.counts) == 1 and d.total.sum_s == pytest.approx(0.3)
    restarted = RouteStats()
    restarted.responses[2] = 1
    assert delta(restarted, second) is restarted  # fewer requests: counters were reset
