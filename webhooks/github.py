"""GitHub webhooks: `X-Hub-Signature-256` verification and the events the controller acts on."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
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
from webhooks.forge import CONTEXT

__all__ = ["check_digest", "parse", "signature_header", "verify"]

_CHECKED = frozenset({"opened", "synchronize", "reopened"})
_ZERO = "0" * 40
_SIGNATURE = re.compile(r"sha256=[0-9a-fA-F]{64}")


def verify(secret: bytes, body: bytes, signature: str | None) -> None:
    """Check the HMAC-SHA256 of the body, compared in constant time; WebhookError 401 when it differs."""
    mac = hmac.new(secret, body, hashlib.sha256)
    check_digest(mac, signature_header(signature))


def signature_header(signature: str | None) -> str:
    """The `X-Hub-Signature-256` header if it has the shape of one (`sha256=` and 64 hex digits),
    checked before the body is read; WebhookError 401 otherwise."""
    if not signature:
        raise WebhookError(401, "missing X-Hub-Signature-256")
    value = signature.strip()
    if not _SIGNATURE.fullmatch(value):
        raise WebhookError(401, "X-Hub-Signature-256 is not sha256=<64 hex digits>")
    return value


def check_digest(mac: hmac.HMAC, signature: str) -> None:
    """Compare the HMAC of the whole body (fed while it was read) with the header, in constant time."""
    if not hmac.compare_digest(("sha256=" + mac.hexdigest()).encode(), signature.encode()):
        raise WebhookError(401, "X-Hub-Signature-256 does not match the body")


def parse(delivery_id: str, event: str, body: bytes) -> WebhookEvent:
    """The event a verified delivery carries; WebhookError 400 for a malformed payload."""
    payload = json_object(body)
    repo = object_field(payload, "repository")
    urls = tuple(url for k in ("clone_url", "ssh_url", "git_url", "html_url") if (url := text_field(repo, k)))

    def make(kind: DeliveryKind, **fields: Any) -> WebhookEvent:
        project = text_field(repo, "full_name")
        return WebhookEvent(
            "github", delivery_id, event, kind, urls, project=project, web_url=web_field(repo, "html_url"), **fields
        )

    if event == "ping":
        return make(DeliveryKind.PING)
    if event == "push":
        ref = text_field(payload, "ref")
        if payload.get("deleted") is True or text_field(payload, "after") == _ZERO:
            return make(DeliveryKind.OTHER, ref=ref, reason="the branch was deleted")
        return make(DeliveryKind.PUSH, ref=ref, commit=commit_field(payload, "after"))
    if event == "pull_request":
        action = text_field(payload, "action", max_length=64)
        pr = object_field(payload, "pull_request")
        if action not in _CHECKED:
            return make(DeliveryKind.OTHER, reason=f"pull_request action '{action}' needs no check")
        head = object_field(pr, "head")
        return make(
            DeliveryKind.PULL_REQUEST,
            ref=text_field(head, "ref"),
            commit=commit_field(head, "sha"),
            pull_request=int_field(pr, "number") or int_field(payload, "number") or 0,
            base=text_field(object_field(pr, "base"), "ref"),
        )
    if event in ("check_run", "check_suite"):
        return _rerun(payload, event, make)
    return make(DeliveryKind.OTHER, reason=f"event '{event}' is not acted on")


def _rerun(payload: Mapping[str, Any], event: str, make: Callable[..., WebhookEvent]) -> WebhookEvent:
    """GitHub's "Re-run" of our check run (`check_run`) or of the commit's checks (`check_suite`):
    the pull request's head is checked again."""
    action = text_field(payload, "action", max_length=64)
    run = object_field(payload, event)
    if action != "rerequested":
        return make(DeliveryKind.OTHER, reason=f"{event} action '{action}' needs no check")
    if event == "check_run" and text_field(run, "name") != CONTEXT:
        return make(DeliveryKind.OTHER, reason="a re-run of another check")
    pulls = run.get("pull_requests")
    if pulls is not None and not isinstance(pulls, list):
        raise WebhookError(400, f"`{event}.pull_requests` must be a list")
    if not pulls:  # GitHub lists no pull request of another repository (a fork's)
        return make(DeliveryKind.OTHER, reason="a re-run of no pull request of this repository: push again to check")
    pull = pulls[0] if isinstance(pulls[0], dict) else {}
    return make(
        DeliveryKind.PULL_REQUEST,
        ref=text_field(object_field(pull, "head"), "ref"),
        commit=commit_field(run, "head_sha"),
        pull_request=int_field(pull, "number") or 0,
        base=text_field(object_field(pull, "base"), "ref"),
    )
