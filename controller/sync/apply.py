"""apply: a Plan -> targets, in waves (images, then DAGs, then services), each outcome recorded as it completes.

A change whose dependency failed in this run is skipped, never applied against a missing image.
Before applying, the target is observed: a resource already as desired (for example applied
just before a crash, not yet recorded) is adopted as in sync, not applied a second time.
Deletes (pruning) run last, newest wave first, and only when nothing failed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Protocol

from controller.errors import LiminalError
from controller.model import (
    Action,
    Change,
    Deployed,
    DeployedState,
    DesiredState,
    Plan,
    Resource,
    ResourceKey,
    ResourceKind,
    ResourceOutcome,
    ResultCode,
    Snapshot,
)

__all__ = ["ApplyResult", "Recorder", "Target", "apply"]


class Target(Protocol):
    """One side-effect target (a DAG folder, the Airflow API, a registry, Kubernetes, ...)."""

    def observe(self, resources: Sequence[Resource]) -> Mapping[ResourceKey, str | None]:
        """The content hash each desired resource has on the target now (None when absent or unknown)."""
        ...

    def apply(self, resource: Resource, source: Snapshot) -> ResourceOutcome:
        """Make the resource live (`source` is the checkout it was rendered from); raise
        TargetError (or TransientError) on failure."""
        ...

    def delete(self, deployed: Deployed) -> ResourceOutcome:
        """Remove a resource that git no longer has."""
        ...


Recorder = Callable[[ResourceOutcome, Resource | None], None]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """Every outcome of one apply, in the order they completed."""

    outcomes: tuple[ResourceOutcome, ...]

    @property
    def ok(self) -> bool:
        """True when every change reached its desired state."""
        return all(o.code.ok for o in self.outcomes)


def apply(
    plan: Plan,
    desired: DesiredState,
    deployed: DeployedState,
    targets: Mapping[ResourceKind, Target],
    record: Recorder,
    *,
    source: Snapshot,
) -> ApplyResult:
    """Carry out `plan` (rendered from `source`) through `targets`, calling `record` after each resource."""
    wanted = desired.by_key()
    failed: set[ResourceKey] = set()
    outcomes: list[ResourceOutcome] = []

    def done(outcome: ResourceOutcome, resource: Resource | None) -> None:
        if not outcome.code.ok:
            failed.add(outcome.key)
        outcomes.append(outcome)
        record(outcome, resource)

    updates = [c for c in plan.changes if c.action in (Action.CREATE, Action.UPDATE)]
    for wave in sorted({c.wave for c in updates}):
        changes = [c for c in updates if c.wave == wave]
        by_kind: dict[ResourceKind, list[Change]] = {}
        for change in changes:
            by_kind.setdefault(change.key.kind, []).append(change)
        for kind, group in by_kind.items():
            target = targets[kind]
            observed = _observe(target, [wanted[c.key] for c in group])
            todo: list[tuple[Change, Resource]] = []
            for change in group:
                resource = wanted[change.key]
                blocked = [d for d in resource.depends_on if d in failed]
                if blocked:
                    done(_outcome(change, ResultCode.SKIPPED, f"waits for {blocked[0]}, which failed"), None)
                elif observed.get(change.key) == resource.content_hash:
                    done(_outcome(change, ResultCode.IN_SYNC, "already live (adopted)"), resource)
                else:
                    todo.append((change, resource))
            # a target may apply several resources at once (image builds); outcomes are still
            # recorded one by one, here, as each completes
            workers = min(getattr(target, "parallelism", 1), len(todo))
            if workers <= 1:
                for change, resource in todo:
                    done(_try(functools.partial(target.apply, resource, source), change), resource)
                continue
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {
                    pool.submit(_try, functools.partial(target.apply, resource, source), change): resource
                    for change, resource in todo
                }
                for future in as_completed(futures):
                    done(future.result(), futures[future])
    deletes = [c for c in plan.changes if c.action is Action.DELETE]
    for change in deletes:
        if failed:
            done(_outcome(change, ResultCode.SKIPPED, "not pruned: another change failed in this run"), None)
            continue
        current = deployed.resources[change.key]
        target = targets[change.key.kind]
        done(_try(functools.partial(target.delete, current), change), None)
    return ApplyResult(tuple(outcomes))


def _observe(target: Target, resources: list[Resource]) -> Mapping[ResourceKey, str | None]:
    try:
        return target.observe(resources)
    except LiminalError:
        return {}  # cannot observe: apply everything in the group, which is idempotent


def _try(call: Callable[[], ResourceOutcome], change: Change) -> ResourceOutcome:
    try:
        return dataclasses.replace(call(), action=change.action)
    except LiminalError as exc:
        return _outcome(change, ResultCode.FAILED, str(exc))


def _outcome(change: Change, code: ResultCode, message: str) -> ResourceOutcome:
    return ResourceOutcome(change.key, change.action, code, change.desired_hash, message)
