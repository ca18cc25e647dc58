"""plan: DesiredState vs DeployedState -> Plan. Pure: compares content hashes, imports no client."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

from controller.model import Action, Change, DeployedState, DesiredState, Plan, ResourceKey

__all__ = ["body_text", "plan"]


def body_text(body: Mapping[str, Any] | None) -> list[str]:
    """A body as stable, diffable lines (sorted keys, two-space indent)."""
    if body is None:
        return []
    return json.dumps(body, indent=2, sort_keys=True, default=str).splitlines(keepends=True)


def plan(
    desired: DesiredState,
    deployed: DeployedState,
    *,
    prune: bool = True,
    drifted: frozenset[ResourceKey] = frozenset(),
) -> Plan:
    """The changes that make `deployed` equal to `desired`.

    Order: creates and updates by wave (images, DAGs, services), then deletes in reverse wave order
    (services before the DAGs and images they use). With `prune` off, resources gone from git stay.
    `drifted` names resources the ledger has as desired but whose live state differs (edited or
    removed behind the controller's back): they are updated again.
    """
    changes: list[Change] = []
    wanted = desired.by_key()
    for key, resource in wanted.items():
        current = deployed.resources.get(key)
        if current is None:
            changes.append(Change(key, Action.CREATE, resource.content_hash, None, _diff(key, None, resource.body)))
        elif current.content_hash != resource.content_hash:
            diff = _diff(key, current.body, resource.body)
            changes.append(Change(key, Action.UPDATE, resource.content_hash, current.content_hash, diff))
        elif key in drifted:
            diff = f"drift: the live {key.kind}/{key.name} differs from what git and the ledger say; restoring\n"
            changes.append(Change(key, Action.UPDATE, resource.content_hash, current.content_hash, diff))
        else:
            changes.append(Change(key, Action.NOOP, resource.content_hash, current.content_hash))
    gone = [d for k, d in deployed.resources.items() if k not in wanted]
    if prune:
        for d in gone:
            changes.append(Change(d.key, Action.DELETE, None, d.content_hash, _diff(d.key, d.body, None)))
    changes.sort(key=_order)
    return Plan(tuple(changes))


def _order(change: Change) -> tuple[int, int, str]:
    if change.action is Action.DELETE:
        return (1, -change.wave, change.key.name)
    return (0, change.wave, change.key.name)


def _diff(key: Any, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> str:
    name = f"{key.kind}/{key.name}"
    lines = difflib.unified_diff(
        body_text(old), body_text(new), fromfile=f"deployed/{name}", tofile=f"desired/{name}", n=2
    )
    return "".join(lines)
