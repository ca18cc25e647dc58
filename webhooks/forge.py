"""HTTP to a forge's REST API (GitHub, GitLab) for pull-request checks, and what both share.

API base URLs are settings (GitHub Enterprise, self-hosted GitLab); tokens come from settings
and never appear in an error or a log line. An unreachable API, a 5xx or a 429 is a
TransientError (a read or an edit is tried once more first); any other refusal a ForgeRefusedError
carrying the HTTP status.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import httpx

from controller.errors import TargetError, TransientError

__all__ = ["CONTEXT", "ForgeApi", "ForgeRefusedError", "PlanComments", "marker", "seg"]

CONTEXT = "liminal-gitops/plan"
"""The check's name: the check run's, the commit status's context, and the comment's heading."""


class ForgeRefusedError(TargetError):
    """The forge's API refused a request (4xx other than 429)."""

    def __init__(self, api: str, status: int, message: str) -> None:
        super().__init__(f"{api} API", f"answered {status}: {message}")
        self.status = status


def seg(text: str) -> str:
    """One path segment of an API URL."""
    return urllib.parse.quote(text, safe="")


def marker(key: bytes, project: str, number: int) -> str:
    """The hidden first line of the plan comment of one pull request. It holds an HMAC under a
    secret of the controller's, so no one else can write a comment that the controller would take
    for its own before it posts one (and the oldest comment with the marker is the one edited)."""
    tag = hmac.new(key, f"{project}#{number}".encode(), hashlib.sha256).hexdigest()[:24]
    return f"<!-- {CONTEXT} {tag} -->"


class PlanComments:
    """Where each pull request's one plan comment (GitHub) or note (GitLab) is: its id remembered
    for recent pull requests, else found among the comments, oldest first, by its marker."""

    PAGES = 20
    """Pages of 100 comments searched (a busy pull request has fewer)."""

    def __init__(self, remembered: int = 10_000) -> None:
        self._ids: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._lock = threading.Lock()
        self.remembered = remembered

    def write(
        self,
        key: tuple[str, int],
        first_line: str,
        page: Callable[[int], Any],
        edit: Callable[[int], None],
        create: Callable[[], int],
    ) -> None:
        """Edit the comment starting with `first_line` (`page(n)` lists the n-th 100 comments),
        or `create` it when there is none, or when the one known was deleted."""
        with self._lock:
            known = self._ids.get(key)
        if known is None:
            known = self._find(first_line, page)
        if known is not None:
            try:
                edit(known)
                self._remember(key, known)
                return
            except ForgeRefusedError as exc:
                if exc.status != 404:
                    raise
        self._remember(key, create())

    def _find(self, first_line: str, page: Callable[[int], Any]) -> int | None:
        for number in range(1, self.PAGES + 1):
            found = page(number)
            if not isinstance(found, list):
                return None
            for comment in found:  # oldest first: a later copy of the marker is never the one edited
                if isinstance(comment, dict) and str(comment.get("body") or "").startswith(first_line):
                    return int(comment["id"])
            if len(found) < 100:
                return None
        return None

    def _remember(self, key: tuple[str, int], comment: int) -> None:
        with self._lock:
            self._ids[key] = comment
            self._ids.move_to_end(key)
            while len(self._ids) > self.remembered:
                self._ids.popitem(last=False)


class ForgeApi:
    """One forge's REST API: its base URL and a timeout per request. After it failed to answer
    (unreachable, 5xx, 429) it is not called for `pause` seconds: a forge that is down costs a
    check no time, so checks never hold the reconcile workers waiting for it."""

    def __init__(self, name: str, base_url: str, *, timeout: float = 10.0, pause: float = 30.0) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.pause = pause
        self._down_until = 0.0
        self._lock = threading.Lock()

    def call(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON answer (None when empty). GET, PATCH and
        PUT are tried once more after a transient failure; POST is not (it could create twice)."""
        with self._lock:
            wait = self._down_until - time.monotonic()
        if wait > 0:
            raise TransientError(f"the {self.name} API failed to answer; not called again for {wait:.0f} s", wait)
        tries = 2 if method in ("GET", "PATCH", "PUT") else 1
        for attempt in range(tries):
            try:
                return _once(
                    self.name,
                    method,
                    self.base_url + path,
                    headers=headers,
                    timeout=self.timeout,
                    json=body,
                    params=params,
                )
            except TransientError:
                if attempt + 1 < tries:
                    time.sleep(1.0)
                    continue
                with self._lock:
                    self._down_until = time.monotonic() + self.pause
                raise
        raise AssertionError("unreachable")


def _once(
    api: str,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    timeout: float,
    json: Any,
    params: dict[str, str] | None,
) -> Any:
    try:
        response = httpx.request(method, url, headers=headers, json=json, params=params, timeout=timeout)
    except httpx.HTTPError as exc:
        host = url.split("/", 3)[2]
        raise TransientError(f"cannot reach the {api} API at {host}: {type(exc).__name__}", 30) from None
    if response.status_code >= 500 or response.status_code == 429:
        raise TransientError(f"the {api} API answered {response.status_code}", 30)
    if response.status_code >= 400:
        raise ForgeRefusedError(api, response.status_code, _message(response))
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise TransientError(f"the {api} API answered {response.status_code} with no JSON", 30) from None


def _message(response: httpx.Response) -> str:
    try:
        found = response.json().get("message")
    except (ValueError, AttributeError):
        found = None
    return str(found or response.text)[:200]
