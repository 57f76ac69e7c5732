"""Per-route traffic counters of one proxy process, kept as plain integers.

The proxy counts each finished exchange into its route's *meter* (`Meter`: plain
numbers and lists of them in slots, which its hot path, agent/proxy/counting.py, adds
to in place). `record` is the same count written plainly, for everything else;
`RouteStats` is the meter as named fields and whole histograms, for snapshots.
Counters are cumulative since the proxy started (like Prometheus counters): a snapshot
lost on the bus loses nothing, and a consumer takes differences between snapshots,
detecting a restart by `started` changing.

Histograms have fixed bucket bounds (`LATENCY_BUCKETS_S`, seconds, upper bounds
inclusive as in Prometheus); the last slot counts what is above the largest bound.
Most responses arrive whole in one read, so their time to the response head is their
total time: a meter counts those once, in its `same` histograms, which a snapshot adds to
both the upstream and the total histogram.
"""

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from agent.schema.latency import LATENCY_BUCKETS_S
from agent.schema.latency import quantile as counts_quantile

# Index of a status in `RouteStats.responses`: 1..5 for 1xx..5xx, 0 for "no status"
# (the client left or the connection was cut before any response head).
STATUS_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")

BUCKETS = len(LATENCY_BUCKETS_S) + 1  # a histogram's slots: one more than bounds


def status_class(status: int) -> int:
    """The index of a status in STATUS_CLASSES (0: none, or an odd one >= 600)."""
    return status // 100 if status < 600 else 0


# By status, its row in `Meter.same`: a tuple subscript is cheaper on the hot path than
# the arithmetic (httptools reads three-digit statuses: 1000 entries cover them all).
SAME_ROW = tuple(BUCKETS * status_class(s) for s in range(1000))


class Meter:
    """One route's counters, as plain numbers the proxy's hot path adds to.

    The common case, a backend's response that came whole in one read (its time to the
    head is its total time), is one count in `same`: a histogram per status class, one
    row of BUCKETS per class, so that the hot path indexes it by class row + bucket
    alone. Every other exchange counts its class in `responses` and its times in the
    `upstream` and `total` histograms. Slots, not a dict or a list: an attribute of a
    slot is the fewest bytecode instructions to add to (agent/proxy/counting.py).
    """

    __slots__ = (
        "same", "same_sum", "upstream", "upstream_sum", "total", "total_sum",
        "responses", "bytes_in", "bytes_out", "errors",
    )  # fmt: skip

    def __init__(self) -> None:
        self.same = [0] * (BUCKETS * len(STATUS_CLASSES))
        self.same_sum = 0.0  # seconds
        self.upstream = [0] * BUCKETS  # time to the backend's response head
        self.upstream_sum = 0.0
        self.total = [0] * BUCKETS  # time until the response was written (or failed)
        self.total_sum = 0.0
        self.responses = [0] * len(STATUS_CLASSES)  # by status class, as STATUS_CLASSES
        self.bytes_in = 0  # request heads as forwarded + request bodies
        self.bytes_out = 0  # response bodies relayed to the client
        self.errors: dict[str, int] = {}  # failure kind -> count


def bucket(seconds: float) -> int:
    """The histogram slot of a duration (bounds are inclusive upper bounds)."""
    return bisect_left(LATENCY_BUCKETS_S, seconds)


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bucket(seconds)] += 1
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
    """The counters of one proxy process: a meter per service ("": no route matched)."""

    def __init__(self) -> None:
        self.meters: dict[str, Meter] = {}

    def meter(self, service: str) -> Meter:
        m = self.meters.get(service)
        if m is None:
            m = self.meters[service] = Meter()
        return m

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
        m = self.meter(service)
        m.bytes_in += bytes_in
        m.bytes_out += bytes_out
        if error is not None:
            m.errors[error] = m.errors.get(error, 0) + 1
        if upstream_s == total_s:
            m.same[SAME_ROW[status] + bucket(total_s)] += 1
            m.same_sum += total_s
            return
        m.responses[status_class(status)] += 1
        if upstream_s is not None:
            m.upstream[bucket(upstream_s)] += 1
            m.upstream_sum += upstream_s
        m.total[bucket(total_s)] += 1
        m.total_sum += total_s

    @property
    def routes(self) -> dict[str, "RouteStats"]:
        """Every route's counters as named fields (built on each call)."""
        return {service: route_stats(m) for service, m in self.meters.items()}

    def snapshot(self, in_flight: dict[str, int]) -> dict[str, dict[str, Any]]:
        """Every route's counters as plain data, with the current in-flight counts."""
        for service in in_flight:
            self.meter(service)
        out = {}
        for service, m in self.meters.items():
            stats = route_stats(m)
            stats.in_flight = in_flight.get(service, 0)
            out[service] = stats.to_dict()
        return out


def route_stats(m: Meter) -> RouteStats:
    """A meter as named fields: its `same` rows count for upstream and total alike."""
    rows = [m.same[BUCKETS * c : BUCKETS * (c + 1)] for c in range(len(STATUS_CLASSES))]
    same = [sum(column) for column in zip(*rows, strict=True)]

    def combined(counts: list[int], sum_s: float) -> Histogram:
        return Histogram([a + b for a, b in zip(same, counts, strict=True)], m.same_sum + sum_s)

    return RouteStats(
        responses=[m.responses[c] + sum(row) for c, row in enumerate(rows)],
        bytes_in=m.bytes_in,
        bytes_out=m.bytes_out,
        errors=dict(m.errors),
        upstream=combined(m.upstream, m.upstream_sum),
        total=combined(m.total, m.total_sum),
    )


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
