"""The ports: the narrow interfaces through which the pure core reaches the world.

Each port is one line of purpose; the adapters implement them, and the in-memory fakes of the
fast tests (tests/fakes.py) implement them too.

- `Source`               commits: fetch a branch or a pull request's head, check a commit out
- `Target`               one kind of resource: observe / apply / delete
- `ServiceTarget`        a target that serves what it deploys: where each service answers
- `CheckReporter`        where a pull request's check is shown (GitHub check run and comment, GitLab status and note)
- `RunRecorder`          the ledger as the diary of runs: open, record outcomes, close, forget old ones
- `DeployedStateReader`  the ledger as the memory of what is live
- `RepositoryCatalogue`  the ledger as the list of tracked repositories, and their locks
- `DeliveryInbox`        the ledger as the inbox of webhook deliveries
- `Replicas`             the ledger as where serving replicas beat and claim their work
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence, Set
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from controller.model import (
    CheckReport,
    Delivery,
    DeliveryStatus,
    Deployed,
    DeployedState,
    ForgeText,
    Pruned,
    PullRequest,
    RepoRef,
    Resource,
    ResourceKey,
    ResourceOutcome,
    RunStatus,
    ServiceEndpoint,
    Snapshot,
    TargetResult,
    Trigger,
)

__all__ = [
    "CheckReporter",
    "DeliveryInbox",
    "DeployedStateReader",
    "LedgerPort",
    "Replicas",
    "RepositoryCatalogue",
    "RunRecorder",
    "ServiceTarget",
    "Source",
    "Target",
]


class Source(Protocol):
    """Where commits come from (controller.sync.source.GitSource)."""

    def fetch(self, repo: RepoRef, ref: str | None = None) -> Snapshot:
        """The newest commit of the tracked branch (or `ref`), checked out."""
        ...

    def remote_heads(self, repos: Sequence[RepoRef]) -> Mapping[str, str | None]:
        """Each repository's branch head on its remote, without fetching (a poll that finds it
        unchanged does nothing else); None where the remote could not say."""
        ...

    def checkout(self, repo: RepoRef, commit: str) -> Snapshot:
        """A commit already fetched, checked out (no network)."""
        ...

    def trees(self, snapshot: Snapshot) -> Mapping[str, str]:
        """Each directory's git tree id in the snapshot (what changed between commits, cheaply)."""
        ...

    def covers(self, repo: RepoRef, applied: str, commits: list[str]) -> bool:
        """True when every one of `commits` is `applied` or an ancestor of it."""
        ...

    def fetch_head(self, repo: RepoRef, remote_ref: str, commit: str) -> Snapshot:
        """A pull request's head (`remote_ref` at `commit`), checked out; nothing of it is run."""
        ...

    def revert(self, repo: RepoRef, to: str | None = None) -> tuple[str, list[str]]:
        """Push one commit undoing the newest commit (or every commit after `to`): the new head
        and the undone commits, newest first."""
        ...

    def hold(self, snapshot: Snapshot) -> AbstractContextManager[Snapshot]:
        """Keep the checkout from being tidied away while it is read outside the repository's lock."""
        ...

    def tidy(self, repo: RepoRef, keep: Set[str], window: int) -> int:
        """Remove checkouts not in `keep`, not among the `window` used last, not held; how many."""
        ...

    def gc(self, repo: RepoRef, every: float) -> bool:
        """Compact the repository's git store when the last time is older than `every` seconds."""
        ...

    def disk_usage(self, repo: RepoRef | None = None) -> int:
        """Bytes the source's cache takes on disk (for `repo`, or in all)."""
        ...


class Target(Protocol):
    """One side-effect target (a DAG folder, the Airflow API, a registry, Kubernetes, ...)."""

    watches_drift: bool
    """True when observing is cheap and live state can drift (a file, a container): every
    reconcile then observes what it deployed. False for immutable things (content-tagged images)."""

    def observe(self, resources: Sequence[Resource]) -> Mapping[ResourceKey, str | None]:
        """The content hash each desired resource has on the target now (None when absent or unknown)."""
        ...

    def apply(self, resources: Sequence[Resource], source: Snapshot) -> Iterator[TargetResult]:
        """Make the resources live (`source` is the checkout they were rendered from), yielding one
        result per resource as each completes (APPLIED, or FAILED with why). A target may work on
        several at once (parallel builds, one Airflow parse for a repository's DAGs)."""
        ...

    def delete(self, deployed: Deployed) -> TargetResult:
        """Remove a resource that git no longer has (DELETED, or FAILED with why)."""
        ...


@runtime_checkable
class ServiceTarget(Target, Protocol):
    """A target that serves what it deploys: it can say where each service answers and how it is."""

    def endpoints(self, deployed: Sequence[Deployed]) -> Mapping[ResourceKey, ServiceEndpoint]:
        """URL and health of each deployed service (health `absent` when it is not there)."""
        ...


class CheckReporter(Protocol):
    """Shows a pull request's check where the pull request lives (webhooks.github_checks,
    webhooks.gitlab_checks): running, then its verdict on the head, and the plan in one comment."""

    @property
    def text(self) -> ForgeText:
        """What this forge accepts: the check's report is cut to it."""
        ...

    def start(self, pr: PullRequest) -> str:
        """Show the check of `pr.commit` as running; returns what `finish` needs to end it."""
        ...

    def finish(self, pr: PullRequest, report: CheckReport, started: str) -> None:
        """End the check with `report`'s verdict, summary and annotations (`started`: what
        `start` returned, or "" when it was not shown)."""
        ...

    def comment(self, pr: PullRequest, text: str) -> None:
        """Write `text` into the pull request's one plan comment: created the first time, edited
        in place after."""
        ...


class RepositoryCatalogue(Protocol):
    """The tracked repositories, and one lock per repository (one reconcile at a time)."""

    def repo(self, name: str) -> RepoRef:
        """A tracked repository (ConfigError when it is not tracked)."""
        ...

    def repos(self) -> list[RepoRef]:
        """Every tracked repository."""
        ...

    def synced_commit(self, repo: str) -> str | None:
        """The commit live for `repo` when its last run applied it; None when the last run
        failed or there is none (a restarted loop then fetches on its first poll)."""
        ...

    def lock(self, repo: str, *, wait: bool = True) -> AbstractContextManager[None]:
        """Hold `repo` for one reconcile; TransientError when `wait` is off and it is held."""
        ...


class DeployedStateReader(Protocol):
    """What the controller deployed, as the ledger remembers it."""

    def deployed_state(self, repo: str, *, bodies: bool | Set[ResourceKey] = True) -> DeployedState:
        """Every resource live for `repo`, with its hash and commit; with the body of each
        (`True`), of none (`False`: comparing hashes needs none), or of the keys given."""
        ...

    def applied_commit(self, repo: str) -> str | None:
        """The commit whose resources are live (None before the first successful sync)."""
        ...


class RunRecorder(Protocol):
    """The diary of runs: each opened, its outcomes recorded as they happen, closed once."""

    def begin_run(self, repo: str, trigger: Trigger) -> int:
        """Open a run; returns its id."""
        ...

    def set_attempted(self, run_id: int, repo: str, commit: str) -> None:
        """Note the commit the run works on (the repository's attempted commit)."""
        ...

    def record(self, run_id: int, outcome: ResourceOutcome, resource: Resource | None, commit: str) -> None:
        """Record one resource's outcome; an ok outcome updates what is deployed."""
        ...

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
        """Close a run; `applied_commit` moves what is live, `drift` replaces the drift noted. With
        `forget_if_unchanged`, a run whose previous run ended ok at the same commit is not kept
        (only the repository's last check moves). True when the run is kept."""
        ...

    def set_drift(self, repo: str, drift: Sequence[str]) -> bool:
        """Note what drifted, seen outside a run (only when it differs from what is noted: True then)."""
        ...

    def prune_history(self, older_than: dt.timedelta, keep_runs: int) -> Pruned:
        """Apply retention to runs, outcomes, deliveries and build records; never to the live state."""
        ...


class DeliveryInbox(Protocol):
    """Webhook deliveries, kept before they are acknowledged and closed once a run covers them."""

    def claim_orphans(self, replica: str, stale_after: float) -> list[Delivery]:
        """Claim the queued deliveries no live replica holds (never claimed, or a dead one's)."""
        ...

    def finish_deliveries(
        self,
        ids: list[int],
        status: DeliveryStatus,
        reason: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        """Close deliveries with why (and a check's result)."""
        ...


class Replicas(Protocol):
    """Serving replicas: each beats while alive, and takes a repository's poll or drift check in
    the ledger so that, of several, one does it."""

    def join(self, replica: str, host: str, pid: int) -> None:
        """Register a replica."""
        ...

    def beat(self, replica: str) -> None:
        """Say the replica is alive."""
        ...

    def leave(self, replica: str) -> None:
        """Unregister a replica stopping cleanly; its unfinished deliveries become free."""
        ...

    def claim_duty(self, repo: str, duty: str, every: float) -> bool:
        """Take `repo`'s `duty` (poll, drift) unless a replica took it within `every` seconds."""
        ...


class LedgerPort(RepositoryCatalogue, DeployedStateReader, RunRecorder, DeliveryInbox, Replicas, Protocol):
    """Every role of the ledger the reconciler uses (controller.ledger.Ledger, tests.fakes.FakeLedger)."""
