"""The controller's own image, built from the Dockerfile on the real Docker engine and run the way
manifests/deployment.yaml runs it: as user 10001, read-only root filesystem, a writable volume
for LIMINAL_HOME and a tmpfs for /tmp. It must become healthy, sync a repository and stop cleanly."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import REPO, example_remote, free_port, git, need
from tests.git_http import serve_git, url_of

TAG = "liminal/controller:test"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _until(what: str, predicate: Any, seconds: float = 90, logs: Any = None) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if predicate():
                return
        except OSError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"timed out waiting for {what}" + (f"\n{logs()[-3000:]}" if logs else "")
        time.sleep(0.5)


def test_the_controller_image_runs_as_non_root_on_a_read_only_root_and_syncs(
    tmp_path: Path, docker_client: Any
) -> None:
    image, _ = docker_client.images.build(
        path=str(REPO), tag=TAG, buildargs={"BASE_IMAGE": need("LIMINAL_TEST_BASE_IMAGE")}, rm=True
    )
    assert image.attrs["Config"]["User"] == "10001:10001"
    assert image.attrs["Config"]["Healthcheck"]["Test"][0] == "CMD"

    served = tmp_path / "served"
    git(tmp_path, "clone", "-q", "--bare", str(example_remote(tmp_path)), str(served / "hello.git"))
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 10001, 10001)  # as a PVC's fsGroup makes it writable
    port = free_port()
    with serve_git(served) as server:
        container = docker_client.containers.run(
            TAG,
            detach=True,
            network_mode="host",  # reaches the test's git server on 127.0.0.1
            read_only=True,
            tmpfs={"/tmp": ""},
            volumes={str(state): {"bind": "/var/lib/liminal", "mode": "rw"}},
            environment={
                "LIMINAL_LISTEN": f"127.0.0.1:{port}",
                "LIMINAL_IMAGES": "off",
                "LIMINAL_POLL_INTERVAL": "1",
                "LIMINAL_ALLOW_HTTP_REMOTES": "true",  # the test's git server is plain http on 127.0.0.1
            },
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _until("the API", lambda: _get(f"{url}/readyz")["ready"])
            assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"
            added = container.exec_run(["liminal", "repo", "add", url_of(server, "hello.git"), "--name", "hello"])
            assert added.exit_code == 0, added.output.decode()
            _until(
                "the first sync",
                lambda: _get(f"{url}/api/v1/repositories/hello")["state"] == "synced",
                logs=lambda: container.logs().decode(),
            )
            dags = list((state / "dags").rglob("hello_training.json"))
            assert len(dags) == 1 and dags[0].stat().st_uid == 10001

            def health() -> str:
                container.reload()
                return str(container.attrs["State"]["Health"]["Status"])

            _until("the health check to pass", lambda: health() == "healthy", 60)
            container.stop(timeout=30)  # SIGTERM: the loop stops, then the process exits 0
            container.reload()
            assert container.attrs["State"]["ExitCode"] == 0, container.logs()[-2000:]
            assert b'"event": "loop.stopped"' in container.logs()
        finally:
            container.remove(force=True)
