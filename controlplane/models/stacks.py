"""Stacks, every published version of their document, and git webhook deliveries seen."""

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.models.base import Base


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


class WebhookDelivery(Base):
    """A git webhook delivery already acted on, by its delivery id's digest (``id:...``;
    ``anon:...`` when it had none). Rows of the last minute are the stack's webhook rate."""

    __tablename__ = "webhook_deliveries"

    stack_id: Mapped[str] = mapped_column(
        ForeignKey("stacks.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    received_at: Mapped[float] = mapped_column(Float, index=True)  # wall-clock seconds
