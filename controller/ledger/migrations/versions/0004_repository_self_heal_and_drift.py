"""repositories: self-heal switch, and the drift last observed

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("repositories") as batch:
        batch.add_column(sa.Column("self_heal", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("drift", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("drift_observed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("repositories") as batch:
        batch.drop_column("drift_observed_at")
        batch.drop_column("drift")
        batch.drop_column("self_heal")
