"""Metrics: raw points from agents and their one-minute and hourly rollups (issue 19).

Revision ID: 0008_metrics
Revises: 0007_agent_upgrades
Create Date: 2026-11-29 15:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_metrics"
down_revision: str | None = "0007_agent_upgrades"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metric_points",
        sa.Column("stack_id", sa.String(length=36), nullable=False),
        sa.Column("service", sa.String(length=63), nullable=False),
        sa.Column("res", sa.Integer(), nullable=False),
        sa.Column("t", sa.BigInteger(), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("span", sa.Float(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("lat", sa.JSON(), nullable=True),
        sa.Column("lat_sum", sa.Float(), nullable=False),
        sa.Column("cpu_s", sa.Float(), nullable=True),
        sa.Column("mem", sa.BigInteger(), nullable=True),
        sa.Column("host", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["stack_id"], ["stacks.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("stack_id", "service", "res", "t", "instance_id"),
    )
    op.create_index("ix_metric_points_res_t", "metric_points", ["res", "t"])


def downgrade() -> None:
    op.drop_index("ix_metric_points_res_t", table_name="metric_points")
    op.drop_table("metric_points")
