"""The notifier: one background task per control-plane process that finds what happened
and delivers what is due.

Every tick (`interval_s`, or at once when poked) it
1. reads agent events stored since its cursor and classifies them (`events.classify`);
2. reads audit records since its cursor for install tokens used (a new server);
3. looks at every instance: offline (no heartbeat for 10 poll intervals) / back online,
   and per stack whether every live server applied the current version (or one reports
   it degraded);
4. claims due batches from the outbox and sends each on its channel in a worker thread.
Cursors and open conditions (offline, unhealthy) are rows in `notification_marks`; every
notice carries a key naming its source, so running the scans twice (two processes, a
restart before a cursor was saved) enqueues nothing twice. The first start begins at the
current end of the event and audit logs: no flood of old history.
"""

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from sqlalchemy import delete, func, select

from agent.schema.report import stored_services
from controlplane.db import Database
from controlplane.models import (
    AuditRecord,
    Event,
    Instance,
    NotificationMark,
    Stack,
    iso,
    utcnow,
)
from controlplane.notify import messages, outbox, senders, store
from controlplane.notify.events import classify
from controlplane.notify.outbox import Notice
from controlplane.secrets import Keyring, SecretKeyUnavailable
from controlplane.status import instance_status

log = logging.getLogger("controlplane.notify")

DEFAULT_INTERVAL_S = 2.0
# instances scanned between two turns of the event loop (a tick must not stall requests)
SCAN_SLICE = 256
SCAN_BATCH = 500
MAX_PAGES_PER_TICK = 10


async def _get_mark(db: Database, key: str) -> str | None:
    async with db.read() as session:
        row = await session.get(NotificationMark, key)
    return row.value if row else None


async def _set_mark(db: Database, key: str, value: str) -> None:
    async with db.write() as session:
        row = await session.get(NotificationMark, key)
        if row is None:
            session.add(NotificationMark(key=key, value=value, at=utcnow()))
        else:
            row.value, row.at = value, utcnow()


async def _drop_mark(db: Database, key: str) -> bool:
    async with db.write() as session:
        gone = await session.execute(delete(NotificationMark).where(NotificationMark.key == key))
        return bool(gone.rowcount)  # type: ignore[attr-defined]


async def _cursor(db: Database, name: str, column: Any) -> int:
    """The scan cursor `name`; created at the current end of the log on first use."""
    raw = await _get_mark(db, f"cursor:{name}")
    if raw is not None:
        return int(raw)
    async with db.read() as session:
        end = int(await session.scalar(select(func.coalesce(func.max(column), 0))) or 0)
    await _set_mark(db, f"cursor:{name}", str(end))
    return end


class Notifier:
    def __init__(
        self,
        db: Database,
        interval_s: float = DEFAULT_INTERVAL_S,
        lease_s: float = outbox.DEFAULT_LEASE_S,
        backoff_base_s: float = outbox.BACKOFF_BASE_S,
        ssl_context: ssl.SSLContext | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self.keyring = keyring or Keyring(None)
        self.backoff_base_s = backoff_base_s
        self.db = db
        self.interval_s = interval_s
        self.lease_s = lease_s
        self.ssl_context = ssl_context
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._enqueued: set[str] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notifier")

    def poke(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad row or a database hiccup must not stop notifying
                log.exception("notifier tick failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()

    async def tick(self) -> None:
        for _ in range(MAX_PAGES_PER_TICK):  # a burst is read in pages, a few per tick
            if await self.scan_events() < SCAN_BATCH:
                break
        await self.scan_audit()
        await self.scan_instances()
        await self.deliver()

    # scans ------------------------------------------------------------------------------

    async def scan_events(self) -> int:
        """Classify the next page of stored agent events; how many were read."""
        cursor = await _cursor(self.db, "events", Event.seq)
        async with self.db.read() as session:
            rows = (
                await session.execute(
                    select(Event, Instance.hostname, Instance.services, Stack.name)
                    .join(Instance, Instance.id == Event.instance_id)
                    .join(Stack, Stack.id == Event.stack_id)
                    .where(Event.seq > cursor)
                    .order_by(Event.seq)
                    .limit(SCAN_BATCH)
                )
            ).all()
        for ev, hostname, services, stack_name in rows:
            kind = classify(ev.type, ev.message, ev.extra or {})
            if kind is not None:
                await self._event_notice(ev, kind, hostname, services or [], stack_name)
            cursor = ev.seq
        if rows:
            await _set_mark(self.db, "cursor:events", str(cursor))
        return len(rows)

    async def _event_notice(
        self, ev: Event, kind: str, hostname: str, services: list[Any], stack_name: str
    ) -> None:
        condition = f"unhealthy:{ev.instance_id}:{ev.service}"
        if kind == "health.unhealthy":
            await _set_mark(self.db, condition, ev.event_id)
        elif kind == "health.recovered" and not await _drop_mark(self.db, condition):
            return  # healthy for the first time (a deploy), not a recovery
        details = {k: v for k, v in (ev.extra or {}).items() if k != "log_tail"}
        base = Notice(
            event=kind, key=f"ev:{ev.instance_id}:{ev.event_id}", stack_id=ev.stack_id,
            stack_name=stack_name, message=ev.message[:1000], at=ev.at,
            instance_id=ev.instance_id, hostname=hostname, service=ev.service, details=details,
        )  # fmt: skip
        await outbox.enqueue(self.db, base)
        if kind == "deploy.failed" and _old_release_serving(services, ev.service, details):
            await outbox.enqueue(self.db, Notice(
                event="deploy.reverted", key=base.key + ":reverted", stack_id=ev.stack_id,
                stack_name=stack_name, at=ev.at, instance_id=ev.instance_id, hostname=hostname,
                service=ev.service, details=details,
                message=f"the previous release keeps serving: {ev.message[:900]}",
            ))  # fmt: skip

    async def scan_audit(self) -> None:
        cursor = await _cursor(self.db, "audit", AuditRecord.seq)
        async with self.db.read() as session:
            rows = list(
                await session.scalars(
                    select(AuditRecord)
                    .where(AuditRecord.seq > cursor)
                    .order_by(AuditRecord.seq)
                    .limit(SCAN_BATCH)
                )
            )
        for r in rows:
            if r.action == "install_token.use":
                await outbox.enqueue(self.db, Notice(
                    event="install_token.used", key=f"audit:{r.seq}", stack_id=r.stack_id,
                    stack_name=r.stack_name, at=r.at, instance_id=r.target, hostname=r.actor,
                    message=f"new server {r.actor} joined with an install token",
                ))  # fmt: skip
            cursor = r.seq
        if rows:
            await _set_mark(self.db, "cursor:audit", str(cursor))

    async def scan_instances(self) -> None:
        """Offline / back online per server, and whole-stack deploy results. One query for
        the instances (a few columns), one for the stacks, one for the open offline marks:
        the cost per tick stays a handful of queries however large the fleet."""
        now = utcnow()
        async with self.db.read() as session:
            stacks = {
                s.id: s
                for s in (
                    await session.execute(
                        select(
                            Stack.id,
                            Stack.name,
                            Stack.version,
                            Stack.updated_at,
                            Stack.document["poll_interval_s"].as_float(),
                        )  # fmt: skip
                    )
                ).all()
            }
            instances = (
                await session.execute(
                    select(
                        Instance.id,
                        Instance.stack_id,
                        Instance.hostname,
                        Instance.last_seen,
                        Instance.applied_version,
                        Instance.state,
                    ).where(Instance.revoked_at.is_(None))  # fmt: skip
                )
            ).all()
            offline = {
                m.key.removeprefix("offline:"): m.value
                for m in await session.scalars(
                    select(NotificationMark).where(NotificationMark.key.startswith("offline:"))
                )
            }
        live: dict[str, list[Any]] = {}
        for n, inst in enumerate(instances):
            if n % SCAN_SLICE == SCAN_SLICE - 1:  # 10,000 servers: ~40 ms in one go
                await asyncio.sleep(0)
            stack = stacks.get(inst.stack_id)
            if stack is None:
                continue
            state = instance_status(inst.last_seen, now, float(stack[4] or 10))
            where = {"stack_id": stack.id, "stack_name": stack.name, "at": now,
                     "instance_id": inst.id, "hostname": inst.hostname}  # fmt: skip
            if state == "offline":
                if inst.id not in offline:
                    since = iso(inst.last_seen) or "never"
                    await _set_mark(self.db, f"offline:{inst.id}", since)
                    await self._enqueue(Notice(event="server.offline",
                                               key=f"offline:{inst.id}:{since}",
                                               message=f"no heartbeat since {since}", **where))  # fmt: skip
                continue
            was = offline.get(inst.id)
            if (
                state == "online"
                and was is not None
                and await _drop_mark(self.db, f"offline:{inst.id}")
            ):
                await self._enqueue(Notice(event="server.online", key=f"online:{inst.id}:{was}",
                                           message=f"back online (offline since {was})", **where))  # fmt: skip
            live.setdefault(inst.stack_id, []).append(inst)
        for stack_id, members in live.items():
            await self._stack_deploy(stacks[stack_id], members)

    async def _stack_deploy(self, stack: Any, instances: list[Any]) -> None:
        current = [i for i in instances if i.applied_version == stack.version]
        failed = [i for i in current if i.state == "degraded"]
        base: dict[str, Any] = {"stack_id": stack.id, "stack_name": stack.name,
                                "at": stack.updated_at, "details": {"version": stack.version}}  # fmt: skip
        if failed:
            hosts = ", ".join(sorted(i.hostname for i in failed))
            await self._enqueue(Notice(
                event="stack.deploy.failed", key=f"stack:{stack.id}:v{stack.version}:failed",
                message=f"v{stack.version} degraded on {hosts}", **base,
            ))  # fmt: skip
        elif len(current) == len(instances) and all(i.state == "applied" for i in current):
            await self._enqueue(Notice(
                event="stack.deploy.succeeded", key=f"stack:{stack.id}:v{stack.version}:ok",
                message=f"v{stack.version} applied on {len(current)} server(s)", **base,
            ))  # fmt: skip

    async def _enqueue(self, notice: Notice) -> None:
        """`outbox.enqueue` once per key and process: repeated scans find the same facts
        every tick; the database's unique key is what makes it exactly once overall."""
        if notice.key in self._enqueued:
            return
        await outbox.enqueue(self.db, notice)
        self._enqueued.add(notice.key)
        if len(self._enqueued) > 100_000:  # a bounded memo: forgetting only costs a lookup
            self._enqueued.clear()

    # delivery ---------------------------------------------------------------------------

    async def deliver(self) -> None:
        batches = await outbox.claim(self.db, self.lease_s)
        if batches:
            await asyncio.gather(*(self._send(b) for b in batches))

    async def _send(self, batch: outbox.Batch) -> None:
        summary = messages.summary(batch.payloads)
        ch = batch.channel
        try:
            secret = store.open_secret(ch, self.keyring)
            await asyncio.to_thread(
                senders.send, ch.kind, ch.config, secret, batch.id, batch.payloads,
                self.ssl_context,
            )  # fmt: skip
            error = None
        except (senders.DeliveryError, SecretKeyUnavailable) as exc:
            error = str(exc)
            log.warning("notification on %s failed (attempt %d): %s", ch.name, batch.attempt, exc)
        await outbox.finish(self.db, batch, summary, error, self.backoff_base_s)


def _old_release_serving(services: list[Any], service: str | None, details: dict[str, Any]) -> bool:
    """Whether the server still runs another commit of `service` (a failed deploy kept the
    old release: the automatic revert)."""
    for s in stored_services(services):
        if s.name == service:
            return s.state == "running" and s.commit not in (None, details.get("commit"))
    return False


async def send_test(db: Database, channel_id: str, notifier: "Notifier | None", who: str) -> str:
    """Enqueue a test message for one channel (delivered like any other); its key."""
    now = utcnow()
    key = f"test:{now.timestamp():.6f}"
    await outbox.enqueue(db, Notice(
        event="test", key=key, stack_id=None, stack_name=None, at=now,
        message=f"test message requested by {who}", service=None,
    ), only_channel=channel_id)  # fmt: skip
    if notifier is not None:
        notifier.poke()
    return key
