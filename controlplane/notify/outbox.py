"""The durable outbox: every notification is a row before anything is sent.

Life of a row: `pending` (due at `next_attempt_at`) -> `sending` (claimed in a batch, with
a lease) -> `sent`, or back to a later attempt, or `failed` after `MAX_ATTEMPTS`.

- Enqueue is idempotent: `(channel, key)` is unique, and the key names the source (an
  agent event's id, an audit record's seq, "server X offline since T"), so scanning the
  same source twice, in two processes or after a restart, adds nothing.
- Grouping: a row whose group (same kind, stack, server, service) was sent less than the
  channel's window ago waits until the window ends; every pending row of the group is
  then claimed together and sent as one message with the count.
- Rate limit: a channel sends at most `rate_per_hour` messages per rolling hour; a due
  batch over the limit waits for the hour to roll.
- Crash safety: a batch id is chosen when rows are claimed and is the message's
  idempotency key. If the process dies after sending but before recording, the lease
  runs out and the same batch (same rows, same key) is sent again, so a receiver that
  keeps keys sees every event exactly once. Failed attempts keep the batch too, retried
  with exponential backoff (`backoff_s`).
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from controlplane.db import Database
from controlplane.models import (
    NotificationChannel,
    NotificationDelivery,
    NotificationOutbox,
    iso,
    utcnow,
)
from controlplane.notify.events import wanted

MAX_ATTEMPTS = 8
BACKOFF_BASE_S = 5.0
BACKOFF_CAP_S = 3600.0
DEFAULT_LEASE_S = 60.0
CLAIM_GROUPS = 50


def backoff_s(attempts: int, base_s: float = BACKOFF_BASE_S) -> float:
    """Wait before attempt `attempts + 1`: 5 s, 10 s, 20 s ... capped at an hour."""
    return min(base_s * 2 ** max(attempts - 1, 0), BACKOFF_CAP_S)


@dataclass(frozen=True)
class Notice:
    """One thing that happened, before it is fanned out to the channels that want it."""

    event: str
    key: str  # unique for this occurrence (the idempotency key)
    stack_id: str | None
    stack_name: str | None
    message: str
    at: datetime
    instance_id: str | None = None
    hostname: str | None = None
    service: str | None = None
    details: dict[str, Any] | None = None

    @property
    def group_key(self) -> str:
        return ":".join((self.event, self.stack_id or "-", self.instance_id or "-",
                         self.service or "-"))  # fmt: skip

    def payload(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "at": iso(self.at),
            "stack": {"id": self.stack_id, "name": self.stack_name} if self.stack_id else None,
            "instance": {"id": self.instance_id, "hostname": self.hostname}
            if self.instance_id
            else None,
            "service": self.service,
            "message": self.message,
            "details": self.details or {},
        }


@dataclass(frozen=True)
class Batch:
    id: str
    channel: NotificationChannel
    rows: list[NotificationOutbox]
    attempt: int

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [r.payload for r in self.rows]


async def enqueue(db: Database, notice: Notice, *, only_channel: str | None = None) -> int:
    """Add `notice` for every enabled channel that wants it (global ones and the stack's,
    created before it happened); returns how many rows were added."""
    added = 0
    now = utcnow()
    async with db.read() as session:
        stmt = select(NotificationChannel).where(NotificationChannel.enabled.is_(True))
        if only_channel:
            stmt = select(NotificationChannel).where(NotificationChannel.id == only_channel)
        channels = [
            c
            for c in await session.scalars(stmt)
            if only_channel  # "send test": that channel, whatever it listens to
            or (
                (c.stack_id is None or c.stack_id == notice.stack_id)
                and wanted(c.events, notice.event)
                and c.created_at <= notice.at
            )
        ]
    for channel in channels:
        try:
            async with db.write() as session:
                exists = await session.scalar(
                    select(NotificationOutbox.id).where(
                        NotificationOutbox.channel_id == channel.id,
                        NotificationOutbox.key == notice.key,
                    )
                )
                if exists is not None:
                    continue
                due = now
                if channel.group_window_s and notice.event != "test":
                    group = (
                        NotificationOutbox.channel_id == channel.id,
                        NotificationOutbox.group_key == notice.group_key,
                    )
                    last_sent = await session.scalar(
                        select(func.max(NotificationOutbox.sent_at)).where(*group)
                    )
                    in_flight = await session.scalar(
                        select(NotificationOutbox.id)
                        .where(*group, NotificationOutbox.state == "sending")
                        .limit(1)
                    )
                    window = timedelta(seconds=channel.group_window_s)
                    if in_flight is not None:  # a message of the group is going out now
                        due = now + window
                    elif last_sent is not None:
                        due = max(now, last_sent + window)
                session.add(
                    NotificationOutbox(
                        channel_id=channel.id,
                        key=notice.key[:200],
                        event=notice.event,
                        group_key=notice.group_key[:255],
                        payload=notice.payload(),
                        created_at=now,
                        next_attempt_at=due,
                        state="pending",
                        attempts=0,
                    )
                )
            added += 1
        except IntegrityError:
            continue  # another process added the same key meanwhile
    return added


async def claim(db: Database, lease_s: float = DEFAULT_LEASE_S) -> list[Batch]:
    """Batches due now: expired leases (resent unchanged) first, then new batches of due
    pending rows, one per group, within each channel's rate limit."""
    now = utcnow()
    batches: list[Batch] = []
    lease = now + timedelta(seconds=lease_s)
    async with db.read() as session:
        expired = list(
            await session.scalars(
                select(NotificationOutbox.batch)
                .where(NotificationOutbox.state == "sending", NotificationOutbox.lease_until <= now)
                .distinct()
                .limit(CLAIM_GROUPS)
            )
        )
        groups = list(
            (
                await session.execute(
                    select(NotificationOutbox.channel_id, NotificationOutbox.group_key)
                    .where(
                        NotificationOutbox.state == "pending",
                        NotificationOutbox.next_attempt_at <= now,
                    )
                    .distinct()
                    .limit(CLAIM_GROUPS)
                )
            ).all()
        )
    for batch_id in expired:
        if batch_id is None:
            continue
        async with db.write() as session:
            took = await session.execute(
                update(NotificationOutbox)
                .where(
                    NotificationOutbox.batch == batch_id,
                    NotificationOutbox.state == "sending",
                    NotificationOutbox.lease_until <= now,
                )
                .values(lease_until=lease)
            )
        if took.rowcount:  # type: ignore[attr-defined]
            found = await _load(db, batch_id)
            if found is not None:
                batches.append(found)
    for channel_id, group_key in groups:
        async with db.write() as session:
            channel = await session.get(NotificationChannel, channel_id)
            if channel is None:
                continue
            testing = group_key.startswith("test:")  # "send test" is never held back
            wait_until = None if testing else await _rate_limited(session, channel, now)
            if wait_until is not None:
                await session.execute(
                    update(NotificationOutbox)
                    .where(
                        NotificationOutbox.channel_id == channel_id,
                        NotificationOutbox.group_key == group_key,
                        NotificationOutbox.state == "pending",
                    )
                    .values(next_attempt_at=wait_until)
                )
                continue
            batch_id = str(uuid.uuid4())
            took = await session.execute(
                update(NotificationOutbox)
                .where(
                    NotificationOutbox.channel_id == channel_id,
                    NotificationOutbox.group_key == group_key,
                    NotificationOutbox.state == "pending",
                    NotificationOutbox.next_attempt_at <= now,
                )
                .values(state="sending", batch=batch_id, lease_until=lease)
            )
        if took.rowcount:  # type: ignore[attr-defined]
            found = await _load(db, batch_id)
            if found is not None:
                batches.append(found)
    return batches


async def _rate_limited(
    session: Any, channel: NotificationChannel, now: datetime
) -> datetime | None:
    """When the channel may start another message, or None if it may now: messages sent
    in the last hour plus those being sent (retries of one message count once)."""
    hour_ago = now - timedelta(hours=1)
    rows = (
        await session.execute(
            select(NotificationOutbox.batch, func.max(NotificationOutbox.sent_at))
            .where(
                NotificationOutbox.channel_id == channel.id,
                (NotificationOutbox.state == "sending")
                | ((NotificationOutbox.state == "sent") & (NotificationOutbox.sent_at > hour_ago)),
            )
            .group_by(NotificationOutbox.batch)
        )
    ).all()
    if len(rows) < channel.rate_per_hour:
        return None
    sent = sorted(at for _, at in rows if at is not None)
    over = len(rows) - channel.rate_per_hour  # this many must age out first
    if over < len(sent):
        return sent[over] + timedelta(hours=1)
    return now + timedelta(seconds=DEFAULT_LEASE_S)  # all slots are messages in flight


async def _load(db: Database, batch_id: str) -> Batch | None:
    async with db.read() as session:
        rows = list(
            await session.scalars(
                select(NotificationOutbox)
                .where(NotificationOutbox.batch == batch_id)
                .order_by(NotificationOutbox.id)
            )
        )
        if not rows:
            return None
        channel = await session.get(NotificationChannel, rows[0].channel_id)
    if channel is None:
        return None
    return Batch(batch_id, channel, rows, rows[0].attempts + 1)


async def finish(
    db: Database, batch: Batch, summary: str, error: str | None,
    backoff_base_s: float = BACKOFF_BASE_S,
) -> None:  # fmt: skip
    """Record one attempt: sent, or a later retry, or failed for good."""
    now = utcnow()
    async with db.write() as session:
        values: dict[str, Any]
        if error is None:
            values = {"state": "sent", "sent_at": now, "lease_until": None, "last_error": None,
                      "attempts": batch.attempt}  # fmt: skip
        elif batch.attempt >= MAX_ATTEMPTS:
            values = {"state": "failed", "lease_until": None, "last_error": error,
                      "attempts": batch.attempt}  # fmt: skip
        else:
            retry_at = now + timedelta(seconds=backoff_s(batch.attempt, backoff_base_s))
            values = {"lease_until": retry_at, "last_error": error, "attempts": batch.attempt}
        await session.execute(
            update(NotificationOutbox)
            .where(NotificationOutbox.batch == batch.id, NotificationOutbox.state == "sending")
            .values(**values)
        )
        session.add(
            NotificationDelivery(
                channel_id=batch.channel.id,
                batch=batch.id,
                at=now,
                ok=error is None,
                attempt=batch.attempt,
                events=len(batch.rows),
                summary=summary[:1000],
                error=error,
            )
        )


async def deliveries(db: Database, channel_id: str, limit: int = 100) -> list[NotificationDelivery]:
    async with db.read() as session:
        return list(
            await session.scalars(
                select(NotificationDelivery)
                .where(NotificationDelivery.channel_id == channel_id)
                .order_by(NotificationDelivery.id.desc())
                .limit(limit)
            )
        )


async def backlog(db: Database, channel_id: str) -> dict[str, int]:
    """How many rows of the channel are in each state."""
    async with db.read() as session:
        rows = await session.execute(
            select(NotificationOutbox.state, func.count())
            .where(NotificationOutbox.channel_id == channel_id)
            .group_by(NotificationOutbox.state)
        )
        return {state: count for state, count in rows.all()}
