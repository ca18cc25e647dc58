"""JSON views of ledger records, the same in the CLI's `--format json` and the REST API."""

from __future__ import annotations

from typing import Any

from controller.model import SyncRun

__all__ = ["run_json"]


def run_json(r: SyncRun) -> dict[str, Any]:
    """A sync run with its outcomes (datetimes left to the caller's encoder)."""
    return {
        "id": r.id,
        "repo": r.repo,
        "trigger": r.trigger,
        "commit": r.commit,
        "status": str(r.status),
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "error": r.error,
        "summary": dict(r.summary),
        "outcomes": [
            {
                "kind": str(o.key.kind),
                "name": o.key.name,
                "action": str(o.action),
                "code": str(o.code),
                "message": o.message,
            }
            for o in r.outcomes
        ],
    }
