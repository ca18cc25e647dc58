"""Local Docker serving, for real: the example's python_server on the engine scripts/lib/docker.sh starts."""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from controller.ledger import Ledger
from controller.model import RepoRef, ResourceKind, RunStatus
from controller.render import RenderSettings, ServingTarget
from controller.sync.reconcile import Deps, reconcile
from controller.sync.source import GitSource
from controller.targets.dag_folder import DagFolderTarget
from controller.targets.docker_serving import DockerServingTarget
from controller.targets.images import ImageTarget
from tests.conftest import REPO, answers, commit_all, git, liminal

EXAMPLE = REPO / "examples" / "hello-liminal"
SELECTOR = "app.kubernetes.io/managed-by=liminal-controller"


def _need(name: str) -> str:
    value = os.environ.get(name)
    assert value, f"{name} is not set: run the tests through scripts/test (it starts dockerd and the registry)"
    return value


@pytest.fixture
def client() -> Iterator[docker.DockerClient]:
    _need("DOCKER_HOST")
    found = docker.from_env()
    yield found
    found.close()


@pytest.fixture
def repo(client: docker.DockerClient) -> Iterator[str]:
    """A repository name of this test's own; its containers are removed afterwards."""
    name = f"serve-{uuid.uuid4().hex[:8]}"
    yield name
    for container in client.containers.list(all=True, filters={"label": f"liminal-gitops/repo={name}"}):
        container.remove(force=True)


def _remote(tmp_path: Path) -> Path:
    remote = tmp_path / "remote"
    shutil.copytree(EXAMPLE, remote, ignore=shutil.ignore_patterns("__pycache__"))
    yml = remote / "liminal.yml"
    yml.write_text(yml.read_text().replace("hello/", f"hello{uuid.uuid4().hex[:8]}/"))
    git(remote, "init", "-q", "-b", "main")
    commit_all(remote, "initial")
    return remote


def _deps(tmp_path: Path, ledger: Ledger, client: docker.DockerClient, serving: DockerServingTarget) -> Deps:
    return Deps(
        source=GitSource(tmp_path / "cache"),
        ledger=ledger,
        targets={
            ResourceKind.IMAGE: ImageTarget(client),
            ResourceKind.DAG: DagFolderTarget(tmp_path / "dags"),
            ResourceKind.SERVICE: serving,
        },
        settings=RenderSettings(
            registry=_need("LIMINAL_TEST_REGISTRY"),
            base_image=_need("LIMINAL_TEST_BASE_IMAGE"),
            serving=ServingTarget.DOCKER,
        ),
    )


def _predict(url: str, x: float) -> tuple[int, object]:
    request = urllib.request.Request(f"{url}/predict", data=json.dumps({"x": x}).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


def test_serve_roll_out_without_a_failed_request_and_remove(
    tmp_path: Path, ledger: Ledger, client: docker.DockerClient, repo: str
) -> None:
    remote = _remote(tmp_path)
    ledger.add_repo(RepoRef(repo, str(remote)))
    serving = DockerServingTarget(client)
    deps = _deps(tmp_path, ledger, client, serving)
    first = reconcile(repo, deps)
    assert first.status is RunStatus.SUCCEEDED, first.error
    deployed = [d for d in ledger.deployed_state(repo).resources.values() if d.key.kind is ResourceKind.SERVICE]
    endpoint = serving.endpoints(deployed)[deployed[0].key]
    assert endpoint.url is not None and endpoint.url.startswith("http://127.0.0.1:")
    url = endpoint.url
    assert answers(f"{url}/healthcheck", 30)
    assert _predict(url, 2) == (200, {"y": 5.0})  # the user's function: 2x + 1

    # change the code and push; poll the endpoint all through the switch
    model = remote / "serving" / "model.py"
    model.write_text(model.read_text().replace("2 * float", "3 * float"))
    commit_all(remote, "a better model")
    seen: list[tuple[int, object]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            seen.append(_predict(url, 2))

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        second = reconcile(repo, deps)
        for _ in range(20):  # a little after the switch too
            seen.append(_predict(url, 2))
    finally:
        stop.set()
        poller.join()
    assert second.status is RunStatus.SUCCEEDED, second.error
    failed = [s for s in seen if s[0] != 200]
    assert failed == [], failed[:5]
    answers_seen = [s[1] for s in seen]
    assert {"y": 5.0} in answers_seen and answers_seen[-1] == {"y": 7.0}
    switched = answers_seen.index({"y": 7.0})
    assert all(a == {"y": 7.0} for a in answers_seen[switched:])  # never back to the old version
    print(f"{len(seen)} requests during the switch, none failed")
    apps = client.containers.list(all=True, filters={"label": [SELECTOR, f"liminal-gitops/repo={repo}"]})
    assert sorted(c.labels["liminal-gitops/role"] for c in apps) == ["app", "proxy"]  # the old version is gone

    # `liminal status` shows where it answers and how it is
    env = {**os.environ, "LIMINAL_LEDGER_URL": ledger.url, "LIMINAL_HOME": str(tmp_path / "home")}
    status = liminal("status", repo, "--format", "json", env=env)
    assert status.returncode == 0, status.stderr
    services = json.loads(status.stdout)[0]["services"]
    assert services == [{"name": "hello_server", "url": url, "health": "healthy", "detail": ""}]

    # remove the service from git: its containers go
    yml = remote / "liminal.yml"
    text = yml.read_text()
    yml.write_text(text[: text.index("services:")])
    commit_all(remote, "no more serving")
    third = reconcile(repo, deps)
    assert third.status is RunStatus.SUCCEEDED, third.error
    assert [(o.key.name, o.code.value) for o in third.outcomes if o.key.kind is ResourceKind.SERVICE] == [
        ("hello_server", "deleted")
    ]
    assert client.containers.list(all=True, filters={"label": [SELECTOR, f"liminal-gitops/repo={repo}"]}) == []
    assert _predict(url, 2)[0] == 0  # nothing answers there any more


def test_a_serving_container_stopped_by_hand_is_restored(
    tmp_path: Path, ledger: Ledger, client: docker.DockerClient, repo: str
) -> None:
    remote = _remote(tmp_path)
    ledger.add_repo(RepoRef(repo, str(remote)))
    serving = DockerServingTarget(client)
    deps = _deps(tmp_path, ledger, client, serving)
    assert reconcile(repo, deps).status is RunStatus.SUCCEEDED
    app = client.containers.list(filters={"label": [f"liminal-gitops/repo={repo}", "liminal-gitops/role=app"]})[0]
    app.stop(timeout=1)
    run = reconcile(repo, deps)  # the same commit
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.summary["drift"] == ["service/hello_server"]
    deployed = [d for d in ledger.deployed_state(repo).resources.values() if d.key.kind is ResourceKind.SERVICE]
    endpoint = serving.endpoints(deployed)[deployed[0].key]
    assert endpoint.health == "healthy" and endpoint.url is not None
    assert _predict(endpoint.url, 1) == (200, {"y": 3.0})
