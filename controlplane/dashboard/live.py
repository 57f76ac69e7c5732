"""Live updates for open dashboard pages: one watcher per process, many SSE subscribers.

While at least one page is subscribed, a task takes a cheap snapshot of the database
every `interval_s` (stack hashes, each instance's last heartbeat and status, the newest
event and log `seq`) and compares it with the previous one (`diff`, a pure function).
Each change becomes a `Change(stack_id, kinds)` for the pages watching that stack; new log
chunks are delivered as `LogChunkOut` to the pages following that service. Reading the
database (not only in-process hooks) is what makes a heartbeat ingested by another
control-plane node show up here too. `poke()` runs a tick at once: the dashboard calls it
after any successful write request this process serves (a heartbeat, events, a save), so
on a single node an update reaches the browser within milliseconds of its commit, and in
any case within `interval_s`.

Status transitions that no write causes (an instance turning stale, then offline, because
its heartbeats stopped) are noticed because the snapshot holds the computed status.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from controlplane.db import Database
from controlplane.models import Event, Instance, LogChunk, MetricPoint, Stack, utcnow
from controlplane.status import DEFAULT_HEARTBEAT_INTERVAL_S, instance_status

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 0.5
QUEUE_SIZE = 256
MAX_LOG_ROWS_PER_TICK = 2000
METRICS_WINDOW_S = 300  # metric points newer than this are watched for changes


@dataclass(frozen=True)
class Change:
    stack_id: str
    kinds: frozenset[str]  # "stack", "instances", "events"


@dataclass(frozen=True)
class LogChunkOut:
    seq: int
    stack_id: str
    instance_id: str
    service: str
    stream: str
    commit: str | None
    data: str


@dataclass(frozen=True)
class Snapshot:
    stacks: dict[str, str]  # id → doc hash
    instances: dict[str, tuple[str, str]]  # id → (stack id, "last_seen|status")
    event_seq: dict[str, int]  # stack id → newest event seq
    # stack id → (newest raw metric point's t, points at that t): an agent's batch
    metrics: dict[str, tuple[int, int]] = field(default_factory=dict)


def diff(old: Snapshot, new: Snapshot) -> dict[str, set[str]]:
    """Which stacks changed how between two snapshots (pure)."""
    changed: dict[str, set[str]] = {}
    for sid in old.stacks.keys() | new.stacks.keys():
        if old.stacks.get(sid) != new.stacks.get(sid):
            changed.setdefault(sid, set()).add("stack")
    for iid in old.instances.keys() | new.instances.keys():
        a, b = old.instances.get(iid), new.instances.get(iid)
        if a != b:
            for entry in (a, b):
                if entry is not None:
                    changed.setdefault(entry[0], set()).add("instances")
    for sid in old.event_seq.keys() | new.event_seq.keys():
        if old.event_seq.get(sid) != new.event_seq.get(sid):
            changed.setdefault(sid, set()).add("events")
    for sid in old.metrics.keys() | new.metrics.keys():
        if old.metrics.get(sid) != new.metrics.get(sid):
            changed.setdefault(sid, set()).add("metrics")
    return changed


@dataclass(eq=False)
class Subscription:
    stack_id: str | None  # None: every stack (the stacks list)
    log_instance: str | None = None
    log_service: str | None = None
    queue: asyncio.Queue[Change | LogChunkOut | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_SIZE)
    )
    overflowed: bool = False

    def wants(self, item: Change | LogChunkOut) -> bool:
        if isinstance(item, Change):
            return self.stack_id is None or self.stack_id == item.stack_id
        return item.instance_id == self.log_instance and item.service == self.log_service

    def offer(self, item: Change | LogChunkOut | None) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True  # the page is told to reload its regions instead


class LiveHub:
    def __init__(
        self,
        db: Database,
        interval_s: float = DEFAULT_INTERVAL_S,
        heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
    ) -> None:
        self._db = db
        self._heartbeat_interval_s = heartbeat_interval_s
        self._interval_s = interval_s
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._start_lock = asyncio.Lock()
        self._snapshot: Snapshot | None = None
        self._log_seq = 0

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def poke(self) -> None:
        if self._subs:
            self._wake.set()

    @contextlib.asynccontextmanager
    async def subscribe(
        self, stack_id: str | None, log_instance: str | None = None, log_service: str | None = None
    ) -> AsyncIterator[Subscription]:
        sub = Subscription(stack_id, log_instance, log_service)
        self._subs.add(sub)
        try:
            async with self._start_lock:  # two first subscribers must not start two watchers
                await self._ensure_running()
            yield sub
        finally:
            self._subs.discard(sub)

    async def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            # the baseline is taken now, before the page is told it is connected: the page
            # then re-fetches its regions, so nothing between its render and here is lost
            self._snapshot = None
            await self._tick()
            self._task = asyncio.create_task(self._run(), name="berth-dashboard-live")

    async def stop(self) -> None:
        for sub in list(self._subs):
            sub.offer(None)  # end every open stream
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        await asyncio.sleep(0)  # let the first subscriber register
        while self._subs:
            try:
                await self._tick()
            except Exception:  # a database hiccup must not end live updates; next tick
                log.exception("dashboard live watcher could not read the database")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()
        self._task = None

    async def _tick(self) -> None:
        now = utcnow()
        snap, chunks = await self._read(now)
        if self._snapshot is not None:
            for stack_id, kinds in diff(self._snapshot, snap).items():
                self._publish(Change(stack_id, frozenset(kinds)))
        self._snapshot = snap
        for chunk in chunks:
            self._publish(chunk)

    def _publish(self, item: Change | LogChunkOut) -> None:
        for sub in self._subs:
            if sub.wants(item):
                sub.offer(item)

    async def _read(self, now: datetime) -> tuple[Snapshot, list[LogChunkOut]]:
        async with self._db.read() as session:
            stack_rows = list(await session.execute(select(Stack.id, Stack.doc_hash)))
            inst_rows = await session.execute(
                select(Instance.id, Instance.stack_id, Instance.last_seen, Instance.revoked_at)
            )
            instances = {}
            for iid, sid, seen, revoked in inst_rows:
                status = (
                    "revoked" if revoked else instance_status(seen, now, self._heartbeat_interval_s)
                )
                instances[iid] = (sid, f"{seen.isoformat() if seen else ''}|{status}")
            event_seq = dict(
                (r[0], r[1])
                for r in await session.execute(
                    select(Event.stack_id, func.max(Event.seq)).group_by(Event.stack_id)
                )
            )
            metrics = await self._metrics(session, now)
            chunks: list[LogChunkOut] = []
            if self._snapshot is None:
                self._log_seq = int(await session.scalar(select(func.max(LogChunk.seq))) or 0)
            elif any(s.log_instance for s in self._subs):
                rows = await session.execute(
                    select(LogChunk)
                    .where(LogChunk.seq > self._log_seq)
                    .order_by(LogChunk.seq)
                    .limit(MAX_LOG_ROWS_PER_TICK)
                )
                for (row,) in rows:
                    chunks.append(
                        LogChunkOut(
                            row.seq,
                            row.stack_id,
                            row.instance_id,
                            row.service,
                            row.stream,
                            row.commit,
                            row.data,
                        )  # fmt: skip
                    )
                if chunks:
                    self._log_seq = chunks[-1].seq
            else:  # nobody follows logs: skip ahead without reading them
                self._log_seq = int(await session.scalar(select(func.max(LogChunk.seq))) or 0)
        snap = Snapshot({r[0]: r[1] for r in stack_rows}, instances, event_seq, metrics)
        return snap, chunks

    async def _metrics(self, session: Any, now: datetime) -> dict[str, tuple[int, int]]:
        """Per stack, the newest raw metric point of the last minutes and how many rows
        share its time (an index range over (res, t): only recent rows are read)."""
        recent = int(now.timestamp()) - METRICS_WINDOW_S
        newest: dict[str, tuple[int, int]] = {}
        for sid, t, n in await session.execute(
            select(MetricPoint.stack_id, MetricPoint.t, func.count())
            .where(MetricPoint.res == 0, MetricPoint.t >= recent)
            .group_by(MetricPoint.stack_id, MetricPoint.t)
        ):
            if sid not in newest or newest[sid][0] < t:
                newest[sid] = (t, n)
        return newest
