"""The proxy engine's shared state: route table, listener, pool, held requests, sweeper.

`ProxyServer` is what every connection talks to. It swaps route tables in
(`apply_table`: compile the router, retire ports that changed hands, release requests
held for a paused service), listens (and rebinds without dropping open connections),
sweeps deadlines a few times per second with one cached clock, and drains on shutdown:
stop accepting, close idle connections, let in-flight exchanges finish for up to
`drain_timeout`, then cut what is left.
"""

import asyncio
import errno
import logging
import socket
from time import perf_counter
from typing import Any

from agent import listenfds
from agent.bus.messages import RouteTable
from agent.metrics.routes import RouteMetrics
from agent.proxy.client import P_IDLE, ClientConnection
from agent.proxy.config import ProxyConfig
from agent.proxy.drivers import ClientProtocol, open_upstream
from agent.proxy.errors import NoBackend, NoRoute
from agent.proxy.exchange import Exchange
from agent.proxy.pool import UpstreamPool
from agent.proxy.refusals import Refusals
from agent.proxy.requestmemo import RequestMemo
from agent.proxy.routing import (
    HostRouter,
    PathRouter,
    Target,
    compile_external,
    compile_internal,
)
from agent.proxy.upstream import UpstreamConnection
from agent.settings import parse_hostport

log = logging.getLogger(__name__)

EXTERNAL = "external"
INTERNAL = "internal"
LISTEN_FDNAME = "http"  # the listener's name in systemd's fd store
REBIND_WAIT_S = 2.0  # a mode change on the same port: wait for the old socket to close


class ProxyServer:
    def __init__(self, kind: str, config: ProxyConfig, loop: asyncio.AbstractEventLoop) -> None:
        if kind not in (EXTERNAL, INTERNAL):
            raise ValueError(f"proxy kind must be {EXTERNAL!r} or {INTERNAL!r}, got {kind!r}")
        self.kind = kind
        self.external = kind == EXTERNAL
        self.config = config
        self.loop = loop
        self.now = loop.time()  # refreshed by the sweeper; deadlines are coarse on purpose
        # per-route counters (None: metrics off); each route's target carries its meter
        self.metrics = RouteMetrics() if config.metrics else None
        # perf_counter() of this loop wake-up, for latency metrics (0.0: not read yet):
        # see `clock`.
        self.tick = 0.0
        # Both routers exist; the kind decides which one requests consult.
        self.paths = PathRouter(())
        self.hosts = HostRouter((), "svc.internal")
        self.table: RouteTable | None = None
        self.pool = UpstreamPool(self)
        self.requests = RequestMemo()  # request heads already parsed and routed
        self.clients: set[ClientConnection] = set()
        self.per_address: dict[str, int] = {}  # open client connections by address (capped)
        self.refusals = Refusals(config.max_conns_per_address)  # connections over that cap
        self.draining = False
        self.held: dict[str, list[Exchange]] = {}
        self.listener: asyncio.Server | None = None
        self.bound: str | None = None
        self._port_owner: dict[int, str] = {}

    # -- routes --------------------------------------------------------------------

    def apply_table(self, table: RouteTable) -> None:
        """Swap `table` in; requests already routed keep their target."""
        try:
            if self.external:
                self.paths = compile_external(table, self.metrics)
            else:
                self.hosts = compile_internal(table, self.metrics)
        except ValueError as exc:
            log.error("route table %s refused, keeping the previous one: %s", table.version, exc)
            return
        self.requests.clear()  # remembered heads carry targets of the old table
        # a paused route's port is retired too: its process is about to be replaced
        owners = {r.port: r.service for r in table.routes if r.port is not None and not r.paused}
        for port, service in self._port_owner.items():
            if owners.get(port) != service:
                self.pool.retire(port)
        self.pool.stale.difference_update(owners)
        self._port_owner = owners
        self.table = table
        self._release_held()
        log.info(
            "routes %s.%s applied: %s",
            *table.version,
            ", ".join(
                f"{r.service}{' ' + r.path if self.external and r.path else ''}"
                f"->{r.port}{' (paused)' if r.paused else ''}"
                for r in table.routes
            )
            or "none",
        )

    @property
    def by_service(self) -> dict[str, Target]:
        return self.paths.by_service if self.external else self.hosts.by_service

    def hold(self, ex: Exchange) -> None:
        """Keep `ex` until its service is unpaused or `pause_timeout` passes."""
        assert ex.target is not None
        ex.hold_deadline = self.now + self.config.pause_timeout
        self.held.setdefault(ex.target.service, []).append(ex)

    def unhold(self, ex: Exchange) -> None:
        if ex.target is None:
            return
        waiting = self.held.get(ex.target.service)
        if waiting and ex in waiting:
            waiting.remove(ex)
        ex.hold_deadline = 0.0

    def _release_held(self) -> None:
        for service, waiting in list(self.held.items()):
            target = self.by_service.get(service)
            if target is not None and target.paused:
                continue
            del self.held[service]
            for ex in waiting:
                ex.hold_deadline = 0.0
                if target is None:
                    ex.failure = NoRoute(f"service {service!r} was removed")
                elif target.port is None:
                    ex.failure = NoBackend(f"service {service!r} has no running backend")
                ex.target = target
                ex.client.resume_held(ex)

    def in_flight(self) -> dict[str, int]:
        """Exchanges read and not yet answered, by service (counted when asked, so that
        a cut connection never leaves a count behind)."""
        counts: dict[str, int] = {}
        for client in self.clients:
            for ex in (client.current, *client.queue):
                if ex is not None and ex.target is not None:
                    service = ex.target.service
                    counts[service] = counts.get(service, 0) + 1
        return counts

    def metrics_snapshot(self) -> dict[str, dict[str, Any]] | None:
        if self.metrics is None:
            return None
        return self.metrics.snapshot(self.in_flight())

    # -- time ----------------------------------------------------------------------

    def clock(self) -> float:
        """perf_counter() now, kept in `tick` until the loop's next wake-up.

        Latency metrics take their times as `server.tick or server.clock()`: one clock
        read per wake-up of the loop instead of two per request, the way nginx and
        HAProxy cache the time once per turn of their event loops. Every exchange that
        starts or ends in one wake-up gets its time, so a time is early by at most the
        work done before it in the wake-up (a few hundred microseconds at full load,
        nothing when idle: docs/metrics.md, "Time resolution"). The reset runs before
        the loop next polls for events.
        """
        t = self.tick = perf_counter()
        self.loop.call_soon(self._untick)
        return t

    def _untick(self) -> None:
        self.tick = 0.0

    def sweep(self) -> None:
        now = self.now = self.loop.time()
        for client in list(self.clients):
            deadline = client.deadline
            if deadline and deadline <= now:
                client.on_timeout()
        for conn in list(self.pool.conns):
            deadline = conn.deadline
            if deadline and deadline <= now:
                conn.on_timeout()
        for service, waiting in list(self.held.items()):
            expired = [ex for ex in waiting if ex.hold_deadline <= now]
            for ex in expired:
                waiting.remove(ex)
                ex.hold_deadline = 0.0
                ex.failure = NoBackend(
                    f"service {service!r} is being redeployed and did not come back "
                    f"within {self.config.pause_timeout:g} s"
                )
                ex.client.resume_held(ex)
            if not waiting:
                del self.held[service]
        self.refusals.flush(now)

    async def run_sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            self.sweep()

    # -- sockets -------------------------------------------------------------------

    def connect(self, conn: UpstreamConnection, port: int) -> None:
        """Open a backend connection for the pool (tests connect in memory instead)."""
        open_upstream(self.loop, conn, port)

    async def listen(self, bind: str) -> None:
        """Listen on `bind` ("HOST:PORT"); a previous listener is closed afterwards."""
        host, port = parse_hostport(bind, "proxy listen address")
        held = listenfds.take(socket.SOCK_STREAM, host, port)  # outlives this process
        if held is not None:
            server = await self.loop.create_server(
                lambda: ClientProtocol(self), sock=held, backlog=2048
            )
        else:
            try:
                server = await self._bind(host, port)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                # the same port on another host (a security-mode change: 0.0.0.0 and
                # 127.0.0.1): the old listener, and systemd's copy of it, must go first
                # (`take` dropped a stale inherited one already)
                if self.listener is not None:
                    listenfds.notify_fdstore_remove(LISTEN_FDNAME)
                    self.listener.close()
                    self.listener, self.bound = None, None
                server = await self._bind_when_free(host, port)
            # systemd keeps a copy across restarts and crashes (a no-op elsewhere)
            listenfds.keep(LISTEN_FDNAME, [s.fileno() for s in server.sockets])
        old, self.listener, self.bound = self.listener, server, bind
        if old is not None:
            old.close()  # stops accepting only; open connections carry on
        log.info(
            "%s proxy listening on %s%s", self.kind, bind, " (inherited socket)" if held else ""
        )

    async def _bind_when_free(self, host: str, port: int) -> asyncio.Server:
        """Bind once systemd has closed its copy of the old socket (it handles the
        removal asynchronously): bounded by `REBIND_WAIT_S`."""
        deadline = self.loop.time() + REBIND_WAIT_S
        while True:
            try:
                return await self._bind(host, port)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or self.loop.time() >= deadline:
                    raise
            await asyncio.sleep(0.02)

    async def _bind(self, host: str, port: int) -> asyncio.Server:
        return await self.loop.create_server(
            lambda: ClientProtocol(self),
            host,
            port,
            reuse_address=True,
            reuse_port=self.config.reuse_port or None,
            backlog=2048,
        )

    async def drain(self) -> None:
        """Stop accepting, finish in-flight exchanges (bounded), close everything."""
        self.draining = True
        if self.listener is not None:
            self.listener.close()
        self.pool.close_idle()
        deadline = self.loop.time() + self.config.drain_timeout
        while True:
            for client in list(self.clients):
                # idle between requests: close. A connection accepted just before the
                # listener closed has sent nothing yet: its first request is served
                # (without keep-alive), or a restart would cut it
                if client.current is None and client.pstate == P_IDLE and client.http11 is not None:
                    client.close()
            if not self.clients or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        if self.clients:
            log.warning("drain timeout: cutting %d connection(s)", len(self.clients))
        for client in list(self.clients):
            client.abort()
        for conn in list(self.pool.conns):
            conn.close()
        await asyncio.sleep(0)  # let transports run their connection_lost callbacks
