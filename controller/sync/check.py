"""Pull-request checks in `liminal serve`: the newest head of each pull request, and the check of
one head from start to report.

A check fetches the head (never running any of it), validates and plans it against what is
deployed, and shows the report through the forge's CheckReporter: running first, then the
verdict with problems on their lines and the plan in the pull request's one comment. Showing
happens on a thread per forge, in order, retried while the forge is down. A head that a newer
push replaced before its report was shown ends `cancelled` and leaves the comment to the newer
head; a check that cannot run ends `failure` with the reason, never pending.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from controller.errors import LiminalError, TransientError
from controller.model import CheckReport, Conclusion, Delivery, ForgeText, PullRequest
from controller.ports import CheckReporter
from controller.sync.check_report import check_report, failed_report, superseded_report
from controller.sync.deps import Deps
from controller.sync.preview import Preview, preview

__all__ = ["PLAIN", "ForgeQueue", "PullRequestChecks", "check_pull_request"]

log = structlog.get_logger("liminal.check")

PLAIN = ForgeText(summary_chars=65_535, comment_chars=65_536, blob="blob")
"""The limits a report is cut to when no forge is configured (it is then only in the ledger)."""

_PR_HEADS = 10_000
"""Pull requests whose newest head is remembered (the oldest forgotten first)."""


def check_pull_request(deps: Deps, repo: str, remote_ref: str, commit: str) -> Preview:
    """Fetch the pull request's head, validate it, and plan it as the sync after merging would."""
    return preview(repo, deps, head=(remote_ref, commit))


class PullRequestChecks:
    """Runs the check of one pull-request head on a reconcile worker, and hands what is to be
    shown to the forge's queue (the worker never waits for a forge)."""

    def __init__(self, deps: Deps, reporters: Mapping[str, CheckReporter], public_url: str) -> None:
        self.deps = deps
        self.public_url = public_url.rstrip("/")
        self._heads: OrderedDict[tuple[str, str | None, int | None], str] = OrderedDict()
        self._lock = threading.Lock()
        self.forges = {name: ForgeQueue(name, reporter, self.newest) for name, reporter in reporters.items()}

    def arrived(self, delivery: Delivery) -> None:
        """Remember `delivery`'s head as its pull request's newest: an older one still being
        checked or shown is then reported superseded."""
        if not delivery.commit:
            return
        key = (delivery.provider, delivery.repo, delivery.pull_request)
        with self._lock:
            self._heads[key] = delivery.commit
            self._heads.move_to_end(key)
            while len(self._heads) > _PR_HEADS:
                self._heads.popitem(last=False)

    def newest(self, pr: PullRequest, repo: str | None) -> str:
        """The newest head known of `pr`'s pull request (its own when none is known)."""
        with self._lock:
            return self._heads.get((pr.provider, repo, pr.number), pr.commit)

    def run(self, delivery: Delivery, keep: Callable[[str, dict[str, Any]], None]) -> None:
        """Check `delivery`'s head, `keep` the verdict's line and the details (the ledger, for
        the plan page the check links to), then queue the report to be shown on the forge."""
        bound = log.bind(repo=delivery.repo, commit=(delivery.commit or "")[:12], delivery=delivery.delivery_id)
        forge = self.forges.get(delivery.provider) if delivery.project and delivery.commit else None
        pr = PullRequest(
            provider=delivery.provider,
            project=delivery.project or "",
            number=delivery.pull_request or 0,
            commit=delivery.commit or "",
            web_url=delivery.web_url,
            plan_url=f"{self.public_url}/checks/{delivery.provider}/{delivery.delivery_id}",
        )
        if forge is not None:
            forge.put(_Show(pr, delivery.repo))
        report, details = self._checked(delivery, pr, forge.reporter.text if forge else PLAIN, bound)
        bound.info("check.done", conclusion=report.conclusion.value, summary=report.title)
        keep(report.title, details)  # before it is shown: the link on the forge finds the plan
        if forge is not None:
            forge.put(_Show(pr, delivery.repo, report))

    def stop(self, timeout: float = 5.0) -> None:
        """Show what is queued for up to `timeout` seconds, then stop the forges' threads."""
        for forge in self.forges.values():
            forge.stop(timeout)

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


@dataclass
class _Show:
    """One check to show: started (no report yet) or ended with `report`."""

    pr: PullRequest
    repo: str | None
    report: CheckReport | None = None
    verdict_shown: bool = False
    tries: int = 0
    not_before: float = 0.0


class ForgeQueue:
    """What one forge is to show, in the order the checks made it, on one thread of its own. A
    step the forge failed to take (unreachable, 5xx) is tried again after a growing pause, up to
    `tries` times; a refusal is logged and dropped. At the time a report is shown, a head that a
    newer push replaced ends `cancelled`, and never writes the comment."""

    def __init__(
        self,
        name: str,
        reporter: CheckReporter,
        newest: Callable[[PullRequest, str | None], str],
        *,
        tries: int = 8,
        waiting: int = 1000,
        pause: float = 5.0,
    ) -> None:
        self.name = name
        self.pause = pause
        """The first pause before a step is tried again; it doubles with each try (at most 5 minutes)."""
        self.reporter = reporter
        self._newest = newest
        self.tries = tries
        self.waiting = waiting
        self._queue: deque[_Show] = deque()
        self._started: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = False
        self._thread: threading.Thread | None = None

    def put(self, show: _Show) -> None:
        """Queue `show` (the oldest waiting is dropped, with a log line, beyond `waiting`)."""
        with self._cond:
            if self._stopping:
                return
            if len(self._queue) >= self.waiting:
                dropped = self._queue.popleft()
                log.warning("check.not_shown", forge=self.name, commit=dropped.pr.commit[:12], why="queue full")
            self._queue.append(show)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=f"checks-{self.name}", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def idle(self) -> bool:
        """True when nothing is waiting or being shown."""
        with self._cond:
            return not self._queue and not self._busy

    def stop(self, timeout: float) -> None:
        """Let the thread show what is queued for up to `timeout` seconds, then stop it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._queue or self._busy) and time.monotonic() < deadline and self._thread is not None:
                self._cond.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            self._stopping = True
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._queue or self._queue[0].not_before > time.monotonic()):
                    self._cond.wait(0.5 if not self._queue else max(0.01, self._queue[0].not_before - time.monotonic()))
                if self._stopping:
                    return
                show = self._queue.popleft()
                self._busy = True
            try:
                self._show(show)
            except TransientError as exc:
                show.tries += 1
                if show.tries < self.tries:
                    wait = min(300.0, max(min(exc.retry_after, 300.0), self.pause * 2**show.tries))
                    show.not_before = time.monotonic() + wait
                    with self._cond:
                        self._queue.appendleft(show)  # first again: one pull request's steps stay in order
                else:
                    self._gave_up(show, str(exc))
            except LiminalError as exc:
                self._gave_up(show, str(exc))
            except Exception as exc:  # the thread must outlive any one forge answer
                self._gave_up(show, type(exc).__name__)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _show(self, show: _Show) -> None:
        pr = show.pr
        key = (pr.project, pr.commit)
        if show.report is None:
            started = self.reporter.start(pr)
            with self._cond:
                self._started[key] = started
                while len(self._started) > self.waiting:
                    self._started.popitem(last=False)
            return
        report = show.report
        newest = self._newest(pr, show.repo)
        if newest != pr.commit and report.conclusion is not Conclusion.CANCELLED:
            report = show.report = superseded_report(pr, newest)
        if not show.verdict_shown:
            with self._cond:
                started = self._started.get(key, "")
            self.reporter.finish(pr, report, started)
            show.verdict_shown = True  # a retry only writes the comment
        if report.comment is not None:
            self.reporter.comment(pr, report.comment)
        with self._cond:
            self._started.pop(key, None)

    def _gave_up(self, show: _Show, why: str) -> None:
        step = "start" if show.report is None else "report"
        log.warning("check.not_shown", forge=self.name, commit=show.pr.commit[:12], step=step, error=why)
