"""Metrics snapshots from the proxies to the reconciler (their own message and socket).

The route table flows reconciler -> proxies over PUB/SUB; snapshots flow the other way
over PUSH/PULL: the reconciler binds a PULL socket at `endpoints.metrics`, each proxy
connects a PUSH socket and sends one `ProxyMetrics` every `METRICS_INTERVAL_S`. A
snapshot holds cumulative counters (agent/metrics/routes.py), so a dropped one (the
reconciler down, a full queue: the send never blocks the proxy) loses nothing but
resolution.
"""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from agent.bus.endpoints import BusEndpoints
from agent.bus.publisher import share_socket
from agent.metrics.routes import RouteStats

log = logging.getLogger(__name__)

METRICS_INTERVAL_S = 5.0
METRICS_HWM = 16  # snapshots queued for a reconciler that is not reading: then dropped


@dataclass(frozen=True)
class ProxyMetrics:
    """One proxy process's cumulative per-route counters at `at` (unix seconds)."""

    kind: str  # "external" or "internal"
    started: float  # when this proxy process started: a new value means counters reset
    at: float
    routes: dict[str, RouteStats]

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "kind": self.kind,
                "started": self.started,
                "at": self.at,
                "routes": {s: r.to_dict() for s, r in self.routes.items()},
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "ProxyMetrics":
        d: dict[str, Any] = json.loads(raw)
        return cls(
            kind=str(d["kind"]),
            started=float(d["started"]),
            at=float(d["at"]),
            routes={str(s): RouteStats.from_dict(r) for s, r in d["routes"].items()},
        )


class MetricsPusher:
    """The proxy's end: `send` never waits (a snapshot is dropped instead)."""

    def __init__(self, endpoints: BusEndpoints, ctx: zmq.asyncio.Context | None = None) -> None:
        self._sock = (ctx or zmq.asyncio.Context.instance()).socket(zmq.PUSH)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, METRICS_HWM)
        self._sock.connect(endpoints.metrics)

    async def send(self, snapshot: ProxyMetrics) -> bool:
        try:
            await self._sock.send(snapshot.to_json(), flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def close(self) -> None:
        self._sock.close()


class MetricsCollector:
    """The reconciler's end: keeps the latest snapshot of each proxy kind."""

    def __init__(
        self,
        endpoints: BusEndpoints,
        on_snapshot: Callable[[ProxyMetrics], None] | None = None,
        ctx: zmq.asyncio.Context | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._ctx = ctx or zmq.asyncio.Context.instance()
        self._on_snapshot = on_snapshot
        self.latest: dict[str, ProxyMetrics] = {}

    def bind(self) -> None:
        self._endpoints.run_dir.mkdir(parents=True, exist_ok=True)
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(self._endpoints.metrics)
        share_socket(self._endpoints.metrics)

    async def run(self) -> None:
        while True:
            raw = await self._sock.recv()
            try:
                snap = ProxyMetrics.from_json(raw)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("metrics snapshot refused: %s", exc)
                continue
            self.latest[snap.kind] = snap
            if self._on_snapshot is not None:
                self._on_snapshot(snap)

    def close(self) -> None:
        self._sock.close()
