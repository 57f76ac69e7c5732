"""Per-stack automatic agent upgrades (issue 16): a flag on the stack.

Revision ID: 0007_agent_upgrades
Revises: 0006_audit_notify
Create Date: 2026-11-29 14:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_agent_upgrades"
down_revision: str | None = "0006_audit_notify"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("stacks") as batch:
        batch.add_column(
            sa.Column("auto_upgrade", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("stacks") as batch:
        batch.drop_column("auto_upgrade")
