"""plan: DesiredState vs DeployedState -> Plan. Pure: compares content hashes, imports no client."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

from controller.model import Action, Change, DeployedState, DesiredState, Plan, ResourceKey
from controller.render.services import ORIGIN_MARKS

__all__ = ["body_text", "plan"]


def body_text(body: Mapping[str, Any] | None, *, drop: frozenset[str] = frozenset()) -> list[str]:
    """A body as stable, diffable lines (sorted keys, two-space indent), without the keys in `drop`."""
    if body is None:
        return []
    return json.dumps(_without(body, drop), indent=2, sort_keys=True, default=str).splitlines(keepends=True)


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
            changes.append(_change(key, Action.CREATE, (resource.content_hash, None), None, resource.body))
        elif current.content_hash != resource.content_hash:
            changes.append(
                _change(key, Action.UPDATE, (resource.content_hash, current.content_hash), current.body, resource.body)
            )
        elif key in drifted:
            note = f"drift: the live {key.kind}/{key.name} differs from what git and the ledger say; restoring\n"
            changes.append(
                Change(key, Action.UPDATE, resource.content_hash, current.content_hash, note, note, drifted=True)
            )
        else:
            changes.append(Change(key, Action.NOOP, resource.content_hash, current.content_hash))
    gone = [d for k, d in deployed.resources.items() if k not in wanted]
    if prune:
        for d in gone:
            changes.append(_change(d.key, Action.DELETE, (None, d.content_hash), d.body, None))
    changes.sort(key=_order)
    return Plan(tuple(changes))


def _order(change: Change) -> tuple[int, int, str]:
    if change.action is Action.DELETE:
        return (1, -change.wave, change.key.name)
    return (0, change.wave, change.key.name)


def _change(
    key: ResourceKey,
    action: Action,
    hashes: tuple[str | None, str | None],
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
) -> Change:
    """A change with its full diff and the brief one (`hashes`: desired, deployed)."""
    return Change(key, action, *hashes, _diff(key, old, new), _diff(key, old, new, drop=ORIGIN_MARKS))


def _diff(
    key: ResourceKey, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, drop: frozenset[str] = frozenset()
) -> str:
    name = f"{key.kind}/{key.name}"
    lines = difflib.unified_diff(
        body_text(old, drop=drop), body_text(new, drop=drop), fromfile=f"deployed/{name}", tofile=f"desired/{name}", n=2
    )
    # every line ends with a newline, so a diff never runs into what is printed after it
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _without(value: Any, drop: frozenset[str]) -> Any:
    if not drop:
        return value
    if isinstance(value, Mapping):
        return {k: _without(v, drop) for k, v in value.items() if k not in drop}
    if isinstance(value, list | tuple):
        return [_without(v, drop) for v in value]
    return value
