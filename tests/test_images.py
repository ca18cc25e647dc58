"""The image target on a real Docker engine and a real registry (both started by scripts/lib/docker.sh)."""

from __future__ import annotations

import json
import subprocess
import urllib.request
import uuid
from pathlib import Path

import docker
import pytest

from controller.errors import TargetError
from controller.ledger import Ledger
from controller.model import BuildRecord, ContextFile, ImageBuild, RepoRef, ResourceKind, RunStatus
from controller.render import RenderSettings
from controller.sync.deps import Deps
from controller.sync.reconcile import reconcile
from controller.sync.source import GitSource
from controller.targets.dag_folder import DagFolderTarget
from controller.targets.images import HASH_LABEL, BuildProgress, ImageTarget, context_tar
from tests.conftest import TEST_REMOTES, answers, cli_env, commit_all, example_remote, free_port, git, liminal, need


@pytest.fixture
def client(docker_client: docker.DockerClient) -> docker.DockerClient:
    return docker_client


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return example_remote(tmp_path, own_images=True)


def _deps(
    tmp_path: Path,
    ledger: Ledger,
    registry: str,
    builds: list[BuildRecord],
    client: docker.DockerClient,
    *,
    parallelism: int = 2,
    progress: list[BuildProgress] | None = None,
) -> Deps:
    def on_build(record: BuildRecord) -> None:
        builds.append(record)
        ledger.record_build(record)

    return Deps(
        source=GitSource(tmp_path / "cache", policy=TEST_REMOTES),
        ledger=ledger,
        targets={
            ResourceKind.IMAGE: ImageTarget(
                client,
                on_build=on_build,
                parallelism=parallelism,
                on_progress=None if progress is None else progress.append,
            ),
            ResourceKind.DAG: DagFolderTarget(tmp_path / "dags"),
        },
        settings=RenderSettings(registry=registry, base_image=need("LIMINAL_TEST_BASE_IMAGE")),
    )


def _built(builds: list[BuildRecord]) -> list[str]:
    return sorted(b.image for b in builds if b.status in ("built", "pushed") and b.message is None)


def test_build_push_and_serve_the_example(
    tmp_path: Path, remote: Path, client: docker.DockerClient, ledger: Ledger
) -> None:
    ledger.add_repo(RepoRef("hello", str(remote)))
    builds: list[BuildRecord] = []
    run = reconcile("hello", _deps(tmp_path, ledger, need("LIMINAL_TEST_REGISTRY"), builds, client))
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert len(builds) == 2 and all(
        b.status == "pushed" and b.digest and b.digest.startswith("sha256:") for b in builds
    )
    recorded = ledger.builds("hello")
    # the two builds run in parallel: each is recorded once, in whichever order they finish
    assert sorted((r["status"], r["digest"]) for r in recorded) == sorted((b.status, b.digest) for b in builds)
    server = next(b for b in builds if b.image.endswith("/server"))
    image = client.images.get(server.tag)
    labels = image.labels
    assert labels["org.opencontainers.image.revision"] == run.commit
    assert labels["org.opencontainers.image.source"] == str(remote)
    assert labels[HASH_LABEL] == server.content_hash
    # the registry serves the tag with the digest the ledger recorded
    assert client.api.inspect_distribution(server.tag)["Descriptor"]["digest"] == server.digest
    port = free_port()
    container = client.containers.run(server.tag, detach=True, ports={"8080/tcp": ("127.0.0.1", port)})
    try:
        base = f"http://127.0.0.1:{port}"
        assert answers(f"{base}/healthcheck", 30), container.logs().decode()
        request = urllib.request.Request(f"{base}/predict", data=b'{"x": 2}', method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
            assert json.loads(response.read())
    finally:
        container.remove(force=True)


def test_one_changed_file_builds_one_image_and_a_revert_builds_none(
    tmp_path: Path, remote: Path, client: docker.DockerClient, ledger: Ledger
) -> None:
    ledger.add_repo(RepoRef("hello", str(remote)))
    builds: list[BuildRecord] = []
    deps = _deps(tmp_path, ledger, need("LIMINAL_TEST_REGISTRY"), builds, client)
    assert reconcile("hello", deps).status is RunStatus.SUCCEEDED
    assert len(_built(builds)) == 2
    builds.clear()
    (remote / "pipeline" / "train.py").write_text((remote / "pipeline" / "train.py").read_text() + "\n# tuned\n")
    commit_all(remote, "tune training")
    run = reconcile("hello", deps)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert [b.image.rsplit("/", 1)[1] for b in builds] == ["pipeline"]
    builds.clear()
    git(remote, "revert", "--no-edit", "HEAD")
    reverted = reconcile("hello", deps)
    assert reverted.status is RunStatus.SUCCEEDED, reverted.error
    assert builds == []  # the old tag is still in the registry: adopted, not rebuilt
    assert sorted(o.code.value for o in reverted.outcomes if o.key.kind is ResourceKind.IMAGE) == ["in_sync"]


def test_registry_down_is_a_clear_error_and_is_retried(
    tmp_path: Path, remote: Path, client: docker.DockerClient, ledger: Ledger
) -> None:
    port = free_port()
    registry = f"127.0.0.1:{port}"
    ledger.add_repo(RepoRef("hello", str(remote)))
    builds: list[BuildRecord] = []
    deps = _deps(tmp_path, ledger, registry, builds, client)
    down = reconcile("hello", deps)
    assert down.status is RunStatus.FAILED
    assert down.error is not None and f"cannot push {registry}/" in down.error
    assert ledger.deployed_state("hello").resources == {}  # nothing recorded as deployed
    assert {r["status"] for r in ledger.builds("hello")} == {"failed"}
    config = tmp_path / "registry.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry'}\n"
        f"http:\n  addr: {registry}\n"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stderr=subprocess.DEVNULL)
    try:
        assert answers(f"http://{registry}/v2/", 10), "the test registry did not start"
        builds.clear()
        again = reconcile("hello", deps)
        assert again.status is RunStatus.SUCCEEDED, again.error
        # built once before the push failed: now only pushed
        assert sorted(b.status for b in builds) == ["pushed", "pushed"]
        assert all("found" in o.message for o in again.outcomes if o.key.kind is ResourceKind.IMAGE)
    finally:
        proc.terminate()
        proc.wait()


def test_a_symlink_leading_out_is_refused_and_nothing_is_built(
    tmp_path: Path, remote: Path, client: docker.DockerClient
) -> None:
    (remote / "pipeline" / "secrets").symlink_to("/etc")
    commit_all(remote, "link out")
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.add_repo(RepoRef("hello", str(remote)))
    builds: list[BuildRecord] = []
    run = reconcile("hello", _deps(tmp_path, ledger, need("LIMINAL_TEST_REGISTRY"), builds, client))
    assert run.status is RunStatus.INVALID
    assert run.error is not None and "liminal.yml:" in run.error and "leading outside the repository" in run.error
    assert builds == [] and ledger.builds("hello") == []
    ledger.close()


def test_the_build_context_refuses_a_link_out_even_past_validation(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    build = ImageBuild(
        name="x",
        repository="x",
        tag="x:1",
        dockerfile="FROM scratch\n",
        files=(ContextFile("leak", 0o120777, "0" * 64, 4, origin="app/leak", link="../../etc"),),
        no_cache=False,
        content_hash="0" * 64,
    )
    with pytest.raises(TargetError, match=r"symlink app/leak -> \.\./\.\./etc leads out of the repository"):
        context_tar(build, tmp_path)


def _images_repo(root: Path, count: int) -> Path:
    """A repository of `count` python images (no requirements: each build is a COPY), names unique to the test."""
    suffix = uuid.uuid4().hex[:8]
    lines = ["name: Many", "images:"]
    for i in range(count):
        lines += [f"  - image: many{suffix}/img{i}", "    type: python", f"    source: img{i}"]
        (root / f"img{i}").mkdir(parents=True)
        (root / f"img{i}" / "main.py").write_text(f"print({i})\n")
    (root / "liminal.yml").write_text("\n".join(lines) + "\n")
    git(root, "init", "-q", "-b", "main")
    commit_all(root, "images")
    return root


@pytest.mark.parametrize("parallelism", [1, 2])
def test_builds_run_at_most_parallelism_at_a_time(
    tmp_path: Path, client: docker.DockerClient, parallelism: int
) -> None:
    remote = _images_repo(tmp_path / "remote", 4)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.add_repo(RepoRef("many", str(remote)))
    events: list[BuildProgress] = []
    builds: list[BuildRecord] = []
    # no registry: the tags stay in the local engine
    run = reconcile("many", _deps(tmp_path, ledger, "", builds, client, parallelism=parallelism, progress=events))
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert len(_built(builds)) == 4
    running: set[str] = set()
    most = 0
    for event in events:  # appended from the build threads, in the order they happened
        if event.phase == "build":
            running.add(event.image)
        elif event.phase in ("done", "failed"):
            running.discard(event.image)
        most = max(most, len(running))
    assert most == parallelism
    for record in builds:
        client.images.remove(record.tag)
    ledger.close()


def test_no_cache_rebuilds_every_layer(tmp_path: Path, remote: Path, client: docker.DockerClient) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.add_repo(RepoRef("hello", str(remote)))
    events: list[BuildProgress] = []
    deps = _deps(tmp_path, ledger, "", [], client, progress=events)
    train = remote / "pipeline" / "train.py"

    def pipeline_log_after(change: str) -> list[str]:
        events.clear()
        train.write_text(train.read_text() + f"\n# {change}\n")
        commit_all(remote, change)
        run = reconcile("hello", deps)
        assert run.status is RunStatus.SUCCEEDED, run.error
        return [e.detail for e in events if e.phase in ("build", "log") and e.image.endswith("/pipeline")]

    reconcile("hello", deps)
    # the pip install layer (requirements.txt unchanged) comes from the layer cache...
    cached = pipeline_log_after("tuned")
    assert any("Using cache" in line for line in cached), cached
    yml = remote / "liminal.yml"
    yml.write_text(yml.read_text().replace("    source: pipeline\n", "    source: pipeline\n    no_cache: true\n"))
    # ...and with no_cache every step runs again
    fresh = pipeline_log_after("no cache")
    assert fresh[0] == "without layer cache"
    assert any(line.startswith("Step ") for line in fresh) and not any("Using cache" in line for line in fresh)
    ledger.close()


def test_cli_sync_shows_build_progress_and_builds_lists_digests(
    tmp_path: Path, remote: Path, ledger: Ledger, docker_client: docker.DockerClient
) -> None:
    password = "reg-pa55-" + uuid.uuid4().hex
    env = cli_env(
        tmp_path,
        ledger,
        LIMINAL_REGISTRY=need("LIMINAL_TEST_REGISTRY"),
        LIMINAL_BASE_IMAGE=need("LIMINAL_TEST_BASE_IMAGE"),
        # the test registry asks for no credentials; they are sent anyway and must show nowhere
        LIMINAL_REGISTRY_USERNAME="ci",
        LIMINAL_REGISTRY_PASSWORD=password,
    )
    assert liminal("repo", "add", str(remote), "--name", "hello", env=env).returncode == 0
    synced = liminal("sync", env=env)
    assert synced.returncode == 0, synced.stderr
    lines = synced.stderr.splitlines()
    for image in ("pipeline", "server"):
        mine = [line.split(": ", 1)[1] for line in lines if line.startswith("image hello") and f"/{image}: " in line]
        assert mine[0].startswith(f"building {need('LIMINAL_TEST_REGISTRY')}/hello"), mine
        assert any(line.startswith("Step 1/") and "FROM" in line for line in mine), mine
        assert mine[-2] == f"pushing to {need('LIMINAL_TEST_REGISTRY')}"
        assert mine[-1].startswith("built ") and ", pushed sha256:" in mine[-1]
    assert not any("Using cache" in line or "image.build.log" in line for line in lines)  # steps only
    listed = liminal("builds", "--format", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    builds = json.loads(listed.stdout)
    assert sorted(b["image"].rsplit("/", 1)[1] for b in builds) == ["pipeline", "server"]
    assert all(b["status"] == "pushed" and b["digest"].startswith("sha256:") and b["seconds"] > 0 for b in builds)
    text = liminal("builds", "hello", env=env).stdout
    assert all(b["digest"] in text for b in builds)
    # at debug level every line of build output is a structured event
    (remote / "serving" / "model.py").write_text((remote / "serving" / "model.py").read_text() + "\n")
    commit_all(remote, "touch the server")
    debug = liminal("sync", env={**env, "LIMINAL_LOG_LEVEL": "debug", "LIMINAL_LOG_FORMAT": "json"})
    assert debug.returncode == 0, debug.stderr
    events = [json.loads(line) for line in debug.stderr.splitlines() if line.startswith("{")]
    assert any(e["event"] == "image.build.log" and e["line"].startswith("Step 1/") for e in events)
    assert {e.get("image", "").rsplit("/", 1)[-1] for e in events if e["event"] == "image.build.start"} == {"server"}
    everything = synced.stdout + synced.stderr + listed.stdout + text + debug.stdout + debug.stderr
    assert password not in everything
    assert password not in json.dumps(ledger.builds("hello"), default=str)
    # the example's service was served too (images on, LIMINAL_SERVING=docker by default)
    served = docker_client.containers.list(all=True, filters={"label": "liminal-gitops/repo=hello"})
    assert sorted(c.labels["liminal-gitops/role"] for c in served) == ["app", "proxy"]
    for container in served:
        container.remove(force=True)


def test_settings_in_the_home_config_file_reach_every_command_and_docker_host_is_honoured(
    tmp_path: Path, remote: Path, ledger: Ledger, docker_client: docker.DockerClient, served_repo: str
) -> None:
    # no DOCKER_HOST, no LIMINAL_* image settings in the environment: only the file in $LIMINAL_HOME
    env = {k: v for k, v in cli_env(tmp_path, ledger).items() if k != "DOCKER_HOST"}
    home = Path(env["LIMINAL_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "liminal-controller.yaml").write_text(
        f"docker_host: {need('DOCKER_HOST')}\n"
        f"registry: {need('LIMINAL_TEST_REGISTRY')}\n"
        f"base_image: {need('LIMINAL_TEST_BASE_IMAGE')}\n"
        "serving: docker\n"
    )
    assert liminal("repo", "add", str(remote), "--name", served_repo, env=env).returncode == 0
    synced = liminal("sync", served_repo, env=env)
    assert synced.returncode == 0, synced.stderr
    tags = sorted(b["tag"] for b in ledger.builds(served_repo))
    assert len(tags) == 2 and all(t.startswith(need("LIMINAL_TEST_REGISTRY") + "/hello") for t in tags), tags
    assert docker_client.containers.list(filters={"label": f"liminal-gitops/repo={served_repo}"})
    # the same file without an engine address: the docker SDK's default socket is not this engine
    (home / "liminal-controller.yaml").write_text("docker_host: unix:///nowhere/docker.sock\n")
    (remote / "serving" / "model.py").write_text((remote / "serving" / "model.py").read_text() + "\n")
    commit_all(remote, "touch the server")
    refused = liminal("sync", served_repo, env=env)
    assert refused.returncode != 0 and "/nowhere/docker.sock" in refused.stdout + refused.stderr
