"""replicas and claimed work (several `liminal serve` on one PostgreSQL), and indexes for retention

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(length=80), primary_key=True),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(length=80), nullable=True))
        batch.create_index("ix_webhook_deliveries_received", ["received_at"])
    with op.batch_alter_table("repositories") as batch:
        batch.add_column(sa.Column("poll_claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("drift_claimed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("image_builds") as batch:
        batch.create_index("ix_image_builds_repo_image", ["repo_id", "image", "id"])


def downgrade() -> None:
    with op.batch_alter_table("image_builds") as batch:
        batch.drop_index("ix_image_builds_repo_image")
    with op.batch_alter_table("repositories") as batch:
        batch.drop_column("drift_claimed_at")
        batch.drop_column("poll_claimed_at")
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_index("ix_webhook_deliveries_received")
        batch.drop_column("claimed_by")
    op.drop_table("replicas")
