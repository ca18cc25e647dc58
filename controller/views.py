"""Views of records for people and programs, the same in the CLI and the REST API: runs as JSON,
previews as text (a preview's JSON form is `Preview.as_json`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from controller.errors import LiminalError
from controller.model import Action, Deployed, Health, ResourceKind, ServiceEndpoint, SyncRun
from controller.ports import ServiceTarget

if TYPE_CHECKING:
    from controller.sync.deps import Deps
    from controller.sync.preview import Preview

__all__ = ["preview_text", "run_json", "service_endpoints"]


def service_endpoints(deps: Deps, deployed: Sequence[Deployed]) -> list[tuple[str, ServiceEndpoint]]:
    """Each deployed service's URL and live health, asked of the serving target (by name)."""
    services = sorted((d for d in deployed if d.key.kind is ResourceKind.SERVICE), key=str)
    target = deps.targets.get(ResourceKind.SERVICE)
    if not services:
        return []
    if not isinstance(target, ServiceTarget):
        return [(d.key.name, ServiceEndpoint(None, Health.UNKNOWN, "no serving target configured")) for d in services]
    try:
        found = target.endpoints(services)
    except LiminalError as exc:
        return [(d.key.name, ServiceEndpoint(None, Health.UNKNOWN, str(exc))) for d in services]
    return [(d.key.name, found.get(d.key) or ServiceEndpoint(None, Health.UNKNOWN)) for d in services]


def run_json(r: SyncRun) -> dict[str, Any]:
    """A sync run with its outcomes (datetimes left to the caller's encoder)."""
    return {
        "id": r.id,
        "repo": r.repo,
        "trigger": r.trigger,
        "commit": r.commit,
        "status": str(r.status),
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "error": r.error,
        "summary": dict(r.summary),
        "outcomes": [
            {
                "kind": str(o.key.kind),
                "name": o.key.name,
                "action": str(o.action),
                "code": str(o.code),
                "message": o.message,
            }
            for o in r.outcomes
        ],
    }


_SIGNS = {Action.CREATE: "+", Action.UPDATE: "~", Action.DELETE: "-"}


def preview_text(found: Preview) -> str:
    """A preview as `terraform plan` reads: one line per resource, then each diff (commit and hash
    stamps left out; the JSON form keeps them), then a summary line. Ends with a newline."""
    head = f"{found.repo} @ {found.commit[:12]}"
    if not found.valid:
        lines = [f"{head}: invalid, {len(found.problems)} problem(s); nothing would change (the live commit stays)"]
        lines += [f"  {p.render()}" for p in found.problems]
        lines += [f"  {w.render()}" for w in found.warnings]
        return "\n".join(lines) + "\n"
    changes = [c for c in found.plan.changes if c.action.changes_something]
    lines = [head]
    for c in changes:
        note = "   (drift: the live copy differs; restoring it)" if c.drifted else ""
        lines.append(f"  {_SIGNS[c.action]} {c.action.value:<6} {c.key.kind}/{c.key.name}{note}")
    if not found.self_heal:
        lines += [f"  ! drift  {name}   (self-heal is off: reported, not restored)" for name in found.drift]
    lines += [f"  ! skip   {name}   ({not_deployed_why(name)})" for name in found.not_deployed]
    lines += [f"  {w.render()}" for w in found.warnings]
    for c in changes:
        lines.append("")
        lines.append(f"  {_SIGNS[c.action]} {c.key.kind}/{c.key.name}")
        lines += [f"    {line}" for line in c.brief.splitlines()]
    counts = found.plan.counts()
    lines.append("")
    if changes:
        lines.append(f"Plan: {counts['create']} to create, {counts['update']} to update, {counts['delete']} to delete.")
    elif found.drift and not found.self_heal:
        lines.append(f"No changes to apply; {len(found.drift)} resource(s) drifted, not restored (self-heal is off).")
    elif found.not_deployed:
        count = len(found.not_deployed)
        lines.append(f"No changes to what this controller deploys; {count} resource(s) are not deployed here.")
    else:
        lines.append("No changes: what is deployed matches git.")
    return "\n".join(lines) + "\n"


_NO_TARGET = {
    "image": "images are off here, LIMINAL_IMAGES=off: not built, not pushed",
    "service": "no serving target here: local serving needs LIMINAL_IMAGES=docker, or LIMINAL_SERVING=kubernetes",
    "claim": "claims are made only with LIMINAL_SERVING=kubernetes",
    "secret": "secrets are checked only with LIMINAL_SERVING=kubernetes",
}


def not_deployed_why(name: str) -> str:
    """Why a resource ("kind/name") of git is not deployed by this controller."""
    return _NO_TARGET.get(name.split("/", 1)[0], "no target here deploys this kind")
