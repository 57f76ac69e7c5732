"""`GET /metrics`: the fleet and the control plane itself in Prometheus' text format.

Built with `prometheus_client` custom collectors over Berth's own data, never its
global registry: each scrape reads the newest raw point of every (stack, instance,
service) from the database (async, before exposition) and hands them to a
`FleetCollector`; `OwnMetrics` holds this process's plain counters.

Fleet figures are gauges over the agent's latest interval (30 s): the control plane
stores intervals, not an agent's lifetime counters, and several control-plane workers
share one database, so rates read from it are the same whichever worker answers.
Labels: stack (name), instance (id), service, route (the service's path prefix; ""
for an internal-only service). Server gauges carry stack and instance.

The control plane's own figures are per worker process (label `pid`): requests by
method and status class, request latency histogram, long-poll waiters, heartbeat
batches and rows, database statements and time.
"""

import os
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import event, select

from controlplane.db import Database
from controlplane.metrics.points import Point, quantile
from controlplane.metrics.store import point_of, read_builds
from controlplane.models import Instance, MetricPoint, Stack

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FRESH_S = 120  # points older than this are not exposed (the agent went quiet)
BUILDS_SINCE_S = 24 * 3600  # a service's latest build is exposed for a day
REQUEST_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class OwnMetrics:
    """This process's counters, bumped by request hooks and database events."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}
        self.latency = [0] * (len(REQUEST_BUCKETS_S) + 1)
        self.latency_sum = 0.0
        self.db_statements = 0
        self.db_seconds = 0.0

    def request_done(self, method: str, status: int, seconds: float) -> None:
        key = (method, f"{status // 100}xx")
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency[bisect_left(REQUEST_BUCKETS_S, seconds)] += 1
        self.latency_sum += seconds

    def time_database(self, db: Database) -> None:
        """Count statements and their time on every engine of `db`."""
        for engine in {db.engine.sync_engine, db._write_engine.sync_engine}:

            @event.listens_for(engine, "before_cursor_execute")
            def _before(conn: Any, *_: Any) -> None:
                conn.info.setdefault("berth_t0", []).append(time.perf_counter())

            @event.listens_for(engine, "after_cursor_execute")
            def _after(conn: Any, *_: Any) -> None:
                started = conn.info.get("berth_t0")
                if started:
                    self.db_seconds += time.perf_counter() - started.pop()
                    self.db_statements += 1


class FleetCollector(Collector):
    def __init__(
        self,
        points: list[tuple[str, str, str, Point]],  # (stack name, instance, route, point)
        own: OwnMetrics,
        waiters: int,
        heartbeats: tuple[int, int],  # (batches, rows) written by this process
        builds: list[tuple[str, str, str, Point]] | None = None,  # latest build's point
        restarts: list[tuple[str, str, str, str, int]] | None = None,  # (.., service, n)
    ) -> None:
        self.points = points
        self.builds = builds or []
        self.restarts = restarts or []
        self.own = own
        self.waiters = waiters
        self.heartbeats = heartbeats

    def collect(self) -> Iterator[Metric]:
        yield from self._services()
        yield from self._builds()
        yield from self._servers()
        yield from self._own()

    def _services(self) -> Iterator[Metric]:
        fam = _gauges(
            "berth_service_",
            ["stack", "instance", "service", "route"],
            (
                ("requests_per_second", "Requests answered per second (latest interval)."),
                ("errors_per_second", "5xx answers per second, proxy failures included."),
                ("received_bytes_per_second", "Request bytes per second."),
                ("sent_bytes_per_second", "Response body bytes per second."),
                ("latency_p50_seconds", "Median total latency (latest interval)."),
                ("latency_p95_seconds", "95th percentile total latency (latest interval)."),
                ("cpu_cores", "CPU seconds per second used by the service's processes."),
                ("memory_bytes", "Resident memory of the service's processes."),
            ),
        )
        for stack, instance, route, p in self.points:
            if p.service == "":
                continue
            values = [stack, instance, p.service, route]
            span = p.span or 1.0
            fam["requests_per_second"].add_metric(values, p.requests / span)
            fam["errors_per_second"].add_metric(values, p.errors / span)
            fam["received_bytes_per_second"].add_metric(values, p.bytes_in / span)
            fam["sent_bytes_per_second"].add_metric(values, p.bytes_out / span)
            for q, name in ((0.5, "latency_p50_seconds"), (0.95, "latency_p95_seconds")):
                value = quantile(p.lat, q)
                if value is not None:
                    fam[name].add_metric(values, value)
            if p.cpu_s is not None:
                fam["cpu_cores"].add_metric(values, p.cpu_s / span)
            if p.mem is not None:
                fam["memory_bytes"].add_metric(values, p.mem)
        yield from fam.values()

    def _builds(self) -> Iterator[Metric]:
        labels = ["stack", "instance", "service", "route"]
        took = GaugeMetricFamily(
            "berth_service_last_build_seconds",
            "Wall time of the latest build (of the last day; the mean if several ended in one minute).",
            labels=labels,
        )  # fmt: skip
        peak = GaugeMetricFamily(
            "berth_service_last_build_peak_memory_bytes",
            "Peak resident memory of the latest build's process tree.",
            labels=labels,
        )
        for stack, instance, route, p in self.builds:
            values = [stack, instance, p.service, route]
            took.add_metric(values, p.build_s / p.builds)
            if p.build_rss is not None:
                peak.add_metric(values, p.build_rss)
        yield from (took, peak)
        restarts = CounterMetricFamily(
            "berth_service_restarts",
            "Restarts after a crash or failed health checks, since the agent's reconciler started (its latest heartbeat).",
            labels=labels,
        )  # fmt: skip
        for stack, instance, route, service, n in self.restarts:
            restarts.add_metric([stack, instance, service, route], n)
        yield restarts

    def _servers(self) -> Iterator[Metric]:
        fam = _gauges(
            "berth_server_",
            ["stack", "instance"],
            (
                ("cpu_cores", "CPU seconds per second busy (all modes but idle and iowait)."),
                ("cpus", "CPUs of the server."),
                ("memory_used_bytes", "Memory in use (total minus available)."),
                ("memory_total_bytes", "Memory installed."),
                ("swap_used_bytes", "Swap in use."),
                ("swap_total_bytes", "Swap size."),
                ("network_received_bytes_per_second", "Bytes received (all but loopback)."),
                ("network_sent_bytes_per_second", "Bytes sent (all but loopback)."),
                ("disk_used_bytes", "Used space of the state directory's filesystem."),
                ("disk_total_bytes", "Size of the state directory's filesystem."),
                ("inodes_free", "Free inodes of the state directory's filesystem."),
                ("load1", "One-minute load average."),
            ),
        )
        keys = {
            "cpus": "cpus", "memory_total_bytes": "mem_total", "swap_used_bytes": "swap_used",
            "swap_total_bytes": "swap_total", "disk_used_bytes": "disk_used",
            "disk_total_bytes": "disk_total", "inodes_free": "inodes_free", "load1": "load1",
        }  # fmt: skip
        for stack, instance, _, p in self.points:
            if p.service != "":
                continue
            values = [stack, instance]
            if p.cpu_s is not None:
                fam["cpu_cores"].add_metric(values, p.cpu_s / (p.span or 1.0))
            if p.mem is not None:
                fam["memory_used_bytes"].add_metric(values, p.mem)
            for name, key in keys.items():
                value = (p.host or {}).get(key)
                if value is not None:
                    fam[name].add_metric(values, value)
            for name, key in (("network_received_bytes_per_second", "net_rx"),
                              ("network_sent_bytes_per_second", "net_tx")):  # fmt: skip
                value = (p.host or {}).get(key)
                if value is not None:
                    fam[name].add_metric(values, value / (p.span or 1.0))
        yield from fam.values()

    def _own(self) -> Iterator[Metric]:
        pid = str(os.getpid())
        own = self.own
        requests = CounterMetricFamily(
            "berth_controlplane_requests",
            "HTTP requests answered.",
            labels=["pid", "method", "code"],
        )
        for (method, code), n in sorted(own.requests.items()):
            requests.add_metric([pid, method, code], n)
        yield requests
        buckets, seen = [], 0
        for bound, n in zip((*REQUEST_BUCKETS_S, float("inf")), own.latency, strict=True):
            seen += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), seen))
        latency = HistogramMetricFamily(
            "berth_controlplane_request_seconds", "HTTP request latency.", labels=["pid"]
        )
        latency.add_metric([pid], buckets, own.latency_sum)
        yield latency
        waiters = GaugeMetricFamily(
            "berth_controlplane_longpoll_waiters", "Agents waiting in a long poll.", labels=["pid"]
        )
        waiters.add_metric([pid], self.waiters)
        yield waiters
        for name, doc, value in (
            ("heartbeat_batches", "Heartbeat batches written.", self.heartbeats[0]),
            ("heartbeat_rows", "Heartbeat rows written (rows / batches: batch size).", self.heartbeats[1]),
            ("db_statements", "Database statements run.", own.db_statements),
            ("db_seconds", "Time spent in database statements.", own.db_seconds),
        ):  # fmt: skip
            fam = CounterMetricFamily(f"berth_controlplane_{name}", doc, labels=["pid"])
            fam.add_metric([pid], value)
            yield fam


async def fleet_points(db: Database, now: float) -> list[tuple[str, str, str, Point]]:
    """The newest fresh raw point of every (stack, instance, service), with the stack's
    name and the service's route."""
    async with db.read() as session:
        rows = (
            await session.execute(
                select(MetricPoint).where(MetricPoint.res == 0, MetricPoint.t >= int(now) - FRESH_S)
            )
        ).scalars()
        newest: dict[tuple[str, str, str], MetricPoint] = {}
        for row in rows:
            key = (row.stack_id, row.instance_id, row.service)
            if key not in newest or newest[key].t < row.t:
                newest[key] = row
        stack_ids = {k[0] for k in newest}
        stacks = {
            sid: (name, doc)
            for sid, name, doc in (
                await session.execute(
                    select(Stack.id, Stack.name, Stack.document).where(Stack.id.in_(stack_ids))
                )
            ).all()
        } if stack_ids else {}  # fmt: skip
    out = []
    for (stack_id, instance_id, service), row in sorted(newest.items()):
        if stack_id in stacks:
            name, document = stacks[stack_id]
            out.append((name, instance_id, _route(document, service), point_of(row)))
    return out


async def fleet_builds(db: Database, now: float) -> list[tuple[str, str, str, Point]]:
    """The newest point with builds of every (stack, instance, service) of the last day."""
    newest: dict[tuple[str, str, str], Point] = {}
    for stack_id, instance_id, p in await read_builds(db, int(now) - BUILDS_SINCE_S, now):
        newest[(stack_id, instance_id, p.service)] = p  # oldest first: the last one wins
    stacks = await _stacks(db, {k[0] for k in newest})
    return [
        (stacks[sid][0], instance_id, _route(stacks[sid][1], service), p)
        for (sid, instance_id, service), p in sorted(newest.items())
        if sid in stacks
    ]


async def fleet_restarts(db: Database) -> list[tuple[str, str, str, str, int]]:
    """(stack name, instance, route, service, restarts) from every live instance's latest
    heartbeat: a real counter (it restarts from zero with the agent's reconciler)."""
    async with db.read() as session:
        rows = (
            await session.execute(
                select(Instance.stack_id, Instance.id, Instance.services).where(
                    Instance.revoked_at.is_(None)
                )
            )
        ).all()
    stacks = await _stacks(db, {r[0] for r in rows})
    out = []
    for stack_id, instance_id, services in sorted(rows, key=lambda r: (r[0], r[1])):
        if stack_id not in stacks or not isinstance(services, list):
            continue
        name, document = stacks[stack_id]
        for s in services:
            n = s.get("restarts") if isinstance(s, dict) else None
            if isinstance(n, int) and not isinstance(n, bool) and isinstance(s.get("name"), str):
                out.append((name, instance_id, _route(document, s["name"]), s["name"], n))
    return out


async def _stacks(db: Database, ids: set[str]) -> dict[str, tuple[str, Any]]:
    if not ids:
        return {}
    async with db.read() as session:
        rows = await session.execute(
            select(Stack.id, Stack.name, Stack.document).where(Stack.id.in_(ids))
        )
        return {sid: (name, doc) for sid, name, doc in rows.all()}


def _route(document: Any, service: str) -> str:
    if not isinstance(document, dict):
        return ""
    for s in document.get("services") or []:
        if isinstance(s, dict) and s.get("name") == service:
            return str(s.get("path") or "")
    return ""


def exposition(collector: FleetCollector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)


def _gauges(
    prefix: str, labels: list[str], docs: tuple[tuple[str, str], ...]
) -> dict[str, GaugeMetricFamily]:
    """One gauge family per (name, help text), named `prefix` + name, keyed by name."""
    return {name: GaugeMetricFamily(prefix + name, doc, labels=labels) for name, doc in docs}
