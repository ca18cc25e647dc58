"""GitHub webhooks: `X-Hub-Signature-256` verification and the events the controller acts on."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from webhooks.events import WebhookError, WebhookEvent, json_object

__all__ = ["parse", "verify"]

_CHECKED = frozenset({"opened", "synchronize", "reopened"})
_ZERO = "0" * 40


def verify(secret: bytes, body: bytes, signature: str | None) -> None:
    """Check the HMAC-SHA256 of the body, compared in constant time; WebhookError 401 when it differs."""
    if not signature:
        raise WebhookError(401, "missing X-Hub-Signature-256")
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise WebhookError(401, "X-Hub-Signature-256 does not match the body")


def parse(delivery_id: str, event: str, body: bytes) -> WebhookEvent:
    """The event a verified delivery carries."""
    payload = json_object(body)
    repo = payload.get("repository") or {}
    urls = tuple(str(repo[k]) for k in ("clone_url", "ssh_url", "git_url", "html_url") if repo.get(k))

    def make(kind: str, **fields: Any) -> WebhookEvent:
        return WebhookEvent("github", delivery_id, event, kind, urls, project=repo.get("full_name"), **fields)

    if event == "ping":
        return make("ping")
    if event == "push":
        after = str(payload.get("after") or "")
        if payload.get("deleted") or after == _ZERO:
            return make("other", ref=payload.get("ref"), reason="the branch was deleted")
        return make("push", ref=payload.get("ref"), commit=after)
    if event == "pull_request":
        action = payload.get("action")
        pr = payload.get("pull_request") or {}
        if action not in _CHECKED:
            return make("other", reason=f"pull_request action '{action}' needs no check")
        head = pr.get("head") or {}
        return make(
            "pull_request",
            ref=head.get("ref"),
            commit=head.get("sha"),
            pull_request=int(pr.get("number") or payload.get("number") or 0),
        )
    return make("other", reason=f"event '{event}' is not acted on")
