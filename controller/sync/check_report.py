"""A pull-request check's report: the preview of its head in a forge's words (the verdict, a
summary, problems to put on their lines, and the plan comment), cut to the forge's limits."""

from __future__ import annotations

import html
from collections.abc import Callable

from controller.model import (
    Action,
    Change,
    CheckReport,
    Conclusion,
    ForgeText,
    Problem,
    PullRequest,
    ResourceKind,
)
from controller.sync.markdown import code, details, fenced, fit, text
from controller.sync.preview import Preview

__all__ = ["HEADING", "check_report", "failed_report", "superseded_report", "title"]

HEADING = "liminal-gitops plan"
DIFF_LINES = 300
"""Lines of one resource's diff in the comment; a longer one is clipped (the plan page has it whole)."""
LISTED = 50
"""Resources named in one "not deployed here" or drift line."""


def title(found: Preview) -> str:
    """The verdict in one line (a commit status's description, a check run's title)."""
    if not found.valid:
        return f"{len(found.problems)} problem(s): {found.problems[0].render()}"
    counts = found.plan.counts()
    line = (
        "valid; merging changes nothing"
        if found.plan.is_noop
        else f"valid; merging would create {counts['create']}, update {counts['update']}, delete {counts['delete']}"
    )
    if found.warnings:
        line += f"; {len(found.warnings)} warning(s): {found.warnings[0].render()}"
    return line


def check_report(found: Preview, pr: PullRequest, forge: ForgeText) -> CheckReport:
    """The report of a head that could be checked: `failure` when it does not validate,
    `neutral` when it does with warnings, `success` otherwise."""
    if not found.valid:
        verdict = Conclusion.FAILURE
    elif found.warnings:
        verdict = Conclusion.NEUTRAL
    else:
        verdict = Conclusion.SUCCESS
    located = sorted(found.problems, key=Problem.sort_key) + sorted(found.warnings, key=Problem.sort_key)
    return CheckReport(
        verdict,
        title(found),
        _document(found, pr, forge, forge.summary_chars, diffs=False),
        tuple(located[: forge.annotations]),
        _document(found, pr, forge, forge.comment_chars, diffs=True),
    )


def failed_report(pr: PullRequest, reason: str, forge: ForgeText) -> CheckReport:
    """The report of a check that could not run (the head could not be fetched, the check
    crashed): `failure` with the reason, in the check and in the comment."""
    body = "".join(
        [
            f"### {HEADING}: {code(pr.commit[:12])} could not be checked",
            f"\n\n{text(reason)}",
            "\n\nNothing was planned for this commit; pushing again checks the new head.",
            _footer(pr),
        ]
    )
    return CheckReport(Conclusion.FAILURE, f"the check could not run: {reason}", body[: forge.summary_chars], (), body)


def superseded_report(pr: PullRequest, newer: str) -> CheckReport:
    """The report of a head replaced by a newer push before its check ended: `cancelled`, and
    the comment left to the newer head's check."""
    summary = f"A newer head of this pull request, {code(newer[:12])}, is checked instead of {code(pr.commit[:12])}."
    return CheckReport(Conclusion.CANCELLED, f"superseded by {newer[:12]}", summary)


def _document(found: Preview, pr: PullRequest, forge: ForgeText, limit: int, *, diffs: bool) -> str:
    """The summary (diffs=False) or the comment: heading, verdict, resource table, problems and
    warnings linked to their lines, what is not deployed here, drift, and (comment) the diffs
    folded; cut at `limit` characters with a link to the plan page."""
    pieces = [f"### {HEADING}: {code(found.repo)} at {code(found.commit[:12])}", f"\n\n{_verdict(found)}"]
    changed = [c for c in found.plan.changes if c.action.changes_something]
    if changed:
        pieces.append("\n\n| Action | Kind | Name | Content hash |\n| --- | --- | --- | --- |")
        pieces.extend(_row(c) for c in changed)
    for heading, located in (("Problems", found.problems), ("Warnings", found.warnings)):
        if located:
            pieces.append(f"\n\n**{heading}** ({len(located)})\n")
            pieces.extend(_located(p, pr, forge) for p in sorted(located, key=Problem.sort_key))
    if found.not_deployed:
        pieces.append(
            f"\n\n**Not deployed here** (no target of this controller takes them): {_names(found.not_deployed)}"
        )
    if found.drift:
        then = "the sync after merging restores it" if found.self_heal else "self-heal is off: it is only reported"
        pieces.append(f"\n\n**Drift** (live differs from what was deployed; {then}): {_names(found.drift)}")
    if diffs:
        pieces.extend(f"\n\n{_diff(c)}" for c in changed if c.brief or c.diff)
    return fit(pieces, limit, _tail(pr, limit, comment=diffs))


def _verdict(found: Preview) -> str:
    if not found.valid:
        return f"**{len(found.problems)} problem(s)**: this commit would not be deployed; what is live stays as it is."
    if found.plan.is_noop:
        return "Merging changes nothing that is deployed."
    counts = found.plan.counts()
    by_kind = []
    for kind, label in ((ResourceKind.IMAGE, "images"), (ResourceKind.DAG, "DAGs"), (ResourceKind.SERVICE, "services")):
        mine = [c for c in found.plan.changes if c.key.kind is kind and c.action.changes_something]
        counted = {a.value: _count(mine, a) for a in (Action.CREATE, Action.UPDATE, Action.DELETE)}
        if kind is ResourceKind.IMAGE:  # an image is built, whether new or changed
            counted = {"build": counted["create"] + counted["update"], "delete": counted["delete"]}
        words = [f"{word} {n}" for word, n in counted.items() if n]
        if words:
            by_kind.append(f"{label}: {', '.join(words)}")
    line = f"Merging would **create {counts['create']}, update {counts['update']}, delete {counts['delete']}**"
    return line + (f" ({'; '.join(by_kind)})." if by_kind else ".")


def _count(changes: list[Change], action: Action) -> int:
    return sum(1 for c in changes if c.action is action)


def _row(change: Change) -> str:
    action = change.action.value
    if change.key.kind is ResourceKind.IMAGE and change.action is not Action.DELETE:
        action = "build"
    if change.drifted:
        action += " (drift)"
    old = code(change.deployed_hash[:12], in_table=True) if change.deployed_hash else ""
    new = code(change.desired_hash[:12], in_table=True) if change.desired_hash else "(none)"
    hashes = f"{old} → {new}" if old else new
    return f"\n| {action} | {change.key.kind.value} | {code(change.key.name, in_table=True)} | {hashes} |"


def _located(problem: Problem, pr: PullRequest, forge: ForgeText) -> str:
    where = code(f"{problem.file}:{problem.line}:{problem.col}")
    url = forge.line_url(pr, problem.file, problem.line)
    if url:
        where = f"[{where}]({url})"
    return f"\n- {where} {code(problem.path)}: {text(problem.message)} ({code(problem.rule)})"


def _names(names: tuple[str, ...]) -> str:
    shown = ", ".join(code(n) for n in names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


def _diff(change: Change) -> str:
    lines = (change.brief or change.diff).splitlines()
    if len(lines) > DIFF_LINES:
        lines = [*lines[:DIFF_LINES], f"... {len(lines) - DIFF_LINES} more lines on the plan page"]
    label = f"<code>{html.escape(f'{change.key.kind.value}/{change.key.name}')}</code> {change.action.value}"
    return details(label, fenced("\n".join(lines), "diff"))


def _footer(pr: PullRequest, *, comment: bool = True) -> str:
    link = f" · [the whole plan]({pr.plan_url})" if pr.plan_url else ""
    edited = " · this comment is edited in place on every push" if comment else ""
    return f"\n\n<sub>Checked commit {code(pr.commit)}{link}{edited}</sub>"


def _tail(pr: PullRequest, limit: int, *, comment: bool) -> Callable[[int], str]:
    def tail(left: int) -> str:
        if not left:
            return _footer(pr, comment=comment)
        where = f"[the plan page]({pr.plan_url})" if pr.plan_url else "the controller's plan page"
        cut = f"\n\n**Cut at {limit:,} characters** (the forge's limit): {left:,} more entries are on {where}."
        return cut + _footer(pr, comment=comment)

    return tail
