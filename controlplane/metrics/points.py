"""Pure logic of stored metrics: validating an agent's batch, rolling points up into
coarser resolutions, and shaping stored rows into chart series.

A point (one row of `metric_points`) carries counters over `span` seconds (requests,
errors, bytes, a latency histogram with the agent's fixed buckets, CPU seconds) and
gauges (memory; server figures in `host`), and for the builds that finished in it:
how many, their wall time summed and the largest peak memory. Rolling up sums counters
and keeps the largest gauge (and build peak) of the window; a series sums instances (a
stack's servers), so memory is the stack's total and rates are per second of covered
time, while a build's figures are per build: mean wall time, largest peak.
"""

import math
from dataclasses import dataclass
from typing import Any

from agent.schema.latency import LATENCY_BUCKETS_S, quantile
from controlplane.errors import Unprocessable

BUCKETS = len(LATENCY_BUCKETS_S) + 1
MAX_POINTS = 500  # per batch: 10 services x a few intervals, with room
RAW, MINUTE, HOUR = 0, 60, 3600
COUNTERS = ("requests", "errors", "bytes_in", "bytes_out")
HOST_FIELDS = ("cpus", "mem_total", "swap_used", "swap_total", "disk_used", "disk_total",
               "inodes_free", "load1", "net_rx", "net_tx")  # fmt: skip
MAX_SPAN_S = 3600.0


@dataclass
class Point:
    service: str
    t: int
    span: float
    requests: int = 0
    errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    lat: list[int] | None = None
    lat_sum: float = 0.0
    cpu_s: float | None = None
    mem: int | None = None
    host: dict[str, Any] | None = None
    builds: int = 0
    build_s: float = 0.0
    build_rss: int | None = None
    restarts: int = 0


def _number(p: dict[str, Any], name: str, where: str, integer: bool) -> Any:
    value = p.get(name)
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value < 0:
        kind = "a non-negative integer" if integer else "a non-negative number"
        raise Unprocessable(f"must be {kind}", field=f"{where}.{name}")
    return value


def parse_batch(body: dict[str, Any]) -> list[Point]:
    """The `points` of `POST /api/v1/agent/metrics`, validated; errors name the field."""
    raw = body.get("points")
    if not isinstance(raw, list):
        raise Unprocessable("must be a list of points", field="points")
    if len(raw) > MAX_POINTS:
        raise Unprocessable(f"at most {MAX_POINTS} points per batch", field="points")
    out = []
    for i, p in enumerate(raw):
        where = f"points[{i}]"
        if not isinstance(p, dict):
            raise Unprocessable("must be an object", field=where)
        service = p.get("service")
        if not isinstance(service, str) or len(service) > 63:
            raise Unprocessable(
                'must be a service name, or "" for the server', field=f"{where}.service"
            )
        t = _number(p, "t", where, integer=False)
        span = _number(p, "span", where, integer=False)
        if t is None or span is None or span > MAX_SPAN_S:
            raise Unprocessable(
                f"t (unix seconds) and span (0-{MAX_SPAN_S:g} s) are required", field=where
            )
        point = Point(service, int(t), float(span))
        for name in COUNTERS:
            setattr(point, name, _number(p, name, where, integer=True) or 0)
        lat = p.get("lat")
        if lat is not None:
            if (
                not isinstance(lat, list)
                or len(lat) != BUCKETS
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in lat)
            ):
                raise Unprocessable(f"must be {BUCKETS} bucket counts", field=f"{where}.lat")
            point.lat = lat
        point.lat_sum = float(_number(p, "lat_sum", where, integer=False) or 0.0)
        cpu = _number(p, "cpu_s", where, integer=False)
        point.cpu_s = float(cpu) if cpu is not None else None
        point.mem = _number(p, "mem", where, integer=True)
        point.builds = _number(p, "builds", where, integer=True) or 0
        point.build_s = float(_number(p, "build_s", where, integer=False) or 0.0)
        point.build_rss = _number(p, "build_rss", where, integer=True)
        point.restarts = _number(p, "restarts", where, integer=True) or 0
        if service == "":
            point.host = {
                name: v for name in HOST_FIELDS
                if (v := _number(p, name, where, integer=name != "load1")) is not None
            }  # fmt: skip
        out.append(point)
    return out


def _add_hist(a: list[int] | None, b: list[int] | None) -> list[int] | None:
    if a is None:
        return list(b) if b is not None else None
    if b is None:
        return a
    return [x + y for x, y in zip(a, b, strict=True)]


def _max(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def merge_into(acc: Point, p: Point) -> None:
    """Add `p` (same service and instance, same window) into `acc`."""
    acc.span += p.span
    for name in COUNTERS:
        setattr(acc, name, getattr(acc, name) + getattr(p, name))
    acc.lat = _add_hist(acc.lat, p.lat)
    acc.lat_sum += p.lat_sum
    if p.cpu_s is not None:
        acc.cpu_s = (acc.cpu_s or 0.0) + p.cpu_s
    acc.mem = _max(acc.mem, p.mem)
    acc.builds += p.builds
    acc.build_s += p.build_s
    acc.build_rss = _max(acc.build_rss, p.build_rss)
    acc.restarts += p.restarts
    if p.host is not None:
        host = dict(acc.host or {})
        for k, v in p.host.items():  # network bytes are counters, the rest gauges
            host[k] = host.get(k, 0) + v if k in ("net_rx", "net_tx") else _max(host.get(k), v)
        acc.host = host


def rollup(points: list[tuple[str, Point]], res: int) -> list[tuple[str, Point]]:
    """(instance, point) pairs of a finer resolution into windows of `res` seconds."""
    acc: dict[tuple[str, str, int], Point] = {}
    for instance, p in points:
        key = (instance, p.service, p.t // res * res)
        cur = acc.get(key)
        if cur is None:
            cur = acc[key] = Point(p.service, key[2], 0.0)
        merge_into(cur, p)
    return [(k[0], p) for k, p in acc.items()]


def series(points: list[tuple[str, Point]], step: int, service: str) -> list[dict[str, Any]]:
    """Chart points every `step` seconds, instances summed. Rates are per second of the
    time the points cover (their spans, averaged over the instances that sent any)."""
    buckets: dict[int, dict[str, Point]] = {}
    for instance, p in points:
        t = p.t // step * step
        per = buckets.setdefault(t, {})
        cur = per.get(instance)
        if cur is None:
            cur = per[instance] = Point(p.service, t, 0.0)
        merge_into(cur, p)
    out = []
    for t in sorted(buckets):
        per = buckets[t]
        covered = sum(p.span for p in per.values()) / len(per) or float(step)
        total = Point(service, t, covered)
        cpu: float | None = None  # None: no instance reported it (not a zero)
        mem: int | None = None
        host: dict[str, float] = {}
        builds, build_s, build_rss, restarts = 0, 0.0, None, 0
        for p in per.values():
            restarts += p.restarts
            builds, build_s = builds + p.builds, build_s + p.build_s
            build_rss = _max(build_rss, p.build_rss)
            for name in COUNTERS:
                setattr(total, name, getattr(total, name) + getattr(p, name))
            total.lat = _add_hist(total.lat, p.lat)
            total.lat_sum += p.lat_sum
            if p.cpu_s is not None:
                cpu = (cpu or 0.0) + p.cpu_s
            if p.mem is not None:
                mem = (mem or 0) + p.mem
            for k, v in (p.host or {}).items():
                host[k] = host.get(k, 0) + v
        point: dict[str, Any] = {
            "t": t,
            "requests": total.requests,
            "rps": round(total.requests / covered, 4),
            "errors": total.errors,
            "error_rate": round(total.errors / total.requests, 4) if total.requests else 0.0,
            "p50_ms": _ms(quantile(total.lat, 0.5)),
            "p95_ms": _ms(quantile(total.lat, 0.95)),
            "bytes_in": total.bytes_in,
            "bytes_out": total.bytes_out,
            "cpu": round(cpu / covered, 4) if cpu is not None else None,  # cores busy
            "mem": mem,
            "builds": builds,
            "build_s": round(build_s / builds, 3) if builds else None,  # per build
            "build_rss": build_rss,
            "restarts": restarts,
        }
        if service == "":
            cpus = host.get("cpus") or 0
            point.update(
                cpu_pct=round(100 * cpu / covered / cpus, 2) if cpus and cpu is not None else None,
                mem_total=host.get("mem_total"),
                swap_used=host.get("swap_used"),
                swap_total=host.get("swap_total"),
                disk_used=host.get("disk_used"),
                disk_total=host.get("disk_total"),
                load1=host.get("load1"),
                net_rx=host.get("net_rx"),
                net_tx=host.get("net_tx"),
            )
        out.append(point)
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
