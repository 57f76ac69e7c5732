"""The subscribing side of the bus: follow the route table, survive a missing publisher.

`follow_routes` loads the last table from disk (so a proxy started while the reconciler
is down serves the last known routes), asks the publisher for a snapshot, then applies
every newer version that arrives, saving each to disk.
"""

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.asyncio

from agent.bus.durable import write_atomic
from agent.bus.endpoints import BusEndpoints
from agent.bus.messages import ROUTES_TOPIC, RouteTable

log = logging.getLogger(__name__)

SNAPSHOT_TIMEOUT_S = 1.0


def load_cached(cache: Path) -> RouteTable | None:
    try:
        return RouteTable.from_json(cache.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable route cache %s: %s", cache, exc)
        return None


class RouteFollower:
    """Keeps `current` at the newest route table and calls `on_table` on each change."""

    def __init__(
        self,
        endpoints: BusEndpoints,
        cache: Path,
        on_table: Callable[[RouteTable], None],
        ctx: zmq.asyncio.Context | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._cache = cache
        self._on_table = on_table
        self._ctx = ctx or zmq.asyncio.Context.instance()
        self.current: RouteTable | None = None

    def offer(self, table: RouteTable) -> bool:
        """Apply `table` if it is newer than what we have; True when applied."""
        if self.current is not None and table.version <= self.current.version:
            return False
        changed = self.current is None or not table.same_routes(self.current)
        self.current = table
        if changed:
            self._on_table(table)
        try:
            write_atomic(self._cache, table.to_json())
        except OSError as exc:  # a read-only disk must not stop routing
            log.warning("cannot save route cache %s: %s", self._cache, exc)
        return True

    def load_cache(self) -> None:
        cached = load_cached(self._cache)
        if cached is not None:
            self.offer(cached)

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
