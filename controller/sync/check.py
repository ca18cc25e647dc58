"""Pull-request checks: the preview of a pull request's head, as a commit status verdict.

Nothing is applied and nothing of the head is run. The result is posted as a commit status by
the loop, and kept in the ledger for the API to show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.sync.deps import Deps
from controller.sync.preview import Preview, preview

__all__ = ["CheckResult", "check_pull_request", "check_result"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The check's verdict: `success` (valid; `summary` says what merging would change) or `failure`."""

    state: str
    summary: str
    details: dict[str, Any]


def check_pull_request(deps: Deps, repo: str, remote_ref: str, commit: str) -> CheckResult:
    """Fetch the pull request's head, validate it, and plan it as the sync after merging would."""
    return check_result(preview(repo, deps, head=(remote_ref, commit)))


def check_result(found: Preview) -> CheckResult:
    """A preview as a commit status: its verdict, a one-line summary, and the preview in full."""
    details = found.as_json()
    if not found.valid:
        first = found.problems[0].render()
        return CheckResult("failure", f"{len(found.problems)} problem(s): {first}", details)
    counts = found.plan.counts()
    summary = (
        "valid; merging changes nothing"
        if found.plan.is_noop
        else f"valid; merging would create {counts['create']}, update {counts['update']}, delete {counts['delete']}"
    )
    if found.warnings:
        summary += f"; {len(found.warnings)} warning(s): {found.warnings[0].render()}"
    return CheckResult("success", summary, details)
