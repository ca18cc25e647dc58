"""Drift: live state changed by hand is observed periodically, without a new commit; it is
restored when the repository's self-heal is on, and reported (status, API, metrics) either way.

The ledger tests run on SQLite and on PostgreSQL; the controller test runs `liminal serve` as a
real process against the real Docker engine and registry."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from controller.ledger import Ledger
from controller.ledger import tables as t
from controller.model import RepoRef, RunStatus, Trigger
from controller.render.dags import repo_payload_folder
from controller.sync.reconcile import observe_drift, reconcile
from tests.conftest import cli_env, example_remote, liminal, make_deps, need, running_controller


def _payload(root: Path, repo: str) -> Path:
    return root / "dags" / repo_payload_folder(repo) / "hello_training.json"


def _edit_by_hand(payload: Path) -> str:
    edited = payload.read_text().replace('"0 6 * * *"', '"0 9 * * *"')
    assert edited != payload.read_text()
    payload.write_text(edited)
    return edited


def test_with_self_heal_off_drift_is_reported_and_left_until_it_is_switched_on(tmp_path: Path, ledger: Ledger) -> None:
    remote = example_remote(tmp_path)
    ledger.add_repo(RepoRef("hello", str(remote), self_heal=False))
    deps = make_deps(tmp_path, ledger)
    assert reconcile("hello", deps).status is RunStatus.SUCCEEDED
    payload = _payload(tmp_path, "hello")
    deployed = payload.read_text()
    edited = _edit_by_hand(payload)

    run = reconcile("hello", deps)  # the same commit, self-heal off: reported, not touched
    assert run.status is RunStatus.NOOP and run.outcomes == ()
    assert run.summary["drift"] == ["dag/hello_training"] and "healed" not in run.summary
    assert payload.read_text() == edited
    status = ledger.status("hello")
    assert (status.state, status.drift) == ("drifted", ("dag/hello_training",))
    assert status.drift_observed_at is not None

    ref = ledger.set_options("hello", self_heal=True)
    assert ref.self_heal and ledger.repo("hello").self_heal and ref.prune
    run = reconcile("hello", deps)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert (run.summary["drift"], run.summary["healed"]) == (["dag/hello_training"], ["dag/hello_training"])
    assert [(o.key.name, o.code.value) for o in run.outcomes] == [("hello_training", "applied")]
    assert payload.read_text() == deployed
    status = ledger.status("hello")
    assert (status.state, status.drift) == ("synced", ())


def test_drift_is_observed_without_a_fetch_and_restored_while_git_is_down(tmp_path: Path, ledger: Ledger) -> None:
    remote = example_remote(tmp_path)
    ledger.add_repo(RepoRef("hello", str(remote)))
    deps = make_deps(tmp_path, ledger)
    assert observe_drift("hello", deps) is None  # nothing deployed yet: nothing to observe
    first = reconcile("hello", deps)
    assert first.status is RunStatus.SUCCEEDED
    assert observe_drift("hello", deps) == []
    payload = _payload(tmp_path, "hello")
    deployed = payload.read_text()
    shutil.move(remote, tmp_path / "gone")  # the git server is down
    edited = _edit_by_hand(payload)

    assert observe_drift("hello", deps) == ["dag/hello_training"]
    assert payload.read_text() == edited  # observing changes nothing
    assert ledger.status("hello").drift == ("dag/hello_training",)
    first_seen = ledger.status("hello").drift_observed_at
    with ledger.engine.connect() as conn:
        before = conn.execute(sa.select(t.repositories)).mappings().all()
    assert observe_drift("hello", deps) == ["dag/hello_training"]  # seen again: nothing is written
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.select(t.repositories)).mappings().all() == before
    assert ledger.status("hello").drift_observed_at == first_seen, "when this drift was first seen"
    assert ledger.set_drift("hello", ["dag/hello_training"]) is False
    assert reconcile("hello", deps).status is RunStatus.FAILED  # a fetching reconcile cannot run now
    assert ledger.status("hello").drift == ("dag/hello_training",)  # and a failed fetch keeps what was seen

    run = reconcile("hello", deps, trigger=Trigger.DRIFT, fetch=False)  # restored from the live commit
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.commit == first.commit and run.summary["healed"] == ["dag/hello_training"]
    assert payload.read_text() == deployed
    assert ledger.status("hello").drift == ()
    assert observe_drift("hello", deps) == []


def test_a_fresh_controller_observes_drift_with_an_empty_git_cache(tmp_path: Path, ledger: Ledger) -> None:
    remote = example_remote(tmp_path)
    ledger.add_repo(RepoRef("hello", str(remote)))
    assert reconcile("hello", make_deps(tmp_path, ledger)).status is RunStatus.SUCCEEDED
    _edit_by_hand(_payload(tmp_path, "hello"))
    shutil.rmtree(tmp_path / "cache")  # a new pod: the ledger survives, the git cache does not
    assert observe_drift("hello", make_deps(tmp_path, ledger)) == ["dag/hello_training"]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return json.loads(text) if url.rsplit("/", 1)[-1] != "metrics" else text


def _until(what: str, predicate: Any, seconds: float = 90) -> float:
    """Wait for `predicate`; the seconds it took."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < seconds, f"timed out waiting for {what}"
        time.sleep(0.2)
    return time.monotonic() - started


def test_the_running_controller_restores_a_hand_edited_dag_and_a_stopped_container(
    tmp_path: Path, ledger: Ledger, served_repo: str, docker_client: Any
) -> None:
    repo = served_repo
    remote = example_remote(tmp_path, own_images=True)
    env = cli_env(
        tmp_path,
        ledger,
        LIMINAL_REGISTRY=need("LIMINAL_TEST_REGISTRY"),
        LIMINAL_BASE_IMAGE=need("LIMINAL_TEST_BASE_IMAGE"),
        LIMINAL_POLL_INTERVAL="3600",  # no poll: only drift observation can find what changed
        LIMINAL_DRIFT_INTERVAL="1",
    )
    assert liminal("repo", "add", str(remote), "--name", repo, env=env).returncode == 0
    synced = liminal("sync", repo, env=env)
    assert synced.returncode == 0, synced.stderr
    payload = _payload(tmp_path, repo)
    deployed = payload.read_text()
    labels = [f"liminal-gitops/repo={repo}", "liminal-gitops/role=app"]

    def app_running() -> bool:
        # the controller removes the stopped copy while it restores: a container may go between list and inspect
        found = docker_client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)
        return any(c.status == "running" for c in found)

    runs_before = len(ledger.history(repo, limit=100))
    with running_controller(env, tmp_path / "serve.log") as (url, _):
        _edit_by_hand(payload)
        docker_client.containers.list(filters={"label": labels})[0].stop(timeout=1)
        assert not app_running()
        took = _until(
            "the DAG and the container to be restored", lambda: payload.read_text() == deployed and app_running()
        )
        print(f"drift restored {took:.1f} s after the hand edits (drift interval 1 s)")

        def restored() -> list[str]:  # what the runs since the hand edits recorded as restored
            runs = ledger.history(repo, limit=100)
            since = [r for r in runs[: len(runs) - runs_before] if r.status is not RunStatus.RUNNING]
            assert {r.trigger for r in since} <= {"drift"}
            return sorted(n for r in since for n in r.summary.get("healed", []))

        _until("both restorations to be recorded", lambda: restored() == ["dag/hello_training", "service/hello_server"])
        assert ledger.status(repo).drift == ()
        status = json.loads(liminal("status", repo, "--format", "json", env=env).stdout)[0]
        assert status["services"][0]["health"] == "healthy"
        metrics = _get(f"{url}/metrics")
        assert f'liminal_drift_healed_total{{repo="{repo}"}} 2.0' in metrics

        # self-heal off: the next hand edit is reported (API, metrics, status) and left alone
        switched = liminal("repo", "set", repo, "--no-self-heal", env=env)
        assert switched.stdout.strip() == f"{repo}: prune on, self-heal off", switched.stderr
        runs_before = len(ledger.history(repo, limit=100))
        edited = _edit_by_hand(payload)
        _until("the drift to be reported", lambda: _get(f"{url}/api/v1/repositories/{repo}")["drift"])
        answer = _get(f"{url}/api/v1/repositories/{repo}")
        assert (answer["state"], answer["drift"], answer["self_heal"]) == ("drifted", ["dag/hello_training"], False)
        metrics = _get(f"{url}/metrics")
        assert f'liminal_drifted_resources{{repo="{repo}",self_heal="false"}} 1.0' in metrics
        time.sleep(3)  # three more observations
        assert payload.read_text() == edited
        assert len(ledger.history(repo, limit=100)) == runs_before  # observing records no run
        shown = liminal("status", repo, env=env)
        assert "drift: dag/hello_training changed by hand; not restored: self-heal is off" in shown.stdout

        # and on again: restored at the next observation
        assert liminal("repo", "set", repo, "--self-heal", env=env).returncode == 0
        _until("the DAG to be restored", lambda: payload.read_text() == deployed)
        _until("the drift to clear", lambda: _get(f"{url}/api/v1/repositories/{repo}")["state"] == "synced")


def test_liminal_plan_shows_the_drift_and_the_next_sync_does_exactly_that(tmp_path: Path, ledger: Ledger) -> None:
    remote = example_remote(tmp_path)
    env = cli_env(tmp_path, ledger, LIMINAL_IMAGES="off")
    assert liminal("repo", "add", str(remote), "--name", "hello", env=env).returncode == 0
    assert liminal("sync", env=env).returncode == 0
    _edit_by_hand(_payload(tmp_path, "hello"))
    shown = liminal("plan", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "  ~ update dag/hello_training   (drift: the live copy differs; restoring it)" in shown.stdout
    assert shown.stdout.endswith("Plan: 0 to create, 1 to update, 0 to delete.\n")
    (planned,) = json.loads(liminal("plan", "--format", "json", env=env).stdout)
    assert planned["drift"] == ["dag/hello_training"]
    changes = [(c["action"], f"{c['kind']}/{c['name']}") for c in planned["changes"]]
    assert liminal("sync", env=env).returncode == 0
    run = ledger.history("hello", limit=1)[0]
    assert [(str(o.action), f"{o.key.kind}/{o.key.name}") for o in run.outcomes] == changes
    assert run.summary["healed"] == ["dag/hello_training"]
    after = liminal("plan", env=env)
    # images are off in this test: what git asks for and nothing here deploys is said, not hidden
    assert (
        "  ! skip   image/hello/server   (images are off here, LIMINAL_IMAGES=off: not built, not pushed)"
        in after.stdout
    )
    assert after.stdout.endswith("No changes to what this controller deploys; 4 resource(s) are not deployed here.\n")


def test_a_dag_file_seen_as_deployed_is_not_read_again_until_it_changes_even_with_its_times_set_back(
    tmp_path: Path, sqlite_ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.targets import dag_folder

    remote = example_remote(tmp_path)
    sqlite_ledger.add_repo(RepoRef("hello", str(remote), self_heal=False))
    deps = make_deps(tmp_path, sqlite_ledger)
    assert reconcile("hello", deps).status is RunStatus.SUCCEEDED
    real_ns = time.time_ns
    # files written within the last 2 s are read every time (a write in the same clock tick as
    # a read could keep the same times): the checks here happen a minute later
    monkeypatch.setattr(dag_folder, "time", SimpleNamespace(time_ns=lambda: real_ns() + 60_000_000_000))
    read: list[Path] = []
    real_read = dag_folder._read

    def reading(path: Path) -> str | None:
        read.append(path)
        return real_read(path)

    monkeypatch.setattr(dag_folder, "_read", reading)
    payload = _payload(tmp_path, "hello")
    assert observe_drift("hello", deps) == []
    assert payload in read
    read.clear()
    assert observe_drift("hello", deps) == []
    assert read == [], "nothing changed: only looked at"

    before = payload.stat()
    _edit_by_hand(payload)  # the same size
    os.utime(payload, ns=(before.st_atime_ns, before.st_mtime_ns))  # and its modification time set back
    assert payload.stat().st_size == before.st_size
    assert observe_drift("hello", deps) == ["dag/hello_training"], "its change time moved"
