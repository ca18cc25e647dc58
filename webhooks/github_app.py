"""GitHub App authentication: only a GitHub App may create check runs.

The App's private key signs a JWT (RS256, valid 9 minutes, `iss` the App's id); the JWT finds
the App's installation on a repository and buys that installation an access token, which is kept
until 5 minutes before it expires. Neither the key, the JWT nor a token reaches an error or a log.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

from controller.errors import ConfigError
from webhooks.forge import ForgeApi, ForgeRefusedError, seg

__all__ = ["GitHubAppTokens", "StaticToken"]

_RENEW_BEFORE = 300.0
"""Seconds before its expiry that an installation token is replaced."""


class StaticToken:
    """One token for every repository (a personal access token, or an installation token that
    something outside renews): commit statuses and comments work, check runs only for an App's."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, project: str) -> str:
        return self._token


class GitHubAppTokens:
    """Installation access tokens of GitHub App `app_id`, per repository (`owner/name`)."""

    def __init__(self, app_id: str, private_key: str, api: ForgeApi, *, installation_id: str | None = None) -> None:
        import jwt  # only serve with an App configured needs it
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            self._key: Any = load_pem_private_key(private_key.encode(), password=None)
        except (ValueError, TypeError):
            raise ConfigError("LIMINAL_GITHUB_APP_PRIVATE_KEY is not a PEM private key without a passphrase") from None
        self._jwt = jwt
        self.app_id = app_id
        self.api = api
        self.installation_id = installation_id
        self._lock = threading.Lock()
        self._installations: dict[str, str] = {}
        self._tokens: dict[str, tuple[str, float]] = {}

    def __call__(self, project: str) -> str:
        """A live installation token for the installation on `project`."""
        installation = self.installation_id or self._installation(project)
        with self._lock:
            kept = self._tokens.get(installation)
        if kept is not None and kept[1] - _RENEW_BEFORE > time.time():
            return kept[0]
        made = self._call("POST", f"/app/installations/{seg(installation)}/access_tokens")
        expires = dt.datetime.fromisoformat(str(made["expires_at"]).replace("Z", "+00:00")).timestamp()
        with self._lock:
            self._tokens[installation] = (str(made["token"]), expires)
        return str(made["token"])

    def _installation(self, project: str) -> str:
        with self._lock:
            known = self._installations.get(project)
        if known is not None:
            return known
        owner, _, name = project.partition("/")
        try:
            found = self._call("GET", f"/repos/{seg(owner)}/{seg(name)}/installation")
        except ForgeRefusedError as exc:
            if exc.status == 404:
                raise ForgeRefusedError(
                    "GitHub", 404, f"the GitHub App {self.app_id} is not installed on {project}"
                ) from None
            raise
        with self._lock:
            if len(self._installations) > 10_000:
                self._installations.clear()
            self._installations[project] = str(found["id"])
        return str(found["id"])

    def _call(self, method: str, path: str) -> Any:
        now = int(time.time())
        # 60 s in the past against clock drift; GitHub takes at most 10 minutes
        token = self._jwt.encode({"iat": now - 60, "exp": now + 540, "iss": self.app_id}, self._key, algorithm="RS256")
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "liminal-gitops",
        }
        return self.api.call(method, path, headers=headers)
