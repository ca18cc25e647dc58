"""Trigger one run of a DAG in Airflow 3 and wait for its end, saying what it does (for ./scripts/demo).

    python scripts/lib/airflow_run.py URL USER PASSWORD DAG_ID [TIMEOUT_SECONDS]

Unpauses the DAG (new DAGs start paused), triggers a run, prints each task's state as it changes,
exits 0 when the run succeeded and 1 otherwise. Airflow's REST API v2, plain HTTP.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any


def _call(url: str, token: str | None, method: str, path: str, body: Any = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
        return json.loads(text) if text else None


def main() -> int:
    url, user, password, dag_id = sys.argv[1:5]
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 600
    token = _call(url, None, "POST", "/auth/token", {"username": user, "password": password})["access_token"]
    deadline = time.monotonic() + 120
    while True:  # the DAG shows once the dag-processor has parsed it
        try:
            _call(url, token, "PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
            break
        except urllib.error.HTTPError as exc:
            if exc.code != 404 or time.monotonic() > deadline:
                raise
            time.sleep(1)
    run = _call(url, token, "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None})
    run_id = run["dag_run_id"]
    print(f"   triggered {dag_id} run {run_id}", flush=True)
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        state = _call(url, token, "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
        tasks = _call(url, token, "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        for task in sorted(tasks, key=lambda t: (t.get("start_date") or "~", t["task_id"], t.get("map_index", -1))):
            name = task["task_id"] + (f"[{task['map_index']}]" if task.get("map_index", -1) >= 0 else "")
            now = task.get("state") or "waiting"
            if seen.get(name) != now:
                seen[name] = now
                print(f"   {name}: {now}", flush=True)
        if state in ("success", "failed"):
            print(f"   run {run_id}: {state}", flush=True)
            return 0 if state == "success" else 1
        if time.monotonic() > deadline:
            print(f"   run {run_id}: still {state} after {timeout:g} s", flush=True)
            return 1
        time.sleep(2)


if __name__ == "__main__":
    sys.exit(main())
