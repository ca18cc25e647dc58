"""Commit statuses for pull-request checks: GitHub's statuses API and GitLab's commit status API.

API base URLs are settings (GitHub Enterprise, self-hosted GitLab); tokens come from settings and
never appear in an error. An unreachable API or a 5xx is a TransientError; a refusal a TargetError.
"""

from __future__ import annotations

import urllib.parse
from typing import ClassVar

import httpx

from controller.errors import TargetError, TransientError
from controller.model import CommitStatus

__all__ = ["CONTEXT", "GitHubStatuses", "GitLabStatuses"]

CONTEXT = "liminal-gitops/plan"


class GitHubStatuses:
    """`POST {api}/repos/{owner}/{repo}/statuses/{sha}`."""

    def __init__(self, token: str, api_url: str = "https://api.github.com", *, timeout: float = 10.0) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def post(self, project: str, sha: str, status: CommitStatus) -> None:
        owner, _, name = project.partition("/")
        url = f"{self.api_url}/repos/{_seg(owner)}/{_seg(name)}/statuses/{_seg(sha)}"
        body = {
            "state": status.state,
            "description": status.description[:140],  # GitHub's limit
            "context": CONTEXT,
        }
        if status.target_url:
            body["target_url"] = status.target_url
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "liminal-gitops",
        }
        _send("GitHub", "POST", url, headers=headers, json=body, timeout=self.timeout)


class GitLabStatuses:
    """`POST {api}/projects/{id}/statuses/{sha}` with `PRIVATE-TOKEN`."""

    _STATES: ClassVar[dict[str, str]] = {
        "pending": "running",
        "success": "success",
        "failure": "failed",
        "error": "failed",
    }

    def __init__(self, token: str, api_url: str = "https://gitlab.com/api/v4", *, timeout: float = 10.0) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def post(self, project: str, sha: str, status: CommitStatus) -> None:
        url = f"{self.api_url}/projects/{_seg(project)}/statuses/{_seg(sha)}"
        params = {"state": self._STATES[status.state], "name": CONTEXT, "description": status.description[:255]}
        if status.target_url:
            params["target_url"] = status.target_url
        headers = {"PRIVATE-TOKEN": self._token, "User-Agent": "liminal-gitops"}
        _send("GitLab", "POST", url, headers=headers, params=params, timeout=self.timeout)


def _seg(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _send(api: str, method: str, url: str, **options: object) -> None:
    try:
        response = httpx.request(method, url, **options)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        host = url.split("/", 3)[2]
        raise TransientError(f"cannot reach the {api} API at {host}: {type(exc).__name__}", 30) from None
    if response.status_code >= 500 or response.status_code == 429:
        raise TransientError(f"the {api} API answered {response.status_code}", 30)
    if response.status_code >= 400:
        raise TargetError(f"{api} status", f"the {api} API answered {response.status_code}: {response.text[:200]}")
