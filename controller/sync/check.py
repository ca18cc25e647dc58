"""Pull-request checks: validate and plan a pull request's head against what is deployed.

Pure apart from the git fetch: nothing is applied. The result is posted as a commit status by
the loop, and kept in the ledger for the API to show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.errors import InputError
from controller.sync.plan import plan
from controller.sync.reconcile import Deps, desired_for

__all__ = ["CheckResult", "check_pull_request"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The check's verdict: `success` (valid; `summary` says what merging would change) or `failure`."""

    state: str
    summary: str
    details: dict[str, Any]


def check_pull_request(deps: Deps, repo: str, remote_ref: str, commit: str) -> CheckResult:
    """Fetch the pull request's head, validate it, and plan it against the repository's deployed state."""
    ref = deps.ledger.repo(repo)
    snapshot = deps.source.fetch_head(ref, remote_ref, commit)
    try:
        desired = desired_for(snapshot, deps)
    except InputError as exc:
        first = exc.problems[0].render()
        return CheckResult(
            "failure",
            f"{len(exc.problems)} problem(s): {first}",
            {
                "commit": commit,
                "valid": False,
                "problems": [p.as_json() for p in exc.problems[:100]],
                "warnings": [w.as_json() for w in exc.warnings[:100]],
            },
        )
    the_plan = plan(desired, deps.ledger.deployed_state(repo), prune=ref.prune)
    counts = the_plan.counts()
    summary = (
        "valid; merging changes nothing"
        if the_plan.is_noop
        else (f"valid; merging would create {counts['create']}, update {counts['update']}, delete {counts['delete']}")
    )
    if desired.warnings:
        summary += f"; {len(desired.warnings)} warning(s): {desired.warnings[0].render()}"
    changes = [
        {"kind": str(c.key.kind), "name": c.key.name, "action": str(c.action), "diff": c.diff}
        for c in the_plan.changes
        if c.action.changes_something
    ]
    warnings = [w.as_json() for w in desired.warnings[:100]]
    return CheckResult(
        "success",
        summary,
        {"commit": commit, "valid": True, "plan": counts, "changes": changes, "warnings": warnings},
    )
