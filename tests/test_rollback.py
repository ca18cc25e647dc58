"""`liminal rollback`, for real: a revert commit pushed to the tracked branch, then a sync that
rebuilds no image (the content tags exist) and restores the DAG in the real Airflow 3 and the
model served on the real Docker engine."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.ledger import Ledger
from controller.render.dags import repo_payload_folder
from tests.airflow_rest import Rest
from tests.conftest import cli_env, commit_all, example_remote, git, liminal, need


@pytest.fixture
def rest() -> Rest:
    return Rest(need("LIMINAL_TEST_AIRFLOW_URL"))


@pytest.fixture
def repo(served_repo: str, rest: Rest) -> Iterator[str]:
    """The test's repository: its containers, and its DAGs in the shared Airflow, go afterwards."""
    yield served_repo
    rest.remove_repository(served_repo)


def _predict(url: str, x: float) -> object:
    request = urllib.request.Request(f"{url}/predict", data=json.dumps({"x": x}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_rollback_reverts_in_git_builds_nothing_and_restores_dag_and_service(
    tmp_path: Path, ledger: Ledger, repo: str, rest: Rest
) -> None:
    work = example_remote(tmp_path, own_images=True)  # a developer's clone
    dag = f"hello_training_{uuid.uuid4().hex[:8]}"  # dag_ids are global in the shared Airflow
    yml = work / "liminal.yml"
    yml.write_text(yml.read_text().replace("pipeline: hello_training", f"pipeline: {dag}"))
    commit_all(work, "a dag_id of this test's own")
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(origin))
    git(work, "remote", "add", "origin", str(origin))
    env = cli_env(
        tmp_path,
        ledger,
        LIMINAL_REGISTRY=need("LIMINAL_TEST_REGISTRY"),
        LIMINAL_BASE_IMAGE=need("LIMINAL_TEST_BASE_IMAGE"),
        LIMINAL_DAGS_FOLDER=need("LIMINAL_TEST_AIRFLOW_DAGS"),
        LIMINAL_AIRFLOW_URL=need("LIMINAL_TEST_AIRFLOW_URL"),
        LIMINAL_AIRFLOW_USERNAME=need("LIMINAL_TEST_AIRFLOW_USERNAME"),
        LIMINAL_AIRFLOW_PASSWORD=need("LIMINAL_TEST_AIRFLOW_PASSWORD"),
    )

    assert liminal("repo", "add", str(origin), "--name", repo, env=env).returncode == 0
    first = liminal("sync", repo, env=env)
    assert first.returncode == 0, first.stderr
    good = git(origin, "rev-parse", "main")
    payload = Path(env["LIMINAL_DAGS_FOLDER"]) / repo_payload_folder(repo) / f"{dag}.json"
    good_payload = json.loads(payload.read_text())
    assert rest.dag(dag)["timetable_summary"] == "0 6 * * *"

    # a bad change ships: a new schedule and a new model
    yml = work / "liminal.yml"
    yml.write_text(yml.read_text().replace("schedule: 0 6 * * *", "schedule: 0 3 * * *"))
    model = work / "serving" / "model.py"
    model.write_text(model.read_text().replace("2 * float", "-1 * float"))
    bad = commit_all(work, "new schedule and model")
    git(work, "push", "-q", "origin", "main")
    assert liminal("sync", repo, env=env).returncode == 0
    assert rest.dag(dag)["timetable_summary"] == "0 3 * * *"
    status = json.loads(liminal("status", repo, "--format", "json", env=env).stdout)[0]
    assert _predict(status["services"][0]["url"], 2) == {"y": -1.0}
    builds_before = len(json.loads(liminal("builds", repo, "--format", "json", "--limit", "100", env=env).stdout))

    started = time.monotonic()
    rolled = liminal("rollback", repo, env=env)
    seconds = time.monotonic() - started
    assert rolled.returncode == 0, rolled.stderr
    print(f"rollback: revert pushed, DAG live in Airflow and model served again in {seconds:.2f} s")
    # git holds the story: a revert commit on the branch, after the bad one
    head = git(origin, "rev-parse", "main")
    assert git(origin, "rev-parse", "main^") == bad
    assert git(origin, "log", "-1", "--format=%s", "main").startswith(f"Revert {bad[:12]}")
    assert git(origin, "diff", good, head) == ""  # the tree is the good one again
    assert f"pushed {head[:12]}" in rolled.stdout and "succeeded" in rolled.stdout
    # no image was built again, and the DAG and the served model are the good ones
    builds_after = len(json.loads(liminal("builds", repo, "--format", "json", "--limit", "100", env=env).stdout))
    assert builds_after == builds_before
    restored = json.loads(payload.read_text())
    assert {k: v for k, v in restored.items() if k not in ("origin", "tags")} == {
        k: v for k, v in good_payload.items() if k not in ("origin", "tags")
    }
    # Airflow itself runs the previous DAG again, from the revert commit
    live = rest.dag(dag)
    assert live["timetable_summary"] == "0 6 * * *" and not live["is_stale"]
    assert f"commit:{head[:12]}" in {t["name"] for t in live["tags"]}
    status = json.loads(liminal("status", repo, "--format", "json", env=env).stdout)[0]
    service = status["services"][0]
    assert status["last_applied_commit"] == head and service["health"] == "healthy"
    assert _predict(service["url"], 2) == {"y": 5.0}
    # which commit each resource came from
    provenance = json.loads(liminal("history", repo, "--resources", "--format", "json", env=env).stdout)
    assert {(r["kind"], r["name"]): r["commit"] for r in provenance}[("dag", dag)] == head
