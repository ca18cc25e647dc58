"""Repository policy (issue 16): a liminal.yml asking for more than its repository may use is
invalid, located at the key that asks; the operator's policy file allows more."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.config import controller_settings
from controller.errors import ConfigError, InputError
from controller.ledger import Ledger
from controller.model import RepoPolicy, RepoRef
from controller.spec import discover, load
from tests.conftest import cli_env, commit_all, git, liminal

Write = Callable[[dict[str, str]], Path]

GREEDY = """\
name: greedy
executors:
  - executor: pods
    type: kubernetes
    namespace: kube-system
    service_account_name: cluster-admin
    cluster_context: production
  - executor: local
    type: docker
    docker_url: tcp://10.0.0.1:2375
    network_mode: host
volumes:
  - volume: data
    local:
      path: /etc
secrets:
  - secret: creds
    local_path_file: ~/.aws/credentials
pipelines:
  - pipeline: greedy_pipeline
    start_date: 2024-01-01
    timeout_minutes: 5
    tasks:
      - task: run
        type: python
        image: python:3.11-slim
        executor: local
        cmd: echo hi
"""


def _problems(root: Path, policy: RepoPolicy) -> list[tuple[int, int, str, str]]:
    try:
        load(discover([root]), {}, policy=policy)
    except InputError as exc:
        return [(p.line, p.col, p.path, p.message) for p in exc.problems if p.rule == "policy"]
    return []


def test_the_safe_default_refuses_each_request_at_its_key(write: Write) -> None:
    root = write({"liminal.yml": GREEDY})
    found = _problems(root, RepoPolicy())
    assert [(line, col, path) for line, col, path, _ in found] == [
        (5, 16, "$.executors[0].namespace"),
        (6, 27, "$.executors[0].service_account_name"),
        (7, 22, "$.executors[0].cluster_context"),
        (10, 17, "$.executors[1].docker_url"),
        (11, 19, "$.executors[1].network_mode"),
        (14, 5, "$.volumes[0].local"),
        (18, 5, "$.secrets[0].local_path_file"),
    ]
    assert (
        "asks for Kubernetes namespace 'kube-system'; the repository's policy (LIMINAL_POLICY_FILE) allows 'default'"
        in (found[0][3])
    )
    assert "does not allow host mounts" in found[5][3]


def test_a_policy_that_allows_it_loads_and_the_request_is_honoured(write: Write) -> None:
    root = write({"liminal.yml": GREEDY})
    generous = RepoPolicy(
        namespaces=("kube-system",),
        service_accounts=("cluster-admin",),
        cluster_contexts=("production",),
        docker_settings=True,
        host_mounts=True,
    )
    assert _problems(root, generous) == []
    spec = load(discover([root]), {}, policy=generous)
    (system,) = spec.systems
    local = next(e for e in system.executors if e.name == "local")
    assert local.options["network_mode"] == "host"  # accepted means passed on to the DockerOperator


def test_executor_types_are_checked_where_tasks_use_them(write: Write) -> None:
    root = write({"liminal.yml": GREEDY})
    found = _problems(root, RepoPolicy(executor_types=frozenset({"kubernetes", "airflow"}), host_mounts=True))
    messages = [m for *_, m in found if "runs on executor" in m]
    assert messages == [
        "task 'run' runs on executor 'local' of type 'docker'; the repository's policy (LIMINAL_POLICY_FILE) "
        "allows airflow, kubernetes"
    ]


def test_the_policy_file_is_read_and_checked(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "default:\n  executor_types: [kubernetes, airflow, docker]\n"
        "repositories:\n  ml:\n    namespaces: [ml, ml-staging]\n    service_accounts: ['*']\n    host_mounts: true\n"
    )
    settings = controller_settings({"LIMINAL_POLICY_FILE": str(policy), "LIMINAL_NAMESPACE": "liminal"})
    other = settings.policies.for_repo("other")
    assert other == RepoPolicy(executor_types=frozenset({"kubernetes", "airflow", "docker"}), namespaces=("liminal",))
    ml = settings.policies.for_repo("ml")
    assert (ml.namespaces, ml.service_accounts, ml.host_mounts, ml.docker_settings) == (
        ("ml", "ml-staging"),
        None,
        True,
        False,
    )
    assert ml.executor_types == other.executor_types  # an entry starts from `default`
    without = controller_settings({"LIMINAL_NAMESPACE": "liminal"}).policies.for_repo("any")
    assert without == RepoPolicy(namespaces=("liminal",))
    for text, message in (
        ("default:\n  host_mount: true\n", "unknown key"),
        ("default:\n  namespaces: ml\n", "list of names"),
        ("default:\n  executor_types: [lambda]\n", "unknown executor type"),
        ("default:\n  docker_settings: yes please\n", "true or false"),
        ("repos: {}\n", "must be a mapping with"),
    ):
        policy.write_text(text)
        with pytest.raises(ConfigError, match=message):
            controller_settings({"LIMINAL_POLICY_FILE": str(policy)})


def test_a_sync_refuses_a_commit_beyond_the_policy_and_keeps_what_is_live(
    tmp_path: Path, sqlite_ledger: Ledger
) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    yml = remote / "liminal.yml"
    # a docker executor without overrides, and a pipeline on it
    yml.write_text(
        "name: greedy\nexecutors:\n  - executor: local\n    type: docker\n"
        "pipelines:\n  - pipeline: greedy_pipeline\n    start_date: 2024-01-01\n    timeout_minutes: 5\n"
        "    tasks:\n      - task: run\n        type: python\n        image: python:3.11-slim\n"
        "        executor: local\n        cmd: echo hi\n"
    )
    git(remote, "init", "-q", "-b", "main")
    good = commit_all(remote, "a pipeline on the local engine")
    sqlite_ledger.add_repo(RepoRef("greedy", str(remote)))
    env = cli_env(tmp_path, sqlite_ledger, LIMINAL_IMAGES="off")
    assert liminal("sync", "greedy", env=env).returncode == 0
    yml.write_text(yml.read_text().replace("    type: docker\n", "    type: docker\n    network_mode: host\n"))
    commit_all(remote, "ask for the host's network")
    refused = liminal("sync", "greedy", env=env)
    assert refused.returncode == 1
    assert "liminal.yml:5:19: error: $.executors[0].network_mode: executor 'local' sets `network_mode`" in (
        refused.stdout + refused.stderr
    )
    assert sqlite_ledger.status("greedy").last_applied_commit == good  # what is live stays live
    policy = tmp_path / "policy.yaml"
    policy.write_text("repositories:\n  greedy:\n    docker_settings: true\n")
    allowed = liminal("sync", "greedy", env={**env, "LIMINAL_POLICY_FILE": str(policy)})
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    payload = json.loads(next((tmp_path / "dags").rglob("greedy_pipeline.json")).read_text())
    run = next(t for t in payload["tasks"] if t["task_id"] == "run")
    assert run["docker"]["network_mode"] == "host"  # allowed, and passed on to the DockerOperator
