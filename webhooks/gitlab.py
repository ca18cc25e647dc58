"""GitLab webhooks: `X-Gitlab-Token` verification and the events the controller acts on."""

from __future__ import annotations

import hmac
from typing import Any

from controller.model import DeliveryKind
from webhooks.events import (
    WebhookError,
    WebhookEvent,
    commit_field,
    int_field,
    json_object,
    object_field,
    text_field,
    web_field,
)

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
    """The event a verified delivery carries (`Push Hook`, `Merge Request Hook`, ...); WebhookError
    400 for a malformed payload."""
    payload = json_object(body)
    project = object_field(payload, "project")
    urls = tuple(url for k in ("git_http_url", "git_ssh_url", "web_url") if (url := text_field(project, k)))
    project_id = text_field(project, "id", max_length=64) or text_field(payload, "project_id", max_length=64)

    def make(kind: DeliveryKind, **fields: Any) -> WebhookEvent:
        web_url = web_field(project, "web_url")
        return WebhookEvent("gitlab", delivery_id, event, kind, urls, project=project_id, web_url=web_url, **fields)

    if event == "Push Hook":
        ref = text_field(payload, "ref")
        after = text_field(payload, "checkout_sha") or text_field(payload, "after")
        if not after or after == _ZERO:
            return make(DeliveryKind.OTHER, ref=ref, reason="the branch was deleted")
        return make(DeliveryKind.PUSH, ref=ref, commit=commit_field({"after": after}, "after"))
    if event == "Merge Request Hook":
        attributes = object_field(payload, "object_attributes")
        action = text_field(attributes, "action", max_length=64)
        if action not in _CHECKED:
            return make(DeliveryKind.OTHER, reason=f"merge request action '{action}' needs no check")
        return make(
            DeliveryKind.PULL_REQUEST,
            ref=text_field(attributes, "source_branch"),
            commit=commit_field(object_field(attributes, "last_commit"), "id"),
            pull_request=int_field(attributes, "iid") or 0,
            base=text_field(attributes, "target_branch"),
        )
    return make(DeliveryKind.OTHER, reason=f"event '{event}' is not acted on")
