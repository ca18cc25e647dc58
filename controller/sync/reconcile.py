"""reconcile: the one function that runs the stages in order for one repository.

source -> load -> render -> plan -> apply -> record. The run is opened before anything else and
closed in one `finally`, whatever happened (Flux's deferred status write), and what it did is
returned as a typed RunResult (the ledger keeps the same facts as the run's summary). An invalid
commit updates only the attempted commit: what is live stays live.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from controller.errors import RETRY_AFTER, InputError, LiminalError, TransientError
from controller.model import Problem, RepoRef, ResourceOutcome, RunStatus, Snapshot, Trigger
from controller.sync.apply import apply
from controller.sync.deps import Deps, desired_for
from controller.sync.preview import drifted, key_names, planned
from controller.sync.requeue import Requeue, requeue

__all__ = ["LOOP_TRIGGERS", "RunResult", "observe_drift", "reconcile"]

log = structlog.get_logger("liminal.sync")

LOOP_TRIGGERS = frozenset({Trigger.WEBHOOK, Trigger.POLL, Trigger.RETRY, Trigger.DRIFT, Trigger.API})
"""Runs the loop of `liminal serve` started, and follows up as the run's requeue decision says (a
run from the command line is not retried: its error says nothing of a retry)."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """What one reconcile did, as recorded (`id` None: no run was kept: a poll that found nothing
    new, or a commit that failed for good found again; see `reconcile`)."""

    id: int | None
    repo: str
    trigger: Trigger
    status: RunStatus
    commit: str | None = None
    """The commit worked on (None when fetching failed)."""
    applied_commit: str | None = None
    """The commit now live because of this run (None when it did not become live)."""
    error: str | None = None
    plan: Mapping[str, int] = field(default_factory=dict)
    """Planned changes by action."""
    outcomes: tuple[ResourceOutcome, ...] = ()
    drift: tuple[str, ...] = ()
    """Resources ("kind/name") found drifted by this run."""
    healed: tuple[str, ...] = ()
    """Drifted resources this run restored."""
    problems: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()
    not_deployed: tuple[str, ...] = ()
    """Resources ("kind/name") of the commit that no target here deploys (images off, no serving target)."""
    requeue: Requeue | None = None
    """What the loop does next when the run failed; None when it succeeded (or changed nothing)."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the commit is live as desired."""
        return self.status in (RunStatus.SUCCEEDED, RunStatus.NOOP)

    @property
    def summary(self) -> dict[str, Any]:
        """The run's facts as the ledger stores them (and the API shows them)."""
        out: dict[str, Any] = {"plan": dict(self.plan), "seconds": self.seconds}
        if self.outcomes:
            counts: dict[str, int] = {}
            for o in self.outcomes:
                counts[o.code.value] = counts.get(o.code.value, 0) + 1
            out["outcomes"] = counts
        if self.drift:
            out["drift"] = list(self.drift)
        if self.healed:
            out["healed"] = list(self.healed)
        if self.problems:
            out["problems"] = [p.as_json() for p in self.problems[:50]]
        if self.warnings:
            out["warnings"] = [w.render() for w in self.warnings[:100]]
        if self.not_deployed:
            out["not_deployed"] = list(self.not_deployed)
        if self.requeue is not None:
            out["retry_after"] = self.requeue.after
        return out


def reconcile(
    repo_name: str,
    deps: Deps,
    *,
    trigger: Trigger = Trigger.CLI,
    ref: str | None = None,
    fetch: bool = True,
    attempt: int = 0,
    unless_commit: str | None = None,
) -> RunResult:
    """One reconcile of one repository.

    With `fetch` off, the commit already live is reconciled from the local mirror, without asking
    the remote: the periodic drift repair works while the git server is down. `attempt` counts the
    failures in a row before this run (the retry delay doubles with each). With `unless_commit`
    (a commit that failed for good), a fetch that finds that commit again records nothing and
    returns a result whose `id` is None: the same commit would fail the same way.
    """
    repo = deps.ledger.repo(repo_name)
    with deps.ledger.lock(repo.name):
        snapshot: Snapshot | None = None
        if unless_commit is not None and fetch:
            try:
                snapshot = deps.source.fetch(repo, ref)
            except LiminalError:
                snapshot = None  # fetched again below, inside a run that records the failure
            if snapshot is not None and snapshot.commit == unless_commit:
                log.debug("sync.unchanged_failed_commit", repo=repo.name, commit=unless_commit[:12])
                return RunResult(None, repo.name, trigger, RunStatus.FAILED, unless_commit, requeue=Requeue(None))
        return _run(repo, deps, trigger=trigger, ref=ref, fetch=fetch, attempt=attempt, snapshot=snapshot)


def _run(
    repo: RepoRef,
    deps: Deps,
    *,
    trigger: Trigger,
    ref: str | None,
    fetch: bool,
    attempt: int,
    snapshot: Snapshot | None,
) -> RunResult:
    run_id = deps.ledger.begin_run(repo.name, trigger)
    facts: dict[str, Any] = {"status": RunStatus.FAILED}
    left_drifted: list[str] | None = None  # None: the targets were not observed
    retry_after: float | None = None  # None: a failure is permanent
    started = time.perf_counter()
    bound = log.bind(repo=repo.name, run=run_id)
    try:
        if snapshot is None:
            live = None if fetch or ref else deps.ledger.applied_commit(repo.name)
            snapshot = deps.source.checkout(repo, live) if live else deps.source.fetch(repo, ref)
        commit = facts["commit"] = snapshot.commit
        bound = bound.bind(commit=commit[:12])
        deps.ledger.set_attempted(run_id, repo.name, commit)
        found = planned(repo, snapshot, deps, bound)
        facts["warnings"] = found.desired.warnings
        if found.desired.not_deployed:
            facts["not_deployed"] = key_names(set(found.desired.not_deployed))
        if found.desired.warnings:
            first = found.desired.warnings[0].render()
            bound.warning("sync.spec_warnings", count=len(found.desired.warnings), first=first)
        left_drifted = [] if repo.self_heal else list(key_names(found.drifted))
        if found.drifted:
            facts["drift"] = key_names(found.drifted)
            bound.warning("sync.drift", resources=facts["drift"], self_heal=repo.self_heal)
        facts["plan"] = found.plan.counts()
        if found.plan.is_noop:
            facts["status"], facts["applied_commit"] = RunStatus.NOOP, commit
            bound.debug("sync.noop")
        else:
            bound.info("sync.apply", **found.plan.counts())
            result = apply(
                found.plan,
                found.desired,
                found.deployed,
                deps.targets,
                lambda outcome, resource: deps.ledger.record(run_id, outcome, resource, commit),
                source=snapshot,
            )
            facts["outcomes"] = result.outcomes
            if repo.self_heal and found.drifted:
                restored = {o.key for o in result.outcomes if o.key in found.drifted and o.code.ok}
                facts["healed"] = key_names(restored)
                left_drifted = list(key_names(found.drifted - restored))
            if result.ok:
                facts["status"], facts["applied_commit"] = RunStatus.SUCCEEDED, commit
            else:
                failed = [o for o in result.outcomes if not o.code.ok]
                first_message = failed[0].message
                if not first_message.startswith(f"{failed[0].key}: "):  # a TargetError names its resource
                    first_message = f"{failed[0].key}: {first_message}"
                facts["error"] = f"{len(failed)} change(s) did not apply; first: {first_message}"
                # one unreachable target makes the run worth retrying; otherwise the commit waits
                retry_after = max((o.retry_after for o in failed if o.retry_after is not None), default=None)
    except InputError as exc:
        facts["status"] = RunStatus.INVALID
        facts["error"] = f"{len(exc.problems)} problem(s); first: {exc.problems[0].render()}"
        facts["problems"], facts["warnings"] = exc.problems, exc.warnings
    except TransientError as exc:
        facts["error"], retry_after = str(exc), exc.retry_after
    except LiminalError as exc:
        facts["error"] = str(exc)
    except Exception as exc:
        facts["error"] = f"internal error: {type(exc).__name__}"
        retry_after = RETRY_AFTER  # a crash may be a passing state of the world
        raise
    finally:
        status: RunStatus = facts.pop("status")
        decision = None if status in (RunStatus.SUCCEEDED, RunStatus.NOOP) else requeue(retry_after, attempt)
        if decision is not None and facts.get("error") and trigger in LOOP_TRIGGERS:
            facts["error"] += f" ({decision.describe()})"
        result_ = RunResult(
            run_id,
            repo.name,
            trigger,
            status,
            requeue=decision,
            seconds=round(time.perf_counter() - started, 3),
            **facts,
        )
        # a poll that found nothing to do, after a run that ended well at the same commit, is no
        # news: it moves the repository's last check, and history keeps the runs that did something
        quiet = trigger is Trigger.POLL and status is RunStatus.NOOP and not result_.drift
        kept = deps.ledger.finish_run(
            run_id,
            repo.name,
            status,
            error=result_.error,
            summary=result_.summary,
            applied_commit=result_.applied_commit,
            drift=left_drifted,
            forget_if_unchanged=quiet,
        )
        if not kept:
            result_ = dataclasses.replace(result_, id=None)
        if kept:
            bound.info("sync.finished", status=status.value, error=result_.error, seconds=result_.seconds)
        else:
            bound.debug("sync.unchanged", seconds=result_.seconds)
    return result_


def observe_drift(repo_name: str, deps: Deps) -> list[str] | None:
    """Observe the live state of what is deployed, without fetching or changing anything, and
    record what drifted ("kind/name", sorted). None when there is nothing to observe yet or a
    reconcile of the repository is running (it observes, too)."""
    repo = deps.ledger.repo(repo_name)
    try:
        with deps.ledger.lock(repo.name, wait=False):
            commit = deps.ledger.applied_commit(repo.name)
            if commit is None:
                return None
            bound = log.bind(repo=repo.name, commit=commit[:12])
            desired = desired_for(deps.source.checkout(repo, commit), deps)
            found = list(
                key_names(drifted(desired, deps.ledger.deployed_state(repo.name, bodies=False), deps.targets, bound))
            )
            deps.ledger.set_drift(repo.name, found)
    except TransientError:  # the lock is held: a reconcile is running
        return None
    if found:
        bound.warning("drift.observed", resources=found, self_heal=repo.self_heal)
    else:
        bound.debug("drift.none")
    return found
