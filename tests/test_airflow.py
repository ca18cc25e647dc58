"""The Airflow target against a real Airflow 3 (api-server, scheduler, dag-processor and triggerer
started by scripts/lib/airflow.sh), a real git repository and, for task runs, the real Docker engine.

Assertions read Airflow through its REST API with plain HTTP, not through the controller's client.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.ledger import Ledger
from controller.model import BuildRecord, RepoRef, ResourceKind, RunStatus, Trigger
from controller.render import RenderSettings
from controller.render.dags import repo_loader, repo_payload_folder
from controller.sync.deps import Deps
from controller.sync.reconcile import reconcile
from controller.sync.source import GitSource
from controller.targets.airflow import AirflowTarget
from controller.targets.airflow_api import AirflowApi
from controller.targets.dag_folder import DagFolderTarget
from controller.targets.images import ImageTarget
from tests.airflow_rest import Rest
from tests.conftest import TEST_REMOTES, answers, cli_env, commit_all, free_port, git, liminal, need


@pytest.fixture(scope="module")
def rest() -> Rest:
    return Rest(need("LIMINAL_TEST_AIRFLOW_URL"))


@pytest.fixture
def tag() -> str:
    """A suffix that keeps this test's dag_ids (global in Airflow) apart from every other test's."""
    return uuid.uuid4().hex[:8]


PIPELINE = """\
  - pipeline: {name}
    start_date: 2024-01-01
    timeout_minutes: 10
    schedule: '{schedule}'{extra}
    tasks:
      - task: prepare
        type: python
        image: {image}
        executor: local
        cmd: {cmd}
      - task: train
        type: python
        image: {image}
        executor: local
        cmd: echo trained
"""


def _yml(tag: str, pipelines: list[dict[str, str]], *, images: bool = False) -> str:
    head = f"name: af{tag}\nexecutors:\n  - executor: local\n    type: docker\n"
    if images:
        head += f"images:\n  - image: af{tag}/job\n    type: python\n    source: job\n"
    body = "".join(
        PIPELINE.format(
            name=p["name"],
            schedule=p.get("schedule", "0 6 * * *"),
            extra=p.get("extra", ""),
            image=p.get("image", need("LIMINAL_TEST_BASE_IMAGE")),
            cmd=p.get("cmd", "echo prepared"),
        )
        for p in pipelines
    )
    return head + "pipelines:\n" + body


def _remote(root: Path, text: str) -> Path:
    root.mkdir(parents=True)
    (root / "job").mkdir()
    (root / "job" / "main.py").write_text("print('job ran')\n")
    (root / "liminal.yml").write_text(text)
    git(root, "init", "-q", "-b", "main")
    commit_all(root, "initial")
    return root


def _push(remote: Path, text: str, message: str) -> str:
    (remote / "liminal.yml").write_text(text)
    return commit_all(remote, message)


def _api(url: str | None = None) -> AirflowApi:
    return AirflowApi(
        url or need("LIMINAL_TEST_AIRFLOW_URL"),
        username=need("LIMINAL_TEST_AIRFLOW_USERNAME"),
        password=need("LIMINAL_TEST_AIRFLOW_PASSWORD"),
    )


def _deps(tmp_path: Path, ledger: Ledger, api: AirflowApi, **targets: Any) -> Deps:
    dag_target = AirflowTarget(DagFolderTarget(Path(need("LIMINAL_TEST_AIRFLOW_DAGS"))), api, parse_timeout=60)
    return Deps(
        source=GitSource(tmp_path / "cache", policy=TEST_REMOTES),
        ledger=ledger,
        targets={ResourceKind.DAG: dag_target, **{ResourceKind(k): v for k, v in targets.items()}},
        settings=RenderSettings(
            registry=os.environ.get("LIMINAL_TEST_REGISTRY", ""),
            base_image=need("LIMINAL_TEST_BASE_IMAGE"),
            docker_url=need("DOCKER_HOST"),
        ),
    )


@pytest.fixture
def repo(rest: Rest, tag: str) -> Iterator[str]:
    """The test's repository name; its files and DAGs are removed from the shared Airflow afterwards."""
    name = f"af-{tag}"
    yield name
    rest.remove_repository(name)


def _synced(
    tmp_path: Path, ledger: Ledger, repo: str, text: str, api: AirflowApi | None = None
) -> tuple[Path, Deps, str]:
    """A remote holding `text` as liminal.yml, tracked as `repo` and synced once (successfully)."""
    remote = _remote(tmp_path / "remote", text)
    ledger.add_repo(RepoRef(repo, str(remote)))
    deps = _deps(tmp_path, ledger, api or _api())
    first = reconcile(repo, deps)
    assert first.status is RunStatus.SUCCEEDED and first.commit, first.error
    return remote, deps, first.commit


def test_push_change_and_remove_pipelines(tmp_path: Path, ledger: Ledger, rest: Rest, tag: str, repo: str) -> None:
    a, b = f"a_{tag}", f"b_{tag}"
    remote = _remote(
        tmp_path / "remote",
        _yml(tag, [{"name": a, "extra": "\n    paused: false"}, {"name": b, "schedule": "@daily"}]),
    )
    ledger.add_repo(RepoRef(repo, str(remote)))
    deps = _deps(tmp_path, ledger, _api())
    first = reconcile(repo, deps)
    assert first.status is RunStatus.SUCCEEDED, first.error
    for dag_id, schedule in ((a, "0 6 * * *"), (b, "0 0 * * *")):  # Airflow shows @daily as cron
        dag = rest.dag(dag_id)
        assert not dag["is_stale"]
        assert dag["timetable_summary"] == schedule
        assert {t["name"] for t in dag["tags"]} == {"liminal", f"repo:{repo}", f"commit:{(first.commit or '')[:12]}"}
        # Liminal's base pipeline adds start and end around the tasks
        assert rest.tasks(dag_id) == {"start": ["prepare"], "prepare": ["train"], "train": ["end"], "end": []}
        assert dag["relative_fileloc"] == repo_loader(repo)[0]
    assert rest.dag(a)["is_paused"] is False  # `paused: false`: unpaused on its first deploy
    assert rest.dag(b)["is_paused"] is True  # unset: Airflow's default (paused at creation), as Liminal

    # a changed task, and a new pipeline of the same repository: through the reparse API
    c = f"c_{tag}"
    second_text = _yml(
        tag, [{"name": a, "extra": "\n    paused: false", "cmd": "echo changed"}, {"name": b, "schedule": "@daily"}]
    ) + PIPELINE.format(name=c, schedule="@hourly", extra="", image=need("LIMINAL_TEST_BASE_IMAGE"), cmd="echo new")
    second_text = second_text.replace(
        "        cmd: echo changed\n",
        "        cmd: echo changed\n      - task: check\n        type: python\n"
        f"        image: {need('LIMINAL_TEST_BASE_IMAGE')}\n        executor: local\n        cmd: echo checked\n",
    )
    commit = _push(remote, second_text, "change a, add c")
    started = time.monotonic()
    second = reconcile(repo, deps)
    seconds = time.monotonic() - started
    assert second.status is RunStatus.SUCCEEDED, second.error
    assert sorted((o.key.name, o.action.value) for o in second.outcomes) == [(a, "update"), (c, "create")]
    assert rest.tasks(a) == {
        "start": ["prepare"],
        "prepare": ["check"],
        "check": ["train"],
        "train": ["end"],
        "end": [],
    }
    assert f"commit:{commit[:12]}" in {t["name"] for t in rest.dag(a)["tags"]}
    assert rest.dag(c)["timetable_summary"] == "0 * * * *"
    print(f"change + new pipeline live in Airflow {seconds:.2f} s after the sync began")
    assert seconds < 20  # through the reparse API; Airflow's own re-parse takes 30 s and more

    # pausing in the Airflow UI is kept when git says nothing of it (b), restored when git does (a)
    rest.call(f"/dags/{a}", "PATCH", {"is_paused": True})

    # remove b from git: paused, then deleted from Airflow with its file
    third_text = second_text.replace(
        PIPELINE.format(
            name=b, schedule="@daily", extra="", image=need("LIMINAL_TEST_BASE_IMAGE"), cmd="echo prepared"
        ),
        "",
    )
    assert f"pipeline: {b}" not in third_text
    _push(remote, third_text, "remove b")
    third = reconcile(repo, deps)
    assert third.status is RunStatus.SUCCEEDED, third.error
    assert [(o.key.name, o.action.value, o.code.value) for o in third.outcomes] == [(b, "delete", "deleted")]
    assert not rest.exists(b)
    assert not (Path(need("LIMINAL_TEST_AIRFLOW_DAGS")) / repo_payload_folder(repo) / f"{b}.json").exists()
    assert rest.exists(a) and rest.exists(c)


def test_a_dag_that_does_not_import_leaves_the_previous_one_live(
    tmp_path: Path, ledger: Ledger, rest: Rest, tag: str, repo: str
) -> None:
    a, b = f"a_{tag}", f"b_{tag}"
    remote, deps, good = _synced(tmp_path, ledger, repo, _yml(tag, [{"name": a}, {"name": b}]))
    # valid for liminal.yml, refused by Airflow: a continuous schedule allows one active run
    broken = _yml(
        tag,
        [
            {"name": a, "schedule": "@continuous", "extra": "\n    max_active_runs: 2"},
            {"name": b, "cmd": "echo better"},
        ],
    )
    commit = _push(remote, broken, "continuous a, better b")
    run = reconcile(repo, deps)
    assert run.status is RunStatus.FAILED
    outcomes = {o.key.name: o for o in run.outcomes}
    assert outcomes[a].code.value == "failed"
    assert "Airflow could not import it" in outcomes[a].message
    assert "ContinuousTimetable requires max_active_runs <= 1" in outcomes[a].message
    assert outcomes[b].code.value == "applied"
    status = ledger.status(repo)
    assert status.last_error is not None and "ContinuousTimetable" in status.last_error
    # b's change is live; a is its previous version, live and runnable
    assert f"commit:{commit[:12]}" in {t["name"] for t in rest.dag(b)["tags"]}
    live_a = rest.dag(a)
    assert not live_a["is_stale"] and live_a["timetable_summary"] == "0 6 * * *"
    assert f"commit:{good[:12]}" in {t["name"] for t in live_a["tags"]}
    _, errors = rest.call(f"/importErrors?filename={repo_loader(repo)[0]}")
    assert errors["total_entries"] == 0
    assert rest.run_to_end(a)["state"] == "success"
    # the CLI shows it too
    out = liminal("status", repo, env=cli_env(tmp_path, ledger))
    assert f"{repo}: degraded" in out.stdout, out.stderr
    assert "ContinuousTimetable requires max_active_runs <= 1" in out.stdout, out.stderr


def test_a_task_runs_on_the_local_docker_engine_with_the_image_built_from_git(
    tmp_path: Path, ledger: Ledger, rest: Rest, tag: str, repo: str
) -> None:
    import docker

    name = f"e2e_{tag}"
    text = _yml(tag, [{"name": name, "image": f"af{tag}/job", "cmd": "python3 -u main.py"}], images=True)
    remote = _remote(tmp_path / "remote", text)
    ledger.add_repo(RepoRef(repo, str(remote)))
    builds: list[BuildRecord] = []
    client = docker.from_env()
    deps = _deps(tmp_path, ledger, _api(), image=ImageTarget(client, on_build=builds.append))
    run = reconcile(repo, deps)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert [b.status for b in builds] == ["pushed"]
    ended = rest.run_to_end(name)
    assert ended["state"] == "success", ended
    _, instances = rest.call(f"/dags/{name}/dagRuns/{ended['dag_run_id']}/taskInstances")
    states = {t["task_id"]: t["state"] for t in instances["task_instances"]}
    assert states == dict.fromkeys(["start", "prepare", "train", "end"], "success")
    client.close()


def test_a_dag_file_edited_or_removed_by_hand_is_restored(
    tmp_path: Path, ledger: Ledger, rest: Rest, tag: str, repo: str
) -> None:
    a, b = f"a_{tag}", f"b_{tag}"
    _, deps, _ = _synced(tmp_path, ledger, repo, _yml(tag, [{"name": a}, {"name": b}]))
    folder = Path(need("LIMINAL_TEST_AIRFLOW_DAGS")) / repo_payload_folder(repo)
    original = (folder / f"{a}.json").read_text()
    (folder / f"{a}.json").write_text(original.replace('"0 6 * * *"', '"0 9 * * *"'))
    (folder / f"{b}.json").unlink()
    run = reconcile(repo, deps)  # the same commit: only the drift to repair
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.summary["drift"] == [f"dag/{a}", f"dag/{b}"]
    assert sorted((o.key.name, o.code.value) for o in run.outcomes) == [(a, "applied"), (b, "applied")]
    assert (folder / f"{a}.json").read_text() == original and (folder / f"{b}.json").exists()
    assert rest.dag(a)["timetable_summary"] == "0 6 * * *" and not rest.dag(b)["is_stale"]
    assert reconcile(repo, deps).status is RunStatus.NOOP


def _api_server(port: int, logs: Path) -> subprocess.Popen[bytes]:
    """A second api-server of the same Airflow (same database), on its own port: one the test can stop."""
    home = Path(need("LIMINAL_TEST_AIRFLOW_HOME"))
    env = dict(os.environ)
    for line in (home / "airflow.env").read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    env["AIRFLOW__API__PORT"] = str(port)
    venv = Path(os.environ.get("AIRFLOW_VENV", Path(__file__).resolve().parent.parent / ".airflow-venv"))
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    return subprocess.Popen(
        [str(venv / "bin" / "airflow"), "api-server", "--port", str(port)],
        env=env,
        stdout=logs.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, 15)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_airflow_down_during_a_sync_is_retried_and_converges(
    tmp_path: Path, ledger: Ledger, rest: Rest, tag: str, repo: str
) -> None:
    a = f"a_{tag}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _api_server(port, tmp_path / "api-server.log")
    try:
        assert answers(f"{url}/api/v2/monitor/health", 120), (tmp_path / "api-server.log").read_text()[-2000:]
        remote, deps, good = _synced(tmp_path, ledger, repo, _yml(tag, [{"name": a}]), _api(url))
        _stop(server)
        commit = _push(remote, _yml(tag, [{"name": a, "schedule": "@hourly"}]), "hourly")
        down = reconcile(repo, deps, trigger=Trigger.POLL)
        assert down.status is RunStatus.FAILED
        assert down.error is not None and f"cannot reach Airflow at {url}" in down.error and "retry in" in down.error
        status = ledger.status(repo)
        assert (status.last_applied_commit, status.last_attempted_commit) == (good, commit)
        assert status.state == "degraded"
        assert rest.dag(a)["timetable_summary"] == "0 6 * * *"  # nothing half-deployed
        server = _api_server(port, tmp_path / "api-server-2.log")
        assert answers(f"{url}/api/v2/monitor/health", 120)
        back = reconcile(repo, deps)
        assert back.status is RunStatus.SUCCEEDED, back.error
        assert ledger.status(repo).last_applied_commit == commit
        assert ledger.status(repo).state == "synced"
        assert rest.dag(a)["timetable_summary"] == "0 * * * *"
    finally:
        _stop(server)


def test_the_cli_syncs_to_airflow_with_credentials_from_a_file(
    tmp_path: Path, ledger: Ledger, rest: Rest, tag: str, repo: str
) -> None:
    a = f"a_{tag}"
    remote = _remote(tmp_path / "remote", _yml(tag, [{"name": a}]))
    secret = tmp_path / "airflow-password"
    secret.write_text(need("LIMINAL_TEST_AIRFLOW_PASSWORD") + "\n")
    env = cli_env(
        tmp_path,
        ledger,
        LIMINAL_IMAGES="off",
        LIMINAL_DAGS_FOLDER=need("LIMINAL_TEST_AIRFLOW_DAGS"),
        LIMINAL_AIRFLOW_URL=need("LIMINAL_TEST_AIRFLOW_URL"),
        LIMINAL_AIRFLOW_USERNAME=need("LIMINAL_TEST_AIRFLOW_USERNAME"),
        LIMINAL_AIRFLOW_PASSWORD_FILE=str(secret),
    )
    assert liminal("repo", "add", str(remote), "--name", repo, env=env).returncode == 0
    synced = liminal("sync", repo, env=env)
    assert synced.returncode == 0, synced.stderr
    assert "succeeded" in synced.stdout
    assert not rest.dag(a)["is_stale"]
    status = liminal("status", repo, "--format", "json", env=env)
    assert json.loads(status.stdout)[0]["state"] == "synced"
    password = need("LIMINAL_TEST_AIRFLOW_PASSWORD")
    assert password not in synced.stdout + synced.stderr + status.stdout
    assert password not in json.dumps([r.summary for r in ledger.history(repo)], default=str)
