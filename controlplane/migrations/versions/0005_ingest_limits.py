"""Abuse limits: webhook deliveries (replay and rate limit per stack), per-instance ingest
windows (events and log bytes per minute), and indexes for event/log retention.

Revision ID: 0005_ingest_limits
Revises: 0004_secrets
Create Date: 2026-11-29 14:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_ingest_limits"
down_revision: str | None = "0004_secrets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("stack_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["stack_id"], ["stacks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("stack_id", "key"),
    )
    op.create_index(
        "ix_webhook_deliveries_received_at", "webhook_deliveries", ["received_at"], unique=False
    )
    op.create_table(
        "ingest_windows",
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("log_bytes", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("instance_id"),
    )
    op.create_index("ix_events_received_at", "events", ["received_at"], unique=False)
    op.create_index("ix_log_chunks_received_at", "log_chunks", ["received_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_log_chunks_received_at", table_name="log_chunks")
    op.drop_index("ix_events_received_at", table_name="events")
    op.drop_table("ingest_windows")
    op.drop_index("ix_webhook_deliveries_received_at", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
