"""`liminal serve` as a real process: GitHub's own example payloads signed by GitHub's own code
(npm @octokit/webhooks-examples and @octokit/webhooks-methods, installed by scripts/lib/node.sh),
GitLab payloads as GitLab documents them, the ledger, the reconcile loop, and crash recovery."""

from __future__ import annotations

import copy
import http.client
import http.server
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from controller.ledger import Ledger
from controller.model import RepoRef, RunStatus
from tests.conftest import cli_env, commit_all, example_remote, git, need, running_controller

SECRET = "gh-" + uuid.uuid4().hex
GITLAB_TOKEN = "gl-" + uuid.uuid4().hex
API_TOKEN = "api-" + uuid.uuid4().hex


def _examples(name: str) -> list[dict[str, Any]]:
    index = Path(need("LIMINAL_TEST_NODE_DIR")) / "node_modules/@octokit/webhooks-examples/api.github.com/index.json"
    return next(e["examples"] for e in json.loads(index.read_text()) if e["name"] == name)


def _sign(bodies: list[bytes]) -> list[str]:
    """Signatures made by @octokit/webhooks-methods, GitHub's signing code."""
    out = subprocess.run(
        ["node", str(Path(need("LIMINAL_TEST_NODE_DIR")) / "sign.mjs")],
        input=json.dumps({"secret": SECRET, "bodies": [b.decode() for b in bodies]}),
        capture_output=True,
        text=True,
        check=True,
        cwd=need("LIMINAL_TEST_NODE_DIR"),
    )
    return list(json.loads(out.stdout))


@contextmanager
def _serving(
    tmp_path: Path, ledger: Ledger, *, poll: str = "3600", extra: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    settings = {
        "LIMINAL_IMAGES": "off",
        "LIMINAL_GITHUB_WEBHOOK_SECRET": SECRET,
        "LIMINAL_GITLAB_WEBHOOK_TOKEN": GITLAB_TOKEN,
        "LIMINAL_API_TOKEN": API_TOKEN,
        "LIMINAL_POLL_INTERVAL": poll,
        "LIMINAL_LOG_FORMAT": "json",
    }
    env = cli_env(tmp_path, ledger, **(settings | (extra or {})))
    with running_controller(env, tmp_path / f"serve-{uuid.uuid4().hex[:6]}.log") as served:
        yield served


def _post(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(f"{url}{path}", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _github(
    url: str, event: str, payload: dict[str, Any], *, delivery: str | None = None, signature: str | None = None
) -> tuple[int, Any]:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature or _sign([body])[0],
        "User-Agent": "GitHub-Hookshot/test",
    }
    return _post(url, "/webhooks/github", body, headers)


def _push(remote: Path, commit: str) -> dict[str, Any]:
    """GitHub's own push example, about our repository's main branch."""
    payload = copy.deepcopy(_examples("push")[0])
    payload.update(ref="refs/heads/main", after=commit, deleted=False)
    payload["repository"].update(clone_url=str(remote), ssh_url=str(remote), git_url=str(remote))
    return payload


def _wait(predicate: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_every_github_example_is_answered_and_recorded_and_a_push_syncs(tmp_path: Path, ledger: Ledger) -> None:
    remote = example_remote(tmp_path)
    ledger.add_repo(RepoRef("hello", str(remote)))
    commit = git(remote, "rev-parse", "HEAD")
    with _serving(tmp_path, ledger) as (url, _):
        sent = 0
        for event in ("ping", "push", "pull_request"):
            for payload in _examples(event):
                status, answer = _github(url, event, payload)
                sent += 1
                assert status == 202, answer
                assert answer["status"] == "ignored"  # not about a tracked branch, a ping, or a PR (checks: next)
        status, answer = _github(url, "push", _push(remote, commit), delivery="push-main-1")
        assert (status, answer["status"], answer["repositories"]) == (202, "queued", ["hello"])
        _wait(lambda: ledger.status("hello").last_applied_commit == commit)
        # a replay of the same delivery is acknowledged and ignored
        status, answer = _github(url, "push", _push(remote, commit), delivery="push-main-1")
        assert (status, answer["status"]) == (202, "duplicate")
        _wait(lambda: all(d.status != "queued" for d in ledger.deliveries(500)))
        recorded = ledger.deliveries(500)
        assert len(recorded) == sent + 1
        ours = next(d for d in recorded if d.delivery_id == "push-main-1")
        assert (ours.status, ours.repo, ours.commit) == ("processed", "hello", commit)
        runs = ledger.history("hello")
        assert [r.trigger for r in runs] == ["webhook"] and runs[0].status is RunStatus.SUCCEEDED
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert 'liminal_sync_runs_total{repo="hello",result="succeeded"} 1.0' in metrics
        assert 'liminal_webhook_deliveries_total{provider="github",result="queued"} 1.0' in metrics
        assert "liminal_queue_depth 0.0" in metrics
        with urllib.request.urlopen(f"{url}/api/v1/repositories/hello", timeout=5) as response:
            assert json.loads(response.read())["state"] == "synced"
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
            assert json.loads(response.read()) == {"ready": True, "problems": []}


def test_refused_deliveries_get_the_right_status_and_nothing_is_recorded(tmp_path: Path, ledger: Ledger) -> None:
    remote = example_remote(tmp_path)
    ledger.add_repo(RepoRef("hello", str(remote)))
    payload = _push(remote, "0" * 39 + "1")
    body = json.dumps(payload).encode()
    good = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "d1",
        "X-Hub-Signature-256": _sign([body])[0],
    }
    with _serving(tmp_path, ledger) as (url, _):
        assert _post(url, "/webhooks/github", body, {**good, "X-Hub-Signature-256": "sha256=" + "0" * 64})[0] == 401
        assert _post(url, "/webhooks/github", body + b" ", good)[0] == 401  # the body changed after signing
        missing = {k: v for k, v in good.items() if k != "X-Hub-Signature-256"}
        assert _post(url, "/webhooks/github", body, missing)[0] == 401
        assert _post(url, "/webhooks/github", body, {k: v for k, v in good.items() if k != "X-GitHub-Event"})[0] == 400
        assert (
            _post(url, "/webhooks/github", body, {**good, "Content-Type": "application/x-www-form-urlencoded"})[0]
            == 415
        )
        # a declared 26 MB body is refused before it is read
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.putrequest("POST", "/webhooks/github")
        for key, value in {**good, "Content-Length": str(26 * 1024 * 1024)}.items():
            connection.putheader(key, value)
        connection.endheaders()
        connection.send(body)
        assert connection.getresponse().status == 413
        connection.close()
        # a truncated body: the connection ends before Content-Length bytes came
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.putrequest("POST", "/webhooks/github")
        for key, value in {**good, "Content-Length": str(len(body) + 100)}.items():
            connection.putheader(key, value)
        connection.endheaders()
        connection.send(body)
        connection.sock.shutdown(1)
        try:
            truncated = connection.getresponse().status
        except (http.client.RemoteDisconnected, ConnectionResetError):
            truncated = 0  # the server dropped it
        connection.close()
        assert truncated in (0, 400)
        # invalid JSON, correctly signed
        broken = b'{"ref": "refs/heads/main", '
        assert _post(url, "/webhooks/github", broken, {**good, "X-Hub-Signature-256": _sign([broken])[0]})[0] == 400
        # GitLab: a wrong token
        gitlab = {"Content-Type": "application/json", "X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "g1"}
        assert _post(url, "/webhooks/gitlab", b"{}", {**gitlab, "X-Gitlab-Token": "wrong"})[0] == 401
        assert ledger.deliveries() == []  # nothing refused was recorded
        assert ledger.history("hello") == []  # nor did anything run


def test_a_gitlab_push_as_gitlab_documents_it(tmp_path: Path, ledger: Ledger) -> None:
    remote = example_remote(tmp_path)
    ledger.add_repo(RepoRef("hello", str(remote)))
    commit = git(remote, "rev-parse", "HEAD")
    # the documented Push Hook shape (docs.gitlab.com, "Webhook events": push events)
    payload = {
        "object_kind": "push",
        "event_name": "push",
        "before": "0" * 40,
        "after": commit,
        "ref": "refs/heads/main",
        "checkout_sha": commit,
        "user_name": "John Smith",
        "project_id": 15,
        "project": {
            "name": "hello",
            "web_url": "http://example.com/mike/hello",
            "git_ssh_url": str(remote),
            "git_http_url": str(remote),
            "default_branch": "main",
            "path_with_namespace": "mike/hello",
        },
        "commits": [],
        "total_commits_count": 0,
        "repository": {"name": "hello", "url": str(remote)},
    }
    headers = {
        "Content-Type": "application/json",
        "X-Gitlab-Event": "Push Hook",
        "X-Gitlab-Event-UUID": str(uuid.uuid4()),
        "X-Gitlab-Token": GITLAB_TOKEN,
    }
    with _serving(tmp_path, ledger) as (url, _):
        status, answer = _post(url, "/webhooks/gitlab", json.dumps(payload).encode(), headers)
        assert (status, answer["status"]) == (202, "queued")
        _wait(lambda: ledger.status("hello").last_applied_commit == commit)


def test_a_storm_of_pushes_coalesces_into_a_few_fetches(tmp_path: Path, ledger: Ledger) -> None:
    remote = example_remote(tmp_path)
    ledger.add_repo(RepoRef("hello", str(remote)))
    commits = []
    yml = remote / "liminal.yml"
    for i in range(5):
        yml.write_text(re.sub(r"schedule: .*", f"schedule: 0 {i + 1} * * *", yml.read_text()))
        commits.append(commit_all(remote, f"change {i}"))
    newest = commits[-1]
    payloads = [_push(remote, commits[min(i * len(commits) // 1000, len(commits) - 1)]) for i in range(1000)]
    bodies = [json.dumps(p).encode() for p in payloads]
    signatures = _sign(bodies)
    with _serving(tmp_path, ledger) as (url, _):

        def send(i: int) -> int:
            headers = {
                "Content-Type": "application/json",
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": f"storm-{i}",
                "X-Hub-Signature-256": signatures[i],
            }
            return _post(url, "/webhooks/github", bodies[i], headers)[0]

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(send, range(1000)))
        assert statuses == [202] * 1000
        _wait(
            lambda: (
                all(d.status == "processed" for d in ledger.deliveries(1000)) and len(ledger.deliveries(1000)) == 1000
            )
        )
        _wait(lambda: ledger.status("hello").last_applied_commit == newest)
    runs = ledger.history("hello", limit=1000)
    print(f"1000 pushes -> {len(runs)} reconciles (fetches)")
    assert 1 <= len(runs) <= 10
    assert runs[0].commit == newest


def test_a_crash_right_after_the_202_still_processes_the_delivery(tmp_path: Path, ledger: Ledger) -> None:
    remote = example_remote(tmp_path)
    ledger.add_repo(RepoRef("hello", str(remote)))
    commit = git(remote, "rev-parse", "HEAD")
    # holding the repository's lock, the reconcile the delivery starts cannot get anywhere
    with _serving(tmp_path, ledger) as (url, proc), ledger.lock("hello"):
        status, answer = _github(url, "push", _push(remote, commit), delivery="before-the-crash")
        assert (status, answer["status"]) == (202, "queued")
        proc.kill()  # SIGKILL: no clean shutdown
        proc.wait()
    assert [d.status for d in ledger.deliveries()] == ["queued"]
    with _serving(tmp_path, ledger):
        _wait(lambda: ledger.status("hello").last_applied_commit == commit)
        _wait(lambda: [d.status for d in ledger.deliveries()] == ["processed"])


def test_the_api_reads_and_a_token_guards_sync(tmp_path: Path, ledger: Ledger) -> None:
    remote = example_remote(tmp_path)
    ledger.add_repo(RepoRef("hello", str(remote)))
    with _serving(tmp_path, ledger) as (url, _):
        assert _post(url, "/api/v1/repositories/hello/sync", b"", {})[0] == 401
        assert _post(url, "/api/v1/repositories/hello/sync", b"", {"Authorization": "Bearer nope"})[0] == 401
        status, answer = _post(url, "/api/v1/repositories/hello/sync", b"", {"Authorization": f"Bearer {API_TOKEN}"})
        assert (status, answer) == (202, {"status": "queued", "repository": "hello"})
        _wait(lambda: ledger.status("hello").state == "synced")
        with urllib.request.urlopen(f"{url}/api/v1/runs?repo=hello", timeout=5) as response:
            runs = json.loads(response.read())
        assert runs[0]["trigger"] == "api" and runs[0]["status"] == "succeeded"
        with urllib.request.urlopen(f"{url}/api/v1/repositories/hello/resources", timeout=5) as response:
            assert [r["name"] for r in json.loads(response.read())] == ["hello_training"]
        # what a sync would change now (nothing polls here: the plan shows it, nothing applies it)
        yml = remote / "liminal.yml"
        yml.write_text(yml.read_text().replace("schedule: 0 6 * * *", "schedule: 0 8 * * *"))
        newer = commit_all(remote, "later")
        # it fetches and renders: anonymous clients may not make it work
        assert _get_status(f"{url}/api/v1/repositories/hello/plan") == 401
        authorized = urllib.request.Request(
            f"{url}/api/v1/repositories/hello/plan", headers={"Authorization": f"Bearer {API_TOKEN}"}
        )
        with urllib.request.urlopen(authorized, timeout=30) as response:
            planned = json.loads(response.read())
        assert planned["commit"] == newer and planned["counts"]["update"] == 1
        assert '"schedule": "0 8 * * *"' in planned["changes"][0]["diff"]
        assert ledger.status("hello").last_applied_commit != newer
        with urllib.request.urlopen(f"{url}/openapi.json", timeout=5) as response:
            assert "/webhooks/github" in json.loads(response.read())["paths"]
        assert _post(url, "/api/v1/repositories/nope/sync", b"", {"Authorization": f"Bearer {API_TOKEN}"})[0] == 404
        for path in ("/metrics", "/api/v1/runs", "/api/v1/deliveries", "/api/v1/repositories"):
            with urllib.request.urlopen(f"{url}{path}", timeout=5) as response:
                text = response.read().decode()
            assert SECRET not in text and API_TOKEN not in text and GITLAB_TOKEN not in text


def test_a_webhook_endpoint_without_its_secret_is_not_served(tmp_path: Path, ledger: Ledger) -> None:
    remote = example_remote(tmp_path)
    ledger.add_repo(RepoRef("hello", str(remote)))
    with _serving(tmp_path, ledger, extra={"LIMINAL_GITLAB_WEBHOOK_TOKEN": ""}) as (url, _):
        headers = {"Content-Type": "application/json", "X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "u"}
        assert _post(url, "/webhooks/gitlab", b"{}", headers)[0] == 404  # never unsigned by accident
        assert _github(url, "ping", _examples("ping")[0])[0] == 202  # the other one is served
    assert [d.provider for d in ledger.deliveries()] == ["github"]


def test_a_repository_without_webhooks_is_polled(tmp_path: Path, ledger: Ledger) -> None:
    remote = example_remote(tmp_path)
    ledger.add_repo(RepoRef("hello", str(remote)))
    with _serving(tmp_path, ledger, poll="1"):
        _wait(lambda: ledger.status("hello").last_applied_commit == git(remote, "rev-parse", "HEAD"))
        yml = remote / "liminal.yml"
        yml.write_text(yml.read_text().replace("schedule: 0 6 * * *", "schedule: 0 8 * * *"))
        newer = commit_all(remote, "later")
        _wait(lambda: ledger.status("hello").last_applied_commit == newer)  # no webhook: the poller found it
    assert {r.trigger for r in ledger.history("hello")} == {"poll"}


def test_a_force_push_back_to_an_older_commit_is_deployed(tmp_path: Path, ledger: Ledger) -> None:
    remote = example_remote(tmp_path)
    ledger.add_repo(RepoRef("hello", str(remote)))
    older = git(remote, "rev-parse", "HEAD")
    yml = remote / "liminal.yml"
    yml.write_text(yml.read_text().replace("schedule: 0 6 * * *", "schedule: 0 8 * * *"))
    newer = commit_all(remote, "later")
    with _serving(tmp_path, ledger) as (url, _):
        assert _github(url, "push", _push(remote, newer))[1]["status"] == "queued"
        _wait(lambda: ledger.status("hello").last_applied_commit == newer)
        git(remote, "reset", "-q", "--hard", older)  # the branch is forced back: behind what is live
        assert _github(url, "push", _push(remote, older))[1]["status"] == "queued"
        _wait(lambda: ledger.status("hello").last_applied_commit == older)
    assert [r.commit for r in ledger.history("hello")][:2] == [older, newer]


def test_the_webhook_index_finds_repositories_by_remote_without_reading_the_table(tmp_path: Path) -> None:
    from controller.api import TrackedIndex

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    reads = 0
    repos = ledger.repos

    def counted() -> list[RepoRef]:
        nonlocal reads
        reads += 1
        return repos()

    ledger.repos = counted  # type: ignore[method-assign]
    for i in range(200):
        ledger.add_repo(RepoRef(f"r{i}", f"https://github.com/org/r{i}.git"))
    index = TrackedIndex(ledger, ttl=60)
    found = [index.find((f"git@github.com:org/r{i % 200}.git",)) for i in range(1000)]
    assert [r.name for r in found[7]] == ["r7"] and reads == 1  # 1,000 deliveries, one read
    ledger.add_repo(RepoRef("new", "https://github.com/org/new"))  # by another process, say
    time.sleep(1.1)
    assert [r.name for r in index.find(("https://GitHub.com/org/new.git",))] == ["new"]  # a miss rebuilds
    assert index.find(("https://github.com/org/unknown",)) == [] and reads == 2  # misses rebuild once a second
    ledger.close()
