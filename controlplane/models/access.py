"""Who may call in: admin tokens, one-time install tokens, and instances (registered
servers, each with its agent's credential digest and latest heartbeat)."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.models.base import Base


class AdminToken(Base):
    __tablename__ = "admin_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


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
    """A registered server: one agent, enrolled with an install token, and its latest
    heartbeat. In the control plane (API, dashboard, tables) "instance" always means this,
    never a service's process on that server."""

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
