"""SQLAlchemy models: the control plane's whole storage, created only by Alembic migrations.

Secrets (admin tokens, install tokens, agent credentials) are stored as SHA-256 hex digests
only. A stack row carries its current desired-state document so the agents' hot path reads
one row; `stack_versions` keeps every document ever published (history and rollback).
Foreign keys cascade so deleting a stack removes its versions, tokens, instances and events.
"""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every engine (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, millisecond precision (what the API returns)."""
    if value is None:
        return None
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}


class AdminToken(Base):
    __tablename__ = "admin_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Stack(Base):
    __tablename__ = "stacks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    version: Mapped[int] = mapped_column(Integer)
    # hash of the content alone (no id/version): equal content means no new version
    content_hash: Mapped[str] = mapped_column(String(64))
    # hash of the current document: the agents' ETag
    doc_hash: Mapped[str] = mapped_column(String(64))
    document: Mapped[dict[str, Any]]
    webhook_secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # the stack's HMAC key for secret digests, sealed under the key file (controlplane/secrets.py)
    secret_key: Mapped[str | None] = mapped_column(Text, default=None)
    # roll the agents to the wheelhouse's Berth version, one server at a time (issue 16)
    auto_upgrade: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class StackVersion(Base):
    __tablename__ = "stack_versions"

    stack_id: Mapped[str] = mapped_column(
        ForeignKey("stacks.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    doc_hash: Mapped[str] = mapped_column(String(64))
    document: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(40))  # create, update, refresh, rollback, webhook


class InstallToken(Base):
    __tablename__ = "install_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    stack_id: Mapped[str] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    instance_id: Mapped[str | None] = mapped_column(String(36))


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    stack_id: Mapped[str] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    hostname: Mapped[str] = mapped_column(String(255))
    credential_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_seen: Mapped[datetime | None]
    agent_version: Mapped[str | None] = mapped_column(String(64))
    applied_version: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str | None] = mapped_column(String(64))
    services: Mapped[list[Any]] = mapped_column(JSON, default=list)
    security: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # the rest of the latest heartbeat, kept as sent
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("instance_id", "event_id", name="uq_events_instance_event"),
        Index("ix_events_stack_seq", "stack_id", "seq"),
    )

    # arrival order: events of one instance are listed in the order they were ingested
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    event_id: Mapped[str] = mapped_column(String(64))
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    stack_id: Mapped[str] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    service: Mapped[str | None] = mapped_column(String(63))
    message: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]
    received_at: Mapped[datetime]
    extra: Mapped[dict[str, Any]]


# dashboard ----------------------------------------------------------------------------


class User(Base):
    """A person who logs in to the dashboard; the password is stored as an scrypt hash."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]


class UserSession(Base):
    """A logged-in browser: the cookie's SHA-256 digest, never the cookie itself."""

    __tablename__ = "user_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class LoginFailure(Base):
    """Failed dashboard logins for one key (`user:<name>` or `addr:<ip>`), shared by every
    control-plane process; times are wall-clock seconds."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[float] = mapped_column(Float)
    blocked_until: Mapped[float] = mapped_column(Float)


class LogChunk(Base):
    """A piece of a service's build or run output shipped by its agent (bounded tail)."""

    __tablename__ = "log_chunks"
    __table_args__ = (Index("ix_log_chunks_tail", "instance_id", "service", "stream", "seq"),)

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    stack_id: Mapped[str] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"))
    service: Mapped[str] = mapped_column(String(63))
    stream: Mapped[str] = mapped_column(String(8))  # run | build
    commit: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime]


# abuse limits (issue 15) ---------------------------------------------------------------


class WebhookDelivery(Base):
    """A git webhook delivery already acted on, by its delivery id's digest (``id:...``;
    ``anon:...`` when it had none). Rows of the last minute are the stack's webhook rate."""

    __tablename__ = "webhook_deliveries"

    stack_id: Mapped[str] = mapped_column(
        ForeignKey("stacks.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    received_at: Mapped[float] = mapped_column(Float, index=True)  # wall-clock seconds


class IngestWindow(Base):
    """What one instance posted in its current one-minute window (events, log bytes),
    shared by every control-plane process."""

    __tablename__ = "ingest_windows"

    instance_id: Mapped[str] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True
    )
    window_start: Mapped[float] = mapped_column(Float)
    events: Mapped[int] = mapped_column(Integer)
    log_bytes: Mapped[int] = mapped_column(Integer)


# retention (`controlplane/retention.py`) deletes by arrival time
Index("ix_events_received_at", Event.received_at)
Index("ix_log_chunks_received_at", LogChunk.received_at)
# audit trail --------------------------------------------------------------------------


class AuditRecord(Base):
    """One change made by a person or token (append-only: no API deletes a row; only the
    retention sweep in `controlplane.audit` removes rows older than the configured age).
    No foreign keys: a record outlives the stack, token or user it names."""

    __tablename__ = "audit_records"
    __table_args__ = (
        Index("ix_audit_at", "at"),
        Index("ix_audit_stack", "stack_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(64), index=True)
    actor_kind: Mapped[str] = mapped_column(String(16))  # token, user, webhook, agent, cli
    actor: Mapped[str] = mapped_column(String(255), index=True)
    client_addr: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    stack_id: Mapped[str | None] = mapped_column(String(36))
    stack_name: Mapped[str | None] = mapped_column(String(100))
    version_from: Mapped[int | None] = mapped_column(Integer)
    version_to: Mapped[int | None] = mapped_column(Integer)
    target: Mapped[str | None] = mapped_column(String(255))  # token/instance/user/channel id
    detail: Mapped[dict[str, Any]]


# notifications ------------------------------------------------------------------------


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


# metrics (issue 19, controlplane/metrics/) -------------------------------------------


class MetricPoint(Base):
    """One service's (or, with service "", one server's) figures over one interval of
    one instance. `res` is the resolution: 0 for raw points as agents send them, 60 and
    3600 for rollups; `t` is the interval's start (unix seconds, a multiple of `res`)."""

    __tablename__ = "metric_points"
    __table_args__ = (Index("ix_metric_points_res_t", "res", "t"),)

    stack_id: Mapped[str] = mapped_column(
        ForeignKey("stacks.id", ondelete="CASCADE"), primary_key=True
    )
    service: Mapped[str] = mapped_column(String(63), primary_key=True)
    res: Mapped[int] = mapped_column(Integer, primary_key=True)
    t: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    instance_id: Mapped[str] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True
    )
    span: Mapped[float] = mapped_column(Float)  # seconds the counters cover
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0)
    lat: Mapped[list[int] | None] = mapped_column(JSON)  # total-latency histogram counts
    lat_sum: Mapped[float] = mapped_column(Float, default=0.0)
    cpu_s: Mapped[float | None] = mapped_column(Float)
    mem: Mapped[int | None] = mapped_column(BigInteger)
    host: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # server points: disk, load...
