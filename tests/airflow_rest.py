"""Airflow's REST API v2 over plain HTTP, for assertions: tests read Airflow with this, not with
the controller's own client."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from controller.render.dags import repo_loader, repo_payload_folder
from tests.conftest import need


class Rest:
    """Airflow's REST API v2 over plain HTTP, for assertions."""

    def __init__(self, url: str) -> None:
        self.url = url
        request = urllib.request.Request(
            f"{url}/auth/token",
            data=json.dumps(
                {"username": need("LIMINAL_TEST_AIRFLOW_USERNAME"), "password": need("LIMINAL_TEST_AIRFLOW_PASSWORD")}
            ).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            self.token = json.loads(response.read())["access_token"]

    def call(self, path: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.url}/api/v2{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                text = response.read()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def exists(self, dag_id: str) -> bool:
        status, _ = self.call(f"/dags/{dag_id}")
        return status == 200

    def dag(self, dag_id: str) -> dict[str, Any]:
        status, found = self.call(f"/dags/{dag_id}")
        assert status == 200, f"{dag_id}: {status} {found}"
        return dict(found)

    def tasks(self, dag_id: str) -> dict[str, list[str]]:
        """task_id -> sorted downstream task ids."""
        status, found = self.call(f"/dags/{dag_id}/tasks")
        assert status == 200, found
        return {t["task_id"]: sorted(t["downstream_task_ids"]) for t in found["tasks"]}

    def run_to_end(self, dag_id: str, seconds: float = 120) -> dict[str, Any]:
        """Unpause, trigger a run and wait for it to end; the run as Airflow reports it."""
        self.call(f"/dags/{dag_id}", "PATCH", {"is_paused": False})
        status, run = self.call(f"/dags/{dag_id}/dagRuns", "POST", {"logical_date": None})
        assert status == 200, run
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            _, run = self.call(f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}")
            if run["state"] in ("success", "failed"):
                return dict(run)
            time.sleep(0.5)
        raise AssertionError(f"run of {dag_id} did not end in {seconds} s: {run}")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Unpause `dag_id` and start a run with `conf`; the run's id."""
        self.call(f"/dags/{dag_id}", "PATCH", {"is_paused": False})
        status, run = self.call(f"/dags/{dag_id}/dagRuns", "POST", {"logical_date": None, "conf": conf or {}})
        assert status == 200, run
        return str(run["dag_run_id"])

    def wait(self, dag_id: str, run_id: str, seconds: float = 240) -> dict[str, Any]:
        """The run once it has ended (success or failed)."""
        deadline = time.monotonic() + seconds
        run: Any = None
        while time.monotonic() < deadline:
            _, run = self.call(f"/dags/{dag_id}/dagRuns/{run_id}")
            if isinstance(run, dict) and run.get("state") in ("success", "failed"):
                return dict(run)
            time.sleep(0.5)
        raise AssertionError(f"run {run_id} of {dag_id} did not end in {seconds} s: {run}")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """A task instance's log: one line per entry, the event then the entry's other fields as JSON
        (an exception's text is in its `error_detail`)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}?full_content=true"
        status, found = self.call(path)
        assert status == 200, found
        content = found.get("content") if isinstance(found, dict) else found
        if isinstance(content, list):
            return "\n".join(
                f"{e.get('event', '')} {json.dumps(e, default=str)}" if isinstance(e, dict) else str(e) for e in content
            )
        return str(content)

    def remove_repository(self, repo: str) -> None:
        """Remove a test repository's DAG files from the shared Airflow's folder, and its DAGs."""
        folder = Path(need("LIMINAL_TEST_AIRFLOW_DAGS"))
        (folder / repo_loader(repo)[0]).unlink(missing_ok=True)
        shutil.rmtree(folder / repo_payload_folder(repo), ignore_errors=True)
        _, found = self.call(f"/dags?tags=repo:{repo}&exclude_stale=false")
        for dag in found.get("dags", []) if isinstance(found, dict) else []:
            self.call(f"/dags/{dag['dag_id']}", "DELETE")
