"""Per-route traffic counters of one proxy process, kept as plain integers.

The proxy calls `RouteMetrics.record` once per finished exchange with what it already
knows (service, status, bytes, two durations); nothing else runs on the hot path.
Counters are cumulative since the proxy started (like Prometheus counters): a snapshot
lost on the bus loses nothing, and a consumer takes differences between snapshots,
detecting a restart by `started` changing.

Histograms have fixed bucket bounds (`LATENCY_BUCKETS_S`, seconds, upper bounds
inclusive as in Prometheus); the last slot counts what is above the largest bound.
"""

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from agent.schema.latency import LATENCY_BUCKETS_S
from agent.schema.latency import quantile as counts_quantile

# Index of a status in `RouteStats.responses`: 1..5 for 1xx..5xx, 0 for "no status"
# (the client left or the connection was cut before any response head).
STATUS_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.sum_s += seconds

    def to_dict(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.sum_s}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Histogram":
        counts = [int(c) for c in d["counts"]]
        if len(counts) != len(LATENCY_BUCKETS_S) + 1:
            raise ValueError(
                f"histogram counts: expected {len(LATENCY_BUCKETS_S) + 1} buckets, "
                f"got {len(counts)}"
            )
        return cls(counts, float(d["sum"]))


def quantile(hist: Histogram, q: float) -> float | None:
    """The `q` quantile (0..1) of `hist` (`agent.schema.latency.quantile`)."""
    return counts_quantile(hist.counts, q)


@dataclass
class RouteStats:
    """Everything counted for one route (service) of one proxy."""

    responses: list[int] = field(default_factory=lambda: [0] * len(STATUS_CLASSES))
    bytes_in: int = 0  # request heads as forwarded + request bodies
    bytes_out: int = 0  # response bodies relayed to the client
    errors: dict[str, int] = field(default_factory=dict)  # failure kind -> count
    upstream: Histogram = field(default_factory=Histogram)  # until the response head
    total: Histogram = field(default_factory=Histogram)  # until the response was written
    in_flight: int = 0  # filled in at snapshot time, not counted per request

    @property
    def requests(self) -> int:
        return sum(self.responses)

    def to_dict(self) -> dict[str, Any]:
        return {
            "responses": dict(zip(STATUS_CLASSES, self.responses, strict=True)),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "errors": dict(self.errors),
            "upstream": self.upstream.to_dict(),
            "total": self.total.to_dict(),
            "in_flight": self.in_flight,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RouteStats":
        responses = d["responses"]
        unknown = sorted(set(responses) - set(STATUS_CLASSES))
        if unknown:
            raise ValueError(f"responses: unknown status class(es) {unknown}")
        return cls(
            responses=[int(responses.get(c, 0)) for c in STATUS_CLASSES],
            bytes_in=int(d["bytes_in"]),
            bytes_out=int(d["bytes_out"]),
            errors={str(k): int(v) for k, v in d.get("errors", {}).items()},
            upstream=Histogram.from_dict(d["upstream"]),
            total=Histogram.from_dict(d["total"]),
            in_flight=int(d.get("in_flight", 0)),
        )


class RouteMetrics:
    """The counters of one proxy process, by service."""

    def __init__(self) -> None:
        self.routes: dict[str, RouteStats] = {}

    def stats(self, service: str) -> RouteStats:
        stats = self.routes.get(service)
        if stats is None:
            stats = self.routes[service] = RouteStats()
        return stats

    def record(
        self,
        service: str,
        status: int,
        bytes_in: int,
        bytes_out: int,
        upstream_s: float | None,
        total_s: float,
        error: str | None,
    ) -> None:
        """One exchange finished. `status` 0: none was sent; `upstream_s` None: no
        response head came from a backend; `error`: the failure's kind, if any."""
        # (the proxy's hot path: Histogram.observe inlined, no other calls)
        stats = self.routes.get(service)
        if stats is None:
            stats = self.routes[service] = RouteStats()
        stats.responses[status // 100 if status < 600 else 0] += 1
        stats.bytes_in += bytes_in
        stats.bytes_out += bytes_out
        if error is not None:
            stats.errors[error] = stats.errors.get(error, 0) + 1
        if upstream_s is not None:
            hist = stats.upstream
            hist.counts[bisect_left(LATENCY_BUCKETS_S, upstream_s)] += 1
            hist.sum_s += upstream_s
        hist = stats.total
        hist.counts[bisect_left(LATENCY_BUCKETS_S, total_s)] += 1
        hist.sum_s += total_s

    def snapshot(self, in_flight: dict[str, int]) -> dict[str, dict[str, Any]]:
        """Every route's counters as plain data, with the current in-flight counts."""
        for service in in_flight:
            self.stats(service)
        out = {}
        for service, stats in self.routes.items():
            stats.in_flight = in_flight.get(service, 0)
            out[service] = stats.to_dict()
        return out


def delta(new: RouteStats, old: RouteStats | None) -> RouteStats:
    """What happened between two cumulative snapshots of one route (`old` None, or a
    restarted proxy: everything in `new`). In-flight is a gauge: `new`'s value."""
    if old is None or new.requests < old.requests:
        return new
    return RouteStats(
        responses=[a - b for a, b in zip(new.responses, old.responses, strict=True)],
        bytes_in=new.bytes_in - old.bytes_in,
        bytes_out=new.bytes_out - old.bytes_out,
        errors={k: v - old.errors.get(k, 0) for k, v in new.errors.items()},
        upstream=Histogram(
            [a - b for a, b in zip(new.upstream.counts, old.upstream.counts, strict=True)],
            new.upstream.sum_s - old.upstream.sum_s,
        ),
        total=Histogram(
            [a - b for a, b in zip(new.total.counts, old.total.counts, strict=True)],
            new.total.sum_s - old.total.sum_s,
        ),
        in_flight=new.in_flight,
    )
