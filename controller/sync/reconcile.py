"""reconcile: the one function that runs the stages in order for one repository.

source -> load -> render -> plan -> apply -> record. The run is opened before anything else and
closed in one `finally`, whatever happened (Flux's deferred status write). An invalid commit
updates only the attempted commit: what is live stays live.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from controller.errors import InputError, LiminalError, TransientError
from controller.model import (
    Delivery,
    DeployedState,
    DesiredState,
    Memo,
    Origin,
    Plan,
    Policies,
    RepoRef,
    Resource,
    ResourceKey,
    ResourceKind,
    ResourceOutcome,
    RunStatus,
    Snapshot,
    SyncRun,
)
from controller.render import RenderSettings, render
from controller.spec import SourceFile, discover, load
from controller.sync.apply import Target, apply
from controller.sync.cache import RenderCache
from controller.sync.plan import plan

__all__ = ["Deps", "LedgerPort", "SourcePort", "desired_for", "observe_drift", "reconcile"]

log = structlog.get_logger("liminal.sync")


class SourcePort(Protocol):
    """Where commits come from (controller.sync.source.GitSource)."""

    def fetch(self, repo: RepoRef, ref: str | None = None) -> Snapshot: ...
    def checkout(self, repo: RepoRef, commit: str) -> Snapshot: ...
    def trees(self, snapshot: Snapshot) -> Mapping[str, str]: ...
    def covers(self, repo: RepoRef, applied: str, commits: list[str]) -> bool: ...
    def fetch_head(self, repo: RepoRef, remote_ref: str, commit: str) -> Snapshot: ...


class LedgerPort(Protocol):
    """What reconcile needs of the ledger (controller.ledger.Ledger)."""

    def repo(self, name: str) -> RepoRef: ...
    def lock(self, repo: str, *, wait: bool = True) -> AbstractContextManager[None]: ...
    def begin_run(self, repo: str, trigger: str) -> int: ...
    def set_attempted(self, run_id: int, repo: str, commit: str) -> None: ...
    def deployed_state(self, repo: str) -> DeployedState: ...
    def record(self, run_id: int, outcome: ResourceOutcome, resource: Resource | None, commit: str) -> None: ...
    def finish_run(
        self,
        run_id: int,
        repo: str,
        status: RunStatus,
        *,
        error: str | None = None,
        summary: Mapping[str, Any] | None = None,
        applied_commit: str | None = None,
        drift: Sequence[str] | None = None,
    ) -> None: ...
    def set_drift(self, repo: str, drift: Sequence[str]) -> None: ...
    def history(self, repo: str | None = None, limit: int = 20) -> list[SyncRun]: ...
    def repos(self) -> list[RepoRef]: ...
    def applied_commit(self, repo: str) -> str | None: ...
    def queued_deliveries(self) -> list[Delivery]: ...
    def finish_deliveries(
        self, ids: list[int], status: str, reason: str | None = None, result: dict[str, Any] | None = None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Deps:
    """Everything reconcile touches, passed in (no module-level singletons)."""

    source: SourcePort
    ledger: LedgerPort
    targets: Mapping[ResourceKind, Target]
    settings: RenderSettings
    environ: Mapping[str, str] = field(default_factory=dict)
    cache: RenderCache | None = field(default_factory=RenderCache)
    """Kept between reconciles of a long-lived process; None renders everything every time."""
    policies: Policies = field(default_factory=Policies)
    """What each repository may ask for (the safe default unless the operator's policy file says more)."""


def desired_for(snapshot: Snapshot, deps: Deps) -> DesiredState:
    """Load and render a snapshot, keeping only the kinds a target is configured for.

    With a cache, a commit rendered before under the same settings is not loaded again, and a
    new commit loads and renders only the files, systems and images whose content changed.
    """
    cache = deps.cache
    if cache is None:
        return _desired(snapshot, deps, None)
    key = (
        snapshot.repo.name,
        snapshot.commit,
        deps.settings,
        tuple(sorted(deps.environ.items())),
        frozenset(deps.targets),
        deps.policies.for_repo(snapshot.repo.name),
    )
    return cache.get_or_make("desired", key, lambda: _desired(snapshot, deps, cache.view(deps.source.trees(snapshot))))


def _desired(snapshot: Snapshot, deps: Deps, memo: Memo | None) -> DesiredState:
    origin = Origin(snapshot.repo.name, snapshot.commit)
    # files are named relative to the repository: errors read `pipelines/a/liminal.yml:3:5`, and
    # the names (memo keys) are the same in every commit's checkout
    files = [SourceFile(f.path, f.path.relative_to(f.root).as_posix(), f.root) for f in discover([snapshot.root])]
    if not files:
        return DesiredState(origin, ())
    spec = load(files, deps.environ, memo=memo, policy=deps.policies.for_repo(snapshot.repo.name))
    state = render(spec, snapshot.root, deps.settings, origin, memo=memo)
    return DesiredState(origin, tuple(r for r in state.resources if r.key.kind in deps.targets), state.warnings)


def reconcile(
    repo_name: str, deps: Deps, *, trigger: str = "cli", ref: str | None = None, fetch: bool = True
) -> SyncRun:
    """One reconcile of one repository; returns the recorded run.

    With `fetch` off, the commit already live is reconciled from the local mirror, without asking
    the remote: the periodic drift repair works while the git server is down.
    """
    repo = deps.ledger.repo(repo_name)
    with deps.ledger.lock(repo.name):
        run_id = deps.ledger.begin_run(repo.name, trigger)
        status, error, commit, applied = RunStatus.FAILED, None, None, None
        summary: dict[str, Any] = {}
        left_drifted: list[str] | None = None  # None: the targets were not observed
        started = time.perf_counter()
        bound = log.bind(repo=repo.name, run=run_id)
        try:
            live = None if fetch or ref else deps.ledger.applied_commit(repo.name)
            snapshot = deps.source.checkout(repo, live) if live else deps.source.fetch(repo, ref)
            commit = snapshot.commit
            bound = bound.bind(commit=commit[:12])
            deps.ledger.set_attempted(run_id, repo.name, commit)
            desired = desired_for(snapshot, deps)
            if desired.warnings:
                summary["warnings"] = [w.render() for w in desired.warnings[:100]]
                bound.warning("sync.spec_warnings", count=len(desired.warnings), first=desired.warnings[0].render())
            deployed = deps.ledger.deployed_state(repo.name)
            drifted = _drifted(desired, deployed, deps.targets, bound)
            left_drifted = [] if repo.self_heal else _names(drifted)
            if drifted:
                summary["drift"] = _names(drifted)
                bound.warning("sync.drift", resources=summary["drift"], self_heal=repo.self_heal)
            the_plan: Plan = plan(
                desired, deployed, prune=repo.prune, drifted=drifted if repo.self_heal else frozenset()
            )
            summary["plan"] = the_plan.counts()
            if the_plan.is_noop:
                status, applied = RunStatus.NOOP, commit
                bound.debug("sync.noop")
            else:
                bound.info("sync.apply", **the_plan.counts())
                result = apply(
                    the_plan,
                    desired,
                    deployed,
                    deps.targets,
                    lambda outcome, resource: deps.ledger.record(run_id, outcome, resource, commit or ""),
                    source=snapshot,
                )
                summary["outcomes"] = _count(result.outcomes)
                if repo.self_heal and drifted:
                    restored = {o.key for o in result.outcomes if o.key in drifted and o.code.ok}
                    summary["healed"] = _names(restored)
                    left_drifted = _names(drifted - restored)
                if result.ok:
                    status, applied = RunStatus.SUCCEEDED, commit
                else:
                    failed = [o for o in result.outcomes if not o.code.ok]
                    first = failed[0].message
                    if not first.startswith(f"{failed[0].key}: "):  # a TargetError names its resource already
                        first = f"{failed[0].key}: {first}"
                    error = f"{len(failed)} change(s) did not apply; first: {first}"
                    retry = max((o.retry_after for o in failed if o.retry_after is not None), default=None)
                    if retry is not None:  # a target was unreachable: the loop retries, with backoff
                        summary["retry_after"] = retry
                        error += f" (retry in {retry:g} s)"
        except InputError as exc:
            status = RunStatus.INVALID
            error = f"{len(exc.problems)} problem(s); first: {exc.problems[0].render()}"
            summary["problems"] = [p.as_json() for p in exc.problems[:50]]
        except TransientError as exc:
            error = f"{exc} (retry in {exc.retry_after} s)"
        except LiminalError as exc:
            error = str(exc)
        except Exception as exc:
            error = f"internal error: {type(exc).__name__}"
            raise
        finally:
            summary["seconds"] = round(time.perf_counter() - started, 3)
            deps.ledger.finish_run(
                run_id,
                repo.name,
                status,
                error=error,
                summary=summary,
                applied_commit=applied,
                drift=left_drifted,
            )
            bound.info("sync.finished", status=status.value, error=error, seconds=summary["seconds"])
    return deps.ledger.history(repo.name, limit=1)[0]


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
            found = _names(_drifted(desired, deps.ledger.deployed_state(repo.name), deps.targets, bound))
            deps.ledger.set_drift(repo.name, found)
    except TransientError:  # the lock is held: a reconcile is running
        return None
    if found:
        bound.warning("drift.observed", resources=found, self_heal=repo.self_heal)
    else:
        bound.debug("drift.none")
    return found


def _drifted(
    desired: DesiredState, deployed: DeployedState, targets: Mapping[ResourceKind, Target], bound: Any
) -> frozenset[ResourceKey]:
    """Resources deployed as desired whose live state differs, on the targets that watch for drift."""
    out: set[ResourceKey] = set()
    for kind, target in targets.items():
        if not target.watches_drift:
            continue
        same = [
            r
            for r in desired.resources
            if r.key.kind is kind
            and (d := deployed.resources.get(r.key)) is not None
            and d.content_hash == r.content_hash
        ]
        if not same:
            continue
        try:
            live = target.observe(same)
        except LiminalError as exc:  # cannot look: report, and leave what is live alone
            bound.warning("sync.observe_failed", kind=str(kind), error=str(exc))
            continue
        out.update(r.key for r in same if live.get(r.key) != r.content_hash)
    return frozenset(out)


def _names(keys: frozenset[ResourceKey] | set[ResourceKey]) -> list[str]:
    return sorted(f"{k.kind}/{k.name}" for k in keys)


def _count(outcomes: tuple[ResourceOutcome, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in outcomes:
        out[o.code.value] = out.get(o.code.value, 0) + 1
    return out
