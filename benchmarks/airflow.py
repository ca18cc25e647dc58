"""Benchmark: commit -> DAG visible in Airflow's REST API.

Runs against the Airflow 3 that scripts/lib/airflow.sh starts (LIMINAL_TEST_AIRFLOW_URL, _USERNAME,
_PASSWORD, _DAGS). A repository of 10 pipelines is synced once; then, 20 times, one pipeline's
task command changes in a new commit and the controller syncs it. "Visible" means Airflow's REST
API serves the new version of the DAG: `GET /api/v2/dags/{id}/details` (the serialized DAG the
scheduler and workers run) carries the new content hash. Printed: p50, p95 and max.

Our sync runs against the test Airflow, configured as the README recommends. In the same run,
the same kind of change is delivered the way Airflow picks up a dropped file, on a second Airflow
this benchmark starts with Airflow's default parsing settings (api-server and dag-processor, own
home and SQLite database): a standalone DAG file (`liminal render` output) rewritten in its dags
folder with no API call, which Airflow re-parses on its own schedule
(`[dag_processor] min_file_process_interval`, default 30 s). A few samples only: each takes that long.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import structlog

from benchmarks.sync import git
from controller.ledger import Ledger
from controller.model import DagFile, Origin, RepoRef, ResourceKind, RunStatus
from controller.render import RenderSettings, render
from controller.render.dags import dag_text, repo_loader, repo_payload_folder
from controller.spec import discover, load
from controller.sync.deps import Deps
from controller.sync.reconcile import reconcile
from controller.sync.source import GitSource, RemotePolicy
from controller.targets.airflow import AirflowTarget
from controller.targets.airflow_api import AirflowApi
from controller.targets.dag_folder import DagFolderTarget

LOCAL_REMOTES = RemotePolicy(allow_local=True)
"""The benchmarks' remotes are repositories on this machine."""

PIPELINES = 10
COMMITS = 20
DROPPED = 3


def _yml(run: str, changed: int, version: int) -> str:
    lines = [f"name: bench{run}", "executors:", "  - executor: local", "    type: docker", "pipelines:"]
    for i in range(PIPELINES):
        cmd = f"echo v{version}" if i == changed else "echo v0"
        lines += [
            f"  - pipeline: bench_{run}_{i:02d}",
            "    start_date: 2024-01-01",
            "    schedule: '@daily'",
            "    timeout_minutes: 10",
            "    tasks:",
            "      - task: step",
            "        type: python",
            "        image: liminal/busybox:test",
            "        executor: local",
            f"        cmd: {cmd}",
        ]
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Details:
    """GET /api/v2/dags/{id}/details over plain HTTP."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url
        request = urllib.request.Request(
            f"{url}/auth/token",
            data=json.dumps({"username": username, "password": password}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            self.token = json.loads(response.read())["access_token"]

    def doc(self, dag_id: str) -> str:
        request = urllib.request.Request(
            f"{self.url}/api/v2/dags/{dag_id}/details", headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return str(json.loads(response.read()).get("doc_md") or "")
        except OSError:
            return ""

    def wait_for(self, dag_id: str, content_hash: str, started: float, limit: float = 400.0) -> float:
        while time.perf_counter() - started < limit:
            if content_hash in self.doc(dag_id):
                return time.perf_counter() - started
            time.sleep(0.05)
        raise SystemExit(f"{dag_id} did not show {content_hash[:12]} within {limit} s")


def _default_airflow(home: Path, port: int) -> list[subprocess.Popen[bytes]]:
    """api-server + dag-processor with Airflow's default parsing settings; only what a local run needs is set."""
    venv = Path(os.environ.get("AIRFLOW_VENV", Path(__file__).resolve().parent.parent / ".airflow-venv"))
    (home / "simple_auth_manager_passwords.json.generated").write_text('{"admin": "bench"}\n')
    env = {
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/root"),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": "bench-secret",
        "AIRFLOW__API_AUTH__JWT_SECRET": "bench-jwt-secret-of-at-least-32-bytes-long",
    }
    airflow = str(venv / "bin" / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    procs = [
        subprocess.Popen(
            [airflow, part], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        for part in ("api-server", "dag-processor")
    ]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2) as response:
                if json.loads(response.read())["dag_processor"]["status"] == "healthy":
                    return procs
        except (OSError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.5)
    _stop(procs)
    raise SystemExit("the default-settings Airflow did not start")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    """Print the figures."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    url = os.environ["LIMINAL_TEST_AIRFLOW_URL"]
    username = os.environ["LIMINAL_TEST_AIRFLOW_USERNAME"]
    password = os.environ["LIMINAL_TEST_AIRFLOW_PASSWORD"]
    dags = Path(os.environ["LIMINAL_TEST_AIRFLOW_DAGS"])
    details = _Details(url, username, password)
    run = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        remote = base / "remote"
        remote.mkdir()
        git(remote, "init", "-q", "-b", "main")
        (remote / "liminal.yml").write_text(_yml(run, 0, 0))
        git(remote, "add", "-A")
        git(remote, "commit", "-q", "-m", "initial")
        ledger = Ledger(f"sqlite:///{base / 'ledger.db'}")
        name = f"bench-{run}"
        ledger.add_repo(RepoRef(name, str(remote)))
        target = AirflowTarget(DagFolderTarget(dags), AirflowApi(url, username=username, password=password))
        deps = Deps(GitSource(base / "git", policy=LOCAL_REMOTES), ledger, {ResourceKind.DAG: target}, RenderSettings())
        started = time.perf_counter()
        first = reconcile(name, deps)
        assert first.status is RunStatus.SUCCEEDED, first.error
        print(
            f"Airflow {url}: first sync of {PIPELINES} pipelines (a new loader file): "
            f"{time.perf_counter() - started:.2f} s"
        )

        ours: list[float] = []
        for version in range(1, COMMITS + 1):
            changed = version % PIPELINES
            (remote / "liminal.yml").write_text(_yml(run, changed, version))
            git(remote, "commit", "-q", "-am", f"v{version}")
            started = time.perf_counter()
            result = reconcile(name, deps)
            assert result.status is RunStatus.SUCCEEDED, result.error
            dag_id = f"bench_{run}_{changed:02d}"
            wanted = next(o.content_hash for o in result.outcomes if o.key.name == dag_id)
            assert wanted
            ours.append(details.wait_for(dag_id, wanted, started))

        # the same change as a dropped standalone file, picked up by a default Airflow's own re-parse;
        # the first file is in place before it starts (a new file waits for the 300 s folder listing)
        home = base / "default-airflow"
        path = home / "dags" / f"dropped_{run}.py"
        dropped: list[float] = []
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for version in range(DROPPED + 1):
                (remote / "liminal.yml").write_text(_yml(f"{run}d", 0, 100 + version))
                spec = load(discover([remote]), {})
                desired = render(spec, remote, RenderSettings(), Origin(f"dropped-{run}", f"d{version}"))
                dag = next(r for r in desired.resources if r.key.kind is ResourceKind.DAG)
                assert isinstance(dag.artifact, DagFile)
                if version == 0:
                    path.parent.mkdir(parents=True)
                    path.write_text(dag_text(dag.artifact))
                    port = _free_port()
                    procs = _default_airflow(home, port)
                    default_details = _Details(f"http://127.0.0.1:{port}", "admin", "bench")
                    default_details.wait_for(dag.key.name, dag.content_hash, time.perf_counter())
                    continue
                path.with_suffix(".tmp").write_text(dag_text(dag.artifact))
                started = time.perf_counter()
                os.replace(path.with_suffix(".tmp"), path)
                dropped.append(default_details.wait_for(dag.key.name, dag.content_hash, started))
        finally:
            _stop(procs)
        # leave the shared Airflow as it was
        api = AirflowApi(url, username=username, password=password)
        (dags / repo_loader(name)[0]).unlink()
        shutil.rmtree(dags / repo_payload_folder(name))
        for i in range(PIPELINES):
            api.delete_dag(f"bench_{run}_{i:02d}")
        ledger.close()

    print(
        f"commit -> DAG visible in the REST API, our sync (reparse API), {COMMITS} commits: "
        f"p50 {statistics.median(ours):.2f} s, p95 {_percentile(ours, 95):.2f} s, max {max(ours):.2f} s"
    )
    print(
        f"the same change as a dropped file, an Airflow with default settings, {DROPPED} changes: "
        + ", ".join(f"{s:.1f} s" for s in dropped)
        + f" (p50 {statistics.median(dropped):.1f} s)"
    )
    print(f"ratio of medians: {statistics.median(dropped) / statistics.median(ours):.0f}x")


if __name__ == "__main__":
    main()
