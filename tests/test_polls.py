"""Polls that cost nothing when nothing changed: the remote's branch head is asked for (one ref
advertisement per remote, over the real `git http-backend`), and only a moved head is fetched
and reconciled. A real `liminal serve` polls every second; the ledger is watched for writes."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from controller.ledger import Ledger
from controller.model import RepoRef
from controller.sync.heads import parse_advertisement
from controller.sync.source import GitCredentials, GitSource
from tests.conftest import TEST_REMOTES, commit_all, example_remote, git
from tests.git_http import serve_git, url_of
from tests.test_serve import _serving, _wait


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, Path]:
    """The example as a working repository, and a bare clone of it under served/ as hello.git."""
    remote = example_remote(tmp_path)
    root = tmp_path / "served"
    root.mkdir()
    git(root, "clone", "-q", "--bare", str(remote), "hello.git")
    git(remote, "remote", "add", "origin", str(root / "hello.git"))
    return remote, root


def test_a_ref_advertisement_is_read_as_git_writes_it() -> None:
    sha, other = "a" * 40, "b" * 40

    def pkt(text: str) -> bytes:
        return f"{len(text) + 4:04x}{text}".encode()

    data = (
        pkt("# service=git-upload-pack\n")
        + b"0000"
        + pkt(f"{sha} HEAD\0multi_ack side-band-64k symref=HEAD:refs/heads/main\n")
        + pkt(f"{sha} refs/heads/main\n")
        + pkt(f"{other} refs/heads/feature/x\n")
        + pkt(f"{other} refs/pull/7/head\n")
        + pkt(f"{other} refs/tags/v1\n")
        + b"0000"
    )
    assert parse_advertisement(data) == {"main": sha, "feature/x": other}
    with pytest.raises(ValueError):
        parse_advertisement(data[:-7])


def test_heads_are_asked_once_per_remote_with_the_token_and_no_fetch(tmp_path: Path, served: tuple[Path, Path]) -> None:
    remote, root = served
    git(remote, "push", "-q", "origin", "main:other")
    token = "glpat-" + uuid.uuid4().hex
    with serve_git(root, token=token) as server:
        url = url_of(server, "hello.git")
        source = GitSource(tmp_path / "cache", GitCredentials(token=token), TEST_REMOTES)
        repos = [RepoRef("a", url), RepoRef("b", url, branch="other"), RepoRef("c", url, branch="gone")]
        heads = source.remote_heads(repos)
        wrong = GitSource(tmp_path / "cache2", GitCredentials(token="wrong"), TEST_REMOTES).remote_heads(repos[:1])
    main = git(remote, "rev-parse", "main")
    assert heads == {"a": main, "b": main, "c": None}  # a branch the remote lacks: unknown, fetch to learn why
    assert wrong == {"a": None}  # refused: the poll fetches, and the fetch reports the refusal
    asked = [(method, path) for method, path, auth in server.requests if auth]
    assert asked[0] == ("GET", "/hello.git/info/refs?service=git-upload-pack")  # one request for three
    assert len([r for r in server.requests if "info/refs" in r[1]]) == 2  # the second is the wrong token's
    assert not any("git-upload-pack" in path for method, path, _ in server.requests if method == "POST")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("mirror.git"))


def test_a_poll_of_an_unchanged_repository_writes_nothing_and_a_moved_head_is_deployed(
    tmp_path: Path, served: tuple[Path, Path], sqlite_ledger: Ledger
) -> None:
    remote, root = served
    with serve_git(root) as server:
        sqlite_ledger.add_repo(RepoRef("hello", url_of(server, "hello.git")))
        first = git(remote, "rev-parse", "main")
        extra = {"LIMINAL_ALLOW_HTTP_REMOTES": "true", "LIMINAL_DRIFT_INTERVAL": "3600"}
        with _serving(tmp_path, sqlite_ledger, poll="1", extra=extra) as (url, _):
            _wait(lambda: sqlite_ledger.status("hello").last_applied_commit == first)
            _wait(lambda: _unchanged_polls(url) >= 1)  # steady: the first poll's runs are done
            time.sleep(1.0)
            watcher = sqlite3.connect(tmp_path / "ledger.db")
            version = watcher.execute("PRAGMA data_version").fetchone()[0]
            fetches = len([r for r in server.requests if r[0] == "POST"])
            asked = len(server.requests)
            time.sleep(5)  # about 5 polls
            unchanged_version = watcher.execute("PRAGMA data_version").fetchone()[0]
            polled = len(server.requests) - asked
            fetched = len([r for r in server.requests if r[0] == "POST"]) - fetches
            with urllib.request.urlopen(f"{url}/api/v1/repositories/hello", timeout=5) as response:
                status = json.loads(response.read())
            unchanged = _unchanged_polls(url)
            yml = remote / "liminal.yml"
            yml.write_text(yml.read_text().replace("schedule: 0 6 * * *", "schedule: 0 8 * * *"))
            moved = commit_all(remote, "later")
            git(remote, "push", "-q", "origin", "main")
            pushed_at = time.monotonic()
            _wait(lambda: sqlite_ledger.status("hello").last_applied_commit == moved, seconds=30)
            took = time.monotonic() - pushed_at
            watcher.close()
    assert unchanged_version == version  # no ledger row touched by ~5 polls
    assert polled >= 3 and fetched == 0  # each poll one ref advertisement, and no fetch
    assert status["last_checked_commit"] == first  # the last check is known all the same
    assert unchanged >= 4
    assert took < 10  # a moved head is fetched and deployed on the next poll


def _unchanged_polls(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    return float(next(x for x in metrics.splitlines() if x.startswith("liminal_polls_unchanged_total")).split()[-1])


def test_a_push_of_what_is_live_or_behind_it_is_covered_by_one_ref_advertisement(
    tmp_path: Path, served: tuple[Path, Path]
) -> None:
    remote, root = served
    older = git(remote, "rev-parse", "main")
    (remote / "notes.txt").write_text("newer\n")
    live = commit_all(remote, "newer")
    git(remote, "push", "-q", "origin", "main")
    with serve_git(root) as server:
        source = GitSource(tmp_path / "cache", policy=TEST_REMOTES)
        repo = RepoRef("hello", url_of(server, "hello.git"))
        assert not source.covers(repo, live, [live]), "no mirror yet: fetch"
        assert source.fetch(repo).commit == live
        before = len(server.requests)
        assert source.covers(repo, live, [live, older]), "live, and an out-of-order push of its parent"
        assert [(m, p) for m, p, _ in server.requests[before:]] == [
            ("GET", "/hello.git/info/refs?service=git-upload-pack")
        ]
        assert not source.covers(repo, live, ["f" * 40]), "unknown here"
        (remote / "notes.txt").write_text("newest\n")
        commit_all(remote, "newest")
        git(remote, "push", "-q", "origin", "main")
        assert not source.covers(repo, live, [live]), "the branch moved on: fetch"
        git(remote, "push", "-q", "--force", "origin", f"{older}:main")
        assert not source.covers(repo, live, [older]), "forced back to an older commit: it must be deployed"
