"""Benchmark: rollback by `git revert` of the bundled example (a pipeline image, a served model).

Prints, in one run on the real git, Docker engine and registry (DOCKER_HOST, LIMINAL_TEST_REGISTRY
and LIMINAL_TEST_BASE_IMAGE as scripts/lib/docker.sh sets them), with the DAG folder and local
Docker serving as targets:
- the first deploy and a bad change (a new model): builds and seconds;
- `liminal rollback`'s way: the revert commit pushed, then the sync: builds (none: the content
  tags exist) and seconds until the old model answers again;
- the same state restored when the images are not found by content (as the original Liminal
  redeploys: `liminal build` again, layer cache warm), switching over from the live version as
  the rollback does: builds and seconds;
- the ratio.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import docker
import structlog

from benchmarks.sync import git
from controller.ledger import Ledger
from controller.model import BuildRecord, RepoRef, ResourceKind, RunStatus
from controller.render import RenderSettings, ServingTarget
from controller.sync.deps import Deps
from controller.sync.reconcile import reconcile
from controller.sync.source import GitSource, RemotePolicy
from controller.targets.dag_folder import DagFolderTarget
from controller.targets.docker_serving import DockerServingTarget
from controller.targets.images import ImageTarget

LOCAL_REMOTES = RemotePolicy(allow_local=True)
"""The benchmarks' remotes are repositories on this machine."""

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hello-liminal"


def _predict(serving: DockerServingTarget, ledger: Ledger, repo: str) -> object:
    """The served model's answer to x=2, through the service's stable endpoint."""
    deployed = [d for d in ledger.deployed_state(repo).resources.values() if d.key.kind is ResourceKind.SERVICE]
    (endpoint,) = serving.endpoints(deployed).values()
    request = urllib.request.Request(f"{endpoint.url}/predict", data=json.dumps({"x": 2}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def main() -> None:
    """Print the figures."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    registry = os.environ.get("LIMINAL_TEST_REGISTRY", "127.0.0.1:5055")
    base_image = os.environ.get("LIMINAL_TEST_BASE_IMAGE", "liminal/python-base:bookworm")
    client = docker.from_env()
    serving = DockerServingTarget(client)
    run = uuid.uuid4().hex[:8]  # fresh image names: nothing from an earlier run is found
    repo = f"bench-rollback-{run}"
    builds: list[BuildRecord] = []

    def deps(base: Path, ledger: Ledger, prefix: str, source: GitSource) -> Deps:
        return Deps(
            source=source,
            ledger=ledger,
            targets={
                ResourceKind.IMAGE: ImageTarget(client, on_build=builds.append),
                ResourceKind.DAG: DagFolderTarget(base / "dags"),
                ResourceKind.SERVICE: serving,
            },
            settings=RenderSettings(registry=prefix, base_image=base_image, serving=ServingTarget.DOCKER),
        )

    def timed_sync(d: Deps) -> tuple[int, float]:
        builds.clear()
        start = time.perf_counter()
        result = reconcile(repo, d)
        seconds = time.perf_counter() - start
        assert result.status is RunStatus.SUCCEEDED, result.error
        return len([b for b in builds if b.status in ("built", "pushed")]), seconds

    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            work = base / "work"
            shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("__pycache__"))
            yml = work / "liminal.yml"
            yml.write_text(yml.read_text().replace("hello/", f"hello{run}/"))
            git(work, "init", "-q", "-b", "main")
            git(work, "add", "-A")
            git(work, "commit", "-q", "-m", "initial")
            origin = base / "origin.git"
            git(base, "clone", "-q", "--bare", str(work), str(origin))
            git(work, "remote", "add", "origin", str(origin))
            ledger = Ledger(f"sqlite:///{base / 'ledger.db'}")
            ledger.add_repo(RepoRef(repo, str(origin)))
            git_source = GitSource(base / "ours" / "cache", policy=LOCAL_REMOTES)
            ours = deps(base / "ours", ledger, registry, git_source)
            first = timed_sync(ours)
            good = _predict(serving, ledger, repo)

            model = work / "serving" / "model.py"
            model.write_text(model.read_text().replace("2 * float", "-1 * float"))
            git(work, "commit", "-q", "-am", "a bad model")
            git(work, "push", "-q", "origin", "main")
            bad = timed_sync(ours)
            assert _predict(serving, ledger, repo) != good

            # liminal rollback: the revert commit pushed, then the sync; timed until the old model answers
            start = time.perf_counter()
            git_source.revert(ledger.repo(repo))
            revert_s = time.perf_counter() - start
            rolled = timed_sync(ours)
            rollback_s = time.perf_counter() - start
            assert _predict(serving, ledger, repo) == good

            # the same revert commit deployed where no image is found by its content (a registry
            # path of its own): every image is built again, the engine's layer cache warm; the
            # model switches over from the live version as the rollback's did
            elsewhere = Ledger(f"sqlite:///{base / 'elsewhere.db'}")
            elsewhere.add_repo(RepoRef(repo, str(origin)))
            rebuilt = timed_sync(
                deps(
                    base / "elsewhere",
                    elsewhere,
                    f"{registry}/rebuild{run}",
                    GitSource(base / "elsewhere" / "cache", policy=LOCAL_REMOTES),
                )
            )
            assert _predict(serving, elsewhere, repo) == good
            ledger.close()
            elsewhere.close()
    finally:
        for container in client.containers.list(all=True, filters={"label": f"liminal-gitops/repo={repo}"}):
            container.remove(force=True)
    print(f"repository: the bundled example (2 images, 1 DAG, 1 served model), base {base_image}, registry {registry}")
    print(f"first deploy:                                  {first[0]} builds  {first[1]:6.2f} s")
    print(f"a bad model pushed:                            {bad[0]} builds  {bad[1]:6.2f} s")
    print(
        f"rollback (revert pushed {revert_s:.2f} s, then sync):  {rolled[0]} builds  {rollback_s:6.2f} s"
        " until the old model answers"
    )
    print(f"the same state, images not found by content:   {rebuilt[0]} builds  {rebuilt[1]:6.2f} s (layer cache warm)")
    print(f"ratio: {rebuilt[1] / rollback_s:.1f}x time")


if __name__ == "__main__":
    main()
