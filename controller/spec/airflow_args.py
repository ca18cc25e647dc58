"""Which liminal.yml keys become Airflow arguments, each checked and converted as Airflow takes it. Pure.

Liminal passes every pipeline key into the DAG's `default_args` and every extra key of a kubernetes
executor into KubernetesPodOperator; Airflow then silently ignores what it does not know. Here a key
is honoured (converted to the JSON the DAG loader hands to Airflow), refused with the reason, or, for
a pipeline key that no Airflow operator takes (Liminal's own examples carry such keys), reported as
a warning: it has no effect. A key close to a known one is an error with "did you mean".

tests/test_render_airflow.py checks every honoured name against the signatures of Airflow's
BaseOperator, DAG and KubernetesPodOperator.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from controller.model import Problem
from controller.spec.schema import suggest
from controller.spec.yaml_positions import Node, to_plain

__all__ = [
    "DAG_OPTIONS",
    "DEFAULT_ARGS",
    "DOCKER_OPTIONS",
    "DURATION_ARGS",
    "KUBERNETES_OPTIONS",
    "PIPELINE_KEYS",
    "PipelineArguments",
    "executor_options",
    "parse_duration",
    "pipeline_arguments",
]

Convert = Callable[[Node], tuple[Any, str | None]]
"""A key's converter: (JSON value, None) or (None, why the value is wrong)."""


def _bool(node: Node) -> tuple[Any, str | None]:
    return (node.value, None) if isinstance(node.value, bool) else (None, "must be true or false")


def _int(minimum: int) -> Convert:
    def convert(node: Node) -> tuple[Any, str | None]:
        value = node.value
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value, None
        return None, f"must be a whole number >= {minimum}"

    return convert


def _text(node: Node) -> tuple[Any, str | None]:
    return (node.value, None) if isinstance(node.value, str) and node.value else (None, "must be a non-empty string")


def _choice(*allowed: str) -> Convert:
    def convert(node: Node) -> tuple[Any, str | None]:
        if node.value in allowed:
            return node.value, None
        return None, f"must be one of: {', '.join(allowed)}"

    return convert


def _duration(node: Node) -> tuple[Any, str | None]:
    seconds = parse_duration(node.value)
    if seconds is None:
        return None, "must be a duration: seconds (300), or a number with units (30s, 5m, 1h30m, 2d), or H:MM:SS"
    return seconds, None


def _date(node: Node) -> tuple[Any, str | None]:
    value = node.value
    if isinstance(value, dt.datetime):
        return value.date().isoformat(), None
    if isinstance(value, dt.date):
        return value.isoformat(), None
    try:
        return dt.date.fromisoformat(str(value)).isoformat(), None
    except ValueError:
        return None, "must be a date (YYYY-MM-DD)"


def _emails(node: Node) -> tuple[Any, str | None]:
    value = to_plain(node)
    if isinstance(value, str) and value:
        return [value], None
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return value, None
    return None, "must be an address or a list of addresses"


def _text_map(node: Node) -> tuple[Any, str | None]:
    value = to_plain(node)
    if isinstance(value, dict) and all(isinstance(v, str | int | float | bool) for v in value.values()):
        return {k: str(v) for k, v in value.items()}, None
    return None, "must be a mapping of names to strings"


def _mapping(node: Node) -> tuple[Any, str | None]:
    value = to_plain(node)
    return (value, None) if isinstance(value, dict) else (None, "must be a mapping (as in the Kubernetes API)")


def _mappings(node: Node) -> tuple[Any, str | None]:
    value = to_plain(node)
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return value, None
    return None, "must be a list of mappings (as in the Kubernetes API)"


def _texts(node: Node) -> tuple[Any, str | None]:
    value = to_plain(node)
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return value, None
    return None, "must be a list of strings"


def _names(node: Node) -> tuple[Any, str | None]:
    value = to_plain(node)
    if isinstance(value, str):
        names = [n.strip() for n in value.split(",") if n.strip()]
        return (names, None) if names else (None, "must name at least one Secret")
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return value, None
    return None, "must be a Secret name, names separated by commas, or a list of names"


_QUANTITY_KEYS = {
    "request_cpu": ("requests", "cpu"),
    "request_memory": ("requests", "memory"),
    "limit_cpu": ("limits", "cpu"),
    "limit_memory": ("limits", "memory"),
    "limit_gpu": ("limits", "nvidia.com/gpu"),
}


def _resources(node: Node) -> tuple[Any, str | None]:
    """Liminal's flat form (`request_cpu`, `limit_memory`, ...) or Kubernetes' (`requests`, `limits`)."""
    value = to_plain(node)
    if not isinstance(value, dict):
        return None, "must be a mapping"
    out: dict[str, dict[str, str]] = {}
    for key, item in value.items():
        if key in ("requests", "limits") and isinstance(item, dict):
            out.setdefault(key, {}).update({str(k): str(v) for k, v in item.items()})
        elif key in _QUANTITY_KEYS and isinstance(item, str | int | float) and not isinstance(item, bool):
            group, name = _QUANTITY_KEYS[key]
            out.setdefault(group, {})[name] = str(item)
        else:
            known = ", ".join(["requests", "limits", *_QUANTITY_KEYS])
            return (
                None,
                f"has unknown key '{key}' (known: {known}){suggest(key, ['requests', 'limits', *_QUANTITY_KEYS])}",
            )
    return out, None


DEFAULT_ARGS: Mapping[str, Convert] = {
    "email": _emails,
    "email_on_failure": _bool,
    "email_on_retry": _bool,
    "retries": _int(0),
    "retry_delay": _duration,
    "retry_exponential_backoff": _bool,
    "max_retry_delay": _duration,
    "end_date": _date,
    "depends_on_past": _bool,
    "ignore_first_depends_on_past": _bool,
    "wait_for_past_depends_before_skipping": _bool,
    "wait_for_downstream": _bool,
    "priority_weight": _int(1),
    "weight_rule": _choice("downstream", "upstream", "absolute"),
    "queue": _text,
    "pool": _text,
    "pool_slots": _int(1),
    "execution_timeout": _duration,
    "max_active_tis_per_dag": _int(1),
    "max_active_tis_per_dagrun": _int(1),
}
"""Pipeline keys that become the DAG's default_args: BaseOperator parameters a YAML value can hold."""

DURATION_ARGS = frozenset({"retry_delay", "max_retry_delay", "execution_timeout"})
"""default_args given as seconds in the payload and turned into timedelta by the DAG loader."""

DAG_OPTIONS: Mapping[str, Convert] = {
    "max_active_runs": _int(1),
    "max_active_tasks": _int(1),
    "catchup": _bool,
    "tags": _texts,
}
"""Pipeline keys that are arguments of the DAG itself."""

PIPELINE_KEYS = frozenset(
    {
        "pipeline",
        "owner",
        "start_date",
        "schedule",
        "schedule_interval",
        "timeout_minutes",
        "paused",
        "tasks",
        "description",
        "before_tasks",
        "after_tasks",
        "metrics",
        "monitoring",
        "retry_delay_seconds",
    }
)
"""Pipeline keys read by the controller itself (validate.py), not passed through; `retry_delay_seconds`
is this controller's older spelling of `retry_delay`, read by `pipeline_arguments`."""

_REFUSED_PIPELINE = {
    "trigger_rule": "trigger rules follow Liminal: every task waits for the ones before it to succeed, or, with "
    "the root `always_run: true`, only for them to finish",
    "sla": "Airflow 3 has no SLAs; use `timeout_minutes` or `execution_timeout`",
    "task_concurrency": "Airflow 3 calls it `max_active_tis_per_dag`",
    "run_as_user": "tasks may not run as another user of the Airflow worker",
    "executor": "the executor is chosen per task (`executor`), not for the pipeline",
    "executor_config": "Airflow executor settings are the operator's, not a repository's",
    "params": "DAG params are not supported; give run-time values with a DAG run's conf (`{{name}}`)",
    "resources": "set request_cpu/limit_memory/... on the task, or `resources` on a kubernetes executor",
    "do_xcom_push": "set `do_xcom_push` on the task",
    "doc_md": "use `description`",
    "dag_id": "the dag_id is the pipeline's name (`pipeline`)",
}
_CALLBACK = "a callback is Python code; a liminal.yml holds data only"


@dataclass(frozen=True, slots=True)
class PipelineArguments:
    """What a pipeline's pass-through keys become."""

    default_args: dict[str, Any]
    dag_options: dict[str, Any]
    unused: dict[str, Any]
    """Keys Airflow would ignore (each a warning), with their values."""
    problems: list[Problem]


def pipeline_arguments(node: Node) -> PipelineArguments:
    """The pipeline's default_args and DAG options, and the problems of the keys it passes on."""
    default_args: dict[str, Any] = {}
    dag_options: dict[str, Any] = {}
    unused: dict[str, Any] = {}
    problems: list[Problem] = []
    known = [*DEFAULT_ARGS, *DAG_OPTIONS]
    for key, child in node.value.items():
        if key in PIPELINE_KEYS:
            continue
        table = DEFAULT_ARGS if key in DEFAULT_ARGS else DAG_OPTIONS if key in DAG_OPTIONS else None
        if table is not None:
            value, wrong = table[key](child)
            if wrong is not None:
                problems.append(child.problem(f"`{key}` {wrong}", "airflow-argument"))
            else:
                (default_args if table is DEFAULT_ARGS else dag_options)[key] = value
            continue
        reason = _CALLBACK if key.startswith("on_") and key.endswith("_callback") else _REFUSED_PIPELINE.get(key)
        if reason is not None:
            problems.append(child.problem(f"`{key}` is not accepted: {reason}", "airflow-argument", at_key=True))
            continue
        hint = suggest(key, known)
        if hint:
            problems.append(
                child.problem(
                    f"`{key}` is not an argument of Airflow's operators{hint}", "airflow-argument", at_key=True
                )
            )
            continue
        unused[key] = to_plain(child)
        problems.append(
            child.problem(
                f"`{key}` is not an argument of Airflow's operators: Liminal passes it into default_args, where "
                "Airflow ignores it; it has no effect",
                "unused-key",
                at_key=True,
            ).as_warning()
        )
    _retry_delay_seconds(node, default_args, problems)
    return PipelineArguments(default_args, dag_options, unused, problems)


def _retry_delay_seconds(node: Node, default_args: dict[str, Any], problems: list[Problem]) -> None:
    delay = node.get("retry_delay_seconds")
    if delay is None:
        return
    if not isinstance(delay.value, int) or isinstance(delay.value, bool) or delay.value < 0:
        problems.append(
            delay.problem("`retry_delay_seconds` must be a whole number of seconds >= 0", "airflow-argument")
        )
    elif "retry_delay" in default_args:
        problems.append(
            delay.problem("`retry_delay_seconds` and `retry_delay` both set the delay; keep one", "airflow-argument")
        )
    else:
        default_args["retry_delay"] = float(delay.value)


KUBERNETES_OPTIONS: Mapping[str, Convert] = {
    "namespace": _text,
    "in_cluster": _bool,
    "cluster_context": _text,
    "service_account_name": _text,
    "image_pull_policy": _choice("Always", "IfNotPresent", "Never"),
    "startup_timeout_seconds": _int(1),
    "get_logs": _bool,
    "is_delete_operator_pod": _bool,
    "on_finish_action": _choice("delete_pod", "delete_succeeded_pod", "keep_pod"),
    "image_pull_secrets": _names,
    "node_selector": _text_map,
    "affinity": _mapping,
    "tolerations": _mappings,
    "annotations": _text_map,
    "labels": _text_map,
    "resources": _resources,
    "do_xcom_push": _bool,
    "priority_class_name": _text,
    "termination_grace_period": _int(0),
    "active_deadline_seconds": _int(1),
    "reattach_on_restart": _bool,
    "log_events_on_failure": _bool,
    "dnspolicy": _choice("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"),
    "schedulername": _text,
}
"""Extra keys of a kubernetes executor: KubernetesPodOperator arguments (Liminal passes them on)."""

_POD_REFUSED = (
    "it could change the pod beyond what the controller and the repository policy check "
    "(host network, privileges, extra volumes or a whole pod spec)"
)
_REFUSED_KUBERNETES = {
    **dict.fromkeys(
        (
            "hostnetwork",
            "host_network",
            "security_context",
            "container_security_context",
            "privileged",
            "volumes",
            "volume_mounts",
            "pod_template_file",
            "pod_template_dict",
            "full_pod_spec",
            "init_containers",
            "config_file",
            "kubernetes_conn_id",
        ),
        _POD_REFUSED,
    ),
    **dict.fromkeys(
        ("image", "cmds", "arguments", "env_vars", "name", "task_id", "secrets"),
        "it is set from the task (`image`, `cmd`, `env_vars`, `secrets`, its name)",
    ),
}

DOCKER_OPTIONS: Mapping[str, Convert] = {"docker_url": _text, "network_mode": _text}
"""Extra keys of a docker executor (DockerOperator arguments)."""


def executor_options(node: Node, kind: str) -> tuple[dict[str, Any], list[Problem]]:
    """The honoured options of one executor and the problems of the rest.

    An `emr` executor's keys are kept as written: its tasks are not run by the controller (a warning
    says so where a task uses it).
    """
    name = node.value.get("executor")
    label = f"executor '{name.value}'" if isinstance(name, Node) else "executor"
    rest = {k: v for k, v in node.value.items() if k not in ("executor", "type", "description")}
    if kind == "emr":
        return {k: to_plain(v) for k, v in rest.items()}, []
    table: Mapping[str, Convert] = {"kubernetes": KUBERNETES_OPTIONS, "docker": DOCKER_OPTIONS}.get(kind, {})
    refused = _REFUSED_KUBERNETES if kind == "kubernetes" else {}
    options: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, child in rest.items():
        if key in table:
            value, wrong = table[key](child)
            if wrong is not None:
                problems.append(child.problem(f"`{key}` {wrong}", "executor-option"))
            else:
                options[key] = value
        elif key in refused:
            problems.append(
                child.problem(f"{label} may not set `{key}`: {refused[key]}", "executor-option", at_key=True)
            )
        else:
            accepted = ", ".join(sorted(table)) or "none"
            problems.append(
                child.problem(
                    f"{label} ({kind}) has no option `{key}`; it takes: {accepted}{suggest(key, table)}",
                    "executor-option",
                    at_key=True,
                )
            )
    if options.pop("is_delete_operator_pod", None) is False:
        options.setdefault("on_finish_action", "keep_pod")
    return options, problems


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float | None:
    """Seconds in a duration written as Airflow (a number of seconds) or as people do (`90s`, `5m`,
    `1h30m`, `2d`, `1:30:00`); None when it is not one. Negative durations are not durations."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if not text:
        return None
    if ":" in text:
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
            return None
        numbers = [int(p) for p in parts]
        hours, minutes, seconds = [0, *numbers] if len(numbers) == 2 else numbers
        return float(hours * 3600 + minutes * 60 + seconds)
    total = 0.0
    number = ""
    for char in text.replace(" ", ""):
        if char.isdigit() or (char == "." and "." not in number):
            number += char
        elif char in _UNITS and number and number != ".":
            total += float(number) * _UNITS[char]
            number = ""
        else:
            return None
    if number:
        if total:  # `1h30` is ambiguous
            return None
        return float(number)
    return total
