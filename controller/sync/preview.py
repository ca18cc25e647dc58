"""preview: what the next sync of a repository would do, computed the way the sync computes it.

`planned` is the one path from a checked-out commit to a Plan: render it, read what is deployed,
observe the live state for drift, and plan (restoring drift when the repository self-heals).
`reconcile` applies its result; `preview` (the CLI's `liminal plan`, the API's plan and the
pull-request checks) only shows it. Nothing here changes anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from controller.errors import InputError, LiminalError
from controller.model import (
    DeployedState,
    DesiredState,
    Plan,
    Problem,
    RepoRef,
    ResourceKey,
    ResourceKind,
    Snapshot,
)
from controller.ports import Target
from controller.sync.deps import Deps, desired_for
from controller.sync.plan import plan

__all__ = ["Planned", "Preview", "drifted", "key_names", "planned", "preview"]

log = structlog.get_logger("liminal.sync")


@dataclass(frozen=True, slots=True)
class Planned:
    """A commit's desired state against what is deployed and live, and the plan between them."""

    desired: DesiredState
    deployed: DeployedState
    drifted: frozenset[ResourceKey]
    """Deployed as desired, but live differs (observed on the targets that watch for drift)."""
    plan: Plan


@dataclass(frozen=True, slots=True)
class Preview:
    """What a sync of `repo` at `commit` would do; `problems` when the commit is invalid (then
    nothing would be applied and the live commit stays)."""

    repo: str
    commit: str
    plan: Plan
    drift: tuple[str, ...] = ()
    """Live resources ("kind/name") that differ from what was deployed."""
    self_heal: bool = True
    """Whether the sync restores the drift (it is in `plan` then) or only reports it."""
    warnings: tuple[Problem, ...] = ()
    problems: tuple[Problem, ...] = ()
    not_deployed: tuple[str, ...] = ()
    """Resources ("kind/name") of the commit that no target here deploys (images off, no serving target)."""

    @property
    def valid(self) -> bool:
        """False when the commit does not validate."""
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        """Everything, diffs in full (the API's and `--format json`'s form)."""
        return {
            "repository": self.repo,
            "commit": self.commit,
            "valid": self.valid,
            "counts": self.plan.counts(),
            "drift": list(self.drift),
            "self_heal": self.self_heal,
            "changes": [
                {
                    "kind": str(c.key.kind),
                    "name": c.key.name,
                    "action": str(c.action),
                    "drift": c.drifted,
                    "desired_hash": c.desired_hash,
                    "deployed_hash": c.deployed_hash,
                    "diff": c.diff,
                }
                for c in self.plan.changes
                if c.action.changes_something
            ],
            "warnings": [w.as_json() for w in self.warnings[:100]],
            "problems": [p.as_json() for p in self.problems[:100]],
            "not_deployed": list(self.not_deployed),
        }


def planned(repo: RepoRef, snapshot: Snapshot, deps: Deps, bound: Any = log) -> Planned:
    """Render `snapshot`, observe drift and plan: the part every sync and every preview share.
    Raises InputError for an invalid commit."""
    desired = desired_for(snapshot, deps)
    # hashes first: only what changes (and what drifted, when it is restored) is diffed, so only
    # those bodies are read
    deployed = deps.ledger.deployed_state(repo.name, bodies=False)
    found = drifted(desired, deployed, deps.targets, bound)
    wanted = {r.key: r.content_hash for r in desired.resources}
    differ = {k for k, d in deployed.resources.items() if wanted.get(k) != d.content_hash}
    differ |= found if repo.self_heal else frozenset()
    if differ:
        deployed = deps.ledger.deployed_state(repo.name, bodies=differ)
    the_plan = plan(desired, deployed, prune=repo.prune, drifted=found if repo.self_heal else frozenset())
    return Planned(desired, deployed, found, the_plan)


def preview(repo_name: str, deps: Deps, *, head: tuple[str, str] | None = None) -> Preview:
    """What a sync of `repo_name` would do now: fetch its branch (or a pull request's `head`,
    `(remote_ref, commit)`), then plan as the sync does. Source errors are raised."""
    repo = deps.ledger.repo(repo_name)
    snapshot = deps.source.fetch_head(repo, *head) if head else deps.source.fetch(repo)
    bound = log.bind(repo=repo.name, commit=snapshot.commit[:12])
    try:
        # read outside the repository's lock: held, so that upkeep leaves the checkout alone
        with deps.source.hold(snapshot):
            found = planned(repo, snapshot, deps, bound)
    except InputError as exc:
        return Preview(repo.name, snapshot.commit, Plan(()), (), repo.self_heal, exc.warnings, exc.problems)
    return Preview(
        repo.name,
        snapshot.commit,
        found.plan,
        key_names(found.drifted),
        repo.self_heal,
        found.desired.warnings,
        not_deployed=key_names(set(found.desired.not_deployed)),
    )


def drifted(
    desired: DesiredState, deployed: DeployedState, targets: Mapping[ResourceKind, Target], bound: Any = log
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


def key_names(keys: frozenset[ResourceKey] | set[ResourceKey]) -> tuple[str, ...]:
    """Resource keys as sorted "kind/name" strings."""
    return tuple(sorted(f"{k.kind}/{k.name}" for k in keys))
