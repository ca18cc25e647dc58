"""Local Docker serving, for real: the example's python_server on the engine scripts/lib/docker.sh starts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import docker
import pytest

from controller.ledger import Ledger
from controller.model import RepoRef, ResourceKind, RunStatus, ServiceEndpoint
from controller.render import RenderSettings, ServingTarget
from controller.sync.deps import Deps
from controller.sync.reconcile import reconcile
from controller.sync.source import GitSource
from controller.targets.dag_folder import DagFolderTarget
from controller.targets.docker_serving import DockerServingTarget
from controller.targets.images import ImageTarget
from tests.conftest import TEST_REMOTES, answers, cli_env, commit_all, example_remote, liminal, need

SELECTOR = "app.kubernetes.io/managed-by=liminal-controller"


@pytest.fixture
def client(docker_client: docker.DockerClient) -> docker.DockerClient:
    return docker_client


@pytest.fixture
def repo(served_repo: str) -> str:
    return served_repo


def _deps(tmp_path: Path, ledger: Ledger, client: docker.DockerClient, serving: DockerServingTarget) -> Deps:
    return Deps(
        source=GitSource(tmp_path / "cache", policy=TEST_REMOTES),
        ledger=ledger,
        targets={
            ResourceKind.IMAGE: ImageTarget(client),
            ResourceKind.DAG: DagFolderTarget(tmp_path / "dags"),
            ResourceKind.SERVICE: serving,
        },
        settings=RenderSettings(
            registry=need("LIMINAL_TEST_REGISTRY"),
            base_image=need("LIMINAL_TEST_BASE_IMAGE"),
            serving=ServingTarget.DOCKER,
        ),
    )


def _served(
    tmp_path: Path, ledger: Ledger, client: docker.DockerClient, repo: str
) -> tuple[Path, DockerServingTarget, Deps]:
    """The example (images of this test's own), tracked as `repo` and synced once, its service served."""
    remote = example_remote(tmp_path, own_images=True)
    ledger.add_repo(RepoRef(repo, str(remote)))
    serving = DockerServingTarget(client)
    deps = _deps(tmp_path, ledger, client, serving)
    first = reconcile(repo, deps)
    assert first.status is RunStatus.SUCCEEDED, first.error
    return remote, serving, deps


def _endpoint(ledger: Ledger, serving: DockerServingTarget, repo: str) -> ServiceEndpoint:
    deployed = [d for d in ledger.deployed_state(repo).resources.values() if d.key.kind is ResourceKind.SERVICE]
    return serving.endpoints(deployed)[deployed[0].key]


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
    remote, serving, deps = _served(tmp_path, ledger, client, repo)
    endpoint = _endpoint(ledger, serving, repo)
    assert endpoint.url is not None and endpoint.url.startswith("http://127.0.0.1:")
    url = endpoint.url
    assert answers(f"{url}/healthcheck", 30)
    assert _predict(url, 2) == (200, {"y": 5.0})  # the user's function: 2x + 1

    # change the code and push; poll the endpoint all through the switch
    model = remote / "serving" / "model.py"
    model.write_text(model.read_text().replace("2 * float", "3 * float"))
    commit_all(remote, "a better model")
    seen: list[tuple[float, int, object]] = []  # (when the request started, status, answer)
    stop = threading.Event()

    def ask() -> None:
        started = time.monotonic()
        status, answer = _predict(url, 2)
        seen.append((started, status, answer))

    def poll() -> None:
        while not stop.is_set():
            ask()

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        second = reconcile(repo, deps)
        switched = time.monotonic()
        for _ in range(20):  # a little after the switch too
            ask()
    finally:
        stop.set()
        poller.join()
    assert second.status is RunStatus.SUCCEEDED, second.error
    failed = [s for s in seen if s[1] != 200]
    assert failed == [], failed[:5]
    # a request in flight during the switch may finish on the old version; every one started
    # after the sync returned gets the new one
    assert any(answer == {"y": 5.0} for _, _, answer in seen)
    after = [answer for started, _, answer in seen if started >= switched]
    assert len(after) >= 20 and all(a == {"y": 7.0} for a in after), after
    print(f"{len(seen)} requests during the switch, none failed")
    apps = client.containers.list(all=True, filters={"label": [SELECTOR, f"liminal-gitops/repo={repo}"]})
    assert sorted(c.labels["liminal-gitops/role"] for c in apps) == ["app", "proxy"]  # the old version is gone

    # `liminal status` shows where it answers and how it is
    env = cli_env(tmp_path, ledger)
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
    _, serving, deps = _served(tmp_path, ledger, client, repo)
    app = client.containers.list(filters={"label": [f"liminal-gitops/repo={repo}", "liminal-gitops/role=app"]})[0]
    app.stop(timeout=1)
    run = reconcile(repo, deps)  # the same commit
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.summary["drift"] == ["service/hello_server"]
    endpoint = _endpoint(ledger, serving, repo)
    assert endpoint.health == "healthy" and endpoint.url is not None
    assert _predict(endpoint.url, 1) == (200, {"y": 3.0})


def _version(url: str, path: str = "/version") -> tuple[int, object, float]:
    """Ask the service its MODEL_VERSION: (status, answer, seconds it took)."""
    started = time.monotonic()
    request = urllib.request.Request(f"{url}{path}", data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace"), time.monotonic() - started
    except OSError as exc:
        return 0, str(exc), time.monotonic() - started


def test_switches_under_load_drop_nothing_and_keep_nobody_waiting(
    tmp_path: Path, ledger: Ledger, client: docker.DockerClient, repo: str
) -> None:
    remote = example_remote(tmp_path, own_images=True)
    model = remote / "serving" / "model.py"
    model.write_text(
        "import os\nimport time\n"
        + model.read_text().replace('return {"version": "1"}', 'return {"version": os.environ["MODEL_VERSION"]}')
        + "\n\ndef slow(body: bytes) -> dict[str, str]:\n    time.sleep(5)\n    return version(body)\n"
    )
    yml = remote / "liminal.yml"
    slow_endpoint = "      - endpoint: /slow\n        module: model\n        function: slow\n"
    text = yml.read_text().replace("        function: version\n", "        function: version\n" + slow_endpoint)
    yml.write_text(text.rstrip("\n") + '\n    env_vars:\n      MODEL_VERSION: "0"\n')
    commit_all(remote, "the version from the environment")
    ledger.add_repo(RepoRef(repo, str(remote)))
    serving = DockerServingTarget(client)
    deps = _deps(tmp_path, ledger, client, serving)
    first = reconcile(repo, deps)
    assert first.status is RunStatus.SUCCEEDED, first.error
    url = _endpoint(ledger, serving, repo).url
    assert url is not None and answers(f"{url}/healthcheck", 30)

    # both cores busy, four clients asking all the time, three switches to a new version
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    seen: list[tuple[float, int, object, float]] = []  # (started, status, answer, seconds)
    stop = threading.Event()

    def client_loop() -> None:
        while not stop.is_set():
            started = time.monotonic()
            status, answer, seconds = _version(url)
            seen.append((started, status, answer, seconds))

    clients = [threading.Thread(target=client_loop) for _ in range(4)]
    slow_answer: list[tuple[int, object, float]] = []
    long_request = threading.Thread(target=lambda: slow_answer.append(_version(url, "/slow")))
    switched: list[tuple[float, float, str]] = []  # (reconcile started, returned, version)
    try:
        for thread in clients:
            thread.start()
        time.sleep(1)
        for version in ("1", "2", "3"):
            yml.write_text(re.sub(r'MODEL_VERSION: "\d"', f'MODEL_VERSION: "{version}"', yml.read_text()))
            commit_all(remote, f"version {version}")
            if version == "1":  # a request that takes 5 s, in flight when the version changes
                long_request.start()
                time.sleep(0.5)
            began = time.monotonic()
            run = reconcile(repo, deps)
            assert run.status is RunStatus.SUCCEEDED, run.error
            switched.append((began, time.monotonic(), version))
            time.sleep(1)
    finally:
        stop.set()
        for thread in [*clients, long_request]:
            thread.join()
        for proc in busy:
            proc.kill()
            proc.wait()
    failed = [s for s in seen if s[1] != 200]
    slow = [s for s in seen if s[3] > 2.0]
    print(
        f"{len(seen)} requests by 4 clients over 3 switches, both cores busy: {len(failed)} failed, "
        f"{len(slow)} slower than 2 s, slowest {max(s[3] for s in seen):.3f} s"
    )
    assert failed == [], failed[:5]
    assert slow == [], slow[:5]
    # the old version stayed until the request in flight on it had its answer (counted, not guessed)
    assert slow_answer and slow_answer[0][:2] == (200, {"version": "0"}), slow_answer
    # every request started after a switch returned, and before the next began, got the new version
    ends = [began for began, _, _ in switched[1:]] + [float("inf")]
    for (_, returned, version), end in zip(switched, ends, strict=True):
        after = [s[2] for s in seen if returned <= s[0] < end]
        assert after and all(a == {"version": version} for a in after), (version, after[:5])
    apps = client.containers.list(all=True, filters={"label": [SELECTOR, f"liminal-gitops/repo={repo}"]})
    assert sorted(c.labels["liminal-gitops/role"] for c in apps) == ["app", "proxy"]  # each old version is gone
