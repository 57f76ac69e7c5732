"""The batch an agent ships to the control plane: one point per service and one for the
server per interval, built from cumulative counters by difference.

Inputs are what the reconciler holds at shipping time: the latest `ProxyMetrics` of
each proxy (cumulative per-route counters), a `ServiceSample` per running service and a
`ServerSample`, all cumulative where they count. `BatchBuilder` keeps the previous
values and emits differences, so a point says "in these `span` seconds, this much
happened". A proxy restart (its `started` changes) or a service restart (fewer CPU
seconds than before) restarts the difference from zero instead of going negative.

Point fields (JSON, docs/metrics.md): t (interval start, unix s), span (s), service
("" for the server), requests, errors (5xx answers, the proxy's own failures
included), bytes_in, bytes_out, lat (latency histogram counts, total time, fixed
buckets), lat_sum (s), cpu_s (CPU seconds used in the interval), mem (bytes: RSS for a
service, used memory for the server); server points add mem_total, swap_used,
swap_total, disk_used, disk_total, inodes_free, load1, net_rx, net_tx. A service point of an interval in
which builds finished adds builds (how many), build_s (their wall time, summed) and
build_rss (the largest peak resident memory of their process trees, bytes); one in
which it was restarted (after a crash or failed health checks) adds restarts.
"""

from dataclasses import dataclass, field
from typing import Any

from agent.bus.metrics import ProxyMetrics
from agent.metrics.builds import FinishedBuild
from agent.metrics.procfs import ServerSample, ServiceSample
from agent.metrics.routes import LATENCY_BUCKETS_S, RouteStats, delta

BUCKETS = len(LATENCY_BUCKETS_S) + 1


def _counter(now: float, before: float | None) -> float:
    """Difference of a cumulative counter; a reset (smaller value) counts from zero."""
    if before is None or now < before:
        return now if before is not None else 0.0
    return now - before


@dataclass
class BatchBuilder:
    started: dict[str, float] = field(default_factory=dict)  # proxy kind -> its start
    routes: dict[tuple[str, str], RouteStats] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # service ("" server) -> CPU s
    net: tuple[int, int] | None = None
    last_t: float | None = None
    held: list[FinishedBuild] = field(default_factory=list)  # builds before the baseline
    restarts: dict[str, int] = field(default_factory=dict)  # service -> restarts so far

    def build(
        self,
        now: float,
        proxies: list[ProxyMetrics],
        services: dict[str, ServiceSample],
        server: ServerSample | None,
        builds: list[FinishedBuild] | None = None,
        restarts: dict[str, int] | None = None,
    ) -> list[dict[str, Any]]:
        """The points for (last build, now]; the first call only sets the baselines (and
        keeps `builds` for the next one)."""
        first = self.last_t is None
        builds = self.held + list(builds or [])
        self.held = builds if first else []
        t0 = self.last_t if self.last_t is not None else now
        self.last_t = now
        span = max(0.0, now - t0)
        traffic = self._traffic(proxies)
        extra = _builds_by_service(builds)
        for service, n in (restarts or {}).items():
            again = int(_counter(n, self.restarts.get(service, 0)))
            self.restarts[service] = n
            if again:
                extra.setdefault(service, {})["restarts"] = again
        points = []
        for service in sorted(set(traffic) | set(services) | set(extra)):
            p: dict[str, Any] = {"t": round(t0, 3), "span": round(span, 3), "service": service}
            seen = traffic.get(service)
            if seen is not None:
                p.update(
                    requests=seen.requests,
                    errors=seen.responses[5],
                    bytes_in=seen.bytes_in,
                    bytes_out=seen.bytes_out,
                    lat=seen.total.counts,
                    lat_sum=round(seen.total.sum_s, 6),
                )
            sample = services.get(service)
            if sample is not None:
                before = self.cpu.get(service)
                self.cpu[service] = sample.cpu_seconds
                p.update(cpu_s=round(_counter(sample.cpu_seconds, before), 3), mem=sample.rss_bytes)
            p.update(extra.get(service, {}))
            points.append(p)
        for gone in set(self.cpu) - set(services) - {""}:
            del self.cpu[gone]
        if server is not None:
            points.append(self._server_point(t0, span, server))
        return [] if first else points

    def _traffic(self, proxies: list[ProxyMetrics]) -> dict[str, RouteStats]:
        """Each service's traffic since the last batch, both proxies summed."""
        traffic: dict[str, RouteStats] = {}
        for snap in proxies:
            if self.started.get(snap.kind) != snap.started:
                self.started[snap.kind] = snap.started
                for key in [k for k in self.routes if k[0] == snap.kind]:
                    del self.routes[key]
            for service, stats in snap.routes.items():
                if not service:
                    continue  # unrouted requests belong to no service
                d = delta(stats, self.routes.get((snap.kind, service)))
                self.routes[(snap.kind, service)] = stats
                traffic[service] = _merge(traffic.get(service), d)
        return traffic

    def _server_point(self, t0: float, span: float, server: ServerSample) -> dict[str, Any]:
        busy = sum(v for k, v in server.cpu_seconds.items() if k not in ("idle", "iowait"))
        before = self.cpu.get("")
        self.cpu[""] = busy
        net_before, self.net = self.net, (server.net_rx_bytes, server.net_tx_bytes)
        return {
            "t": round(t0, 3),
            "span": round(span, 3),
            "service": "",
            "cpu_s": round(_counter(busy, before), 3),
            "cpus": server.cpus,
            "mem": server.mem_total - server.mem_available,
            "mem_total": server.mem_total,
            "swap_used": server.swap_total - server.swap_free,
            "swap_total": server.swap_total,
            "disk_used": server.disk_total - server.disk_free,
            "disk_total": server.disk_total,
            "inodes_free": server.inodes_free,
            "load1": server.load1,
            "net_rx": int(_counter(server.net_rx_bytes, net_before and net_before[0])),
            "net_tx": int(_counter(server.net_tx_bytes, net_before and net_before[1])),
        }


def _builds_by_service(builds: list[FinishedBuild]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for b in builds:
        cur = out.setdefault(b.service, {"builds": 0, "build_s": 0.0, "build_rss": 0})
        cur["builds"] += 1
        cur["build_s"] = round(cur["build_s"] + b.duration_s, 3)
        cur["build_rss"] = max(cur["build_rss"], b.peak_rss_bytes)
    return out


def _merge(a: RouteStats | None, b: RouteStats) -> RouteStats:
    """The external and internal proxies' traffic of one service, summed."""
    if a is None:
        return b
    return RouteStats(
        responses=[x + y for x, y in zip(a.responses, b.responses, strict=True)],
        bytes_in=a.bytes_in + b.bytes_in,
        bytes_out=a.bytes_out + b.bytes_out,
        errors={k: a.errors.get(k, 0) + b.errors.get(k, 0) for k in {*a.errors, *b.errors}},
        upstream=a.upstream,  # (only total latency is shipped)
        total=type(a.total)(
            [x + y for x, y in zip(a.total.counts, b.total.counts, strict=True)],
            a.total.sum_s + b.total.sum_s,
        ),
        in_flight=a.in_flight + b.in_flight,
    )
