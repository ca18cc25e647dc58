"""Git is the whole truth: lose the ledger and everything deployed (DAG files, serving containers,
the git cache), start a fresh controller on the same repository, and it converges to a
hash-identical deployed state: images are found in the registry, not built; the model is served
again from the same image."""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.request
from pathlib import Path

import docker
import sqlalchemy as sa

from controller.ledger import Ledger, tables
from controller.model import BuildRecord, RepoRef, ResourceKind, RunStatus
from controller.render import RenderSettings, ServingTarget
from controller.sync.deps import Deps
from controller.sync.reconcile import reconcile
from controller.sync.source import GitSource
from controller.targets.dag_folder import DagFolderTarget
from controller.targets.docker_serving import DockerServingTarget
from controller.targets.images import ImageTarget
from tests.conftest import TEST_REMOTES, example_remote, need


def _deps(home: Path, ledger: Ledger, client: docker.DockerClient, builds: list[BuildRecord]) -> Deps:
    return Deps(
        source=GitSource(home / "git", policy=TEST_REMOTES),
        ledger=ledger,
        targets={
            ResourceKind.IMAGE: ImageTarget(client, on_build=builds.append),
            ResourceKind.DAG: DagFolderTarget(home / "dags"),
            ResourceKind.SERVICE: DockerServingTarget(client),
        },
        settings=RenderSettings(
            registry=need("LIMINAL_TEST_REGISTRY"),
            base_image=need("LIMINAL_TEST_BASE_IMAGE"),
            serving=ServingTarget.DOCKER,
        ),
    )


def _files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _served(client: docker.DockerClient, ledger: Ledger, repo: str) -> dict[str, object]:
    """What the repository's serving containers run (role -> image id), the service's health as
    the target reports it, and the model's answer on its endpoint."""
    containers = client.containers.list(filters={"label": f"liminal-gitops/repo={repo}"})
    images = {c.labels["liminal-gitops/role"]: c.image.id for c in containers}
    deployed = [d for d in ledger.deployed_state(repo).resources.values() if d.key.kind is ResourceKind.SERVICE]
    (endpoint,) = DockerServingTarget(client).endpoints(deployed).values()
    request = urllib.request.Request(f"{endpoint.url}/predict", data=json.dumps({"x": 2}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return {"images": images, "health": endpoint.health, "answer": json.loads(response.read())}


def test_a_fresh_controller_converges_to_the_same_state(
    tmp_path: Path, ledger: Ledger, docker_client: docker.DockerClient, served_repo: str
) -> None:
    repo = served_repo
    remote = example_remote(tmp_path, own_images=True)
    ledger.add_repo(RepoRef(repo, str(remote)))
    builds: list[BuildRecord] = []
    first = reconcile(repo, _deps(tmp_path / "one", ledger, docker_client, builds))
    assert first.status is RunStatus.SUCCEEDED, first.error
    deployed = {k: (d.content_hash, d.commit) for k, d in ledger.deployed_state(repo).resources.items()}
    assert {k.kind for k in deployed} == {ResourceKind.IMAGE, ResourceKind.DAG, ResourceKind.SERVICE}
    files = _files(tmp_path / "one" / "dags")
    served = _served(docker_client, ledger, repo)
    assert len(builds) == 2 and files and served["answer"] == {"y": 5.0} and served["health"] == "healthy"

    # every server is lost: the ledger's tables, the DAG folder, the serving containers, the git cache
    for container in docker_client.containers.list(all=True, filters={"label": f"liminal-gitops/repo={repo}"}):
        container.remove(force=True)
    with ledger.engine.begin() as conn:
        tables.metadata.drop_all(conn)
        conn.execute(sa.text("DROP TABLE alembic_version"))
    ledger.close()
    shutil.rmtree(tmp_path / "one")
    fresh = Ledger(ledger.url)  # migrated again from nothing
    assert fresh.repos() == []
    fresh.add_repo(RepoRef(repo, str(remote)))
    builds.clear()
    again = reconcile(repo, _deps(tmp_path / "two", fresh, docker_client, builds))
    assert again.status is RunStatus.SUCCEEDED, again.error
    assert {k: (d.content_hash, d.commit) for k, d in fresh.deployed_state(repo).resources.items()} == deployed
    assert _files(tmp_path / "two" / "dags") == files  # byte-identical DAG delivery
    assert _served(docker_client, fresh, repo) == served  # the same image ids serve the same answers
    assert builds == []  # the images were found in the registry by their content tags
    images = [o for o in again.outcomes if o.key.kind is ResourceKind.IMAGE]
    assert images and all(o.code.value == "in_sync" for o in images)
    fresh.close()
