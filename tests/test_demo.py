"""The README's first Quick start command, `./scripts/demo`, as a user runs it: it starts the
controller on the bundled example with embedded defaults and prints where to look."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from controller.render.dags import repo_payload_folder
from tests.conftest import REPO, answers, commit_all, example_remote, free_port, need


@contextmanager
def _demo(tmp_path: Path, *args: str, **env: str) -> Iterator[tuple[str, Path]]:
    """`scripts/demo ARGS` running with its own LIMINAL_HOME and port: (its URL, its output file)."""
    port = free_port()
    out = tmp_path / "demo.log"
    environ = {
        **os.environ,
        "LIMINAL_HOME": str(tmp_path / "home"),
        "LIMINAL_LISTEN": f"127.0.0.1:{port}",
        "LIMINAL_POLL_INTERVAL": "1",
        **env,
    }
    for name in ("LIMINAL_LEDGER_URL", "LIMINAL_DAGS_FOLDER", "LIMINAL_IMAGES", "LIMINAL_REGISTRY"):
        environ.pop(name, None)  # the embedded defaults, whatever the test run exports
    with out.open("wb") as log:
        proc = subprocess.Popen([str(REPO / "scripts" / "demo"), *args], env=environ, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            assert answers(f"{url}/healthz", 180), out.read_text()[-3000:]
            yield url, out
        finally:
            proc.send_signal(signal.SIGTERM)  # the script exec'd `liminal serve`: it stops cleanly
            assert proc.wait(30) == 0, out.read_text()[-3000:]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _until(what: str, predicate: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_the_demo_runs_the_controller_on_the_bundled_example_and_deploys_a_commit(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # no Docker engine answers: images and local serving are off, DAGs still go to the folder
    with _demo(tmp_path, DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock") as (url, out):
        printed = out.read_text()
        assert "no Docker engine answers" in printed
        assert f"repository  {url}/api/v1/repositories/hello-liminal" in printed
        assert f"metrics     {url}/metrics" in printed
        assert f"DAG folder  {home / 'dags'}" in printed
        repo = _get(f"{url}/api/v1/repositories/hello-liminal")
        assert repo["state"] == "synced" and repo["url"] == str(home / "demo" / "hello-liminal")
        payload = home / "dags" / repo_payload_folder("hello-liminal") / "hello_training.json"
        assert json.loads(payload.read_text())["schedule"] == "0 6 * * *"
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            assert "liminal_queue_depth" in response.read().decode()

        # the GitOps loop: a commit to the demo repository is live at the next poll
        source = home / "demo" / "hello-liminal"
        yml = source / "liminal.yml"
        yml.write_text(yml.read_text().replace("schedule: 0 6 * * *", "schedule: 0 8 * * *"))
        commit = commit_all(source, "move the schedule")
        _until(
            "the commit to be live",
            lambda: _get(f"{url}/api/v1/repositories/hello-liminal")["last_applied_commit"] == commit,
        )
        assert json.loads(payload.read_text())["schedule"] == "0 8 * * *"

    # a second start finds the repository tracked and its copy in place: nothing is copied again
    with _demo(tmp_path, DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock") as (url, out):
        printed = out.read_text()
        assert "copying the bundled example" not in printed and "repo add" not in printed
        assert _get(f"{url}/api/v1/repositories/hello-liminal")["last_applied_commit"] == commit


def test_the_demo_builds_and_serves_the_model_on_the_local_docker_engine(tmp_path: Path, served_repo: str) -> None:
    source = tmp_path / served_repo
    shutil.move(example_remote(tmp_path, own_images=True), source)
    with _demo(tmp_path, str(source), LIMINAL_BASE_IMAGE=need("LIMINAL_TEST_BASE_IMAGE")) as (url, out):
        printed = out.read_text()
        assert "a Docker engine answers" in printed
        assert re.search(r"^image hello\w+/server: built ", printed, re.MULTILINE), printed[-3000:]
        found = re.search(r"^   service     hello_server: (http://\S+) healthy$", printed, re.MULTILINE)
        assert found, printed[-3000:]
        request = urllib.request.Request(f"{found.group(1)}/predict", data=b'{"x": 2}', method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read()) == {"y": 5.0}
        assert _get(f"{url}/api/v1/repositories/{served_repo}")["state"] == "synced"
