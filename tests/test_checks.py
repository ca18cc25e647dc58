"""Pull-request checks as a reviewer sees them: a real `liminal serve` receives GitHub's own
pull_request payloads (signed by GitHub's code) and GitLab's documented merge request hooks, and
shows each check on the local FAKE GitHub or GitLab (tests/forges.py), which validates every
request against GitHub's OpenAPI description or GitLab's documentation. The report itself
(cutting, escaping, annotations) is tested as the pure function it is.
"""

from __future__ import annotations

import copy
import json
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing

from benchmarks.corpus import big_liminal_yml
from controller.errors import TransientError
from controller.ledger import Ledger
from controller.model import (
    Action,
    Change,
    CheckReport,
    Conclusion,
    Plan,
    Problem,
    PullRequest,
    RepoRef,
    ResourceKey,
    ResourceKind,
)
from controller.sync.check import ForgeQueue, _Show
from controller.sync.check_report import check_report, failed_report
from controller.sync.preview import Preview
from tests.conftest import commit_all, example_remote, git
from tests.forges import FakeGitHub, FakeGitLab
from tests.test_serve import API_TOKEN, GITLAB_TOKEN, SECRET, _examples, _github, _post, _serving, _wait
from webhooks.github_checks import GitHubChecks
from webhooks.gitlab_checks import GitLabChecks

PUBLIC = "https://liminal.example"
WEB = "https://github.com/Codertocat/Hello-World"  # GitHub's example payload's repository page


@pytest.fixture
def hello(tmp_path: Path, sqlite_ledger: Ledger) -> tuple[Ledger, Path]:
    """The bundled example as the tracked repository `hello` (branch main), on a SQLite ledger."""
    remote = example_remote(tmp_path)
    sqlite_ledger.add_repo(RepoRef("hello", str(remote)))
    return sqlite_ledger, remote


@contextmanager
def _served(tmp_path: Path, ledger: Ledger, remote: Path, api: Any, env: dict[str, str]) -> Iterator[str]:
    """`liminal serve` with `env` and main deployed; the fake forge `api` is closed at the end."""
    try:
        with _serving(tmp_path, ledger, extra=env) as (url, _):
            _deployed(url, ledger, remote)
            yield url
    finally:
        api.close()


def _deployed(url: str, ledger: Ledger, remote: Path) -> None:
    """Deploy main first: a check plans against what is deployed."""
    base = git(remote, "rev-parse", "main")
    assert _post(url, "/api/v1/repositories/hello/sync", b"", {"Authorization": f"Bearer {API_TOKEN}"})[0] == 202
    _wait(lambda: ledger.status("hello").last_applied_commit == base)


def _branch(remote: Path, edit: Any, message: str) -> str:
    """Commit `edit(remote)` on branch `feature` (main left as it is); the new head."""
    has_feature = "feature" in git(remote, "branch", "--list", "feature")
    git(remote, "checkout", "-q", *(["feature"] if has_feature else ["-b", "feature", "main"]))
    edit(remote)
    head = commit_all(remote, message)
    git(remote, "checkout", "-q", "main")
    return head


def _schedule(hour: int) -> Any:
    def edit(remote: Path) -> None:
        yml = remote / "liminal.yml"
        yml.write_text(re.sub(r"schedule: 0 \d+ \* \* \*", f"schedule: 0 {hour} * * *", yml.read_text()))

    return edit


def _pr(
    url: str,
    remote: Path,
    number: int,
    head: str,
    *,
    action: str = "opened",
    base: str = "main",
    answer: str = "queued",
    pushed: bool = True,
) -> str:
    """GitHub's own `pull_request` example about `head` of pull request `number` into `base`
    (`pushed`: the remote has the pull request's head ref)."""
    if pushed:
        git(remote, "update-ref", f"refs/pull/{number}/head", head)
    payload = copy.deepcopy(next(p for p in _examples("pull_request") if p["action"] == "opened"))
    payload.update(action=action, number=number)
    payload["pull_request"].update(number=number)
    payload["pull_request"]["head"].update(sha=head, ref="feature")
    payload["pull_request"]["base"].update(ref=base)
    payload["repository"].update(clone_url=str(remote), ssh_url=str(remote), git_url=str(remote))
    delivery = f"pr-{number}-{head[:8]}"
    status, answered = _github(url, "pull_request", payload, delivery=delivery)
    assert (status, answered["status"]) == (202, answer), answered
    return delivery


def _completed(api: FakeGitHub, sha: str) -> dict[str, Any] | None:
    runs = [r for r in api.runs_on(sha) if r.get("status") == "completed"]
    return runs[-1] if runs else None


def _github_env(api: FakeGitHub, token: str) -> dict[str, str]:
    return {"LIMINAL_GITHUB_TOKEN": token, "LIMINAL_GITHUB_API_URL": api.url, "LIMINAL_PUBLIC_URL": PUBLIC}


def _no_secret_sent(requests: list[tuple[str, str, Any, Any]], *secrets: str) -> None:
    sent = json.dumps([r[3] for r in requests]) + json.dumps([r[1] for r in requests])
    for secret in secrets:
        assert secret not in sent


def test_a_valid_pull_request_gets_a_check_run_with_the_plan_and_one_comment(
    tmp_path: Path, hello: tuple[Ledger, Path]
) -> None:
    ledger, remote = hello
    head = _branch(remote, _schedule(9), "a later schedule")
    token = "ghs_" + uuid.uuid4().hex
    api = FakeGitHub(token)
    with _served(tmp_path, ledger, remote, api, _github_env(api, token)) as url:
        # a pull request into another branch is not planned against what main deployed
        other = _pr(url, remote, 6, head, base="develop", answer="ignored")
        # a head the remote does not have cannot be checked: failure with the reason, never pending
        missing = "f" * 40
        _pr(url, remote, 5, missing, pushed=False)
        delivery = _pr(url, remote, 7, head)
        _wait(lambda: _completed(api, head) is not None and api.comments_on(7))
        _wait(lambda: _completed(api, missing) is not None)
        with urllib.request.urlopen(f"{url}/api/v1/checks/github/{delivery}", timeout=5) as response:
            plan = json.loads(response.read())
    assert api.violations == []
    (run,) = api.runs_on(head)
    assert run["name"] == "liminal-gitops/plan"
    assert run["updates"][0]["status"] == "in_progress"  # shown running before it is planned
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert run["details_url"] == f"{PUBLIC}/checks/github/{delivery}"
    assert run["annotations"] == []
    assert run["output"]["title"] == "valid; merging would create 0, update 1, delete 0"
    change = plan["result"]["changes"][0]
    summary = run["output"]["summary"]
    assert "Merging would **create 0, update 1, delete 0** (DAGs: update 1)." in summary
    row = f"| update | dag | `hello_training` | `{change['deployed_hash'][:12]}` → `{change['desired_hash'][:12]}` |"
    assert row in summary
    (comment,) = api.comments_on(7)
    body = comment["body"]
    assert re.match(r"<!-- liminal-gitops/plan [0-9a-f]{24} -->\n### liminal-gitops plan: `hello`", body)
    assert row in body
    assert "<details><summary><code>dag/hello_training</code> update</summary>" in body
    assert "0 9 * * *" in body  # the DAG's diff, folded
    assert f"Checked commit `{head}` · [the whole plan]({PUBLIC}/checks/github/{delivery})" in body
    assert api.statuses == [] and api.comments_on(6) == []
    failed = _completed(api, missing)
    assert failed is not None and failed["conclusion"] == "failure"
    assert failed["output"]["title"].startswith("the check could not run: ")
    assert "refs/pull/5/head" in failed["output"]["title"]
    ignored = {d.delivery_id: d for d in ledger.deliveries()}[other]
    assert ignored.reason is not None and ignored.reason.startswith("no tracked repository follows develop of ")
    _no_secret_sent(api.requests, token, SECRET, API_TOKEN)


def test_three_problems_in_two_files_are_annotated_on_their_lines(tmp_path: Path, hello: tuple[Ledger, Path]) -> None:
    ledger, remote = hello
    more = (
        "name: More\n"
        "pipelines:\n"
        "  - pipeline: more_pipeline\n"
        "    start_date: 2024-01-01\n"
        "    schedule: '@daily'\n"
        "    tasks:\n"
        "      - task: one\n"
        "        type: python\n"
        "        image: missing/image\n"
        "        cmd: python -u one.py\n"
    )

    def edit(root: Path) -> None:
        yml = root / "liminal.yml"
        yml.write_text(yml.read_text().replace("timeout_minutes: 30", "timeout_minutes: thirty"))
        (root / "more").mkdir()
        (root / "more" / "liminal.yml").write_text(more)

    head = _branch(remote, edit, "two broken files")
    root_text = git(remote, "show", f"{head}:liminal.yml")
    token = "ghs_" + uuid.uuid4().hex
    api = FakeGitHub(token)
    with _served(tmp_path, ledger, remote, api, _github_env(api, token)) as url:
        _pr(url, remote, 8, head)
        _wait(lambda: _completed(api, head) is not None and api.comments_on(8))
    assert api.violations == []
    run = _completed(api, head)
    assert run is not None and run["conclusion"] == "failure"
    assert run["output"]["title"].startswith("3 problem(s): liminal.yml:")

    def at(text: str, needle: str) -> tuple[int, int]:
        before = text[: text.index(needle)]
        return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1

    expected = {
        ("liminal.yml", *at(root_text, "thirty"), "$.pipelines[0].timeout_minutes"),
        ("more/liminal.yml", *at(more, "pipeline: more_pipeline"), "$.pipelines[0]"),
        ("more/liminal.yml", *at(more, "missing/image"), "$.pipelines[0].tasks[0].image"),
    }
    found = {
        (a["path"], a["start_line"], a["start_column"], a["title"].split(": ", 1)[1])
        for a in run["annotations"]
        if a["annotation_level"] == "failure"
    }
    assert found == expected and len(run["annotations"]) == 3
    assert all(a["end_line"] == a["start_line"] for a in run["annotations"])
    (comment,) = api.comments_on(8)
    line = at(more, "missing/image")[0]
    assert f"[`more/liminal.yml:{line}:16`]({WEB}/blob/{head}/more/liminal.yml#L{line})" in comment["body"]
    assert "this commit would not be deployed" in comment["body"]


def test_a_newer_push_supersedes_the_check_in_progress_and_edits_the_one_comment(
    tmp_path: Path, hello: tuple[Ledger, Path]
) -> None:
    ledger, remote = hello
    first = _branch(remote, _schedule(7), "seven")
    token = "ghs_" + uuid.uuid4().hex
    api = FakeGitHub(token)
    with _served(tmp_path, ledger, remote, api, _github_env(api, token)) as url:
        _pr(url, remote, 9, first)
        _wait(lambda: _completed(api, first) is not None and api.comments_on(9))
        second = _branch(remote, _schedule(8), "eight")
        api.hold(second)  # GitHub takes its time to create the check run of the second head
        second_delivery = _pr(url, remote, 9, second, action="synchronize")
        assert api.holding.wait(30)
        third = _branch(remote, _schedule(10), "ten")
        third_delivery = _pr(url, remote, 9, third, action="synchronize")
        _wait(lambda: {d.delivery_id: d.status for d in ledger.deliveries()}[third_delivery] == "processed")
        api.release()  # the second head's check run is now in progress, with a newer head checked
        _wait(lambda: _completed(api, third) is not None and _completed(api, second) is not None)
        _wait(lambda: f"Checked commit `{third}`" in api.comments_on(9)[0]["body"])
        with urllib.request.urlopen(f"{url}/checks/github/{second_delivery}", timeout=10) as response:
            page = response.read().decode()
    assert api.violations == []
    superseded = _completed(api, second)
    assert superseded is not None and superseded["conclusion"] == "cancelled"
    assert superseded["output"]["title"] == f"superseded by {third[:12]}"
    newest = _completed(api, third)
    assert newest is not None and newest["conclusion"] == "success"
    (comment,) = api.comments_on(9)  # one comment, made for the first head and edited since
    assert len(api.calls("POST", r".*/issues/9/comments")) == 1
    assert comment["edits"] >= 1
    assert f"Checked commit `{third}`" in comment["body"] and "0 10 * * *" in comment["body"]
    assert second not in comment["body"]  # the superseded head never overwrote the newer plan
    assert f"A newer head, <code>{third[:12]}</code>, was pushed after this one" in page
    by_delivery = {d.delivery_id: d for d in ledger.deliveries()}
    assert by_delivery[third_delivery].reason == "valid; merging would create 0, update 1, delete 0"


def test_a_plan_of_five_thousand_resources_is_cut_at_the_limits_with_a_link(
    tmp_path: Path, hello: tuple[Ledger, Path]
) -> None:
    ledger, remote = hello

    def edit(root: Path) -> None:
        (root / "liminal.yml").write_text(big_liminal_yml(5000, 1))

    head = _branch(remote, edit, "five thousand pipelines")
    token = "ghs_" + uuid.uuid4().hex
    api = FakeGitHub(token)
    with _served(tmp_path, ledger, remote, api, _github_env(api, token)) as url:
        delivery = _pr(url, remote, 10, head)
        _wait(lambda: _completed(api, head) is not None and api.comments_on(10), seconds=180)
        with urllib.request.urlopen(f"{url}/api/v1/checks/github/{delivery}", timeout=30) as response:
            plan = json.loads(response.read())
        with urllib.request.urlopen(f"{url}/checks/github/{delivery}", timeout=30) as response:
            assert response.status == 200
    assert api.violations == []  # the summary within 65,535 characters (the schema's maxLength)
    assert plan["result"]["counts"]["create"] == 5000  # the plan page has it all
    run = _completed(api, head)
    assert run is not None and run["conclusion"] == "success"
    link = f"[the plan page]({PUBLIC}/checks/github/{delivery})"
    summary = run["output"]["summary"]
    assert len(summary) <= 65_535 and "**Cut at 65,535 characters** (the forge's limit)" in summary and link in summary
    (comment,) = api.comments_on(10)
    assert len(comment["body"]) <= 65_536 and link in comment["body"]
    assert comment["body"].count("<details>") == comment["body"].count("</details>")
    assert comment["body"].count("| create | dag |") > 100  # as many rows as fit


def test_a_token_that_cannot_create_check_runs_falls_back_to_statuses(
    tmp_path: Path, hello: tuple[Ledger, Path]
) -> None:
    ledger, remote = hello
    head = _branch(remote, _schedule(9), "a later schedule")
    token = "ghp_" + uuid.uuid4().hex  # a personal access token: GitHub refuses it check runs
    api = FakeGitHub(token, refuse_checks=True)
    with _served(tmp_path, ledger, remote, api, _github_env(api, token)) as url:
        _pr(url, remote, 11, head)
        _wait(lambda: len(api.statuses) == 2 and api.comments_on(11))
        _pr(url, remote, 12, head)
        _wait(lambda: len(api.statuses) == 4 and api.comments_on(12))
    assert api.violations == []
    assert [s["state"] for _, s in api.statuses] == ["pending", "success", "pending", "success"]
    assert {sha for sha, _ in api.statuses} == {head}
    assert api.statuses[1][1]["description"] == "valid; merging would create 0, update 1, delete 0"
    assert api.statuses[1][1]["target_url"].startswith(f"{PUBLIC}/checks/github/pr-11-")
    assert len(api.calls("POST", r".*/check-runs")) == 1  # refused once, then statuses straight away
    logs = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    refused = [json.loads(line) for line in logs.splitlines() if '"github.checks_refused"' in line]
    assert len(refused) == 1 and "commit statuses" in refused[0]["fallback"]
    assert "You must authenticate via a GitHub App" in refused[0]["error"] and token not in logs


def _app_key() -> tuple[str, str]:
    """A GitHub App's private key (PEM, as the operator gives it) and its public key (PEM, for the fake)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def test_a_github_app_creates_the_check_runs_with_installation_tokens_it_renews_and_reruns_them(
    tmp_path: Path, hello: tuple[Ledger, Path]
) -> None:
    ledger, remote = hello
    head = _branch(remote, _schedule(9), "a later schedule")
    private, public = _app_key()
    (tmp_path / "app.pem").write_text(private)
    # tokens live 5 minutes and 3 seconds: the controller replaces them 5 minutes before they expire
    api = FakeGitHub(None, app=("123456", public), token_ttl=303)
    env = {
        "LIMINAL_GITHUB_APP_ID": "123456",
        "LIMINAL_GITHUB_APP_PRIVATE_KEY_FILE": str(tmp_path / "app.pem"),
        "LIMINAL_GITHUB_API_URL": api.url,
        "LIMINAL_PUBLIC_URL": PUBLIC,
    }
    with _served(tmp_path, ledger, remote, api, env) as url:
        _pr(url, remote, 21, head)
        _pr(url, remote, 22, head)
        _wait(lambda: api.comments_on(21) and api.comments_on(22))
        bought = len(api.calls("POST", r"/app/installations/4242/access_tokens"))
        time.sleep(3.5)  # the token is now within 5 minutes of its end
        _pr(url, remote, 23, head)
        _wait(lambda: api.comments_on(23))
        # "Re-run" on the check run: GitHub's own check_run rerequested example, about our run
        rerun = copy.deepcopy(next(p for p in _examples("check_run") if p["action"] == "rerequested"))
        rerun["check_run"].update(name="liminal-gitops/plan", head_sha=head)
        rerun["check_run"]["pull_requests"] = [
            {"number": 23, "head": {"ref": "feature", "sha": head}, "base": {"ref": "main", "sha": head}}
        ]
        rerun["repository"].update(clone_url=str(remote), ssh_url=str(remote), git_url=str(remote))
        status, answered = _github(url, "check_run", rerun, delivery="rerun-23")
        assert (status, answered["status"]) == (202, "queued"), answered
        _wait(lambda: [u.get("status") for u in api.runs_on(head)[0]["updates"]].count("completed") == 4)
        other = copy.deepcopy(rerun)
        other["check_run"]["name"] = "someone-elses-check"
        assert _github(url, "check_run", other)[1]["status"] == "ignored"
    assert api.violations == []  # every call carried a live token, every JWT was the App's
    assert bought == 1  # one token served both checks
    assert len(api.calls("POST", r"/app/installations/4242/access_tokens")) == 2  # renewed before it ended
    assert len(api.calls("GET", r"/repos/Codertocat/Hello-World/installation")) == 1  # looked up once
    (run,) = api.runs_on(head)  # check runs belong to the commit: both pull requests' checks share it
    assert run["conclusion"] == "success" and api.statuses == []
    assert [u.get("status") for u in run["updates"]].count("completed") == 4  # 3 pull requests, 1 re-run
    logs = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    assert "PRIVATE KEY" not in logs and not any(token in logs for token in api.issued)


def test_a_gitlab_merge_request_gets_a_status_and_one_note_edited_in_place(
    tmp_path: Path, hello: tuple[Ledger, Path]
) -> None:
    ledger, remote = hello

    def typo(root: Path) -> None:
        yml = root / "liminal.yml"
        yml.write_text(yml.read_text().replace("timeout_minutes: 30", "timeout_minutes: thirty"))

    def fix(root: Path) -> None:
        yml = root / "liminal.yml"
        yml.write_text(yml.read_text().replace("timeout_minutes: thirty", "timeout_minutes: 30"))
        _schedule(9)(root)

    bad = _branch(remote, typo, "a typo")
    token = "glpat-" + uuid.uuid4().hex
    api = FakeGitLab(token)

    def hook(head: str, action: str) -> None:
        git(remote, "update-ref", "refs/merge-requests/3/head", head)
        # the documented Merge Request Hook shape (docs.gitlab.com, "Webhook events": merge request events)
        payload = {
            "object_kind": "merge_request",
            "event_type": "merge_request",
            "project": {
                "id": 15,
                "name": "hello",
                "web_url": "https://gitlab.example.com/mike/hello",
                "git_ssh_url": str(remote),
                "git_http_url": str(remote),
            },
            "object_attributes": {
                "iid": 3,
                "action": action,
                "state": "opened",
                "source_branch": "feature",
                "target_branch": "main",
                "last_commit": {"id": head},
            },
        }
        headers = {
            "Content-Type": "application/json",
            "X-Gitlab-Event": "Merge Request Hook",
            "X-Gitlab-Event-UUID": str(uuid.uuid4()),
            "X-Gitlab-Token": GITLAB_TOKEN,
        }
        status, answer = _post(url, "/webhooks/gitlab", json.dumps(payload).encode(), headers)
        assert (status, answer["status"]) == (202, "queued"), answer

    env = {"LIMINAL_GITLAB_TOKEN": token, "LIMINAL_GITLAB_API_URL": f"{api.url}/api/v4", "LIMINAL_PUBLIC_URL": PUBLIC}
    with _served(tmp_path, ledger, remote, api, env) as url:
        hook(bad, "open")
        _wait(lambda: len(api.statuses) == 2 and api.notes_on("15", 3))
        fixed = _branch(remote, fix, "fixed, and a later schedule")
        hook(fixed, "update")
        _wait(lambda: len(api.statuses) == 4 and api.notes_on("15", 3)[0]["edits"] == 1)
    assert api.violations == []
    assert [(sha, s["state"]) for sha, s in api.statuses] == [
        (bad, "running"),
        (bad, "failed"),
        (fixed, "running"),
        (fixed, "success"),
    ]
    assert all(s["name"] == "liminal-gitops/plan" for _, s in api.statuses)
    (note,) = api.notes_on("15", 3)
    assert f"Checked commit `{fixed}`" in note["body"] and "0 9 * * *" in note["body"]
    first_body = next(body for method, _, _, body in api.requests if method == "POST" and body)
    link = f"(https://gitlab.example.com/mike/hello/-/blob/{bad}/liminal.yml#L27)"
    assert f"[`liminal.yml:27:22`]{link}" in first_body["body"]
    _no_secret_sent(api.requests, token, GITLAB_TOKEN, API_TOKEN)


# ---- the report, as the pure function it is -------------------------------------------------------------


def _preview(changes: int = 0, problems: tuple[Problem, ...] = (), warnings: tuple[Problem, ...] = ()) -> Preview:
    made = tuple(
        Change(ResourceKey("r", ResourceKind.DAG, f"pipeline_{i:04d}"), Action.CREATE, f"{i:064x}", None, "+x\n")
        for i in range(changes)
    )
    return Preview("r", "c" * 40, Plan(made), problems=problems, warnings=warnings)


PR = PullRequest("github", "o/r", 5, "c" * 40, WEB, f"{PUBLIC}/checks/github/d1")


@pytest.mark.parametrize("forge", [GitHubChecks.text, GitLabChecks.text], ids=["github", "gitlab"])
def test_reports_fit_the_forges_limits_and_say_where_the_rest_is(forge: Any) -> None:
    report = check_report(_preview(changes=20_000), PR, forge)
    assert len(report.summary) <= forge.summary_chars and len(report.comment or "") <= forge.comment_chars
    assert "[the plan page](https://liminal.example/checks/github/d1)" in (report.comment or "")
    small = check_report(_preview(changes=3), PR, forge)
    assert "Cut at" not in (small.comment or "") and small.comment is not None
    assert small.comment.count("<details>") == 3


def test_text_from_the_pull_request_cannot_mention_link_or_break_out() -> None:
    hostile = Problem(
        "liminal.yml",
        4,
        3,
        "$.pipelines[0]['@admins <img src=x onerror=alert(1)>']",
        "unknown key '@admins <img src=x onerror=alert(1)>' [click](https://evil.example) ```",
        "unused-key",
        "warning",
    )
    report = check_report(_preview(changes=1, warnings=(hostile,)), PR, GitHubChecks.text)
    assert report.conclusion is Conclusion.NEUTRAL and report.annotations == (hostile,)
    for text in (report.summary, report.comment or ""):
        prose = re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", text)  # code spans show text literally
        assert "@admins" not in prose and "<img" not in prose and "](https://evil.example)" not in prose
        assert "@\u200badmins" in prose  # still readable, but no one is notified


def test_a_check_that_could_not_run_is_a_failure_with_the_reason() -> None:
    report = failed_report(PR, "cannot fetch refs/pull/5/head: timed out after 120 s", GitHubChecks.text)
    assert report.conclusion is Conclusion.FAILURE and report.title.startswith("the check could not run: cannot fetch")
    assert report.comment is not None and "could not be checked" in report.comment


class FlakyReporterFake:
    """An in-memory FAKE CheckReporter whose forge fails to answer the first `fail` calls of a step."""

    text = GitHubChecks.text

    def __init__(self, fail: dict[str, int]) -> None:
        self.fail = dict(fail)
        self.calls: list[tuple[str, str]] = []

    def _call(self, step: str, detail: str) -> None:
        self.calls.append((step, detail))
        if self.fail.get(step, 0) > 0:
            self.fail[step] -= 1
            raise TransientError("the GitHub API answered 502", 0.01)

    def start(self, pr: PullRequest) -> str:
        self._call("start", pr.commit)
        return "check-run:1"

    def finish(self, pr: PullRequest, report: CheckReport, started: str) -> None:
        self._call("finish", f"{report.conclusion.value} {started}")

    def comment(self, pr: PullRequest, text: str) -> None:
        self._call("comment", text[:20])


def _drained(queue: ForgeQueue) -> None:
    deadline = time.monotonic() + 10
    while not queue.idle():
        assert time.monotonic() < deadline, "the queue did not drain"
        time.sleep(0.01)


def test_a_forge_that_fails_to_answer_is_shown_the_report_again_in_order() -> None:
    reporter = FlakyReporterFake({"finish": 2, "comment": 1})
    queue = ForgeQueue("github", reporter, lambda pr, repo: pr.commit, pause=0.01)
    report = check_report(_preview(changes=1), PR, reporter.text)
    queue.put(_Show(PR, "r"))
    queue.put(_Show(PR, "r", report))
    _drained(queue)
    queue.stop(1)
    steps = [step for step, _ in reporter.calls]
    # tried again until shown; the verdict, once shown, is not sent again when the comment fails
    assert steps == ["start", "finish", "finish", "finish", "comment", "comment"]
    assert reporter.calls[1][1] == "success check-run:1"


def test_a_forge_down_for_good_costs_the_checks_nothing_and_gives_up_with_a_log() -> None:
    reporter = FlakyReporterFake({"start": 100, "finish": 100, "comment": 100})
    queue = ForgeQueue("github", reporter, lambda pr, repo: pr.commit, tries=3, pause=0.01)
    with structlog.testing.capture_logs() as logs:
        began = time.monotonic()
        queue.put(_Show(PR, "r"))
        queue.put(_Show(PR, "r", check_report(_preview(changes=1), PR, reporter.text)))
        assert time.monotonic() - began < 0.1  # the worker that checked never waits for the forge
        _drained(queue)
        queue.stop(1)
    assert [step for step, _ in reporter.calls] == ["start"] * 3 + ["finish"] * 3
    gave_up = [e for e in logs if e["event"] == "check.not_shown"]
    assert [e["step"] for e in gave_up] == ["start", "report"] and "502" in gave_up[0]["error"]


def test_a_report_shown_after_a_newer_head_arrived_is_cancelled_and_leaves_the_comment() -> None:
    reporter = FlakyReporterFake({})
    newer = "d" * 40
    queue = ForgeQueue("github", reporter, lambda pr, repo: newer, pause=0.01)
    queue.put(_Show(PR, "r", check_report(_preview(changes=1), PR, reporter.text)))
    _drained(queue)
    queue.stop(1)
    assert reporter.calls == [("finish", "cancelled ")]


def test_a_repository_page_that_could_end_a_link_is_not_used_for_links() -> None:
    from webhooks import github

    payload = copy.deepcopy(next(p for p in _examples("pull_request") if p["action"] == "opened"))
    assert github.parse("d", "pull_request", json.dumps(payload).encode()).web_url == WEB
    for hostile in ("javascript:alert(1)", "https://x.example/a)[b](https://evil.example", "https://x.example/a b"):
        payload["repository"]["html_url"] = hostile
        assert github.parse("d", "pull_request", json.dumps(payload).encode()).web_url is None


def test_a_configured_installation_is_used_as_is_and_half_an_app_is_refused(tmp_path: Path) -> None:
    from controller.cli import _check_reporters
    from controller.config import controller_settings
    from controller.errors import ConfigError
    from webhooks.forge import ForgeApi
    from webhooks.github_app import GitHubAppTokens

    private, public = _app_key()
    api = FakeGitHub(None, app=("77", public), installation=991)
    try:
        tokens = GitHubAppTokens("77", private, ForgeApi("GitHub", api.url), installation_id="991")
        assert tokens("o/r") in api.issued
    finally:
        api.close()
    assert api.violations == [] and api.calls("GET", r".*/installation") == []  # not looked up
    assert len(api.calls("POST", r"/app/installations/991/access_tokens")) == 1
    home = {"LIMINAL_HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match="needs both LIMINAL_GITHUB_APP_ID and LIMINAL_GITHUB_APP_PRIVATE_KEY"):
        _check_reporters(controller_settings({**home, "LIMINAL_GITHUB_APP_ID": "77"}))
    with pytest.raises(ConfigError, match="not a PEM private key"):
        _check_reporters(
            controller_settings({**home, "LIMINAL_GITHUB_APP_ID": "77", "LIMINAL_GITHUB_APP_PRIVATE_KEY": "x"})
        )
