"""apply: a Plan -> targets, in waves (images, then DAGs, then services), each outcome recorded as it completes.

A change whose dependency failed in this run is skipped, never applied against a missing image.
Before applying, the target is observed: a resource already as desired (for example applied
just before a crash, not yet recorded) is adopted as in sync, not applied a second time.
Deletes (pruning) run last, newest wave first, and only when nothing failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from controller.errors import LiminalError, retry_after_of
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
    TargetResult,
)
from controller.ports import Target

__all__ = ["ApplyResult", "Recorder", "apply"]


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
            todo: dict[ResourceKey, Change] = {}
            for change in group:
                resource = wanted[change.key]
                blocked = [d for d in resource.depends_on if d in failed]
                if blocked:
                    skipped = TargetResult(change.key, ResultCode.SKIPPED, f"waits for {blocked[0]}, which failed")
                    done(_outcome(change, skipped), None)
                elif observed.get(change.key) == resource.content_hash:
                    done(
                        _outcome(change, TargetResult(change.key, ResultCode.IN_SYNC, "already live (adopted)")),
                        resource,
                    )
                else:
                    todo[change.key] = change
            if todo:
                # outcomes are recorded one by one, as the target reports each
                for outcome in _apply_group(target, [wanted[k] for k in todo], source, todo):
                    done(outcome, wanted[outcome.key])
    deletes = [c for c in plan.changes if c.action is Action.DELETE]
    for change in deletes:
        if failed:
            kept = TargetResult(change.key, ResultCode.SKIPPED, "not pruned: another change failed in this run")
            done(_outcome(change, kept), None)
            continue
        done(_delete(targets[change.key.kind], deployed.resources[change.key], change), None)
    return ApplyResult(tuple(outcomes))


def _apply_group(
    target: Target, resources: list[Resource], source: Snapshot, changes: Mapping[ResourceKey, Change]
) -> Iterator[ResourceOutcome]:
    reported: set[ResourceKey] = set()
    try:
        for result in target.apply(resources, source):
            reported.add(result.key)
            yield _outcome(changes[result.key], result)
    except LiminalError as exc:
        for key, change in changes.items():
            if key not in reported:
                yield _outcome(change, TargetResult(key, ResultCode.FAILED, str(exc), retry_after_of(exc)))


def _observe(target: Target, resources: list[Resource]) -> Mapping[ResourceKey, str | None]:
    try:
        return target.observe(resources)
    except LiminalError:
        return {}  # cannot observe: apply everything in the group, which is idempotent


def _delete(target: Target, deployed: Deployed, change: Change) -> ResourceOutcome:
    try:
        return _outcome(change, target.delete(deployed))
    except LiminalError as exc:
        return _outcome(change, TargetResult(change.key, ResultCode.FAILED, str(exc), retry_after_of(exc)))


def _outcome(change: Change, result: TargetResult) -> ResourceOutcome:
    """The outcome of a change: what the plan meant to do, and what the target says happened."""
    return ResourceOutcome(
        change.key, change.action, result.code, change.desired_hash, result.message, retry_after=result.retry_after
    )
