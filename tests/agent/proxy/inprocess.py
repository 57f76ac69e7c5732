"""The proxy engine in the test process, on its own event-loop thread, on real sockets.

For tests that need to look inside the engine while it serves (how often the request
memo answered) or that run many examples (Hypothesis), where starting a process per
example would cost more than the test. Production wiring (bus, systemd, privileges)
is covered by the subprocess tests; this is the same `ProxyServer` and protocols.
"""

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import uvloop

from agent.bus.messages import Route, RouteTable
from agent.proxy.config import ProxyConfig
from agent.proxy.server import EXTERNAL, ProxyServer
from tests.support.ports import free_port

T = TypeVar("T")


class InProcessProxy:
    def __init__(self, routes: list[Route], kind: str = EXTERNAL, **config: Any) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = free_port()
        self.server = self.call(lambda: ProxyServer(kind, ProxyConfig(**config), self.loop))
        self.version = 0
        self.apply(routes)
        self._run(self.server.listen(f"127.0.0.1:{self.port}"))
        self.sweeper = self._run(self._start_sweeper())

    async def _start_sweeper(self) -> "asyncio.Task[None]":
        return asyncio.create_task(self.server.run_sweeper(), name="test-proxy-sweeper")

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the proxy's loop and return its result."""

        async def wrapper() -> T:
            return fn()

        return self._run(wrapper())  # type: ignore[no-any-return]

    def apply(self, routes: list[Route]) -> None:
        self.version += 1
        table = RouteTable(version=(1, self.version), routes=tuple(routes))
        self.call(lambda: self.server.apply_table(table))

    def close(self) -> None:
        self.call(self.sweeper.cancel)
        self._run(self.server.drain())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
