"""GitLab: a merge request's check as a commit status, and the plan as one merge-request note
(problems linked to their lines, `/-/blob/<sha>/<path>#L<line>`), edited in place on every push."""

from __future__ import annotations

from typing import Any, ClassVar

from controller.model import CheckReport, Conclusion, ForgeText, PullRequest
from webhooks.forge import CONTEXT, ForgeApi, PlanComments, marker, seg

__all__ = ["GitLabChecks"]


class GitLabChecks:
    """Commit statuses and the plan note through GitLab's REST API v4 (`api_url` for self-hosted)."""

    text: ClassVar[ForgeText] = ForgeText(summary_chars=65_535, comment_chars=1_000_000 - 64, blob="-/blob")
    """A note's body takes 1,000,000 characters; the note's marker line takes the 64 held back."""

    _STATES: ClassVar[dict[Conclusion, str]] = {
        Conclusion.SUCCESS: "success",
        Conclusion.NEUTRAL: "success",
        Conclusion.FAILURE: "failed",
        Conclusion.CANCELLED: "canceled",
    }

    def __init__(self, token: str, api: ForgeApi, *, marker_key: bytes) -> None:
        self.api = api
        self._token = token
        self._marker_key = marker_key
        self._notes = PlanComments()

    def start(self, pr: PullRequest) -> str:
        """A `running` commit status on the head."""
        self._status(pr, "running", "planning against what is deployed")
        return "status"

    def finish(self, pr: PullRequest, report: CheckReport, started: str) -> None:
        """The commit status with the verdict (GitLab has no neutral: warnings are `success`)."""
        self._status(pr, self._STATES[report.conclusion], report.title)

    def _status(self, pr: PullRequest, state: str, description: str) -> None:
        params = {"state": state, "name": CONTEXT, "description": description[:255]}
        if pr.plan_url:
            params["target_url"] = pr.plan_url
        self._api("POST", f"/projects/{seg(pr.project)}/statuses/{seg(pr.commit)}", params=params)

    def comment(self, pr: PullRequest, text: str) -> None:
        """Edit the merge request's plan note, or create it when there is none yet."""
        first_line = marker(self._marker_key, pr.project, pr.number)
        body = {"body": f"{first_line}\n{text}"}
        notes = f"/projects/{seg(pr.project)}/merge_requests/{pr.number}/notes"
        self._notes.write(
            (pr.project, pr.number),
            first_line,
            page=lambda n: self._api(
                "GET", notes, params={"sort": "asc", "order_by": "created_at", "per_page": "100", "page": str(n)}
            ),
            edit=lambda known: self._api("PUT", f"{notes}/{known}", body),
            create=lambda: int(self._api("POST", notes, body)["id"]),
        )

    def _api(self, method: str, path: str, body: Any = None, *, params: dict[str, str] | None = None) -> Any:
        headers = {"PRIVATE-TOKEN": self._token, "User-Agent": "liminal-gitops"}
        return self.api.call(method, path, headers=headers, body=body, params=params)
