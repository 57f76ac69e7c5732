"""Group commit for heartbeats: many agents' snapshots written in one transaction.

Each heartbeat is a full snapshot, so only the latest per instance matters. `record`
queues the snapshot and waits until the transaction that contains it has committed (the
agent's 200 still means "stored"); one writer task takes everything queued, writes it with
one bulk UPDATE by primary key, and starts again. Before taking a batch it lingers for
`window_s` (unless a full batch is already queued): a transaction costs about 3 ms of CPU
whatever its size, a row in a batch about 0.2 ms, so at fleet rates (1,000 heartbeats/s
for 10,000 agents) collecting for a few tens of milliseconds cuts the writer's CPU about
tenfold, for that much added latency on a call nobody waits on. Under load batches also
grow instead of transactions queueing up behind SQLite's single writer.
"""

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import update

from controlplane.db import Database
from controlplane.models import Instance, utcnow
from controlplane.status import Heartbeat

log = logging.getLogger(__name__)

MAX_BATCH = 2000
# how long the writer collects heartbeats before one transaction (see the docstring)
DEFAULT_WINDOW_S = 0.04


class HeartbeatWriter:
    def __init__(self, db: Database, window_s: float = DEFAULT_WINDOW_S) -> None:
        self._db = db
        self._window_s = window_s
        self._pending: dict[str, dict[str, Any]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="berth-heartbeat-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(RuntimeError("control plane shutting down"))

    async def record(self, instance_id: str, hb: Heartbeat) -> None:
        """Store `hb` as the instance's latest snapshot; returns once committed."""
        self._pending[instance_id] = {
            "id": instance_id,
            "last_seen": utcnow(),
            "agent_version": hb.agent_version,
            "applied_version": hb.applied_version,
            "state": hb.state,
            "services": hb.services,
            "security": hb.security,
            "extra": hb.extra,
        }
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._wake.set()
        await fut

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if len(self._pending) < MAX_BATCH and self._window_s > 0:
                await asyncio.sleep(self._window_s)
            self._wake.clear()
            rows = list(self._pending.values())[:MAX_BATCH]
            for row in rows:
                del self._pending[row["id"]]
            waiters, self._waiters = self._waiters, []
            if self._pending:
                self._wake.set()  # more than one batch queued: go round again
            try:
                async with self._db.write() as session:
                    await session.execute(update(Instance), rows)
            except Exception as exc:  # answer every waiting agent; they retry next interval
                log.exception("could not store %d heartbeats", len(rows))
                for fut in waiters:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
