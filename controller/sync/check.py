"""Pull-request checks in `liminal serve`: the newest head of each pull request, and the check of
one head from start to report.

A check fetches the head (never running any of it), validates and plans it against what is
deployed, and shows the report through the forge's CheckReporter: running first, then the
verdict with problems on their lines and the plan in the pull request's one comment. A head
that a newer push replaced while it was checked ends `cancelled` and leaves the comment to the
newer head; a check that cannot run ends `failure` with the reason, never pending.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from controller.errors import LiminalError
from controller.model import CheckReport, Delivery, ForgeText, PullRequest
from controller.ports import CheckReporter
from controller.sync.check_report import check_report, failed_report, superseded_report
from controller.sync.deps import Deps
from controller.sync.preview import Preview, preview

__all__ = ["PLAIN", "PullRequestChecks", "check_pull_request"]

log = structlog.get_logger("liminal.check")

PLAIN = ForgeText(summary_chars=65_535, comment_chars=65_536, blob="blob")
"""The limits a report is cut to when no forge is configured (it is then only in the ledger)."""

_PR_HEADS = 10_000
"""Pull requests whose newest head is remembered (the oldest forgotten first)."""


def check_pull_request(deps: Deps, repo: str, remote_ref: str, commit: str) -> Preview:
    """Fetch the pull request's head, validate it, and plan it as the sync after merging would."""
    return preview(repo, deps, head=(remote_ref, commit))


class PullRequestChecks:
    """Runs the check of one pull-request head and shows it where the pull request lives."""

    def __init__(self, deps: Deps, reporters: Mapping[str, CheckReporter], public_url: str) -> None:
        self.deps = deps
        self.reporters = dict(reporters)
        self.public_url = public_url.rstrip("/")
        self._heads: OrderedDict[tuple[str, str | None, int | None], str] = OrderedDict()
        self._lock = threading.Lock()
        # one pull request's reports are shown in order (striped: bounded, whatever the number of PRs)
        self._stripes = [threading.Lock() for _ in range(64)]

    def arrived(self, delivery: Delivery) -> None:
        """Remember `delivery`'s head as its pull request's newest: an older one still being
        checked is then reported superseded."""
        if not delivery.commit:
            return
        key = _key(delivery)
        with self._lock:
            self._heads[key] = delivery.commit
            self._heads.move_to_end(key)
            while len(self._heads) > _PR_HEADS:
                self._heads.popitem(last=False)

    def run(self, delivery: Delivery, keep: Callable[[str, dict[str, Any]], None]) -> None:
        """Check `delivery`'s head, `keep` the verdict's line and the details (the ledger, for
        the plan page the check links to), then show the report on the forge."""
        bound = log.bind(repo=delivery.repo, commit=(delivery.commit or "")[:12], delivery=delivery.delivery_id)
        reporter = self.reporters.get(delivery.provider) if delivery.project and delivery.commit else None
        forge = reporter.text if reporter is not None else PLAIN
        pr = PullRequest(
            provider=delivery.provider,
            project=delivery.project or "",
            number=delivery.pull_request or 0,
            commit=delivery.commit or "",
            web_url=delivery.web_url,
            plan_url=f"{self.public_url}/checks/{delivery.provider}/{delivery.delivery_id}",
        )
        started = ""
        if reporter is not None:
            try:
                started = reporter.start(pr)
            except LiminalError as exc:
                bound.warning("check.start_not_shown", error=str(exc))
        report, details = self._checked(delivery, pr, forge, bound)
        with self._stripes[zlib.crc32(repr(_key(delivery)).encode()) % len(self._stripes)]:
            with self._lock:
                newest = self._heads.get(_key(delivery), pr.commit)
            if newest != pr.commit:
                report = superseded_report(pr, newest)
                details = {**details, "superseded_by": newest}
            bound.info("check.done", conclusion=report.conclusion.value, summary=report.title)
            keep(report.title, details)  # before it is shown: the link on the forge finds the plan
            if reporter is not None:
                try:
                    reporter.finish(pr, report, started)
                except LiminalError as exc:
                    bound.warning("check.report_not_shown", conclusion=report.conclusion.value, error=str(exc))

    def _checked(
        self, delivery: Delivery, pr: PullRequest, forge: ForgeText, bound: Any
    ) -> tuple[CheckReport, dict[str, Any]]:
        # where each provider keeps a pull (merge) request's head
        remote_ref = f"refs/pull/{pr.number}/head"
        if delivery.provider == "gitlab":
            remote_ref = f"refs/merge-requests/{pr.number}/head"
        try:
            if not delivery.repo or not delivery.commit:
                raise LiminalError("the delivery names no tracked repository or commit")
            found = check_pull_request(self.deps, delivery.repo, remote_ref, delivery.commit)
            return check_report(found, pr, forge), found.as_json()
        except LiminalError as exc:
            reason = str(exc)
        except Exception as exc:  # a worker must outlive any one check
            bound.exception("check.crashed")
            reason = f"the check crashed ({type(exc).__name__}); the controller's log has the trace"
        return failed_report(pr, reason, forge), {"error": reason}


def _key(delivery: Delivery) -> tuple[str, str | None, int | None]:
    return (delivery.provider, delivery.repo, delivery.pull_request)
