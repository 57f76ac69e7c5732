"""Shipping points from cumulative counters, by difference (pure)."""

from agent.bus.metrics import ProxyMetrics
from agent.metrics.batch import BatchBuilder
from agent.metrics.procfs import ServerSample, ServiceSample
from agent.metrics.routes import RouteMetrics, RouteStats


def snap(kind: str, started: float, m: RouteMetrics) -> ProxyMetrics:
    routes = {s: RouteStats.from_dict(d) for s, d in m.snapshot({}).items()}
    return ProxyMetrics(kind, started, 0.0, routes)


def service(cpu: float, rss: int = 1000) -> ServiceSample:
    return ServiceSample(1, cpu, rss, 1, 3, 10.0)


def server(busy: float, rx: int) -> ServerSample:
    return ServerSample(
        0.5, 0.4, 0.3, {"user": busy, "idle": 100.0}, 2, 8000, 6000, 0, 0, 1000, 400, 50, 10, rx, 0
    )


def test_points_are_differences_and_survive_restarts() -> None:
    b = BatchBuilder()
    ext, internal = RouteMetrics(), RouteMetrics()
    ext.record("web", 200, 10, 20, 0.01, 0.02, None)
    assert b.build(100.0, [snap("external", 1, ext)], {"web": service(5.0)}, server(1, 0)) == []
    for _ in range(3):
        ext.record("web", 200, 10, 20, 0.01, 0.02, None)
    ext.record("web", 502, 10, 0, None, 0.2, "UpstreamUnavailable")
    internal.record("web", 200, 1, 1, 0.001, 0.001, None)
    internal.record("", 404, 1, 1, None, 0.001, "NoRoute")  # no service: not shipped
    points = b.build(
        130.0,
        [snap("external", 1, ext), snap("internal", 7, internal)],
        {"web": service(6.5, 2000)},
        server(3, 500),
    )
    web, host = points
    assert (web["t"], web["span"], web["service"]) == (100.0, 30.0, "web")
    assert web["requests"] == 4 + 1 and web["errors"] == 1  # both proxies, since last time
    assert web["bytes_out"] == 3 * 20 + 1 and sum(web["lat"]) == 5
    assert web["cpu_s"] == 1.5 and web["mem"] == 2000
    assert host["service"] == "" and host["cpu_s"] == 2 and host["net_rx"] == 500
    assert host["mem"] == 2000 and host["disk_used"] == 600
    assert (host["swap_used"], host["swap_total"]) == (0, 0)
    # the external proxy restarted (new `started`), the service too (less CPU): from zero
    fresh = RouteMetrics()
    fresh.record("web", 200, 1, 1, 0.01, 0.01, None)
    web, _ = b.build(160.0, [snap("external", 2, fresh)], {"web": service(0.25)}, server(4, 600))
    assert web["requests"] == 1 and web["cpu_s"] == 0.25


def test_builds_ride_with_their_service_point() -> None:
    from agent.metrics.builds import BuildLog, FinishedBuild

    log = BuildLog()
    log.record(FinishedBuild("api", 12.5, 300_000_000, ok=True))  # before the baseline
    b = BatchBuilder()
    assert b.build(100.0, [], {"web": service(1.0)}, None, log.drain()) == []
    log.record(FinishedBuild("web", 2.0, 50_000_000, ok=False))
    log.record(FinishedBuild("web", 3.25, 80_000_000, ok=True))
    api, web = b.build(130.0, [], {"web": service(1.5)}, None, log.drain())
    assert api == {"t": 100.0, "span": 30.0, "service": "api", "builds": 1, "build_s": 12.5,
                   "build_rss": 300_000_000}  # fmt: skip
    assert (web["builds"], web["build_s"], web["build_rss"]) == (2, 5.25, 80_000_000)
    assert web["cpu_s"] == 0.5
    (web,) = b.build(160.0, [], {"web": service(2.0)}, None, log.drain())
    assert "builds" not in web  # counted once
    assert log.latest["web"].duration_s == 3.25 and log.counts == {("api", True): 1,
                                                                  ("web", False): 1, ("web", True): 1}  # fmt: skip


def test_restarts_are_shipped_as_differences() -> None:
    b = BatchBuilder()
    assert b.build(100.0, [], {"web": service(1.0)}, None, [], {"web": 1}) == []
    (web,) = b.build(130.0, [], {"web": service(1.0)}, None, [], {"web": 3})
    assert web["restarts"] == 2
    (web,) = b.build(160.0, [], {"web": service(1.0)}, None, [], {"web": 3})
    assert "restarts" not in web
    # the reconciler restarted (its counts start again): from zero, never negative
    (web,) = b.build(190.0, [], {"web": service(1.0)}, None, [], {"web": 1})
    assert web["restarts"] == 1
