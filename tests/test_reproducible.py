"""Git is the whole truth: lose the ledger and everything deployed, start a fresh controller on the
same repository, and it converges to a hash-identical deployed state (images are found, not built)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import docker
import sqlalchemy as sa

from controller.ledger import Ledger, tables
from controller.model import BuildRecord, RepoRef, ResourceKind, RunStatus
from controller.render import RenderSettings
from controller.sync.reconcile import Deps, reconcile
from controller.sync.source import GitSource
from controller.targets.dag_folder import DagFolderTarget
from controller.targets.images import ImageTarget
from tests.conftest import example_remote, need


def _deps(home: Path, ledger: Ledger, client: docker.DockerClient, builds: list[BuildRecord]) -> Deps:
    return Deps(
        source=GitSource(home / "git"),
        ledger=ledger,
        targets={
            ResourceKind.IMAGE: ImageTarget(client, on_build=builds.append),
            ResourceKind.DAG: DagFolderTarget(home / "dags"),
        },
        settings=RenderSettings(registry=need("LIMINAL_TEST_REGISTRY"), base_image=need("LIMINAL_TEST_BASE_IMAGE")),
    )


def _files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_fresh_controller_converges_to_the_same_state(
    tmp_path: Path, ledger: Ledger, docker_client: docker.DockerClient
) -> None:
    remote = example_remote(tmp_path, own_images=True)
    ledger.add_repo(RepoRef("hello", str(remote)))
    builds: list[BuildRecord] = []
    first = reconcile("hello", _deps(tmp_path / "one", ledger, docker_client, builds))
    assert first.status is RunStatus.SUCCEEDED, first.error
    deployed = {k: (d.content_hash, d.commit) for k, d in ledger.deployed_state("hello").resources.items()}
    files = _files(tmp_path / "one" / "dags")
    assert len(builds) == 2 and files

    # every server is lost: the ledger's tables, the DAG folder, the git cache
    with ledger.engine.begin() as conn:
        tables.metadata.drop_all(conn)
        conn.execute(sa.text("DROP TABLE alembic_version"))
    ledger.close()
    shutil.rmtree(tmp_path / "one")
    fresh = Ledger(ledger.url)  # migrated again from nothing
    assert fresh.repos() == []
    fresh.add_repo(RepoRef("hello", str(remote)))
    builds.clear()
    again = reconcile("hello", _deps(tmp_path / "two", fresh, docker_client, builds))
    assert again.status is RunStatus.SUCCEEDED, again.error
    assert {k: (d.content_hash, d.commit) for k, d in fresh.deployed_state("hello").resources.items()} == deployed
    assert _files(tmp_path / "two" / "dags") == files  # byte-identical DAG delivery
    assert builds == []  # the images were found in the registry by their content tags
    images = [o for o in again.outcomes if o.key.kind is ResourceKind.IMAGE]
    assert images and all(o.code.value == "in_sync" for o in images)
    fresh.close()
