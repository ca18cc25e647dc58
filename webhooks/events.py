"""What a webhook delivery asks of the controller, whichever provider sent it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.errors import LiminalError
from controller.model import DeliveryKind

__all__ = [
    "MAX_FIELD",
    "WebhookError",
    "WebhookEvent",
    "check_header",
    "commit_field",
    "int_field",
    "json_object",
    "normal_url",
    "object_field",
    "text_field",
    "web_field",
]

MAX_FIELD = 1024
"""Characters a payload's text field may hold (a ref, a URL, a project name); more is refused (400)."""

_HEADER = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:-]{0,127}")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_WEB = re.compile(r"https?://[A-Za-z0-9.:-]+(?:/[A-Za-z0-9._~%!$&'*+,;=:@/-]*)?")


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
    kind: DeliveryKind
    urls: tuple[str, ...] = ()
    ref: str | None = None
    commit: str | None = None
    pull_request: int | None = None
    reason: str | None = None
    project: str | None = None
    web_url: str | None = None
    """The repository's page (GitHub `html_url`, GitLab `web_url`): links to lines in a check."""
    base: str | None = None
    """A pull request's target branch: the tracked repository following it is the one checked."""


_SCP = re.compile(r"^(?:[^@/]+@)?([^:/]+):(?!//)(.+)$")


def normal_url(url: str) -> str:
    """`https://user@Host/a/b.git`, `ssh://git@host/a/b`, `git@host:a/b.git` -> `host/a/b`."""
    text = url.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
        text = text.split("@", 1)[-1] if "@" in text.split("/", 1)[0] else text
    elif (match := _SCP.match(text)) is not None:
        text = f"{match.group(1)}/{match.group(2)}"
    host, _, path = text.partition("/")
    return f"{host.lower().split(':')[0] if path else host.lower()}/{path.rstrip('/').removesuffix('.git')}"


def json_object(body: bytes) -> Mapping[str, Any]:
    """A delivery's body as a JSON object; WebhookError 400 otherwise (nesting too deep included)."""
    try:
        payload = json.loads(body)
    except RecursionError:
        raise WebhookError(400, "the body is nested too deeply") from None
    except ValueError as exc:
        raise WebhookError(400, f"the body is not JSON: {str(exc)[:200]}") from None
    if not isinstance(payload, dict):
        raise WebhookError(400, "the body is not a JSON object")
    return payload


def check_header(name: str, value: str | None) -> str:
    """A delivery id or event name: 1-128 letters, digits, spaces and `._:-`, starting with a
    letter or digit (GitHub's GUIDs, GitLab's UUIDs and event names); WebhookError 400 otherwise,
    so no control character from a request reaches a log line or the ledger."""
    if not value:
        raise WebhookError(400, f"missing {name}")
    if not _HEADER.fullmatch(value):
        raise WebhookError(400, f"{name} must be 1-128 letters, digits, spaces or ._:- characters")
    return value


def object_field(payload: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A nested object (absent or null: empty); WebhookError 400 when it is anything else."""
    value = payload.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebhookError(400, f"`{key}` must be an object")
    return value


def text_field(payload: Mapping[str, Any], key: str, *, max_length: int = MAX_FIELD) -> str | None:
    """A text field (absent, null or empty: None); numbers become text; WebhookError 400 for
    anything else, a text over `max_length` or one holding control characters."""
    value = payload.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise WebhookError(400, f"`{key}` must be text")
    text = str(value)
    if len(text) > max_length:
        raise WebhookError(400, f"`{key}` is over {max_length} characters")
    if not text.isprintable():
        raise WebhookError(400, f"`{key}` holds control characters")
    return text


def commit_field(payload: Mapping[str, Any], key: str) -> str | None:
    """A full commit id (40 or 64 lower-case hex digits), or None; WebhookError 400 otherwise."""
    value = text_field(payload, key, max_length=64)
    if value is not None and not _COMMIT.fullmatch(value):
        raise WebhookError(400, f"`{key}` is not a full commit id")
    return value


def int_field(payload: Mapping[str, Any], key: str) -> int | None:
    """A positive integer below 2**31 (a pull request's number), or None; WebhookError 400 otherwise."""
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
        raise WebhookError(400, f"`{key}` must be a positive integer")
    return value


def web_field(payload: Mapping[str, Any], key: str) -> str | None:
    """A repository's web page (an http(s) URL of URL-safe characters, no query), or None: it
    becomes the start of links in Markdown, so nothing that could end a link gets in."""
    value = text_field(payload, key)
    return value if value is not None and _WEB.fullmatch(value) else None
