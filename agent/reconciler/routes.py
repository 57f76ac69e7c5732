"""Publishing the route table, and cutting over by the proxies' acknowledgements.

A worker's route change (`routes_changed`) marks the table dirty; `route_loop` publishes
it on the bus. `cutover` publishes and then waits until every live proxy reports it
applied that table (bounded by `ACK_TIMEOUT_S`); `drain` waits until the proxies report
nothing in flight to an old process. Each proxy report and each publication notifies
`_facts`, which both waits re-check (docs/reconciler.md).
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from agent.bus.messages import ROUTES_TOPIC, Route
from agent.bus.publisher import Publisher
from agent.bus.reports import ReportReceiver
from agent.reconciler.acks import ProxyRegistry, drain_decision
from agent.reconciler.clock import SYSTEM_CLOCK, Clock
from agent.reconciler.policy import route_table
from agent.schema.document import DesiredState

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 5.0  # a swap waits this long for every live proxy's acknowledgement
FACT_RECHECK_S = 0.5  # re-check liveness while waiting (a silent proxy is forgotten)

EventSink = Callable[..., None]  # `Reconciler.event(type, message, service, **extra)`
RouteSource = Callable[[], tuple[DesiredState | None, Iterable[Route]]]


class RouteKeeper:
    def __init__(
        self,
        publisher: Publisher,
        reports: ReportReceiver,
        source: RouteSource,
        event: EventSink,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.publisher = publisher
        self.reports = reports
        self.source = source  # the desired state and every worker's route, now
        self.event = event
        self.clock = clock
        self.proxies = ProxyRegistry()
        self._dirty = asyncio.Event()
        self._seq = 0
        # route changes asked for / published, and what the proxies report back
        self._wanted = 0
        self._published = 0
        self._published_version: tuple[int, int] = (0, 0)
        self._facts = asyncio.Condition()

    def routes_changed(self) -> None:
        self._wanted += 1
        self._dirty.set()

    async def cutover(self, service: str) -> None:
        """Publish the routes as they are now and wait until every live proxy applied
        them (bounded by `ACK_TIMEOUT_S`; the proxies that did not answer are named in
        an event)."""
        self.routes_changed()
        wanted = self._wanted
        now = self.clock.monotonic
        started = now()
        deadline = started + ACK_TIMEOUT_S
        async with self._facts:
            while self._published < wanted:
                await self._facts.wait()
            version = self._published_version
            while missing := self.proxies.missing(version, now()):
                left = deadline - now()
                if left <= 0:
                    self.event(
                        "deploy",
                        f"proxies {', '.join(missing)} did not acknowledge routes "
                        f"{version[0]}.{version[1]} within {ACK_TIMEOUT_S:g} s; going on",
                        service,
                        proxies=missing,
                    )
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._facts.wait(), min(left, FACT_RECHECK_S))
        log.info(
            "%s: routes %s.%s acknowledged by %d proxies in %.3f s",
            service,
            *version,
            len(self.proxies.live(now())),
            now() - started,
        )

    async def drain(self, service: str, port: int, timeout_s: float) -> tuple[float, int]:
        """Wait until the proxies report nothing in flight to `port` or `timeout_s`
        passes; (seconds waited, requests still open)."""
        started = self.clock.monotonic()
        async with self._facts:
            while True:
                now = self.clock.monotonic()
                decision = drain_decision(
                    self.proxies.in_flight(port, now), started, now, timeout_s
                )
                if decision.stop:
                    return now - started, decision.cut
                left = started + timeout_s - now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._facts.wait(), min(left, FACT_RECHECK_S))

    async def publish(self) -> None:
        wanted = self._wanted  # every change asked for so far is in this table
        self._seq += 1
        desired, routes = self.source()
        table = route_table((self.publisher.epoch, self._seq), desired, routes)
        await self.publisher.publish(ROUTES_TOPIC, table.to_json())
        async with self._facts:
            self._published = wanted
            self._published_version = table.version
            self._facts.notify_all()

    async def route_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self.publish()

    async def proxy_loop(self) -> None:
        while True:
            report = await self.reports.receive()
            if report is None:
                continue
            if self.proxies.report(report, self.clock.monotonic()):
                log.info("proxy %s announced itself (routes %s)", report.proxy, report.version)
                self.event("proxy", f"proxy {report.proxy} is live")  # e.g. after a restart
            elif report.gone:
                self.event("proxy", f"proxy {report.proxy} stopped")
            async with self._facts:
                self._facts.notify_all()
