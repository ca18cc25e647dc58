"""GitLab webhooks: `X-Gitlab-Token` verification and the events the controller acts on."""

from __future__ import annotations

import hmac
from typing import Any

from webhooks.events import WebhookError, WebhookEvent, json_object

__all__ = ["parse", "verify"]

_CHECKED = frozenset({"open", "update", "reopen"})
_ZERO = "0" * 40


def verify(secret: bytes, token: str | None) -> None:
    """Compare the shared token in constant time; WebhookError 401 when it differs."""
    if not token:
        raise WebhookError(401, "missing X-Gitlab-Token")
    if not hmac.compare_digest(secret, token.encode()):
        raise WebhookError(401, "X-Gitlab-Token does not match")


def parse(delivery_id: str, event: str, body: bytes) -> WebhookEvent:
    """The event a verified delivery carries (`Push Hook`, `Merge Request Hook`, ...)."""
    payload = json_object(body)
    project = payload.get("project") or {}
    urls = tuple(str(project[k]) for k in ("git_http_url", "git_ssh_url", "web_url") if project.get(k))

    def make(kind: str, **fields: Any) -> WebhookEvent:
        project_id = project.get("id") or payload.get("project_id")
        return WebhookEvent("gitlab", delivery_id, event, kind, urls, project=str(project_id or "") or None, **fields)

    if event == "Push Hook":
        after = str(payload.get("checkout_sha") or payload.get("after") or "")
        if not after or after == _ZERO:
            return make("other", ref=payload.get("ref"), reason="the branch was deleted")
        return make("push", ref=payload.get("ref"), commit=after)
    if event == "Merge Request Hook":
        attributes = payload.get("object_attributes") or {}
        action = attributes.get("action")
        if action not in _CHECKED:
            return make("other", reason=f"merge request action '{action}' needs no check")
        return make(
            "pull_request",
            ref=attributes.get("source_branch"),
            commit=(attributes.get("last_commit") or {}).get("id"),
            pull_request=int(attributes.get("iid") or 0),
        )
    return make("other", reason=f"event '{event}' is not acted on")
