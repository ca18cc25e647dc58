"""In-memory fakes of the ports (controller/ports.py), for the fast tests of plan, apply,
reconcile, preview and the loop. Each is named a fake; none talks to git, SQL, Docker, Airflow or
Kubernetes. The real adapters are tested against the real things elsewhere.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from controller.errors import ConfigError, LiminalError, SourceError, TransientError, retry_after_of
from controller.model import (
    Delivery,
    DeliveryStatus,
    Deployed,
    DeployedState,
    Pruned,
    RepoRef,
    Resource,
    ResourceKey,
    ResourceKind,
    ResourceOutcome,
    ResultCode,
    RunStatus,
    Snapshot,
    TargetResult,
    Trigger,
)

__all__ = ["FakeLedger", "FakeRun", "FakeSource", "FakeTarget"]


class FakeSource:
    """A fake of the Source port: each commit is a directory the test writes; `head` moves a branch.

    `fetch` raises `down` while it is set (a git server that does not answer)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.commits: dict[str, Path] = {}
        self.history: dict[str, list[str]] = {}
        """Commits of each repository, oldest first; the last is the branch head."""
        self.down: LiminalError | None = None
        self.fetches = 0
        self.asked = 0
        """Times the remote heads were asked for (a poll round)."""
        self._lock = threading.Lock()

    def push(self, repo: str, files: Mapping[str, str], *, base: Path | None = None) -> str:
        """A new commit of `repo`: the files of `base` (a directory) with `files` written over them."""
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(repo.encode())
        digest.update(str(len(self.commits)).encode())
        commit = digest.hexdigest()
        where = self.root / commit
        if base is not None:
            shutil.copytree(base, where, ignore=shutil.ignore_patterns("__pycache__", ".git"))
        for name, text in files.items():
            path = where / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        with self._lock:
            self.commits[commit] = where
            self.history.setdefault(repo, []).append(commit)
        return commit

    def fetch(self, repo: RepoRef, ref: str | None = None) -> Snapshot:
        with self._lock:
            self.fetches += 1
        if self.down is not None:
            raise self.down
        history = self.history.get(repo.name)
        if not history:
            raise SourceError(f"branch {repo.branch!r} does not exist on {repo.url}")
        return self.checkout(repo, ref or history[-1])

    def checkout(self, repo: RepoRef, commit: str) -> Snapshot:
        return Snapshot(repo, commit, self.commits[commit])

    def remote_heads(self, repos: Sequence[RepoRef]) -> Mapping[str, str | None]:
        with self._lock:
            self.asked += 1
        if self.down is not None:
            return {r.name: None for r in repos}
        return {r.name: history[-1] if (history := self.history.get(r.name)) else None for r in repos}

    def trees(self, snapshot: Snapshot) -> Mapping[str, str]:
        return {}  # no tree ids: a memo then keys by file content only

    def covers(self, repo: RepoRef, applied: str, commits: list[str]) -> bool:
        history = self.history.get(repo.name, [])
        if applied not in history:
            return False
        behind = set(history[: history.index(applied) + 1])
        return all(c in behind for c in commits)

    def fetch_head(self, repo: RepoRef, remote_ref: str, commit: str) -> Snapshot:
        return self.checkout(repo, commit)

    def revert(self, repo: RepoRef, to: str | None = None) -> tuple[str, list[str]]:
        history = self.history.get(repo.name, [])
        if len(history) < 2:
            raise SourceError(f"{repo.name}: nothing before {history[-1][:12] if history else 'nothing'}")
        target = to or history[-2]
        undone = history[history.index(target) + 1 :][::-1]
        return self.push(repo.name, {}, base=self.commits[target]), undone

    @contextmanager
    def hold(self, snapshot: Snapshot) -> Iterator[Snapshot]:
        yield snapshot  # the fake's commits are never tidied away

    def tidy(self, repo: RepoRef, keep: Set[str], window: int) -> int:
        return 0

    def gc(self, repo: RepoRef, every: float) -> bool:
        return False

    def disk_usage(self, repo: RepoRef | None = None) -> int:
        return 0


@dataclass
class FakeRun:
    """A run as the fake ledger keeps it."""

    id: int
    repo: str
    trigger: Trigger
    status: RunStatus = RunStatus.RUNNING
    commit: str | None = None
    error: str | None = None
    summary: Mapping[str, Any] = field(default_factory=dict)
    outcomes: list[ResourceOutcome] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None


class FakeLedger:
    """A fake of every ledger role (LedgerPort), in memory: repositories, locks, runs, what is
    deployed, and the delivery inbox."""

    def __init__(self) -> None:
        self._repos: dict[str, RepoRef] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._deployed: dict[str, dict[ResourceKey, Deployed]] = {}
        self._applied: dict[str, str] = {}
        self.drift: dict[str, list[str]] = {}
        self.runs: list[FakeRun] = []
        self.forgotten = 0
        """No-op runs not kept (polls that found nothing to do)."""
        self.deliveries: dict[int, Delivery] = {}
        self.claimed: set[int] = set()
        self.replicas: set[str] = set()
        self._ids = itertools.count(1)
        self._guard = threading.Lock()

    # ---- RepositoryCatalogue
    def add_repo(self, ref: RepoRef) -> None:
        with self._guard:
            self._repos[ref.name] = ref
            self._locks[ref.name] = threading.Lock()

    def repo(self, name: str) -> RepoRef:
        with self._guard:
            if name not in self._repos:
                raise ConfigError(f"repository '{name}' is not tracked")
            return self._repos[name]

    def repos(self) -> list[RepoRef]:
        with self._guard:
            return list(self._repos.values())

    @contextmanager
    def lock(self, repo: str, *, wait: bool = True) -> Iterator[None]:
        lock = self._locks[repo]
        if not lock.acquire(blocking=wait):
            raise TransientError(f"repository '{repo}' is being synced", retry_after=5)
        try:
            yield
        finally:
            lock.release()

    # ---- DeployedStateReader
    def deployed_state(self, repo: str, *, bodies: bool | Set[ResourceKey] = True) -> DeployedState:
        with self._guard:
            found = dict(self._deployed.get(repo, {}))
        if bodies is True:
            return DeployedState(found)
        return DeployedState({k: d if bodies and k in bodies else replace(d, body={}) for k, d in found.items()})

    def applied_commit(self, repo: str) -> str | None:
        with self._guard:
            return self._applied.get(repo)

    # ---- RunRecorder
    def begin_run(self, repo: str, trigger: Trigger) -> int:
        with self._guard:
            run = FakeRun(next(self._ids), repo, trigger)
            self.runs.append(run)
            return run.id

    def set_attempted(self, run_id: int, repo: str, commit: str) -> None:
        self._run(run_id).commit = commit

    def record(self, run_id: int, outcome: ResourceOutcome, resource: Resource | None, commit: str) -> None:
        with self._guard:
            self._run(run_id).outcomes.append(outcome)
            deployed = self._deployed.setdefault(outcome.key.repo, {})
            if outcome.code is ResultCode.DELETED:
                deployed.pop(outcome.key, None)
            elif outcome.code.ok and resource is not None:
                deployed[outcome.key] = Deployed(outcome.key, resource.content_hash, commit, resource.body)

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
        forget_if_unchanged: bool = False,
    ) -> bool:
        with self._guard:
            run = self._run(run_id)
            if drift is not None:
                self.drift[repo] = list(drift)
            before = [r for r in self.runs if r.repo == repo and r.id < run_id]
            ok = (RunStatus.SUCCEEDED, RunStatus.NOOP)
            if forget_if_unchanged and before and before[-1].commit == run.commit and before[-1].status in ok:
                self.runs.remove(run)
                self.forgotten += 1
                return False
            run.status, run.error, run.summary = status, error, dict(summary or {})
            run.finished = time.monotonic()
            if applied_commit is not None:
                self._applied[repo] = applied_commit
            return True

    def synced_commit(self, repo: str) -> str | None:
        with self._guard:
            mine = [r for r in self.runs if r.repo == repo]
            ok = bool(mine) and mine[-1].status in (RunStatus.SUCCEEDED, RunStatus.NOOP)
            return self._applied.get(repo) if ok and mine[-1].commit == self._applied.get(repo) else None

    def set_drift(self, repo: str, drift: Sequence[str]) -> bool:
        with self._guard:
            changed = self.drift.get(repo, []) != sorted(drift)
            self.drift[repo] = sorted(drift)
            return changed

    def drift_counts(self) -> list[tuple[str, bool, int]]:
        with self._guard:
            return [(n, r.self_heal, len(self.drift.get(n, []))) for n, r in sorted(self._repos.items())]

    def _run(self, run_id: int) -> FakeRun:
        return next(r for r in self.runs if r.id == run_id)

    # ---- DeliveryInbox
    def record_delivery(self, delivery: Delivery, claimed_by: str | None = None) -> int:
        with self._guard:
            row = next(self._ids)
            if claimed_by is not None:
                self.claimed.add(row)
            self.deliveries[row] = replace(delivery, id=row)
            return row

    def claim_orphans(self, replica: str, stale_after: float) -> list[Delivery]:
        with self._guard:  # one replica: every queued delivery not yet claimed is an orphan
            found = [d for d in self.deliveries.values() if d.status is DeliveryStatus.QUEUED]
            fresh = [d for d in found if d.id not in self.claimed]
            self.claimed.update(d.id for d in fresh if d.id is not None)
            return fresh

    # ---- Replicas (one: the fake serves a single process)
    def join(self, replica: str, host: str, pid: int) -> None:
        self.replicas.add(replica)

    def beat(self, replica: str) -> None:
        pass

    def leave(self, replica: str) -> None:
        self.replicas.discard(replica)

    def claim_duty(self, repo: str, duty: str, every: float) -> bool:
        return True

    def prune_history(self, older_than: dt.timedelta, keep_runs: int) -> Pruned:
        return Pruned()  # the fake keeps no history worth pruning

    def finish_deliveries(
        self, ids: list[int], status: DeliveryStatus, reason: str | None = None, result: dict[str, Any] | None = None
    ) -> None:
        with self._guard:
            for row in ids:
                self.deliveries[row] = replace(self.deliveries[row], status=status, reason=reason)


class FakeTarget:
    """A fake Target of one resource kind: `live` maps each resource to the content hash it has
    on the "target". `failing` names resources whose apply fails with the given error."""

    def __init__(self, *, watches_drift: bool = True) -> None:
        self.watches_drift = watches_drift
        self.live: dict[ResourceKey, str] = {}
        self.failing: dict[str, LiminalError] = {}
        self.applied: list[str] = []
        self.deleted: list[str] = []
        self.observe_error: LiminalError | None = None

    def observe(self, resources: Sequence[Resource]) -> Mapping[ResourceKey, str | None]:
        if self.observe_error is not None:
            raise self.observe_error
        return {r.key: self.live.get(r.key) for r in resources}

    def apply(self, resources: Sequence[Resource], source: Snapshot) -> Iterator[TargetResult]:
        for resource in resources:
            error = self.failing.get(resource.key.name)
            if error is not None:
                yield TargetResult(resource.key, ResultCode.FAILED, str(error), retry_after_of(error))
                continue
            self.live[resource.key] = resource.content_hash
            self.applied.append(f"{resource.key.kind}/{resource.key.name}")
            yield TargetResult(resource.key, ResultCode.APPLIED, "applied")

    def delete(self, deployed: Deployed) -> TargetResult:
        error = self.failing.get(deployed.key.name)
        if error is not None:
            raise error
        self.live.pop(deployed.key, None)
        self.deleted.append(f"{deployed.key.kind}/{deployed.key.name}")
        return TargetResult(deployed.key, ResultCode.DELETED, "deleted")


def fake_targets(*kinds: ResourceKind) -> dict[ResourceKind, FakeTarget]:
    """One fake target per kind (every kind when none is named)."""
    return {kind: FakeTarget(watches_drift=kind is not ResourceKind.IMAGE) for kind in kinds or tuple(ResourceKind)}
