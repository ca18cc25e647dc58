"""requeue: the one rule for what happens after a run that did not succeed. Pure.

A temporary failure (a target or the git server unreachable, a lock held) is retried after the
error's own `retry_after`; a repeat doubles it, with jitter, up to a cap. Anything else (an
invalid commit, a Dockerfile that cannot build, a refused manifest) cannot succeed by trying the
same commit again: it waits for a new commit, a drift repair or an explicit sync.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BACKOFF_MAX", "JITTER", "Requeue", "requeue"]

BACKOFF_MAX = 600.0
"""The longest wait before a retry, in seconds."""
JITTER = 0.2
"""Repeats wait ±20% of the doubled delay, so repositories failing together do not retry together."""


@dataclass(frozen=True, slots=True)
class Requeue:
    """What the loop does after a failed run: retry `after` seconds, or (None) wait for a change."""

    after: float | None

    @property
    def waits_for_change(self) -> bool:
        """True when retrying the same commit cannot help."""
        return self.after is None

    def describe(self) -> str:
        """The words every error message ends with, so that what it says is what happens."""
        if self.after is None:
            return "waits for a new commit, a drift repair or an explicit sync"
        return f"retry in {self.after:g} s"


def requeue(
    retry_after: float | None,
    attempt: int = 0,
    *,
    cap: float = BACKOFF_MAX,
    jitter: float = JITTER,
    rand: Callable[[], float] = random.random,
) -> Requeue:
    """The decision for a failure: `retry_after` is the error's own (None: a permanent failure),
    `attempt` how many times in a row this repository failed before (0 on the first failure)."""
    if retry_after is None:
        return Requeue(None)
    delay = retry_after * 2 ** min(attempt, 30)
    if attempt > 0:
        delay *= 1 + jitter * (2 * rand() - 1)
    return Requeue(round(min(cap, max(delay, 0.0)), 1))
