"""The subscribing side of the bus: follow the route table, survive a missing publisher.

`RouteFollower` loads the last table from disk (so a proxy started while the reconciler
is down serves the last known routes), asks the publisher for a snapshot, then applies
every newer version that arrives, saving each to disk.

The cache is only a stand-in until the publisher answers: whatever version it claims,
the first table from the live publisher replaces it, and a cached table whose epoch lies
in the future (no publisher can have started then) is refused outright. So a tampered
cache can at worst be served until the reconciler speaks, never instead of it.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.asyncio

from agent.bus.endpoints import BusEndpoints
from agent.bus.messages import ROUTES_TOPIC, RouteTable, Version
from agent.durablefiles import write_atomic

log = logging.getLogger(__name__)

SNAPSHOT_TIMEOUT_S = 1.0
CACHE_MODE = 0o600  # written by its component's own user, in a directory of its own


def from_the_future(table: RouteTable, now_ns: int | None = None) -> bool:
    """True when `table` claims a publisher epoch later than now (a forged version)."""
    return table.version[0] > (time.time_ns() if now_ns is None else now_ns)


def load_cached(cache: Path) -> RouteTable | None:
    try:
        table = RouteTable.from_json(cache.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable route cache %s: %s", cache, exc)
        return None
    if from_the_future(table):
        log.warning("ignoring route cache %s: its version %s is from the future", cache,
                    table.version)  # fmt: skip
        return None
    return table


class RouteFollower:
    """Keeps `current` at the newest route table and calls `on_table` on each change."""

    def __init__(
        self,
        endpoints: BusEndpoints,
        cache: Path,
        on_table: Callable[[RouteTable], None],
        ctx: zmq.asyncio.Context | None = None,
        on_live: Callable[[Version], None] | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._cache = cache
        self._on_table = on_table
        self._on_live = on_live  # after each live version is taken (acknowledgements)
        self._ctx = ctx or zmq.asyncio.Context.instance()
        self.current: RouteTable | None = None
        self.live = False  # True once `current` came from the publisher, not the cache

    def offer(self, table: RouteTable, *, live: bool = True) -> bool:
        """Apply `table` if it is newer than what we have; True when applied.

        A table from the live publisher always replaces one loaded from the cache, and
        the cache never replaces anything the publisher sent.
        """
        if self.current is not None:
            if not live and self.live:
                return False
            if table.version <= self.current.version and (self.live or not live):
                return False
        changed = self.current is None or not table.same_routes(self.current)
        self.current = table
        self.live = self.live or live
        if changed:
            self._on_table(table)
        if live:
            if self._on_live is not None:
                self._on_live(table.version)
            try:
                write_atomic(self._cache, table.to_json(), mode=CACHE_MODE)
            except OSError as exc:  # a read-only disk must not stop routing
                log.warning("cannot save route cache %s: %s", self._cache, exc)
        return True

    def load_cache(self) -> None:
        cached = load_cached(self._cache)
        if cached is not None:
            self.offer(cached, live=False)

    async def run(self) -> None:
        self.load_cache()
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, ROUTES_TOPIC)
        sub.connect(self._endpoints.pub)
        try:
            await self._request_snapshot()
            while True:
                topic, payload = await sub.recv_multipart()
                self._offer_raw(payload)
        finally:
            sub.close()

    async def _request_snapshot(self) -> None:
        req = self._ctx.socket(zmq.DEALER)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(self._endpoints.snapshot)
        try:
            await req.send_multipart([b"", ROUTES_TOPIC])
            if await req.poll(int(SNAPSHOT_TIMEOUT_S * 1000)):
                frames = await req.recv_multipart()
                self._offer_raw(frames[-1])
        finally:
            req.close()

    def _offer_raw(self, payload: bytes) -> None:
        if not payload:
            return
        try:
            table = RouteTable.from_json(payload)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring malformed route table: %s", exc)
            return
        self.offer(table)


async def wait_forever(follower: RouteFollower) -> None:
    """Run `follower`, restarting it after unexpected errors (logged, never silent)."""
    while True:
        try:
            await follower.run()
        except asyncio.CancelledError:
            raise
        except zmq.ZMQError as exc:
            log.error("bus subscriber failed, retrying: %s", exc)
            await asyncio.sleep(1.0)
