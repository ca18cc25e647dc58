"""What a webhook delivery asks of the controller, whichever provider sent it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.errors import LiminalError

__all__ = ["WebhookError", "WebhookEvent", "json_object", "same_repository"]


class WebhookError(LiminalError):
    """A delivery refused, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A verified delivery: `kind` is `push`, `pull_request`, `ping` or `other` (with `reason`)."""

    provider: str
    delivery_id: str
    event: str
    kind: str
    urls: tuple[str, ...] = ()
    ref: str | None = None
    commit: str | None = None
    pull_request: int | None = None
    reason: str | None = None
    project: str | None = None


_SCP = re.compile(r"^(?:[^@/]+@)?([^:/]+):(?!//)(.+)$")


def _normal(url: str) -> str:
    """`https://user@Host/a/b.git`, `ssh://git@host/a/b`, `git@host:a/b.git` -> `host/a/b`."""
    text = url.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
        text = text.split("@", 1)[-1] if "@" in text.split("/", 1)[0] else text
    elif (match := _SCP.match(text)) is not None:
        text = f"{match.group(1)}/{match.group(2)}"
    host, _, path = text.partition("/")
    return f"{host.lower().split(':')[0] if path else host.lower()}/{path.rstrip('/').removesuffix('.git')}"


def same_repository(tracked: str, urls: tuple[str, ...]) -> bool:
    """True when a tracked URL names the repository a payload describes (scheme, user, port and
    `.git` aside, host case-insensitive)."""
    mine = _normal(tracked)
    return any(_normal(u) == mine for u in urls if u)


def json_object(body: bytes) -> Mapping[str, Any]:
    """A delivery's body as a JSON object; WebhookError 400 otherwise."""
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise WebhookError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise WebhookError(400, "the body is not a JSON object")
    return payload
