"""Notification channels, their outbox, the delivery log and the per-instance marks."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.models.base import Base


class NotificationChannel(Base):
    """Where notifications go: a signed JSON webhook, a Slack-compatible incoming webhook
    or email over SMTP; for one stack (`stack_id`) or for all (NULL)."""

    __tablename__ = "notification_channels"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # webhook | slack | email
    stack_id: Mapped[str | None] = mapped_column(
        ForeignKey("stacks.id", ondelete="CASCADE"), index=True
    )
    events: Mapped[list[Any]] = mapped_column(JSON, default=list)  # empty: every event
    config: Mapped[dict[str, Any]]  # url / smtp host, port, from, to, username, starttls
    secret: Mapped[str | None] = mapped_column(Text)  # webhook HMAC key / SMTP password
    enabled: Mapped[bool]
    rate_per_hour: Mapped[int] = mapped_column(Integer)
    group_window_s: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class NotificationOutbox(Base):
    """One event to notify on one channel. `key` (unique per channel) makes enqueueing
    idempotent; rows claimed together form a batch (one message) whose id is the
    message's idempotency key, resent unchanged after a crash."""

    __tablename__ = "notification_outbox"
    __table_args__ = (
        UniqueConstraint("channel_id", "key", name="uq_outbox_channel_key"),
        Index("ix_outbox_due", "state", "next_attempt_at"),
        Index("ix_outbox_group", "channel_id", "group_key", "state"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    channel_id: Mapped[str] = mapped_column(
        ForeignKey("notification_channels.id", ondelete="CASCADE")
    )
    key: Mapped[str] = mapped_column(String(200))
    event: Mapped[str] = mapped_column(String(40))
    group_key: Mapped[str] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))  # pending | sending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    batch: Mapped[str | None] = mapped_column(String(36), index=True)
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]


class NotificationDelivery(Base):
    """One attempt to send one message (a batch) on a channel: the delivery log."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (Index("ix_deliveries_channel", "channel_id", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    channel_id: Mapped[str] = mapped_column(
        ForeignKey("notification_channels.id", ondelete="CASCADE")
    )
    batch: Mapped[str] = mapped_column(String(36))
    at: Mapped[datetime]
    ok: Mapped[bool]
    attempt: Mapped[int] = mapped_column(Integer)
    events: Mapped[int] = mapped_column(Integer)  # how many outbox rows the message covered
    summary: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)


class NotificationMark(Base):
    """Small durable memory of the notifier: scan cursors (`cursor:events` -> seq) and
    open conditions (`offline:<instance>`, `unhealthy:<instance>:<service>`)."""

    __tablename__ = "notification_marks"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]
