"""The publishing side of the bus (used by the reconciler only)."""

import asyncio
import grp
import logging
import os
import time
from pathlib import Path

import zmq
import zmq.asyncio

from agent.bus.endpoints import BusEndpoints

log = logging.getLogger(__name__)

REPUBLISH_INTERVAL_S = 1.0
AGENT_GROUP = "berth"


def share_socket(address: str) -> None:
    """Let the other agent processes (own users, group `berth`) connect to an ipc socket.

    Connecting to a unix socket needs write permission on its file, so the socket is
    0660 with group `berth` (made by the installer, or by `run-all` as root): the proxies
    and the DNS responder are in it, the services' user is not. Without that group every
    component runs as one user (development), and the socket is that user's alone (0600).
    """
    path = Path(address.removeprefix("ipc://"))
    try:
        gid = grp.getgrnam(AGENT_GROUP).gr_gid
    except KeyError:
        os.chmod(path, 0o600)
        return
    os.chown(path, -1, gid)
    os.chmod(path, 0o660)


class Publisher:
    """Publishes the latest message per topic and answers snapshot requests."""

    def __init__(self, endpoints: BusEndpoints, ctx: zmq.asyncio.Context | None = None) -> None:
        self._ctx = ctx or zmq.asyncio.Context.instance()
        self._endpoints = endpoints
        self._latest: dict[bytes, bytes] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.epoch = time.time_ns()  # later than any earlier run's, so restarts win

    async def start(self) -> None:
        self._endpoints.run_dir.mkdir(parents=True, exist_ok=True)
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        old = os.umask(0o177)  # born 0600: no moment in which anyone else may connect
        try:
            self._pub.bind(self._endpoints.pub)
            self._router.bind(self._endpoints.snapshot)
        finally:
            os.umask(old)
        share_socket(self._endpoints.pub)
        share_socket(self._endpoints.snapshot)
        self._tasks = [
            asyncio.create_task(self._serve_snapshots(), name="bus-snapshots"),
            asyncio.create_task(self._republish(), name="bus-republish"),
        ]

    async def publish(self, topic: bytes, payload: bytes) -> None:
        self._latest[topic] = payload
        await self._pub.send_multipart([topic, payload])

    async def _serve_snapshots(self) -> None:
        while True:
            frames = await self._router.recv_multipart()
            if len(frames) < 2:
                continue
            ident, topic = frames[0], frames[-1]
            await self._router.send_multipart([ident, b"", topic, self._latest.get(topic, b"")])

    async def _republish(self) -> None:
        while True:
            await asyncio.sleep(REPUBLISH_INTERVAL_S)
            for topic, payload in list(self._latest.items()):
                await self._pub.send_multipart([topic, payload])

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pub.close()
        self._router.close()
