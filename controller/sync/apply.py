"""apply: a Plan -> targets, in waves (images, then DAGs, then services), each outcome recorded as it completes.

A change whose dependency failed in this run is skipped, never applied against a missing image.
Before applying, the target is observed: a resource already as desired (for example applied
just before a crash, not yet recorded) is adopted as in sync, not applied a second time.
Deletes (pruning) run last, newest wave first, and only when nothing failed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from controller.errors import LiminalError, TransientError
from controller.model import (
    Action,
    Change,
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
from controller.ports import Target

__all__ = ["ApplyResult", "Recorder", "apply", "each"]


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
                    done(_outcome(change, ResultCode.SKIPPED, f"waits for {blocked[0]}, which failed"), None)
                elif observed.get(change.key) == resource.content_hash:
                    done(_outcome(change, ResultCode.IN_SYNC, "already live (adopted)"), resource)
                else:
                    todo[change.key] = change
            if todo:
                # outcomes are recorded one by one, as the target reports each
                for outcome in _apply_group(target, [wanted[k] for k in todo], source, todo):
                    done(outcome, wanted[outcome.key])
    deletes = [c for c in plan.changes if c.action is Action.DELETE]
    for change in deletes:
        if failed:
            done(_outcome(change, ResultCode.SKIPPED, "not pruned: another change failed in this run"), None)
            continue
        current = deployed.resources[change.key]
        target = targets[change.key.kind]
        done(_try(functools.partial(target.delete, current), change), None)
    return ApplyResult(tuple(outcomes))


def _apply_group(
    target: Target, resources: list[Resource], source: Snapshot, changes: Mapping[ResourceKey, Change]
) -> Iterator[ResourceOutcome]:
    reported: set[ResourceKey] = set()
    try:
        for outcome in target.apply(resources, source):
            reported.add(outcome.key)
            # the target says what happened; the plan says whether it was a create or an update
            yield dataclasses.replace(outcome, action=changes[outcome.key].action)
    except LiminalError as exc:
        for key, change in changes.items():
            if key not in reported:
                yield dataclasses.replace(_outcome(change, ResultCode.FAILED, str(exc)), retry_after=_retry(exc))


def each(resources: Sequence[Resource], one: Callable[[Resource], ResourceOutcome]) -> Iterator[ResourceOutcome]:
    """Apply resources one at a time, a failure (LiminalError) becoming that resource's FAILED outcome."""
    for resource in resources:
        try:
            yield one(resource)
        except LiminalError as exc:
            yield ResourceOutcome(
                resource.key, Action.UPDATE, ResultCode.FAILED, resource.content_hash, str(exc), retry_after=_retry(exc)
            )


def _observe(target: Target, resources: list[Resource]) -> Mapping[ResourceKey, str | None]:
    try:
        return target.observe(resources)
    except LiminalError:
        return {}  # cannot observe: apply everything in the group, which is idempotent


def _try(call: Callable[[], ResourceOutcome], change: Change) -> ResourceOutcome:
    try:
        return dataclasses.replace(call(), action=change.action)
    except LiminalError as exc:
        return dataclasses.replace(_outcome(change, ResultCode.FAILED, str(exc)), retry_after=_retry(exc))


def _retry(exc: LiminalError) -> float | None:
    return exc.retry_after if isinstance(exc, TransientError) else None


def _outcome(change: Change, code: ResultCode, message: str) -> ResourceOutcome:
    return ResourceOutcome(change.key, change.action, code, change.desired_hash, message)
