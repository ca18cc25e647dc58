"""image builds: registry digest and duration

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("image_builds") as batch:
        batch.add_column(sa.Column("digest", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("image_builds") as batch:
        batch.drop_column("seconds")
        batch.drop_column("digest")
