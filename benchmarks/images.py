"""Benchmark: a repository with 20 images, one source file changed.

Prints, in one run on the real Docker engine and registry (DOCKER_HOST, LIMINAL_TEST_REGISTRY and
LIMINAL_TEST_BASE_IMAGE as scripts/lib/docker.sh sets them):
- our sync after the change: builds and seconds (content tags: only the changed image builds);
- the original Liminal's way, every image built again on each `liminal build` (with the engine's
  layer cache, as `docker build` runs by default): builds and seconds;
- the ratio.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from pathlib import Path

import docker
import structlog

from benchmarks.sync import git
from controller.ledger import Ledger
from controller.model import BuildRecord, ImageBuild, RepoRef, ResourceKind, RunStatus
from controller.render import RenderSettings
from controller.sync.deps import Deps, desired_for
from controller.sync.reconcile import reconcile
from controller.sync.source import GitSource, RemotePolicy
from controller.targets.dag_folder import DagFolderTarget
from controller.targets.images import ImageTarget, context_tar

LOCAL_REMOTES = RemotePolicy(allow_local=True)
"""The benchmarks' remotes are repositories on this machine."""

IMAGES = 20


def _yml(index: int, run: str) -> str:
    return (
        f"name: images_{index:02d}\n"
        "images:\n"
        f"  - image: bench{run}/img{index:02d}\n"
        "    type: python\n"
        "    source: .\n"
        "pipelines:\n"
        f"  - pipeline: images_{index:02d}\n"
        "    start_date: 2024-01-01\n"
        "    schedule: '@daily'\n"
        "    timeout_minutes: 10\n"
        "    tasks:\n"
        "      - task: step\n"
        "        type: python\n"
        f"        image: bench{run}/img{index:02d}\n"
        "        cmd: python -u step.py\n"
    )


def main() -> None:
    """Print the figures."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    registry = os.environ.get("LIMINAL_TEST_REGISTRY", "127.0.0.1:5055")
    base_image = os.environ.get("LIMINAL_TEST_BASE_IMAGE", "liminal/python-base:bookworm")
    client = docker.from_env()
    run = uuid.uuid4().hex[:8]  # fresh names: nothing from an earlier run is found
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        remote = base / "remote"
        for i in range(IMAGES):
            folder = remote / f"img{i:02d}"
            folder.mkdir(parents=True)
            (folder / "liminal.yml").write_text(_yml(i, run), encoding="utf-8")
            (folder / "step.py").write_text(f"print('image {i}')\n", encoding="utf-8")
        git(remote, "init", "-q", "-b", "main")
        git(remote, "add", "-A")
        git(remote, "commit", "-q", "-m", "20 images")
        ledger = Ledger(f"sqlite:///{base / 'ledger.db'}")
        ledger.add_repo(RepoRef("bench", str(remote)))
        builds: list[BuildRecord] = []
        deps = Deps(
            source=GitSource(base / "cache", policy=LOCAL_REMOTES),
            ledger=ledger,
            targets={
                ResourceKind.IMAGE: ImageTarget(client, on_build=builds.append),
                ResourceKind.DAG: DagFolderTarget(base / "dags"),
            },
            settings=RenderSettings(registry=registry, base_image=base_image),
        )
        start = time.perf_counter()
        first = reconcile("bench", deps)
        first_s = time.perf_counter() - start
        assert first.status is RunStatus.SUCCEEDED, first.error
        first_builds = len(builds)

        (remote / "img07" / "step.py").write_text("print('image 7, tuned')\n", encoding="utf-8")
        git(remote, "commit", "-q", "-am", "change one file")
        builds.clear()
        start = time.perf_counter()
        changed = reconcile("bench", deps)
        ours_s = time.perf_counter() - start
        assert changed.status is RunStatus.SUCCEEDED, changed.error
        ours = len([b for b in builds if b.status in ("built", "pushed")])

        # the original Liminal: `liminal build` builds every image again, layer cache on
        snapshot = deps.source.fetch(RepoRef("bench", str(remote)))
        specs = [r.artifact for r in desired_for(snapshot, deps).resources if isinstance(r.artifact, ImageBuild)]

        def rebuild_all(nocache: bool) -> float:
            start = time.perf_counter()
            for spec in specs:
                for event in client.api.build(
                    fileobj=context_tar(spec, snapshot.root),
                    custom_context=True,
                    tag=f"liminal-original-{run}/{spec.name.rsplit('/', 1)[1]}:latest",
                    rm=True,
                    pull=False,
                    nocache=nocache,
                    decode=True,
                ):
                    assert "error" not in event, event
            return time.perf_counter() - start

        all_s = rebuild_all(nocache=False)
        cold_s = rebuild_all(nocache=True)
        ledger.close()
    print(f"repository: {IMAGES} images, base {base_image}, registry {registry}")
    print(f"first sync (build and push all):        {first_builds:3d} builds  {first_s:7.2f} s")
    print(f"one file changed, our sync:             {ours:3d} build   {ours_s:7.2f} s")
    print(f"one file changed, rebuild all (Liminal), layer cache warm:  {len(specs):3d} builds  {all_s:7.2f} s")
    print(f"one file changed, rebuild all, no layer cache (fresh runner): {len(specs):3d} builds  {cold_s:7.2f} s")
    ratio = len(specs) / max(ours, 1)
    print(f"ratio, cache warm: {all_s / ours_s:5.1f}x time, {ratio:.0f}x builds")
    print(f"ratio, no cache:   {cold_s / ours_s:5.1f}x time, {ratio:.0f}x builds")


if __name__ == "__main__":
    main()
