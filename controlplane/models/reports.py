"""What agents report beyond the heartbeat: events, log chunks, ingest windows, metrics."""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.models.base import Base


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


class MetricPoint(Base):
    """One service's (or, with service "", one server's) figures over one interval of
    one instance. `res` is the resolution: 0 for raw points as agents send them, 60 and
    3600 for rollups; `t` is the interval's start (unix seconds, a multiple of `res`)."""

    __tablename__ = "metric_points"
    __table_args__ = (
        Index("ix_metric_points_res_t", "res", "t"),
        # the few points with builds (the service page's list, /metrics' latest build)
        Index(
            "ix_metric_points_built",
            "t",
            sqlite_where=text("builds > 0"),
            postgresql_where=text("builds > 0"),
        ),
    )

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
    builds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # finished
    build_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")  # summed
    build_rss: Mapped[int | None] = mapped_column(BigInteger)  # largest peak of those builds
    restarts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
