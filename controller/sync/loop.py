"""The reconcile loop of `liminal serve`: a coalescing queue per repository, bounded workers,
polling with jitter, drift observation, retries as `requeue` decides, and a clean stop.

A request for a repository that is already waiting is merged into it, and one that arrives while
its reconcile runs makes exactly one more run after it: a storm of pushes becomes a few fetches
of the newest commit. Webhook deliveries are in the ledger before they are acknowledged; the
loop marks them processed after the reconcile that covers them, and on start picks up those a
crash left queued.

Every `drift_interval` the live state of each repository is observed without a fetch; drift is
recorded, and restored from the live commit (no fetch) when the repository's self-heal is on.

After a failed run the loop does what the run's `requeue` decision says, and nothing else: a
temporary failure is retried after the delay its error message names; a commit that failed for
good (invalid, a build that cannot succeed) is not tried again until a new commit arrives (polls
and pushes of the same commit record nothing), a drift repair runs, or someone asks for a sync.
"""

from __future__ import annotations

import copy
import os
import random
import socket
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from controller.errors import RETRY_AFTER
from controller.model import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    RepoRef,
    ResourceKind,
    ResultCode,
    Trigger,
)
from controller.ports import CheckReporter
from controller.sync.check import PullRequestChecks
from controller.sync.deps import Deps
from controller.sync.reconcile import RunResult, observe_drift, reconcile
from controller.sync.requeue import requeue
from controller.sync.upkeep import Retention, UpkeepReport, upkeep

__all__ = ["DURATION_BUCKETS", "LoopStats", "ReconcileLoop"]

log = structlog.get_logger("liminal.loop")


TRACKED_TTL = 5.0
"""Seconds the poller keeps the list of tracked repositories before it reads it again: a
repository added by the CLI is polled within this, and the table is not read every tick."""

DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Upper bounds (seconds) of the run-duration histogram's buckets."""


@dataclass
class LoopStats:
    """What the loop counted since the process started, as the metrics endpoint shows it. Counters
    only ever grow (Prometheus `rate()` works on them); the histogram is observed once per run."""

    runs: dict[tuple[str, str], int] = field(default_factory=dict)
    """Recorded runs, by repository and result."""
    duration_buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    """Runs that took at most each of DURATION_BUCKETS seconds (cumulative, as Prometheus has them)."""
    duration_sum: float = 0.0
    duration_count: int = 0
    last_success: dict[str, float] = field(default_factory=dict)
    healed: dict[str, int] = field(default_factory=dict)
    """Resources restored after drift, per repository."""
    images: dict[str, int] = field(default_factory=dict)
    """Image changes the runs carried out, by result (applied: built or pushed; failed)."""
    pruned: dict[str, int] = field(default_factory=dict)
    """Ledger rows deleted by retention, by table; `checkouts` for checkouts tidied away."""
    cache_bytes: int | None = None
    """The git cache's size at the last upkeep pass (None before the first)."""
    taken_over: int = 0
    """Deliveries taken from a replica that stopped beating."""
    unchanged_polls: int = 0
    """Polls that found the remote's head where it was (asked without a fetch; nothing ran)."""

    def kept(self, report: UpkeepReport) -> None:
        """Count one upkeep pass (the caller holds the loop's lock)."""
        for table, count in [*report.rows.items(), ("checkouts", report.checkouts)]:
            self.pruned[table] = self.pruned.get(table, 0) + count
        self.cache_bytes = report.cache_bytes

    def observe(self, run: RunResult, seconds: float) -> None:
        """Count one recorded run (the caller holds the loop's lock)."""
        key = (run.repo, run.status.value)
        self.runs[key] = self.runs.get(key, 0) + 1
        for i, bound in enumerate(DURATION_BUCKETS):
            if seconds <= bound:
                self.duration_buckets[i] += 1
        self.duration_sum += seconds
        self.duration_count += 1
        if run.healed:
            self.healed[run.repo] = self.healed.get(run.repo, 0) + len(run.healed)
        for outcome in run.outcomes:
            if outcome.key.kind is ResourceKind.IMAGE and outcome.code in (ResultCode.APPLIED, ResultCode.FAILED):
                self.images[outcome.code.value] = self.images.get(outcome.code.value, 0) + 1


@dataclass
class _Repo:
    waiting: bool = False
    running: bool = False
    deliveries: list[int] = field(default_factory=list)
    commits: list[str | None] = field(default_factory=list)
    triggers: set[Trigger] = field(default_factory=set)
    not_before: float = 0.0
    failures: int = 0
    """Failed runs in a row (a retry's delay doubles with each)."""
    stuck_on: str | None = None
    """A commit that failed for good: polls and pushes that find it again do not run it again."""
    next_poll: float = 0.0
    next_drift: float = 0.0
    seen_head: str | None = None
    """The branch head the last fetching run worked on: a poll that finds the remote's head
    unchanged (without a fetch) runs nothing."""


class ReconcileLoop:
    """Runs reconciles for requested repositories on `workers` threads until stopped."""

    def __init__(
        self,
        deps: Deps,
        *,
        workers: int = 2,
        poll_interval: float = 180.0,
        drift_interval: float = 60.0,
        jitter: float = 0.2,
        debounce: float = 0.5,
        reporters: Mapping[str, CheckReporter] | None = None,
        public_url: str = "http://127.0.0.1:8080",
        max_checks: int = 64,
        retention: Retention | None = None,
        replica: str | None = None,
        stale_after: float = 10.0,
    ) -> None:
        self.deps = deps
        self.workers = max(1, workers)
        self.poll_interval = poll_interval
        self.drift_interval = drift_interval
        self.jitter = jitter
        self.debounce = debounce
        self.checks = PullRequestChecks(deps, reporters or {}, public_url)
        self._checks: deque[Delivery] = deque()
        self.max_checks = max_checks
        """Pull-request checks that may wait at once (each fetches and renders a head)."""
        self.retention = retention or Retention()
        self.replica = replica or f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        """This process among the replicas serving the ledger: it claims the deliveries it receives."""
        self.stale_after = stale_after
        """Seconds without a heartbeat after which a replica's queued deliveries go to another."""
        self.stats = LoopStats()
        self._repos: dict[str, _Repo] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._stopped = threading.Event()  # the poller's tick: requests (which notify _cond) do not wake it
        self._threads: list[threading.Thread] = []
        self._to_ask: list[tuple[RepoRef, bool]] = []
        """Repositories due for a poll, with whether their drift check is due too."""
        self.checked: dict[str, tuple[float, str]] = {}
        """When a poll last found each repository's head unchanged, and the head (kept here, not in
        the ledger: a poll that finds nothing new writes nothing)."""
        self.heartbeat = time.monotonic()

    # ---- requests ---------------------------------------------------------------------------------

    def request(
        self, repo: str, trigger: Trigger, deliveries: list[int] | None = None, commit: str | None = None
    ) -> None:
        """Ask for a reconcile of `repo` (merged with one already waiting). A webhook's request
        waits `debounce` seconds, so that a burst of pushes becomes one fetch."""
        with self._cond:
            state = self._repos.setdefault(repo, _Repo())
            if not state.waiting and trigger is Trigger.WEBHOOK:
                state.not_before = time.monotonic() + self.debounce
            elif trigger not in (Trigger.RETRY, Trigger.WEBHOOK, Trigger.DRIFT):
                state.not_before = 0.0  # an operator's or the poller's request beats a retry's wait
            state.waiting = True
            state.triggers.add(trigger)
            state.deliveries.extend(deliveries or [])
            state.commits.append(commit if trigger is Trigger.WEBHOOK else None)
            self._cond.notify_all()

    def request_check(self, delivery: Delivery) -> bool:
        """Ask for a pull-request check (validate and plan the head; nothing is applied).

        A check waiting for the same pull request is replaced (its newest head wins) and its
        delivery marked superseded. False when `max_checks` other checks wait already: the
        caller refuses the delivery, so no burst of pull requests grows the queue without bound."""
        same = (delivery.provider, delivery.repo, delivery.pull_request)
        with self._cond:
            superseded = [d for d in self._checks if (d.provider, d.repo, d.pull_request) == same]
            if not superseded and len(self._checks) >= self.max_checks:
                return False
            for old in superseded:
                self._checks.remove(old)
            self._checks.append(delivery)
            self.checks.arrived(delivery)
            self._cond.notify_all()
        ids = [d.id for d in superseded if d.id is not None]
        self._finish(ids, f"superseded by delivery {delivery.delivery_id}", repo=delivery.repo)
        return True

    def counted(self) -> LoopStats:
        """A copy of what the loop counted so far (consistent: taken under the loop's lock)."""
        with self._cond:
            return copy.deepcopy(self.stats)

    @property
    def depth(self) -> int:
        """Repositories waiting for a reconcile, and pull requests waiting for a check."""
        with self._cond:
            return sum(1 for s in self._repos.values() if s.waiting) + len(self._checks)

    @property
    def alive(self) -> bool:
        """True while the loop runs and its scheduler ticked lately."""
        return bool(self._threads) and not self._stopping and time.monotonic() - self.heartbeat < 30

    # ---- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Register as a replica, take the deliveries no live replica holds (a crash left them),
        then start the workers, the poller and the upkeep."""
        self.deps.ledger.join(self.replica, socket.gethostname(), os.getpid())
        recovered = self._adopt()
        now = time.monotonic()
        for ref in self.deps.ledger.repos():
            state = self._repos.setdefault(ref.name, _Repo())
            state.next_poll = now + self._phase(ref.name, self.poll_interval)
            state.next_drift = now + self._phase(ref.name, self.drift_interval)
            state.seen_head = self._live_head(ref.name)
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        for name, target in (("poller", self._poll), ("heads", self._ask), ("upkeep", self._upkeep)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info(
            "loop.started",
            replica=self.replica,
            workers=self.workers,
            poll_interval=self.poll_interval,
            drift_interval=self.drift_interval,
            recovered=recovered,
        )

    def _adopt(self) -> int:
        """Claim the queued deliveries no live replica holds and ask for their runs and checks."""
        orphans = self.deps.ledger.claim_orphans(self.replica, self.stale_after)
        by_repo: dict[str, list[int]] = {}
        for delivery in orphans:
            if delivery.kind is DeliveryKind.PULL_REQUEST:
                if not self.request_check(delivery) and delivery.id is not None:
                    self._finish([delivery.id], "too many pull-request checks were waiting", repo=delivery.repo)
            elif delivery.repo and delivery.id is not None:
                by_repo.setdefault(delivery.repo, []).append(delivery.id)
        for repo, ids in by_repo.items():
            self.request(repo, Trigger.WEBHOOK, ids)
        if orphans:
            with self._cond:
                self.stats.taken_over += len(orphans)
            log.info("loop.deliveries_adopted", replica=self.replica, deliveries=len(orphans), repos=sorted(by_repo))
        return len(orphans)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop taking work; wait for running reconciles to finish (each records as it goes, so one
        cut short by the timeout is closed as interrupted by the next start)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._stopped.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.checks.stop(min(5.0, max(0.0, deadline - time.monotonic())))  # show what the last checks found
        try:
            self.deps.ledger.leave(self.replica)
        except Exception as exc:  # its deliveries are adopted once its heartbeat is stale
            log.warning("loop.leave_failed", error=str(exc))
        log.info("loop.stopped", replica=self.replica)

    # ---- threads ----------------------------------------------------------------------------------

    def _jittered(self, interval: float) -> float:
        return interval * (1 + random.uniform(-self.jitter, self.jitter))

    def _poll(self) -> None:
        beat_every = self.stale_after / 3
        next_beat = time.monotonic() + beat_every
        tracked: list[RepoRef] = []
        read_at = float("-inf")
        while True:
            with self._cond:
                if self._stopping:
                    return
                self.heartbeat = time.monotonic()
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + beat_every
                try:  # alive for the other replicas; and what a dead one held is ours to finish
                    self.deps.ledger.beat(self.replica)
                    self._adopt()
                except Exception as exc:
                    log.warning("loop.beat_failed", error=str(exc))
            if time.monotonic() - read_at >= min(TRACKED_TTL, self.poll_interval):
                try:
                    tracked, read_at = self.deps.ledger.repos(), time.monotonic()
                except Exception as exc:
                    log.warning("loop.poll_failed", error=str(exc))
                    tracked = []
            now = time.monotonic()
            due: list[tuple[RepoRef, bool]] = []
            for ref in tracked:
                name = ref.name
                with self._cond:
                    state = self._repos.get(name)
                    if state is None:  # added while running: first poll and drift check within an interval
                        state = self._repos[name] = _Repo(
                            next_poll=now + self._phase(name, self.poll_interval),
                            next_drift=now + self._phase(name, self.drift_interval),
                        )
                    poll, drift = state.next_poll <= now, state.next_drift <= now
                    if poll:
                        state.next_poll = now + self._jittered(self.poll_interval)
                # of several replicas, the one that takes the duty in the ledger does it
                if poll and self._claim(name, "poll", self.poll_interval):
                    due.append((ref, drift))
                elif drift:
                    self._drift(name, now)
            if due:  # asked off this thread: a slow remote never holds the heartbeat
                with self._cond:
                    self._to_ask.extend(due)
                    self._cond.notify_all()
            self._stopped.wait(1.0)

    def _drift(self, name: str, now: float) -> None:
        with self._cond:
            state = self._repos[name]
            state.next_drift = now + self._jittered(self.drift_interval)
        if self._claim(name, "drift", self.drift_interval):
            self.request(name, Trigger.DRIFT)

    def _ask(self) -> None:
        """Ask the remotes of the repositories due for a poll for their heads (one request per
        remote); reconcile those whose head moved, or whose head could not be learnt."""
        while True:
            with self._cond:
                while not self._to_ask and not self._stopping:
                    self._cond.wait(1.0)
                if self._stopping:
                    return
                due, self._to_ask = self._to_ask, []
            try:
                heads = self.deps.source.remote_heads([ref for ref, _ in due])
            except Exception as exc:  # fetch as before
                log.warning("loop.heads_failed", error=f"{type(exc).__name__}: {exc}")
                heads = {}
            now = time.monotonic()
            for ref, drift in due:
                head = heads.get(ref.name)
                with self._cond:
                    state = self._repos[ref.name]
                    unchanged = head is not None and head == state.seen_head
                    if unchanged and head is not None:
                        self.stats.unchanged_polls += 1
                        self.checked[ref.name] = (time.time(), head)
                    else:  # the poll's reconcile observes the targets too
                        state.next_drift = now + self._jittered(self.drift_interval)
                if not unchanged:
                    self.request(ref.name, Trigger.POLL)
                elif drift:
                    self._drift(ref.name, now)

    def _live_head(self, name: str) -> str | None:
        """The commit live for `name` when its last run applied it: a restart then polls without
        a fetch, and an unchanged head runs nothing (after a failure the first poll fetches)."""
        try:
            return self.deps.ledger.synced_commit(name)
        except Exception:  # the first poll fetches, as it always did
            return None

    def _phase(self, name: str, interval: float) -> float:
        """Where in `interval` a repository's first poll or drift check falls: spread evenly by
        its name, so that a thousand repositories tracked at start do not all go at once."""
        return interval * (zlib.crc32(name.encode()) / 2**32)

    def _claim(self, repo: str, duty: str, interval: float) -> bool:
        try:
            # half an interval: replicas' jittered schedules never make one duty twice in a row
            return self.deps.ledger.claim_duty(repo, duty, interval * 0.5)
        except Exception as exc:
            log.warning("loop.claim_failed", repo=repo, duty=duty, error=str(exc))
            return False

    def _upkeep(self) -> None:
        wait = min(self.retention.every, 30.0)  # the first pass soon: the disk figure is known early
        while True:
            with self._cond:
                if self._stopping or self._cond.wait_for(lambda: self._stopping, wait):
                    return
            wait = self.retention.every
            try:
                report = upkeep(self.deps, self.retention)
            except Exception as exc:  # the next pass tries again
                log.warning("upkeep.failed", error=f"{type(exc).__name__}: {exc}")
                continue
            with self._cond:
                self.stats.kept(report)

    def _next(self) -> tuple[str, _Repo] | None:
        now = time.monotonic()
        ready = [(n, s) for n, s in self._repos.items() if s.waiting and not s.running and s.not_before <= now]
        return min(ready, key=lambda item: item[1].not_before) if ready else None

    def _until_due(self) -> float:
        """Seconds until the next waiting request is due (a retry's delay ends), at most 0.5."""
        now = time.monotonic()
        due = [s.not_before - now for s in self._repos.values() if s.waiting and not s.running]
        return max(0.01, min([0.5, *due]))

    def _work(self) -> None:
        while True:
            with self._cond:
                picked = self._next()
                while picked is None and not self._checks and not self._stopping:
                    self._cond.wait(self._until_due())
                    picked = self._next()
                if self._stopping:
                    return
                if self._checks:  # checks are quick and need no repository lock: they go first
                    check = self._checks.popleft()
                else:
                    assert picked is not None
                    check = None
                    name, state = picked
                    state.waiting, state.running = False, True
                    deliveries, state.deliveries = state.deliveries, []
                    commits, state.commits = state.commits, []
                    trigger = _merged(state.triggers)
                    # an operator's request runs even a commit that failed for good
                    asked = bool(state.triggers & {Trigger.API, Trigger.CLI})
                    stuck_on = None if asked else state.stuck_on
                    state.triggers = set()
            if check is not None:
                self._check(check)
            elif deliveries and self._covered(name, commits):
                self._finish(deliveries, "the pushed commit is already live", repo=name)
                with self._cond:
                    state.running = False
                    self._cond.notify_all()
            else:
                self._run(name, state, trigger, deliveries, stuck_on)

    def _finish(self, deliveries: list[int], reason: str, *, repo: str | None, result: Any = None) -> None:
        """Mark deliveries processed; if the ledger cannot, they stay queued and are taken again on start."""
        if not deliveries:
            return
        try:
            self.deps.ledger.finish_deliveries(deliveries, DeliveryStatus.PROCESSED, reason, result)
        except Exception as exc:
            log.warning("loop.deliveries_not_marked", repo=repo, error=str(exc))

    def _check(self, delivery: Delivery) -> None:
        """Check a pull request's head, show it on the forge, and keep the plan for its page."""
        ids = [delivery.id] if delivery.id is not None else []
        self.checks.run(
            delivery, lambda verdict, details: self._finish(ids, verdict, repo=delivery.repo, result=details)
        )

    def _covered(self, name: str, commits: list[str | None]) -> bool:
        """True when every request came from a push of a commit already live (or behind it)."""
        if not commits or any(c is None for c in commits):
            return False
        try:
            ref = self.deps.ledger.repo(name)
            applied = self.deps.ledger.applied_commit(name)
            return applied is not None and self.deps.source.covers(ref, applied, [c for c in commits if c])
        except Exception:  # when in doubt, reconcile
            return False

    def _heal_needed(self, name: str) -> bool:
        """Observe `name`'s live state (recording any drift); True when drift is there to restore."""
        try:
            found = observe_drift(name, self.deps)
            return bool(found) and self.deps.ledger.repo(name).self_heal
        except Exception as exc:  # a worker must outlive any one observation
            log.warning("drift.observe_failed", repo=name, error=f"{type(exc).__name__}: {exc}")
            return False

    def _run(self, name: str, state: _Repo, trigger: Trigger, deliveries: list[int], stuck_on: str | None) -> None:
        if trigger is Trigger.DRIFT and not self._heal_needed(name):
            with self._cond:  # nothing to restore: no run is recorded
                state.running = False
                self._cond.notify_all()
            return
        started = time.monotonic()
        run: RunResult | None = None
        try:
            # drift is restored from the live commit, without a fetch: it works while git is down
            run = reconcile(
                name,
                self.deps,
                trigger=trigger,
                fetch=trigger is not Trigger.DRIFT,
                attempt=state.failures,
                unless_commit=stuck_on,
            )
        except Exception as exc:
            log.error("loop.reconcile_crashed", repo=name, error=f"{type(exc).__name__}: {exc}")
        seconds = time.monotonic() - started
        if run is None:
            reason = "the reconcile crashed"
        elif run.id is None and run.ok:
            reason = f"commit {(run.commit or '')[:12]} is live, as it was"
        elif run.id is None:
            reason = f"commit {(run.commit or '')[:12]} failed before and is unchanged"
        else:
            reason = f"run {run.id}: {run.status}"
        self._finish(deliveries, reason, repo=name)
        if run is not None and run.id is None and not run.ok:
            # what a poll's run would have observed and restored: a drift check (it observes once)
            self.request(name, Trigger.DRIFT)
        # a crash is retried as a temporary failure would be
        decision = requeue(RETRY_AFTER, state.failures) if run is None else run.requeue
        with self._cond:
            if run is not None and run.commit and trigger is not Trigger.DRIFT:
                state.seen_head = run.commit  # what the remote's branch pointed at when fetched
            if run is not None and run.id is not None:
                self.stats.observe(run, seconds)
            if run is not None and run.ok:
                self.stats.last_success[name] = time.time()
                state.failures, state.not_before, state.stuck_on = 0, 0.0, None
            elif decision is not None and decision.after is not None:
                state.failures += 1
                state.not_before = time.monotonic() + decision.after
                state.waiting = True
                state.triggers.add(Trigger.RETRY)
                log.info("loop.retry", repo=name, seconds=decision.after, failures=state.failures)
            elif run is not None and run.id is not None:
                # failed for good: the same commit is not run again until something changes
                state.failures, state.stuck_on = 0, run.commit
                log.info("loop.waits_for_change", repo=name, commit=(run.commit or "")[:12], status=run.status.value)
            state.running = False
            self._cond.notify_all()


def _merged(triggers: set[Trigger]) -> Trigger:
    """The trigger of one run that serves several requests: a push's, else an operator's or a
    poll's; a drift check merged with any other request becomes that (full) reconcile."""
    for trigger in (Trigger.WEBHOOK, Trigger.API, Trigger.CLI, Trigger.POLL, Trigger.RETRY):
        if trigger in triggers:
            return trigger
    return Trigger.DRIFT
