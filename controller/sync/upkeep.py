"""Upkeep of a long-running controller: what keeps its footprint bounded for months.

One pass applies the ledger's retention, tidies each repository's checkouts (keeping the live
commit and the few used last), runs `git gc` on mirrors when due, and measures the git cache's
size for `/metrics`. A repository being reconciled is skipped (its lock is tried, never waited
for) and tidied on the next pass.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

import structlog

from controller.errors import LiminalError, TransientError
from controller.sync.deps import Deps

__all__ = ["Retention", "UpkeepReport", "upkeep"]

log = structlog.get_logger("liminal.upkeep")


@dataclass(frozen=True, slots=True)
class Retention:
    """How much history and cache a controller keeps (ControllerSettings' retention_* and friends)."""

    days: float = 90.0
    runs: int = 100
    checkouts: int = 5
    every: float = 600.0
    gc_every: float = 86400.0


@dataclass(frozen=True, slots=True)
class UpkeepReport:
    """What one pass did, and the git cache's size after it."""

    rows: dict[str, int]
    """Ledger rows deleted, by table."""
    checkouts: int
    gc: int
    """Mirrors compacted."""
    busy: int
    """Repositories skipped because a reconcile held them."""
    cache_bytes: int


def upkeep(deps: Deps, retention: Retention) -> UpkeepReport:
    """One upkeep pass (see the module's docstring)."""
    pruned = deps.ledger.prune_history(dt.timedelta(days=retention.days), retention.runs)
    rows = dataclasses.asdict(pruned)
    checkouts = gc = busy = 0
    for ref in deps.ledger.repos():
        try:
            with deps.ledger.lock(ref.name, wait=False):
                live = deps.ledger.applied_commit(ref.name)
                checkouts += deps.source.tidy(ref, {live} if live else set(), retention.checkouts)
                gc += deps.source.gc(ref, retention.gc_every)
        except TransientError:
            busy += 1
        except (LiminalError, OSError) as exc:  # one repository's cache never stops the others'
            log.warning("upkeep.repo_failed", repo=ref.name, error=str(exc))
    report = UpkeepReport(rows, checkouts, gc, busy, deps.source.disk_usage())
    log.info(
        "upkeep.done",
        **{f"deleted_{k}": v for k, v in rows.items()},
        checkouts_removed=checkouts,
        gc=gc,
        busy=busy,
        cache_bytes=report.cache_bytes,
    )
    return report
