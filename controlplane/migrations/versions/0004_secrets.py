"""Secret env values: each stack's HMAC key for their digests, sealed under the key file.

The sealed values themselves live in the documents (`controlplane/secrets.py`).

Revision ID: 0004_secrets
Revises: 0003
Create Date: 2026-11-29 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_secrets"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("stacks") as batch:
        batch.add_column(sa.Column("secret_key", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stacks") as batch:
        batch.drop_column("secret_key")
