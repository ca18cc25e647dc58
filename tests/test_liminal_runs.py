"""Run semantics as Liminal defines them, proven by running the deployed DAGs in the test Airflow 3
with the `docker` executor on the test Docker engine (not by reading the rendered files).

One repository holds every case; one sync deploys them and the runs go in parallel. Assertions read
Airflow through its REST API with plain HTTP (task instances and task logs).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from controller.ledger import Ledger
from controller.model import RepoRef, RunStatus
from controller.sync.reconcile import reconcile
from tests.airflow_rest import Rest
from tests.conftest import commit_all, git, need
from tests.test_airflow import _api, _deps

TASK = """\
      - task: {name}
        type: python
        image: {image}
        executor: local
        cmd: {cmd}
"""


def _pipeline(name: str, tasks: list[tuple[str, str]], extra: str = "", image: str = "") -> str:
    image = image or need("LIMINAL_TEST_BASE_IMAGE")
    body = "".join(TASK.format(name=t, cmd=json.dumps(c), image=image) for t, c in tasks)
    return f"  - pipeline: {name}\n    start_date: 2024-01-01\n    timeout_minutes: 10\n{extra}    tasks:\n{body}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Deploy every case with one sync, run each pipeline once, and hand the runs to the tests."""
    tag = uuid.uuid4().hex[:8]
    rest = Rest(need("LIMINAL_TEST_AIRFLOW_URL"))
    repo = f"runs-{tag}"
    names = {case: f"{case}_{tag}" for case in ("fails", "always", "passes", "retries", "nobash")}
    head = "executors:\n  - executor: local\n    type: docker\n"
    base = need("LIMINAL_TEST_BASE_IMAGE")
    passes = f"""\
  - pipeline: {names["passes"]}
    start_date: 2024-01-01
    timeout_minutes: 10
    tasks:
      - task: bashism
        type: python
        image: {base}
        executor: local
        cmd: '[[ -n "$BASH_VERSION" ]] && echo "bash-only syntax works in bash $BASH_VERSION"'
      - task: values
        type: python
        image: {base}
        executor: local
        env_vars:
          GREETING: 'hi {{{{who}}}}'
        cmd: >-
          echo "who={{{{who}}}} region={{{{region}}}}" "note={{{{day_note}}}}"
          "yesterday={{{{yesterday_ds}}}} greet=$GREETING"
      - task: own
        type: python
        image: {base}
        executor: local
        variables: per_task
        cmd: 'echo "zone={{{{zone}}}}"'
"""
    main = (
        f"name: runs{tag}\n{head}"
        "variables:\n  region: eu\n  zone: root-zone\n  day_note: 'day {{ds}}'\n  per_task:\n    zone: task-zone\n"
        "pipelines:\n"
        + _pipeline(names["fails"], [("first", "echo first; exit 3"), ("second", "echo second ran")])
        + passes
        + _pipeline(names["retries"], [("flaky", "echo try; exit 1")], extra="    retries: 1\n    retry_delay: 1s\n")
        + _pipeline(names["nobash"], [("plain", "echo never")], image=need("LIMINAL_TEST_BUSYBOX_IMAGE"))
    )
    always = f"name: always{tag}\nalways_run: true\n{head}pipelines:\n" + _pipeline(
        names["always"], [("first", "exit 3"), ("second", "echo second ran after a failure")]
    )
    root = tmp_path_factory.mktemp("runs") / "remote"
    (root / "always").mkdir(parents=True)
    (root / "liminal.yml").write_text(main)
    (root / "always" / "liminal.yml").write_text(always)
    git(root, "init", "-q", "-b", "main")
    commit_all(root, "every case")
    home = tmp_path_factory.mktemp("runs-home")
    ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
    ledger.add_repo(RepoRef(repo, str(root)))
    try:
        run = reconcile(repo, _deps(home, ledger, _api()))
        assert run.status is RunStatus.SUCCEEDED, run.error
        started = {}
        for case, dag_id in names.items():
            conf = {"who": "alice", "region": "conf-region"} if case == "passes" else {}
            started[case] = rest.trigger(dag_id, conf)
        ended = {case: rest.wait(names[case], run_id) for case, run_id in started.items()}
        yield {"rest": rest, "names": names, "runs": ended}
    finally:
        rest.remove_repository(repo)
        ledger.close()


def _instances(runs: dict[str, Any], case: str) -> dict[str, dict[str, Any]]:
    rest: Rest = runs["rest"]
    run = runs["runs"][case]
    _, found = rest.call(f"/dags/{runs['names'][case]}/dagRuns/{run['dag_run_id']}/taskInstances")
    return {t["task_id"]: t for t in found["task_instances"]}


def _log(runs: dict[str, Any], case: str, task_id: str, try_number: int = 1) -> str:
    rest: Rest = runs["rest"]
    run = runs["runs"][case]
    return rest.task_log(runs["names"][case], run["dag_run_id"], task_id, try_number)


def test_a_failed_task_fails_the_run_and_stops_the_tasks_after_it(runs: dict[str, Any]) -> None:
    assert runs["runs"]["fails"]["state"] == "failed"
    states = {t: i["state"] for t, i in _instances(runs, "fails").items()}
    assert states == {"start": "success", "first": "failed", "second": "upstream_failed", "end": "upstream_failed"}


def test_always_run_runs_every_task_and_the_run_still_fails(runs: dict[str, Any]) -> None:
    assert runs["runs"]["always"]["state"] == "failed"
    states = {t: i["state"] for t, i in _instances(runs, "always").items()}
    assert states == {"start": "success", "first": "failed", "second": "success", "end": "failed"}
    assert "second ran after a failure" in _log(runs, "always", "second")
    assert "task(s) first failed" in _log(runs, "always", "end")


def test_a_passing_pipeline_succeeds_under_bash(runs: dict[str, Any]) -> None:
    assert runs["runs"]["passes"]["state"] == "success", runs["runs"]["passes"]
    states = {t: i["state"] for t, i in _instances(runs, "passes").items()}
    assert set(states.values()) == {"success"}
    assert "bash-only syntax works in bash 5" in _log(runs, "passes", "bashism")


def test_variables_and_the_run_conf_fill_placeholders_in_liminal_order(runs: dict[str, Any]) -> None:
    log = _log(runs, "passes", "values")
    run = runs["runs"]["passes"]
    day = (run.get("logical_date") or run["run_after"])[:10]
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.mktime(time.strptime(day, "%Y-%m-%d")) - 86400))
    # conf wins over the root variable; a conf key nothing else defines is filled too (also in env_vars);
    # a variable's own run-time value ({{ds}}) and Liminal's yesterday_ds are filled
    assert f"who=alice region=conf-region note=day {day} yesterday={yesterday} greet=hi alice" in log, log
    assert "zone=task-zone" in _log(runs, "passes", "own")  # the task's variables win over the root's


def test_retries_and_retry_delay_reach_the_task_instances(runs: dict[str, Any]) -> None:
    assert runs["runs"]["retries"]["state"] == "failed"
    flaky = _instances(runs, "retries")["flaky"]
    assert (flaky["state"], flaky["try_number"], flaky["max_tries"]) == ("failed", 2, 1)
    rest: Rest = runs["rest"]
    _, task = rest.call(f"/dags/{runs['names']['retries']}/tasks/flaky")
    assert (task["retries"], task["retry_delay"]["days"], task["retry_delay"]["seconds"]) == (1, 0, 1)
    assert "try" in _log(runs, "retries", "flaky", 2)


def test_an_image_without_bash_fails_its_task_saying_so(runs: dict[str, Any]) -> None:
    assert runs["runs"]["nobash"]["state"] == "failed"
    assert "/bin/bash" in _log(runs, "nobash", "plain")
