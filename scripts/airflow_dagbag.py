"""Load a folder of DAG files with Airflow's own DagBag and print what it found, as JSON.

Runs with the Python of Airflow's virtualenv (scripts/lib/airflow.sh), not the controller's:
`$AIRFLOW_VENV/bin/python scripts/airflow_dagbag.py OUT.json DAGS_FOLDER...` writes
{folder: result} to OUT.json (Airflow logs to stdout, so the result goes to a file). One
process loads every folder, each in its own DagBag, so equal dag_ids in two folders are fine. Besides import errors it
serializes every DAG the way the scheduler stores it, which catches what only fails there.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main(out: str, folders: list[str]) -> int:
    """Write {folder: {"import_errors", "dags": {dag_id: {...}}}} to `out`."""
    results = {folder: load_folder(folder) for folder in folders}
    with open(out, "w", encoding="utf-8") as stream:
        json.dump(results, stream, default=str)
    return 0


def load_folder(folder: str) -> dict[str, Any]:
    """What Airflow's DagBag makes of one folder."""
    from airflow.dag_processing.dagbag import DagBag  # type: ignore[import-not-found, unused-ignore]
    from airflow.serialization.serialized_objects import (  # type: ignore[import-not-found, unused-ignore]
        DagSerialization,
    )

    bag = DagBag(dag_folder=folder, include_examples=False) if _takes_examples(DagBag) else DagBag(dag_folder=folder)
    dags: dict[str, Any] = {}
    errors = {str(k): str(v) for k, v in bag.import_errors.items()}
    for dag_id, dag in sorted(bag.dags.items()):
        try:
            DagSerialization.to_dict(dag)
        except Exception as exc:  # report, do not stop: the test wants every problem
            errors[f"serialize:{dag_id}"] = f"{type(exc).__name__}: {exc}"
        dags[dag_id] = {
            "max_active_runs": dag.max_active_runs,
            "max_active_tasks": dag.max_active_tasks,
            "catchup": dag.catchup,
            "default_args": {k: str(v) for k, v in sorted(dag.default_args.items())},
            "tags": sorted(dag.tags),
            "schedule": getattr(dag, "schedule", None),
            "owner": dag.owner,
            "description": dag.description,
            "dagrun_timeout_s": dag.dagrun_timeout.total_seconds() if dag.dagrun_timeout else None,
            "start_date": dag.start_date.isoformat() if dag.start_date else None,
            "tasks": {
                t.task_id: {
                    "type": type(t).__name__,
                    "upstream": sorted(t.upstream_task_ids),
                    "trigger_rule": str(t.trigger_rule),
                    "image": getattr(t, "image", None),
                    "template_fields": list(t.template_fields),
                    "cmds": list(getattr(t, "cmds", []) or []),
                    "arguments": list(getattr(t, "arguments", []) or []),
                    "command": getattr(t, "command", None),
                    "env": _env(t),
                    "operator": {name: _plain(getattr(t, name, None)) for name in _OPERATOR_FIELDS},
                    "operator_more": {name: _plain(getattr(t, name)) for name in _POD_FIELDS if hasattr(t, name)},
                }
                for t in dag.tasks
            },
        }
    return {"import_errors": errors, "dags": dags}


_OPERATOR_FIELDS = (
    "retries",
    "retry_delay",
    "max_retry_delay",
    "retry_exponential_backoff",
    "execution_timeout",
    "email",
    "email_on_failure",
    "email_on_retry",
    "depends_on_past",
    "ignore_first_depends_on_past",
    "wait_for_past_depends_before_skipping",
    "wait_for_downstream",
    "weight_rule",
    "max_active_tis_per_dag",
    "max_active_tis_per_dagrun",
    "priority_weight",
    "queue",
    "pool",
    "pool_slots",
    "end_date",
    "do_xcom_push",
    "namespace",
    "node_selector",
    "affinity",
    "tolerations",
    "annotations",
    "labels",
    "image_pull_secrets",
    "image_pull_policy",
    "container_resources",
    "on_finish_action",
    "priority_class_name",
    "termination_grace_period",
    "active_deadline_seconds",
    "service_account_name",
    "secrets",
    "volumes",
    "volume_mounts",
    "mounts",
    "mem_limit",
    "cpus",
    "startup_timeout_seconds",
    "liminal_variables",
)
"""Operator attributes the tests compare with what a liminal.yml asked for."""


_POD_FIELDS = (
    "in_cluster",
    "cluster_context",
    "get_logs",
    "reattach_on_restart",
    "log_events_on_failure",
    "dnspolicy",
    "schedulername",
)
"""KubernetesPodOperator attributes a kubernetes executor may set (only on pod tasks)."""


def _plain(value: Any) -> Any:
    """JSON-able form of an operator attribute (Kubernetes models through their to_dict)."""
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "__dict__") and type(value).__name__ == "Secret":
        return {k: _plain(v) for k, v in vars(value).items()}
    return str(value)


def _takes_examples(cls: Any) -> bool:
    import inspect

    return "include_examples" in inspect.signature(cls.__init__).parameters


def _env(task: Any) -> dict[str, str]:
    if hasattr(task, "environment") and isinstance(task.environment, dict):
        return {str(k): str(v) for k, v in task.environment.items()}
    out = {}
    for item in getattr(task, "env_vars", None) or []:
        out[str(item.name)] = str(item.value)
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
