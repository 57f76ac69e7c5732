"""The append-only audit trail."""

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.models.base import Base


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
