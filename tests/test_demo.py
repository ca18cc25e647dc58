"""The README's first Quick start command, `./scripts/demo`, as a user runs it: it starts the
controller on the bundled example with embedded defaults and prints where to look."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from controller.render.dags import repo_payload_folder
from tests.conftest import REPO, answers, commit_all, free_port, need


@contextmanager
def _demo(tmp_path: Path, *args: str, wait: float = 180, **env: str) -> Iterator[tuple[str, Path]]:
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
            assert answers(f"{url}/healthz", wait), out.read_text()[-3000:]
            _until("the demo's summary", lambda: "Ctrl-C stops everything" in out.read_text(), 60)
            yield url, out
        finally:
            proc.send_signal(signal.SIGTERM)  # as Ctrl-C: the script stops what it started, and exits 0
            assert proc.wait(30) == 0, out.read_text()[-3000:]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _until(what: str, predicate: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_the_light_demo_tracks_the_bundled_example_and_the_cli_sees_its_settings(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with _demo(tmp_path, "--lite") as (url, out):
        printed = out.read_text()
        assert "light mode (asked for with --lite)" in printed
        assert f"controller UI   {url}/repos/hello-liminal" in printed
        assert f"API, metrics    {url}/docs   {url}/metrics" in printed
        repo = _get(f"{url}/api/v1/repositories/hello-liminal")
        assert repo["state"] == "synced" and repo["url"] == str(home / "demo" / "hello-liminal")
        payload = home / "dags" / repo_payload_folder("hello-liminal") / "hello_training.json"
        assert json.loads(payload.read_text())["schedule"] == "0 6 * * *"
        with urllib.request.urlopen(f"{url}/repos/hello-liminal", timeout=10) as response:
            assert "hello_training" in response.read().decode()  # the UI shows what is deployed

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
        # another shell, with only LIMINAL_HOME: the demo's settings file is what it reads
        shell = {k: v for k, v in os.environ.items() if not k.startswith("LIMINAL_") and k != "DOCKER_HOST"}
        status = subprocess.run(
            [str(REPO / ".venv" / "bin" / "liminal"), "status", "hello-liminal", "--format", "json"],
            env={**shell, "LIMINAL_HOME": str(home)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)[0]["last_applied_commit"] == commit
        # a change to the model cannot be built here: the plan, the run and the UI say so
        model = source / "serving" / "model.py"
        model.write_text(model.read_text().replace("2 * float", "3 * float"))
        commit = commit_all(source, "a better model")
        plan = subprocess.run(
            [str(REPO / ".venv" / "bin" / "liminal"), "plan", "hello-liminal"],
            env={**shell, "LIMINAL_HOME": str(home)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert "! skip   image/hello/server   (images are off here" in plan.stdout, plan.stdout
        _until(
            "the model commit",
            lambda: _get(f"{url}/api/v1/repositories/hello-liminal")["last_applied_commit"] == commit,
        )
        with urllib.request.urlopen(f"{url}/repos/hello-liminal", timeout=10) as response:
            assert "Not deployed here" in response.read().decode()

    # a second start finds the repository tracked and its copy in place: nothing is copied again
    with _demo(tmp_path, "--lite") as (url, out):
        printed = out.read_text()
        assert "copying the bundled example" not in printed and "repo add" not in printed
        assert _get(f"{url}/api/v1/repositories/hello-liminal")["last_applied_commit"] == commit


def test_the_demo_builds_serves_deploys_to_airflow_runs_the_pipeline_and_cleans_up(
    tmp_path: Path, docker_client: Any
) -> None:
    started = time.monotonic()
    with _demo(tmp_path, wait=900) as (url, out):
        printed = out.read_text()
        ready = time.monotonic() - started
        assert re.search(r"^   run \S+: success$", printed, re.MULTILINE), printed[-4000:]
        assert re.search(r"^   train_1: success$", printed, re.MULTILINE), printed[-4000:]  # 2 executors
        found = re.search(r"curl -s -X POST (http://\S+)/predict", printed)
        assert found, printed[-3000:]
        request = urllib.request.Request(f"{found.group(1)}/predict", data=b'{"x": 2}', method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read()) == {"y": 5.0}
        assert f"Airflow UI      {need('LIMINAL_TEST_AIRFLOW_URL')}/dags/hello_training" in printed
        with urllib.request.urlopen(f"{url}/repos/hello-liminal", timeout=10) as response:
            page = response.read().decode()
        assert "hello_server" in page and found.group(1) in page and "/dags/hello_training" in page
        print(f"the demo was ready in {ready:.0f} s")
    # Ctrl-C (SIGTERM here) left no container of the demo behind
    assert docker_client.containers.list(all=True, filters={"label": "liminal-gitops/repo=hello-liminal"}) == []
