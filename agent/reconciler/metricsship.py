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
from agent.metrics.builds import BuildLog
from agent.metrics.procfs import ServerSample, ServiceSample, sample_server, sample_services
from agent.metrics.prom import CONTENT_TYPE as PROM_TYPE
from agent.metrics.prom import AgentCollector, exposition
from agent.reconciler.cpclient import ControlPlaneClient
from agent.reconciler.shipping import Shipped, ship
from agent.reconciler.store import Store
from agent.settings import parse_hostport

log = logging.getLogger(__name__)

METRICS_SHIP_INTERVAL_S = 30.0


async def ship_metrics(
    endpoints: BusEndpoints,
    store: Store,
    state_dir: Path,
    client_ready: Callable[[], Awaitable[ControlPlaneClient]] | None,
    interval_s: float = METRICS_SHIP_INTERVAL_S,
    serve_on: str | None = None,
    builds: BuildLog | None = None,
    restarts: Callable[[], dict[str, int]] = dict,
) -> None:
    """Collect the proxies' snapshots; ship batches (with the builds finished meanwhile
    and the services' restart counts) when `client_ready` is given, serve `/metrics` on
    `serve_on` (a loopback HOST:PORT) when that is."""
    builds = builds if builds is not None else BuildLog()
    collector = MetricsCollector(endpoints)
    try:
        collector.bind()
    except Exception as exc:  # metrics are never worth stopping the reconciler for
        log.error("metrics off: cannot bind %s: %s", endpoints.metrics, exc)
        return
    tasks = [asyncio.create_task(collector.run(), name="metrics-collector")]
    try:
        if serve_on is not None:
            server = await serve_metrics(serve_on, collector, store, state_dir, builds, restarts)
            tasks.append(asyncio.create_task(server.serve_forever(), name="metrics-http"))
        if client_ready is None:
            await asyncio.gather(*tasks)
            return
        await _ship(collector, store, state_dir, client_ready, interval_s, builds, restarts)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        collector.close()


async def _ship(
    collector: MetricsCollector,
    store: Store,
    state_dir: Path,
    client_ready: Callable[[], Awaitable[ControlPlaneClient]],
    interval_s: float,
    builds: BuildLog,
    restarts: Callable[[], dict[str, int]],
) -> None:
    builder = BatchBuilder()
    client = await client_ready()
    while True:
        leaders = {rec.service: rec.pid for rec in store.processes()}
        try:
            services, server = await asyncio.to_thread(_sample, leaders, state_dir)
        except OSError as exc:
            log.warning("metrics: cannot read /proc: %s", exc)
            await asyncio.sleep(interval_s)
            continue
        points = builder.build(
            time.time(), list(collector.latest.values()), services, server, builds.drain(),
            restarts(),
        )  # fmt: skip
        # a batch not sent is dropped: this interval is a gap, not a spike
        if points and await ship(client.send_metrics, points, "metrics") is Shipped.UNSUPPORTED:
            return
        await asyncio.sleep(interval_s)


async def serve_metrics(
    bind: str,
    collector: MetricsCollector,
    store: Store,
    state_dir: Path,
    builds: BuildLog | None = None,
    restarts: Callable[[], dict[str, int]] = dict,
) -> asyncio.Server:
    """A minimal HTTP/1.0 responder: `GET /metrics` gets the agent's figures (sampled
    per scrape), anything else 404. Loopback only (checked by the settings)."""
    host, port = parse_hostport(bind, "--metrics-bind")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing in them matters here
            parts = line.split()
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
                leaders = {rec.service: rec.pid for rec in store.processes()}
                services, server = await asyncio.to_thread(_sample, leaders, state_dir)
                body = exposition(
                    AgentCollector(
                        list(collector.latest.values()), services, server, builds, restarts()
                    )
                )
                head = f"HTTP/1.0 200 OK\r\nContent-Type: {PROM_TYPE}\r\n"
            else:
                body, head = (
                    b"not found\n",
                    "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n",
                )
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    log.info("agent metrics on http://%s/metrics", bind)
    return server


def _sample(
    leaders: dict[str, int], state_dir: Path
) -> tuple[dict[str, ServiceSample], ServerSample]:
    return sample_services(leaders), sample_server(state_dir)
