"""The agent's own `/metrics` (node-local scraping, `--metrics-bind`): the proxies'
cumulative counters as real Prometheus counters and histograms, the services' and the
server's figures from /proc, through `prometheus_client` custom collectors."""

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from agent.bus.metrics import ProxyMetrics
from agent.metrics.builds import BuildLog
from agent.metrics.procfs import ServerSample, ServiceSample
from agent.metrics.routes import LATENCY_BUCKETS_S, STATUS_CLASSES, Histogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    seen = 0
    for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), h.counts, strict=True):
        seen += n
        out.append(("+Inf" if bound == float("inf") else repr(bound), seen))
    return out


class AgentCollector(Collector):
    def __init__(
        self,
        proxies: list[ProxyMetrics],
        services: dict[str, ServiceSample],
        server: ServerSample | None,
        builds: BuildLog | None = None,
        restarts: dict[str, int] | None = None,
    ) -> None:
        self.proxies, self.services, self.server = proxies, services, server
        self.builds, self.restarts = builds, restarts or {}

    def collect(self) -> Iterator[Metric]:
        labels = ["proxy", "service"]
        requests = CounterMetricFamily(
            "berth_proxy_requests", "Requests answered, by status class.", labels=[*labels, "code"]
        )
        errors = CounterMetricFamily(
            "berth_proxy_errors", "Failures by kind.", labels=[*labels, "kind"]
        )
        rx = CounterMetricFamily("berth_proxy_received_bytes", "Request bytes.", labels=labels)
        tx = CounterMetricFamily("berth_proxy_sent_bytes", "Response body bytes.", labels=labels)
        in_flight = GaugeMetricFamily("berth_proxy_in_flight", "Requests in flight.", labels=labels)
        upstream = HistogramMetricFamily(
            "berth_proxy_upstream_seconds", "Until the backend's response head.", labels=labels
        )
        total = HistogramMetricFamily(
            "berth_proxy_request_seconds", "Until the response was written.", labels=labels
        )
        for snap in self.proxies:
            for service, stats in snap.routes.items():
                values = [snap.kind, service]
                for code, n in zip(STATUS_CLASSES, stats.responses, strict=True):
                    requests.add_metric([*values, code], n)
                for kind, n in stats.errors.items():
                    errors.add_metric([*values, kind], n)
                rx.add_metric(values, stats.bytes_in)
                tx.add_metric(values, stats.bytes_out)
                in_flight.add_metric(values, stats.in_flight)
                upstream.add_metric(values, _buckets(stats.upstream), stats.upstream.sum_s)
                total.add_metric(values, _buckets(stats.total), stats.total.sum_s)
        yield from (requests, errors, rx, tx, in_flight, upstream, total)
        yield from self._services()
        yield from self._server()

    def _services(self) -> Iterator[Metric]:
        svc: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "cpu": CounterMetricFamily("berth_service_cpu_seconds", "CPU time of the service's processes.", labels=["service"]),
            "rss": GaugeMetricFamily("berth_service_memory_bytes", "Resident memory.", labels=["service"]),
            "threads": GaugeMetricFamily("berth_service_threads", "Threads.", labels=["service"]),
            "fds": GaugeMetricFamily("berth_service_open_fds", "Open file descriptors.", labels=["service"]),
            "procs": GaugeMetricFamily("berth_service_processes", "Processes of its group.", labels=["service"]),
            "uptime": GaugeMetricFamily("berth_service_uptime_seconds", "Since its start.", labels=["service"]),
        }  # fmt: skip
        for name, s in sorted(self.services.items()):
            svc["cpu"].add_metric([name], s.cpu_seconds)
            svc["rss"].add_metric([name], s.rss_bytes)
            svc["threads"].add_metric([name], s.threads)
            if s.fds is not None:
                svc["fds"].add_metric([name], s.fds)
            svc["procs"].add_metric([name], s.processes)
            svc["uptime"].add_metric([name], s.uptime_s)
        yield from svc.values()
        restarts = CounterMetricFamily(
            "berth_service_restarts", "Restarts after a crash or failed health check, since the reconciler started.", labels=["service"]
        )  # fmt: skip
        for name, n in sorted(self.restarts.items()):
            restarts.add_metric([name], n)
        yield restarts
        if self.builds is not None:
            yield from _build_metrics(self.builds)

    def _server(self) -> Iterator[Metric]:
        srv = self.server
        if srv is None:
            return
        cpu = CounterMetricFamily("berth_server_cpu_seconds", "CPU time by mode.", labels=["mode"])
        for mode, seconds in srv.cpu_seconds.items():
            cpu.add_metric([mode], seconds)
        yield cpu
        for name, doc, value in (
            ("load1", "One-minute load average.", srv.load1),
            ("memory_total_bytes", "Memory installed.", srv.mem_total),
            ("memory_available_bytes", "Memory available.", srv.mem_available),
            ("swap_total_bytes", "Swap size.", srv.swap_total),
            ("swap_free_bytes", "Swap free.", srv.swap_free),
            ("disk_total_bytes", "State directory's filesystem size.", srv.disk_total),
            ("disk_free_bytes", "State directory's filesystem space available.", srv.disk_free),
            ("inodes_free", "State directory's filesystem inodes free.", srv.inodes_free),
        ):
            g = GaugeMetricFamily(f"berth_server_{name}", doc)
            g.add_metric([], value)
            yield g
        for name, doc, value in (
            ("network_received_bytes", "Bytes received (all but loopback).", srv.net_rx_bytes),
            ("network_sent_bytes", "Bytes sent (all but loopback).", srv.net_tx_bytes),
        ):
            c = CounterMetricFamily(f"berth_server_{name}", doc)
            c.add_metric([], value)
            yield c


def _build_metrics(builds: BuildLog) -> Iterator[Metric]:
    """Each service's latest build, and how many ended each way since the start."""
    took = GaugeMetricFamily("berth_service_last_build_seconds", "Wall time of the latest build.", labels=["service"])  # fmt: skip
    peak = GaugeMetricFamily(
        "berth_service_last_build_peak_memory_bytes",
        "Peak resident memory of the latest build's process tree.",
        labels=["service"],
    )
    for name, b in sorted(builds.latest.items()):
        took.add_metric([name], b.duration_s)
        peak.add_metric([name], b.peak_rss_bytes)
    count = CounterMetricFamily(
        "berth_service_builds", "Builds run to the end.", labels=["service", "result"]
    )
    for (name, ok), n in sorted(builds.counts.items()):
        count.add_metric([name, "ok" if ok else "failed"], n)
    yield from (took, peak, count)


def exposition(collector: AgentCollector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
