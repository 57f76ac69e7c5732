"""Telling the reconciler what this proxy applied and what it still has in flight.

`Reporter` announces the proxy, acknowledges each route-table version right after it is
applied (`acknowledge`, called from the route follower's callback), and keeps the
in-flight counts per replaced backend port current (`run`): every `BUSY_REPORT_S` while
requests to a replaced port are open or a table was just applied, otherwise a heartbeat
every `HEARTBEAT_S`. See agent/bus/reports.py for the message.
"""

import asyncio
import os

from agent.bus.messages import Version
from agent.bus.reports import BUSY_REPORT_S, HEARTBEAT_S, ProxyReport, ReportSender
from agent.proxy.server import ProxyServer


class Reporter:
    def __init__(self, server: ProxyServer, sender: ReportSender) -> None:
        self.server = server
        self.sender = sender
        self.name = f"{server.kind}-{os.getpid()}"
        self._last: ProxyReport | None = None
        self._sent_at = 0.0
        self._busy_until = 0.0
        self.version: Version | None = None  # the live route table applied last

    def report(self) -> ProxyReport:
        return ProxyReport(
            proxy=self.name, version=self.version, in_flight=self.server.pool.in_flight()
        )

    def send(self, now: float) -> None:
        self._last = self.report()
        self._sent_at = now
        self.sender.send(self._last)

    def acknowledge(self, version: Version | None) -> None:
        """Table `version` was just applied (None: the proxy started): say so now."""
        if version is not None:
            self.version = version
        now = self.server.loop.time()
        self._busy_until = now + HEARTBEAT_S
        self.send(now)

    def tick(self, now: float) -> None:
        busy = now < self._busy_until or bool(self._last and self._last.in_flight)
        if busy:
            current = self.report()
            if current != self._last or now - self._sent_at >= HEARTBEAT_S:
                self._last, self._sent_at = current, now
                self.sender.send(current)
        elif now - self._sent_at >= HEARTBEAT_S:
            self.send(now)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(BUSY_REPORT_S)
            self.tick(self.server.loop.time())

    def goodbye(self) -> None:
        self.sender.send(ProxyReport(proxy=self.name, version=None, gone=True))
