"""Name rules shared by validation and every target: a name that validates always deploys and loads.

Each rule is matched whole (`fullmatch`: a trailing newline never slips through as it does with
`^...$`), and none admits control characters. DAG ids may not start with `.`: the payload file
`.name.json` would be hidden, and Airflow would never load it.
"""

from __future__ import annotations

import re

__all__ = [
    "DAG_ID",
    "DOCKER_REPO",
    "DOCKER_TAG",
    "ENV_NAME",
    "K8S_LABEL",
    "PLACEHOLDER_NAME",
    "REPO_NAME",
    "RUN_TIME_VALUES",
    "TASK_ID",
    "is_dag_id",
    "is_repo_name",
]

DAG_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,249}")
"""A pipeline name: it becomes the Airflow dag_id and the payload file `<dag_id>.json`."""

TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,250}")
"""A task name: it becomes the Airflow task_id."""

K8S_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
"""A Kubernetes name (RFC 1123 label): services, containers."""

ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]{0,1023}")
"""An environment variable name as Kubernetes accepts it."""

DOCKER_REPO = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
DOCKER_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

REPO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
"""A tracked repository's name (`repo add --name`): it appears in paths, labels and URLs."""


PLACEHOLDER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")
"""What may stand inside `{{ }}` in a task's command, environment or Spark arguments: a plain
name (a variable, a DAG-run conf key) or a dotted path (`dag_run.conf.x`). The DAG loader
(render/dag_loader.py, which imports nothing of the controller) repeats it; a test checks both agree."""

RUN_TIME_VALUES = frozenset(
    {
        "ds",
        "ds_nodash",
        "ts",
        "ts_nodash",
        "ts_nodash_with_tz",
        "logical_date",
        "execution_date",
        "yesterday_ds",
        "yesterday_ds_nodash",
        "tomorrow_ds",
        "tomorrow_ds_nodash",
        "data_interval_start",
        "data_interval_end",
        "prev_data_interval_start_success",
        "prev_data_interval_end_success",
        "prev_start_date_success",
        "prev_end_date_success",
        "run_id",
        "dag_run",
        "params",
        "task_instance_key_str",
    }
)
"""Airflow's run-time values a task's strings may name (`{{ds}}`, `{{dag_run.conf.x}}`): filled by
plain lookup when the task runs. Liminal's `yesterday_ds`, `tomorrow_ds` and `execution_date`,
gone from Airflow 3's context, are computed from the run's date. The DAG loader repeats the set."""


def is_dag_id(name: str) -> bool:
    """True when `name` is a pipeline name every target can deploy."""
    return DAG_ID.fullmatch(name) is not None


def is_repo_name(name: str) -> bool:
    """True when `name` may name a tracked repository."""
    return REPO_NAME.fullmatch(name) is not None
