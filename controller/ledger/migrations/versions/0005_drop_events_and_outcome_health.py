"""drop the never-written events table and the outcomes' health column (always `unknown`)

Health is reported live by the serving targets (`liminal status`), not stored per outcome.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("events")
    with op.batch_alter_table("resource_outcomes") as batch:
        batch.drop_column("health")


def downgrade() -> None:
    with op.batch_alter_table("resource_outcomes") as batch:
        batch.add_column(sa.Column("health", sa.String(length=20), nullable=False, server_default="unknown"))
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(length=80), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["repo_id"], ["repositories.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["sync_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
