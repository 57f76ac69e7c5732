"""Collect the agent's metrics and ship them to the control plane every interval.

The reconciler binds the bus's metrics socket (the proxies push cumulative per-route
counters there, agent/bus/metrics.py), samples its services' process groups and the
server from /proc, and every `METRICS_SHIP_INTERVAL_S` posts the differences as one
compact batch to `POST /api/v1/agent/metrics` (a call of its own rather than part of
the heartbeat: heartbeats stay small and frequent on change, metrics stay periodic, and
either can be throttled without delaying the other). A batch the control plane could
not take is dropped, not retried: the next one covers its own interval only, so a
chart shows a gap instead of a spike.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.bus.endpoints import BusEndpoints
from agent.bus.metrics import MetricsCollector
from agent.metrics.batch import BatchBuilder
from agent.metrics.procfs import ServerSample, ServiceSample, sample_server, sample_services
from agent.reconciler.cpclient import ControlPlaneClient, Rejected, Throttled, Unreachable
from agent.reconciler.store import Store

log = logging.getLogger(__name__)

METRICS_SHIP_INTERVAL_S = 30.0


async def ship_metrics(
    endpoints: BusEndpoints,
    store: Store,
    state_dir: Path,
    client_ready: Callable[[], Awaitable[ControlPlaneClient]],
    interval_s: float = METRICS_SHIP_INTERVAL_S,
) -> None:
    collector = MetricsCollector(endpoints)
    try:
        collector.bind()
    except Exception as exc:  # metrics are never worth stopping the reconciler for
        log.error("metrics off: cannot bind %s: %s", endpoints.metrics, exc)
        return
    receiver = asyncio.create_task(collector.run(), name="metrics-collector")
    builder = BatchBuilder()
    try:
        client = await client_ready()
        while True:
            leaders = {rec.service: rec.pid for rec in store.processes()}
            try:
                services, server = await asyncio.to_thread(_sample, leaders, state_dir)
            except OSError as exc:
                log.warning("metrics: cannot read /proc: %s", exc)
                await asyncio.sleep(interval_s)
                continue
            points = builder.build(time.time(), list(collector.latest.values()), services, server)
            if points:
                try:
                    await asyncio.to_thread(client.send_metrics, points)
                except Rejected as exc:
                    if exc.status == 404:
                        log.info("this control plane takes no metrics (older version)")
                        return
                    log.warning("metrics refused: %s", exc)
                except Throttled as exc:
                    await asyncio.sleep(exc.retry_after_s)
                except Unreachable:
                    pass  # this interval's points are dropped (a gap, not a spike)
            await asyncio.sleep(interval_s)
    finally:
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
        collector.close()


def _sample(
    leaders: dict[str, int], state_dir: Path
) -> tuple[dict[str, ServiceSample], ServerSample]:
    return sample_services(leaders), sample_server(state_dir)
