"""Error types of the controller. The CLI and the API turn them into messages in one place.

LiminalError
 ├── InputError(problems)      a bad liminal.yml: stalled until a new commit arrives
 ├── TransientError(retry_after) the world is not ready (network, service): retry later
 ├── SourceError               the repository cannot give the wanted commit: waits for a change
 ├── TargetError(key)          a target refused or failed to apply one resource
 └── ConfigError               the controller itself is misconfigured: exit code 2
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from controller.model import Problem

__all__ = [
    "RETRY_AFTER",
    "ConfigError",
    "InputError",
    "LiminalError",
    "SourceError",
    "TargetError",
    "TransientError",
    "retry_after_of",
    "sanitize",
    "short_reason",
]


class LiminalError(Exception):
    """Base of every error the controller raises on purpose."""


class InputError(LiminalError):
    """The repository content is invalid; every problem carries file, line, column and path."""

    def __init__(self, problems: Iterable[Problem], warnings: Iterable[Problem] = ()) -> None:
        self.problems: tuple[Problem, ...] = tuple(sorted(problems, key=Problem.sort_key))
        self.warnings: tuple[Problem, ...] = tuple(sorted(warnings, key=Problem.sort_key))
        """Warnings found beside the errors (shown with them; they alone never raise)."""
        first = self.problems[0].render() if self.problems else "invalid input"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(first + more)


RETRY_AFTER = 30.0
"""Seconds before a retry when a temporary failure names no delay of its own (a crash included)."""


class TransientError(LiminalError):
    """A temporary failure; the reconcile loop retries after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = RETRY_AFTER) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SourceError(LiminalError):
    """The repository cannot give the wanted commit (branch deleted, ref missing, a URL refused).
    Not retried: it waits for a new commit or an operator."""


class TargetError(LiminalError):
    """A target failed to apply or delete the resource named by `key`."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class ConfigError(LiminalError):
    """The controller's own configuration or command-line usage is wrong (exit code 2)."""


def retry_after_of(exc: LiminalError) -> float | None:
    """When to try again after `exc`: its `retry_after` if it is temporary, else None (permanent)."""
    return exc.retry_after if isinstance(exc, TransientError) else None


def sanitize(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with URL user-info and every secret replaced by `***`."""
    out = re.sub(r"(?i)(https?://)[^/@\s]+@", r"\1***@", text)
    for secret in secrets:
        if secret:
            out = out.replace(secret, "***")
    return out


def short_reason(exc: BaseException) -> str:
    """Why a connection failed, on one line: the exception's `reason` (urllib3's) or itself, at most 200 characters."""
    reason = getattr(exc, "reason", None) or exc
    return " ".join(str(reason).split())[:200]
