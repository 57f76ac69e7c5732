"""Entry points: `berth agent proxy` (external) and `berth agent internal-proxy`.

Start-up order matters: read the cached route table (so the external proxy knows its
address even when the reconciler is down), bind, drop root, then follow the bus. The
process says READY to systemd once it listens (or, for an external proxy that has no
address yet, once it is waiting for one) and pings the watchdog from the event loop, so a
wedged loop gets restarted. SIGTERM/SIGINT drain in-flight requests and exit 0.
"""

import asyncio
import contextlib
import gc
import logging
import resource
import signal
import time

import uvloop

from agent.bus.endpoints import BusEndpoints
from agent.bus.messages import RouteTable
from agent.bus.metrics import METRICS_INTERVAL_S, MetricsPusher, ProxyMetrics
from agent.bus.reports import ReportSender
from agent.bus.subscriber import RouteFollower, load_cached, wait_forever
from agent.metrics.routes import RouteStats
from agent.notify import Notifier
from agent.proxy.config import ProxyConfig
from agent.proxy.privileges import drop_privileges
from agent.proxy.reporting import Reporter
from agent.proxy.server import EXTERNAL, INTERNAL, ProxyServer
from agent.settings import AgentSettings

log = logging.getLogger(__name__)

REBIND_RETRY_S = 2.0


def main_external(settings: AgentSettings, config: ProxyConfig | None = None) -> int:
    return _run(settings, EXTERNAL, config or ProxyConfig())


def main_internal(settings: AgentSettings, config: ProxyConfig | None = None) -> int:
    return _run(settings, INTERNAL, config or ProxyConfig())


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (systemd's units set both with
    LimitNOFILE=; a shell's default soft limit of 1024 would cap the proxy at a few
    hundred clients). Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # (an unlimited hard limit still cannot go past the kernel's nr_open: ask for 2^20)
    wanted = min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, wanted, exc)
            return soft
        log.info("open-file limit raised from %d to %d", soft, wanted)
        return wanted
    return soft


def _run(settings: AgentSettings, kind: str, config: ProxyConfig) -> int:
    raise_fd_limit()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve(settings, kind, config))


class _Binder:
    """Keeps the external listener on the address the route table asks for."""

    def __init__(self, server: ProxyServer, fixed: str | None) -> None:
        self.server = server
        self.fixed = fixed
        self.wanted = fixed
        self.changed = asyncio.Event()

    def want(self, table: RouteTable) -> None:
        if self.fixed is None and table.external_bind and table.external_bind != self.wanted:
            self.wanted = table.external_bind
            self.changed.set()

    async def bind_now(self) -> bool:
        if self.wanted is None or self.wanted == self.server.bound:
            return self.wanted is not None
        try:
            await self.server.listen(self.wanted)
            return True
        except OSError as exc:
            log.error("cannot listen on %s: %s (retrying)", self.wanted, exc)
            return False

    async def run(self) -> None:
        while True:
            wanted = self.wanted
            if wanted is not None and wanted != self.server.bound and not await self.bind_now():
                await asyncio.sleep(REBIND_RETRY_S)
                continue
            await self.changed.wait()
            self.changed.clear()


async def push_metrics(server: ProxyServer, endpoints: BusEndpoints) -> None:
    """Hand the per-route counters to the reconciler every few seconds."""
    if server.metrics is None:
        return
    started = time.time()
    pusher = MetricsPusher(endpoints)
    try:
        while True:
            await asyncio.sleep(METRICS_INTERVAL_S)
            routes = server.metrics_snapshot() or {}
            await pusher.send(
                ProxyMetrics(
                    server.kind,
                    started,
                    time.time(),
                    {s: RouteStats.from_dict(r) for s, r in routes.items()},
                )
            )
    finally:
        pusher.close()


async def _serve(settings: AgentSettings, kind: str, config: ProxyConfig) -> int:
    loop = asyncio.get_running_loop()
    component = "proxy" if kind == EXTERNAL else "internal-proxy"
    cache = settings.cache_file(component)
    server = ProxyServer(kind, config, loop)
    binder = _Binder(server, settings.proxy_bind if kind == EXTERNAL else settings.internal_bind)

    def on_table(table: RouteTable) -> None:
        server.apply_table(table)
        if kind == EXTERNAL:
            binder.want(table)

    cached = load_cached(cache)
    if cached is not None:
        on_table(cached)
    if binder.wanted is not None and not await binder.bind_now() and kind == INTERNAL:
        return 1  # a fixed internal address that cannot be bound will not heal by waiting
    drop_privileges(cache)

    notifier = Notifier()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reporter = Reporter(server, ReportSender(settings.bus))
    reporter.acknowledge(None)  # the announcement
    # every live version it takes, changed or not, is acknowledged once applied
    follower = RouteFollower(settings.bus, cache, on_table, on_live=reporter.acknowledge)
    tasks = [
        asyncio.create_task(reporter.run(), name=f"{component}-reports"),
        asyncio.create_task(push_metrics(server, settings.bus), name=f"{component}-metrics"),
        asyncio.create_task(wait_forever(follower), name=f"{component}-routes"),
        asyncio.create_task(server.run_sweeper(), name=f"{component}-sweeper"),
        asyncio.create_task(binder.run(), name=f"{component}-binder"),
        asyncio.create_task(notifier.watchdog_loop(), name=f"{component}-watchdog"),
    ]
    # Everything allocated so far lives as long as the process: keep it out of the
    # cyclic collector's way so that collections stay short under load.
    gc.collect()
    gc.freeze()
    notifier.ready(f"listening on {server.bound}" if server.bound else "waiting for routes")
    try:
        await stop.wait()
    finally:
        notifier.stopping()
        log.info("stopping: draining in-flight requests (up to %g s)", config.drain_timeout)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.drain()
        reporter.goodbye()
        reporter.sender.close()
    return 0
