"""GitHub: a pull request's check as a check run (the Checks API: problems on their lines) and the
plan as one pull-request comment, edited in place on every push.

Only a GitHub App can create check runs; with a token that cannot (a personal access token),
the check falls back to a commit status, says so in the log once an hour per repository, and
keeps the comment (which links every problem to its line).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import structlog

from controller.model import CheckReport, Conclusion, ForgeText, Problem, PullRequest
from webhooks.forge import CONTEXT, ForgeApi, ForgeRefusedError, PlanComments, marker, seg

__all__ = ["ANNOTATIONS_PER_REQUEST", "GitHubChecks"]

log = structlog.get_logger("liminal.github")

ANNOTATIONS_PER_REQUEST = 50
"""The Checks API takes at most 50 annotations per request; more are appended by further updates."""


class GitHubChecks:
    """Check runs and the plan comment through GitHub's REST API (`api_url` for GitHub Enterprise)."""

    text: ClassVar[ForgeText] = ForgeText(summary_chars=65_535, comment_chars=65_536 - 64, blob="blob")
    """The check run's summary and an issue comment's body take 65,535 and 65,536 characters;
    the comment's marker line takes the 64 held back."""

    _STATES: ClassVar[dict[Conclusion, str]] = {
        Conclusion.SUCCESS: "success",
        Conclusion.NEUTRAL: "success",
        Conclusion.FAILURE: "failure",
        Conclusion.CANCELLED: "error",
    }

    def __init__(
        self,
        token: Callable[[str], str],
        api: ForgeApi,
        *,
        marker_key: bytes,
        retry_checks_after: float = 3600.0,
    ) -> None:
        self._token = token
        """The token for a repository (`owner/name`): an App's installation token, or a static one."""
        self.api = api
        self._marker_key = marker_key
        self.retry_checks_after = retry_checks_after
        self._lock = threading.Lock()
        self._statuses_until: dict[str, float] = {}
        """Projects whose token was refused check runs, until when statuses are used instead."""
        self._comments = PlanComments()

    # ---- the check ---------------------------------------------------------------------------------

    def start(self, pr: PullRequest) -> str:
        """An `in_progress` check run on the head (the one already there after a restart is
        reused), or a `pending` commit status when the token cannot create check runs."""
        if not self._uses_statuses(pr.project):
            body: dict[str, Any] = {
                "status": "in_progress",
                "started_at": _now(),
                "output": {"title": "Planning", "summary": "Planning against what is deployed."},
            }
            if pr.plan_url:
                body["details_url"] = pr.plan_url
            try:
                return f"check-run:{self._run(pr, self._existing_run(pr), body)}"
            except ForgeRefusedError as exc:
                if exc.status != 403:
                    raise
                self._refused(pr.project, str(exc))
        self._status(pr, "pending", "planning against what is deployed")
        return "status"

    def finish(self, pr: PullRequest, report: CheckReport, started: str) -> None:
        """Complete the check run with the report (annotations in batches of 50), or post the
        status when check runs are refused."""
        if started.startswith("check-run:"):
            self._complete(pr, report, int(started.split(":", 1)[1]))
        elif started == "" and not self._uses_statuses(pr.project):
            self._complete(pr, report, None)  # the start was not shown: one completed run
        else:
            self._status(pr, self._STATES[report.conclusion], report.title)

    def _complete(self, pr: PullRequest, report: CheckReport, run: int | None) -> None:
        annotations = [_annotation(p) for p in report.annotations]
        per = ANNOTATIONS_PER_REQUEST
        batches = [annotations[i : i + per] for i in range(0, len(annotations), per)] or [[]]
        output = {"title": report.title[:255], "summary": report.summary}
        first: dict[str, Any] = {
            "status": "completed",
            "conclusion": report.conclusion.value,
            "completed_at": _now(),
            "output": {**output, "annotations": batches[0]},
        }
        if pr.plan_url:
            first["details_url"] = pr.plan_url
        try:
            run = self._run(pr, run, first)
        except ForgeRefusedError as exc:
            if exc.status != 403:
                raise
            self._refused(pr.project, str(exc))
            self._status(pr, self._STATES[report.conclusion], report.title)
            return
        for batch in batches[1:]:
            self._api(pr, "PATCH", f"/check-runs/{run}", {"output": {**output, "annotations": batch}})

    def _run(self, pr: PullRequest, run: int | None, body: dict[str, Any]) -> int:
        """Create a check run on the head with `body`, or update check run `run`; its id."""
        if run is None:
            made = self._api(pr, "POST", "/check-runs", {"name": CONTEXT, "head_sha": pr.commit, **body})
            return int(made["id"])
        self._api(pr, "PATCH", f"/check-runs/{run}", body)
        return run

    def _existing_run(self, pr: PullRequest) -> int | None:
        found = self._api(
            pr,
            "GET",
            f"/commits/{seg(pr.commit)}/check-runs",
            params={"check_name": CONTEXT, "filter": "latest", "per_page": "1"},
        )
        runs = found.get("check_runs") if isinstance(found, dict) else None
        return int(runs[0]["id"]) if runs else None

    def _status(self, pr: PullRequest, state: str, description: str) -> None:
        body = {"state": state, "description": description[:140], "context": CONTEXT}  # GitHub's limit: 140
        if pr.plan_url:
            body["target_url"] = pr.plan_url
        self._api(pr, "POST", f"/statuses/{seg(pr.commit)}", body)

    def _uses_statuses(self, project: str) -> bool:
        with self._lock:
            return self._statuses_until.get(project, 0.0) > time.monotonic()

    def _refused(self, project: str, why: str) -> None:
        with self._lock:
            self._statuses_until[project] = time.monotonic() + self.retry_checks_after
        log.warning(
            "github.checks_refused",
            project=project,
            error=why,
            fallback="commit statuses (the Checks API takes only a GitHub App's token)",
            retry_in=self.retry_checks_after,
        )

    # ---- the plan comment -------------------------------------------------------------------------

    def comment(self, pr: PullRequest, text: str) -> None:
        """Edit the pull request's plan comment (an issue comment), or create it when there is none yet."""
        first_line = marker(self._marker_key, pr.project, pr.number)
        body = {"body": f"{first_line}\n{text}"}
        self._comments.write(
            (pr.project, pr.number),
            first_line,
            page=lambda n: self._api(
                pr, "GET", f"/issues/{pr.number}/comments", params={"per_page": "100", "page": str(n)}
            ),
            edit=lambda known: self._api(pr, "PATCH", f"/issues/comments/{known}", body),
            create=lambda: int(self._api(pr, "POST", f"/issues/{pr.number}/comments", body)["id"]),
        )

    # ---- HTTP ---------------------------------------------------------------------------------------

    def _repo(self, pr: PullRequest) -> str:
        owner, _, name = pr.project.partition("/")
        return f"/repos/{seg(owner)}/{seg(name)}"

    def _api(
        self, pr: PullRequest, method: str, path: str, body: Any = None, *, params: dict[str, str] | None = None
    ) -> Any:
        headers = {
            "Authorization": f"Bearer {self._token(pr.project)}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "liminal-gitops",
        }
        return self.api.call(method, self._repo(pr) + path, headers=headers, body=body, params=params)


def _annotation(problem: Problem) -> dict[str, Any]:
    line = max(1, problem.line)
    return {
        "path": problem.file,
        "start_line": line,
        "end_line": line,
        "start_column": max(1, problem.col),
        "end_column": max(1, problem.col),
        "annotation_level": "failure" if problem.is_error else "warning",
        "title": f"{problem.rule}: {problem.path}"[:255],
        "message": problem.message[:4000],
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
