"""Metrics: builds finished in each interval, their summed wall time and largest peak
resident memory, and the service's restarts (issue 19), with a partial index over the
few points that have builds.

Revision ID: 0009_build_metrics
Revises: 0008_metrics
Create Date: 2026-11-29 17:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_build_metrics"
down_revision: str | None = "0008_metrics"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("metric_points") as batch:
        batch.add_column(sa.Column("builds", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("build_s", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("build_rss", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("restarts", sa.Integer(), nullable=False, server_default="0"))
    op.create_index(
        "ix_metric_points_built",
        "metric_points",
        ["t"],
        sqlite_where=sa.text("builds > 0"),
        postgresql_where=sa.text("builds > 0"),
    )


def downgrade() -> None:
    op.drop_index("ix_metric_points_built", table_name="metric_points")
    with op.batch_alter_table("metric_points") as batch:
        batch.drop_column("restarts")
        batch.drop_column("build_rss")
        batch.drop_column("build_s")
        batch.drop_column("builds")
