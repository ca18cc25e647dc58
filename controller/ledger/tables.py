"""Ledger tables (SQLAlchemy Core). Alembic migrations in `migrations/` create them; keep both in step."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "deliveries",
    "deployed",
    "image_builds",
    "metadata",
    "outcomes",
    "replicas",
    "repositories",
    "runs",
]

metadata = sa.MetaData()

repositories = sa.Table(
    "repositories",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("branch", sa.String(255), nullable=False),
    sa.Column("prune", sa.Boolean, nullable=False, default=True),
    sa.Column("self_heal", sa.Boolean, nullable=False, default=True, server_default=sa.true()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_attempted_commit", sa.String(64)),
    sa.Column("last_applied_commit", sa.String(64)),
    sa.Column("last_run_id", sa.Integer),
    sa.Column("last_error", sa.Text),
    # live state found to differ from the ledger and not (yet) restored: "kind/name", sorted
    sa.Column("drift", sa.JSON),
    sa.Column("drift_observed_at", sa.DateTime(timezone=True)),
    # the newest check (a run, or a poll that found nothing to do and was not kept as a run)
    sa.Column("last_checked_at", sa.DateTime(timezone=True)),
    sa.Column("last_checked_commit", sa.String(64)),
    # when a replica last took this repository's poll or drift check (each is done by one replica)
    sa.Column("poll_claimed_at", sa.DateTime(timezone=True)),
    sa.Column("drift_claimed_at", sa.DateTime(timezone=True)),
)

runs = sa.Table(
    "sync_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("repo_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    sa.Column("trigger", sa.String(40), nullable=False),
    sa.Column("commit", sa.String(64)),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("error", sa.Text),
    sa.Column("summary", sa.JSON),
    sa.Index("ix_sync_runs_repo", "repo_id", "id"),
)

outcomes = sa.Table(
    "resource_outcomes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("sync_runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("code", sa.String(20), nullable=False),
    sa.Column("content_hash", sa.String(64)),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_outcomes_run", "run_id"),
)

deployed = sa.Table(
    "deployed_resources",
    metadata,
    sa.Column("repo_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("kind", sa.String(20), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("commit", sa.String(64), nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

image_builds = sa.Table(
    "image_builds",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("repo_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    sa.Column("image", sa.String(255), nullable=False),
    sa.Column("tag", sa.Text, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("message", sa.Text),
    sa.Column("digest", sa.String(100)),
    sa.Column("seconds", sa.Float),
    sa.Index("ix_image_builds_repo_image", "repo_id", "image", "id"),
)

deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("delivery_id", sa.String(200), nullable=False),
    sa.Column("repo", sa.String(200)),
    sa.Column("ref", sa.Text),
    sa.Column("commit", sa.String(64)),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("processed_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("event", sa.String(80)),
    sa.Column("kind", sa.String(20)),
    sa.Column("pull_request", sa.Integer),
    sa.Column("reason", sa.Text),
    sa.Column("project", sa.String(300)),
    sa.Column("web_url", sa.Text),
    sa.Column("result", sa.JSON),
    # the replica that processes it; a replica that stops beating loses its queued deliveries to another
    sa.Column("claimed_by", sa.String(80)),
    sa.UniqueConstraint("provider", "delivery_id", name="uq_delivery"),
    sa.Index("ix_webhook_deliveries_status", "status", "id"),  # the queued ones
    sa.Index("ix_webhook_deliveries_received", "received_at"),  # retention
)

replicas = sa.Table(
    "replicas",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
)
