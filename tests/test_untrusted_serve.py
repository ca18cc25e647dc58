"""Anonymous clients, webhook senders and whoever adds a repository are untrusted (issue 16).

Against a real `liminal serve` process: webhook bodies with bad signatures cost no memory, a
slow body is cut off, malformed signed payloads get 400, the on-demand plan needs the token and is
bounded, and health answers while a git remote hangs and both cores are busy. Plus the remote
policy of `repo add`, the pull-request check queue bound, and names that would not load.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from controller.errors import InputError, LiminalError
from controller.ledger import Ledger
from controller.model import Delivery, DeliveryKind, RepoRef
from controller.sync.loop import ReconcileLoop
from controller.sync.source import GitCredentials, GitSource, RemotePolicy, SourceError, check_remote
from tests.conftest import cli_env, liminal, load_paths, make_deps, running_controller
from tests.test_serve import API_TOKEN, SECRET, _sign

BAD_SIGNATURE = "sha256=" + "0" * 64

Write = Callable[[dict[str, str]], Path]


@contextmanager
def _serving(tmp_path: Path, ledger: Ledger, **extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    env = cli_env(
        tmp_path,
        ledger,
        LIMINAL_IMAGES="off",
        LIMINAL_GITHUB_WEBHOOK_SECRET=SECRET,
        LIMINAL_API_TOKEN=API_TOKEN,
        LIMINAL_POLL_INTERVAL="3600",
        LIMINAL_LOG_FORMAT="json",
        **extra,
    )
    with running_controller(env, tmp_path / f"serve-{uuid.uuid4().hex[:6]}.log") as served:
        yield served


@contextmanager
def _busy_cores(count: int = 2) -> Iterator[None]:
    """Both cores busy, as on a loaded machine (bounded: the spinners stop with the block)."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 300\nwhile time.time() < end: pass"])
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _post_github(url: str, body: bytes, *, event: str = "push", delivery: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{url}/webhooks/github",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": _sign([body])[0],
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


class _HangingGitServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: a git remote that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.held.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        for conn in self.held:
            conn.close()
        self.sock.close()


# ---- webhook intake ------------------------------------------------------------------------------


def test_malformed_signed_payloads_get_400_with_a_reason(tmp_path: Path, sqlite_ledger: Ledger) -> None:
    with _serving(tmp_path, sqlite_ledger) as (url, _):
        cases = {
            "repository is text": ("push", {"ref": "refs/heads/main", "after": "a" * 40, "repository": "x"}),
            "PR number is text": (
                "pull_request",
                {"action": "opened", "number": "7", "pull_request": {"number": "seven", "head": {"sha": "a" * 40}}},
            ),
            "ref of 10 MB": ("push", {"ref": "r" * 10_000_000, "after": "a" * 40, "repository": {}}),
            "commit not a commit": ("push", {"ref": "refs/heads/main", "after": "HEAD~1; rm", "repository": {}}),
        }
        for why, (event, payload) in cases.items():
            status, text = _post_github(url, json.dumps(payload).encode(), event=event)
            assert status == 400, (why, status, text)
            assert json.loads(text)["error"], why
        deep = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        status, text = _post_github(url, deep)
        assert (status, json.loads(text)["error"]) == (400, "the body is nested too deeply")
        status, text = _post_github(url, b"{}", delivery="tab\tinside")
        assert status == 400 and "X-GitHub-Delivery" in text
        assert _post_github(url, json.dumps({"zen": "ok", "hook_id": 1}).encode(), event="ping")[0] == 202
        assert _get(f"{url}/healthz") == 200
    assert [d.kind for d in sqlite_ledger.deliveries(50)] == ["ping"]  # nothing malformed was stored


def test_bad_signature_bodies_cost_no_memory_and_health_stays_up(tmp_path: Path, sqlite_ledger: Ledger) -> None:
    body = b'{"x": "' + b"a" * (25 * 1024 * 1024 - 16) + b'"}'
    with _serving(tmp_path, sqlite_ledger) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        before = _peak_rss_mb(proc.pid)

        def send(i: int) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.request(
                    "POST",
                    "/webhooks/github",
                    body=body,
                    headers={
                        "Content-Type": "application/json",
                        "X-GitHub-Event": "push",
                        "X-GitHub-Delivery": f"bad-{i}",
                        "X-Hub-Signature-256": BAD_SIGNATURE,
                    },
                )
                return conn.getresponse().status
            except (ConnectionError, http.client.HTTPException):
                return 0  # refused while sending: the server answered 503 and closed
            finally:
                conn.close()

        health: list[int] = []
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                health.append(_get(f"{url}/healthz", timeout=5))
                time.sleep(0.05)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            with ThreadPoolExecutor(40) as pool:
                statuses = list(pool.map(send, range(40)))
        finally:
            done.set()
            prober.join()
        growth = _peak_rss_mb(proc.pid) - before
        assert set(statuses) <= {401, 503, 0}, statuses
        assert statuses.count(401) >= 8  # bodies were read and refused, MAX_BODIES_IN_FLIGHT at a time
        assert growth < 150, f"peak RSS grew {growth:.0f} MB"  # the old code buffered every body: ~630 MB
        assert health and set(health) == {200}
    assert sqlite_ledger.deliveries(50) == []


def _raw_github(url: str, *, declared: int, delivery: str, signature: str, sent: bytes) -> tuple[str, float]:
    """POST to /webhooks/github over a bare socket, declaring `declared` body bytes and sending
    `sent`: the server's first answer, and the seconds it took."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=40) as conn:
        conn.sendall(
            b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {declared}\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: {delivery}\r\n".encode()
            + f"X-Hub-Signature-256: {signature}\r\n\r\n".encode()
            + sent
        )
        started = time.monotonic()
        answer = conn.recv(4096).decode()
        return answer, time.monotonic() - started


def test_a_body_that_stalls_is_cut_off(tmp_path: Path, sqlite_ledger: Ledger) -> None:
    with _serving(tmp_path, sqlite_ledger) as (url, _):
        answer, waited = _raw_github(url, declared=1000, delivery="slow-1", signature=BAD_SIGNATURE, sent=b"{")
    assert answer.startswith("HTTP/1.1 408"), answer
    assert waited < 35  # BODY_CHUNK_TIMEOUT is 10 s; the old code waited for minutes


def test_a_signature_that_cannot_be_one_is_refused_before_the_body(tmp_path: Path, sqlite_ledger: Ledger) -> None:
    with _serving(tmp_path, sqlite_ledger) as (url, _):
        # declares 25 MB and sends none of it: the header alone is enough to refuse
        answer, _ = _raw_github(url, declared=25_000_000, delivery="nosig", signature="sha1=abc", sent=b"")
    assert answer.startswith("HTTP/1.1 401"), answer


def test_a_ledger_held_by_another_writer_stalls_no_health_check(tmp_path: Path, sqlite_ledger: Ledger) -> None:
    import sqlite3

    path = sqlite_ledger.url.removeprefix("sqlite:///")
    body = json.dumps({"zen": "held"}).encode()
    with _serving(tmp_path, sqlite_ledger) as (url, _), _busy_cores():
        holder = sqlite3.connect(path, timeout=5, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process writing: every ledger call of the controller waits
        try:
            with ThreadPoolExecutor(6) as pool:
                pings = [pool.submit(_post_github, url, body, event="ping") for _ in range(6)]
                time.sleep(1)  # the deliveries now wait on the ledger, in the intake threads
                waits = []
                for _ in range(10):
                    started = time.monotonic()
                    assert _get(f"{url}/healthz", timeout=5) == 200
                    waits.append(time.monotonic() - started)
                assert not any(p.done() for p in pings)  # they really are waiting on the ledger
                holder.execute("ROLLBACK")
                statuses = [p.result(timeout=60)[0] for p in pings]
        finally:
            holder.close()
    assert max(waits) < 1.0, waits  # answered on the event loop, whatever the ledger does
    assert statuses == [202] * 6
    assert len(sqlite_ledger.deliveries(50)) == 6  # each recorded once the ledger was free


# ---- anonymous reads and a remote that hangs ---------------------------------------------------------


def test_health_answers_while_plans_wait_on_a_hanging_remote(tmp_path: Path, sqlite_ledger: Ledger) -> None:
    hanging = _HangingGitServer()
    sqlite_ledger.add_repo(RepoRef("stuck", f"http://127.0.0.1:{hanging.port}/stuck.git"))
    try:
        with _serving(tmp_path, sqlite_ledger, LIMINAL_GIT_TIMEOUT="10") as (url, _), _busy_cores():
            plan = f"{url}/api/v1/repositories/stuck/plan"
            with ThreadPoolExecutor(100) as pool:
                anonymous = pool.map(lambda _: _get(plan), range(100))
                assert set(anonymous) == {401}  # anonymous clients never make it fetch
                authorized = [pool.submit(_get, plan, {"Authorization": f"Bearer {API_TOKEN}"}, 60) for _ in range(20)]
                time.sleep(1)  # two plans are now stuck in `git fetch`
                for path in ("/healthz", "/readyz", "/metrics", "/api/v1/repositories/stuck", "/api/v1/runs"):
                    for _ in range(5):
                        assert _get(f"{url}{path}", timeout=5) == 200, path
                statuses = sorted(f.result() for f in authorized)
        # the two that ran waited for git's timeout (one after the other: one fetch per mirror at a
        # time) and got 502; the other 18 were turned away at once
        assert statuses.count(429) == 18, statuses
        assert statuses.count(502) == 2, statuses
    finally:
        hanging.close()


# ---- remotes, branches, names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "branch", "why"),
    [
        ("ext::sh -c touch% /tmp/liminal-ext", "main", "transport helpers"),
        ("HTTPS://user:pw@example.com/a/b.git", "main", "credentials"),
        ("https://token@example.com/a/b.git", "main", "credentials"),
        ("ssh://git:pw@example.com/a/b.git", "main", "credentials"),
        ("http://example.com/a/b.git", "main", "LIMINAL_ALLOW_HTTP_REMOTES"),
        ("file:///etc", "main", "LIMINAL_ALLOW_LOCAL_REMOTES"),
        ("/etc", "main", "LIMINAL_ALLOW_LOCAL_REMOTES"),
        ("--upload-pack=touch /tmp/x", "main", "no options"),
        ("git://example.com/a/b.git", "main", "not allowed"),
        ("https://example.com/a/b.git", "*", "branch name"),
        ("https://example.com/a/b.git", "--foo", "branch name"),
        ("https://example.com/a/b.git", "../../x", "branch name"),
        ("https://example.com/a/b.git", "a..b", "branch name"),
        ("https://example.com/a/b.git", "main\n", "branch name"),
    ],
)
def test_repo_add_refuses_what_the_policy_does_not_allow(
    tmp_path: Path, sqlite_ledger: Ledger, url: str, branch: str, why: str
) -> None:
    env = cli_env(tmp_path, sqlite_ledger, LIMINAL_ALLOW_LOCAL_REMOTES="false", LIMINAL_ALLOW_HTTP_REMOTES="false")
    done = liminal("repo", "add", "--branch", branch, "--name", "r", "--", url, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert why in done.stderr
    assert ":pw@" not in done.stderr and "token@" not in done.stderr
    assert sqlite_ledger.repos() == []


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/apache/incubator-liminal.git",
        "git@github.com:apache/incubator-liminal.git",
        "ssh://git@gitlab.example.com:2222/ml/pipelines.git",
    ],
)
def test_repo_add_takes_https_and_ssh_remotes(tmp_path: Path, sqlite_ledger: Ledger, url: str) -> None:
    env = cli_env(tmp_path, sqlite_ledger, LIMINAL_ALLOW_LOCAL_REMOTES="false", LIMINAL_ALLOW_HTTP_REMOTES="false")
    done = liminal("repo", "add", url, "--branch", "release/2026.12", env=env)
    assert done.returncode == 0, done.stderr
    assert [(r.url, r.branch) for r in sqlite_ledger.repos()] == [(url, "release/2026.12")]


@pytest.mark.parametrize("name", ["nl_name\n", ".hidden", "a/b", "-x"])
def test_repo_names_that_would_break_paths_are_refused(tmp_path: Path, sqlite_ledger: Ledger, name: str) -> None:
    done = liminal("repo", "add", "https://example.com/a.git", "--name", name, env=cli_env(tmp_path, sqlite_ledger))
    assert done.returncode == 2 and "cannot name a repository" in done.stderr
    assert sqlite_ledger.repos() == []


def test_the_token_never_travels_over_plain_http(tmp_path: Path) -> None:
    creds = GitCredentials(token="tok-s3cr3t")
    strict = GitSource(tmp_path, creds)._env("http://example.com/a.git")
    assert "GIT_ASKPASS" not in strict and "tok-s3cr3t" not in json.dumps(strict)
    assert "GIT_ASKPASS" in GitSource(tmp_path, creds)._env("https://example.com/a.git")
    allowed = GitSource(tmp_path, creds, RemotePolicy(allow_http=True))._env("http://example.com/a.git")
    assert "GIT_ASKPASS" in allowed


def test_git_refuses_transports_the_policy_leaves_out_even_from_the_ledger(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    source = GitSource(tmp_path / "cache", policy=RemotePolicy(allow_local=True))
    with pytest.raises(LiminalError, match=r"cannot fetch|does not exist"):
        source.resolve(RepoRef("evil", f"ext::sh -c touch% {marker}"))
    assert not marker.exists()
    with pytest.raises(SourceError):
        check_remote(f"ext::sh -c touch% {marker}", RemotePolicy(allow_local=True, allow_http=True))


@pytest.mark.parametrize(("name", "why"), [('"nl_name\\n"', "dag_id"), ('".hidden"', "dag_id")])
def test_a_pipeline_name_airflow_would_not_load_is_invalid(write: Write, name: str, why: str) -> None:
    root = write(
        {
            "liminal.yml": f"name: n\npipelines:\n  - pipeline: {name}\n"
            "    start_date: 2024-01-01\n    timeout_minutes: 1\n"
        }
    )
    with pytest.raises(InputError) as caught:
        load_paths([root])
    assert caught.value.problems[0].path == "$.pipelines[0].pipeline"
    assert why in caught.value.problems[0].message


# ---- the pull-request check queue ------------------------------------------------------------------------


def test_pull_request_checks_coalesce_per_pull_request_and_are_bounded(tmp_path: Path, sqlite_ledger: Ledger) -> None:
    loop = ReconcileLoop(make_deps(tmp_path, sqlite_ledger), max_checks=3)

    def delivery(number: int, sha: str) -> Delivery:
        record = Delivery(
            "github", str(uuid.uuid4()), "pull_request", DeliveryKind.PULL_REQUEST, "r", pull_request=number, commit=sha
        )
        row = sqlite_ledger.record_delivery(record)
        return dataclasses.replace(record, id=row)

    first = delivery(1, "a" * 40)
    assert loop.request_check(first)
    assert loop.request_check(delivery(2, "b" * 40))
    assert loop.request_check(delivery(3, "c" * 40))
    assert not loop.request_check(delivery(4, "d" * 40))  # full: the caller answers 503
    newer = delivery(1, "e" * 40)
    assert loop.request_check(newer)  # the same pull request: replaces its waiting check
    assert loop.depth == 3
    superseded = {d.delivery_id: d for d in sqlite_ledger.deliveries(10)}[first.delivery_id]
    assert superseded.status == "processed" and superseded.reason == f"superseded by delivery {newer.delivery_id}"
