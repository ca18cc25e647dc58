"""Liminal GitOps controller: fixed Airflow 3 DAG loader.

A standalone DAG file (`liminal render`) is this module's text followed by one line of data,
`PIPELINE_JSON`, and one fixed line that builds the DAG. The controller instead delivers one
loader file per repository, this module's text plus `PAYLOAD_FOLDER` and a fixed loop, that
builds a DAG from each pipeline's JSON file in that folder: a new pipeline of a known repository
then goes live through Airflow's reparse API of an existing file, without waiting for Airflow to
list the folder again. No string from a liminal.yml is ever Python source
here: names, commands and environment values arrive as JSON data, operators take them as
arguments, and Jinja templating is switched off on every operator (`template_fields = ()`).

`{{name}}` in `cmd`, `env_vars` and Spark's arguments is filled when the task runs, by plain lookup,
in Liminal's order: the DAG run's conf, the task's variables, then Airflow's run-time values in
RUNTIME_NAMES (`{{ ds }}`). Airflow Variables, connections and configuration are never reachable
from a liminal.yml.

The module imports Airflow only inside `build_dag`, so the pure helpers can be tested without it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import Any

FORMAT = 2
"""Payload version this loader reads; a different one is refused, never guessed at."""

RUNTIME_NAMES = frozenset(
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
"""Airflow's run-time values a liminal.yml may name (controller.names.RUN_TIME_VALUES)."""

_PLACEHOLDER = re.compile(r"{{\s*([A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)\s*}}")

DURATION_ARGS = frozenset({"retry_delay", "max_retry_delay", "execution_timeout"})
"""default_args the payload gives in seconds (controller.spec.airflow_args.DURATION_ARGS)."""


def _derived(context: Mapping[str, Any]) -> dict[str, Any]:
    """Liminal's date names that Airflow 3 no longer puts in the context, computed from `ds`; and
    `ds` itself for a run without a logical date (Airflow 3 leaves it out; Liminal's runs always had
    one), from the moment the run was due."""
    out: dict[str, Any] = {}
    ds = context.get("ds")
    if not isinstance(ds, str):
        moment = context.get("logical_date") or getattr(context.get("dag_run"), "run_after", None)
        if not isinstance(moment, dt.datetime):
            return {}
        ds = moment.date().isoformat()
        out.update(ds=ds, ds_nodash=ds.replace("-", ""))
    day = dt.date.fromisoformat(ds)
    yesterday, tomorrow = day - dt.timedelta(days=1), day + dt.timedelta(days=1)
    return out | {
        "yesterday_ds": yesterday.isoformat(),
        "yesterday_ds_nodash": yesterday.strftime("%Y%m%d"),
        "tomorrow_ds": tomorrow.isoformat(),
        "tomorrow_ds_nodash": tomorrow.strftime("%Y%m%d"),
        "execution_date": context.get("logical_date") or context.get("data_interval_start"),
    }


def _conf(context: Mapping[str, Any]) -> Mapping[str, Any]:
    conf = getattr(context.get("dag_run"), "conf", None)
    return conf if isinstance(conf, Mapping) else {}


def runtime_filler(context: Mapping[str, Any], variables: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """What fills `{{ name }}` placeholders in a task's strings by plain lookup, in Liminal's order:
    the DAG run's conf (`{{name}}` is `conf["name"]`), then the task's variables, then Airflow's
    run-time values in RUNTIME_NAMES (`{{ds}}`, `{{dag_run.conf.x}}`). Made once per task run.

    Anything else, and any name whose value is missing, stays as written: no expression is
    evaluated, no attribute starting with `_` is read, and nothing callable is called. A value put
    in is not searched for placeholders again, except that a conf or variable value may itself
    name run-time values (`{{ds}}`).
    """
    conf = _conf(context)
    known = variables or {}
    # Airflow's own values first; the derived ones only where the context has none
    values = ChainMap(dict(context), _derived(context))

    def given(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in conf:
            return str(conf[name])
        if name in known:
            return str(known[name])
        return match.group(0)

    def fill(text: str) -> str:
        if "{{" not in text:
            return text
        return _fill_values(_PLACEHOLDER.sub(given, text), values)

    return fill


def _fill_values(text: str, context: Mapping[str, Any]) -> str:
    if "{{" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        root, *rest = match.group(1).split(".")
        if root not in RUNTIME_NAMES or root not in context:
            return match.group(0)
        value: Any = context[root]
        for part in rest:
            if part.startswith("_"):
                return match.group(0)
            if isinstance(value, Mapping):
                if part not in value:
                    return match.group(0)
                value = value[part]
            else:
                value = getattr(value, part, None)
            if value is None or callable(value):
                return match.group(0)
        return str(value)

    return _PLACEHOLDER.sub(replace, text)


PIPELINE_ERROR_MARK = "LIMINAL-PIPELINE "
"""Starts each line of a PipelineImportError that names a payload file, for the controller to read back."""


class PipelineImportError(Exception):
    """Payload files of a repository folder that do not build; one marked line per file."""


def build_folder(folder: str) -> list[Any]:
    """One DAG per `*.json` payload in `folder`, in name order.

    Every payload is tried; if any fails, one PipelineImportError names each failing file (the
    file then records one import error in Airflow, with every failure in its text).
    """
    dags: list[Any] = []
    failures: list[str] = []
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as stream:
                dags.append(build_dag(load_payload(stream.read())))
        except Exception as exc:
            detail = " ".join(str(exc).split())
            failures.append(f"{PIPELINE_ERROR_MARK}{name}: {type(exc).__name__}: {detail}")
    if failures:
        raise PipelineImportError(f"{len(failures)} pipeline(s) do not build:\n" + "\n".join(failures))
    return dags


def check_payload(payload: Mapping[str, Any]) -> None:
    """Refuse a payload written for another loader version."""
    if payload.get("format") != FORMAT:
        found = payload.get("format")
        raise ValueError(f"DAG payload format {found!r} is not {FORMAT}; re-render it with this controller")


def provenance(payload: Mapping[str, Any]) -> str | None:
    """The DAG's docs: where it came from. Shown in Airflow's UI; the controller reads the content
    hash back from the serialized DAG to know which version Airflow really runs."""
    origin = payload.get("origin")
    if not isinstance(origin, Mapping) or not origin.get("hash"):
        return None
    return (
        f"Deployed by the Liminal GitOps controller from repository `{origin.get('repo')}` at commit "
        f"`{origin.get('commit') or '-'}`.\n\nContent hash: `{origin['hash']}`"
    )


def build_dag(payload: Mapping[str, Any]) -> Any:
    """Build the Airflow DAG the payload describes (imports Airflow and the providers it needs)."""
    from airflow.sdk import DAG

    check_payload(payload)
    start = dt.date.fromisoformat(payload["start_date"])
    default_args: dict[str, Any] = {"owner": payload.get("owner") or "airflow", "depends_on_past": False}
    for key, given in (payload.get("default_args") or {}).items():
        default_args[key] = _default_arg(key, given)
    options = dict(payload.get("dag_options") or {})
    timeout = payload.get("timeout_minutes")
    dag = DAG(
        doc_md=provenance(payload),
        dag_id=payload["dag_id"],
        description=payload.get("description"),
        schedule=payload.get("schedule"),
        start_date=dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC),
        dagrun_timeout=dt.timedelta(minutes=int(timeout)) if timeout else None,
        catchup=bool(options.get("catchup", False)),
        default_args=default_args,
        tags=list(payload.get("tags", [])),
        max_active_runs=int(options.get("max_active_runs", 1)),
        max_active_tasks=int(options.get("max_active_tasks", 16)),
        render_template_as_native_obj=False,
        is_paused_upon_creation=payload.get("paused"),
    )
    with dag:
        tasks = {spec["task_id"]: _operator(spec) for spec in payload["tasks"]}
        for spec in payload["tasks"]:
            for upstream in spec.get("upstream", []):
                tasks[upstream] >> tasks[spec["task_id"]]
    return dag


def _default_arg(key: str, value: Any) -> Any:
    if key in DURATION_ARGS:
        return dt.timedelta(seconds=float(value))
    if key == "end_date":
        day = dt.date.fromisoformat(value)
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return value


def _operator(spec: Mapping[str, Any]) -> Any:
    kind = spec["operator"]
    if kind == "kubernetes":
        return _pod_operator(spec)
    if kind == "docker":
        return _docker_operator(spec)
    if kind == "empty":
        from airflow.providers.standard.operators.empty import EmptyOperator

        return EmptyOperator(task_id=spec["task_id"], trigger_rule=spec.get("trigger_rule", "all_success"))
    if kind == "job_end":
        return _job_end_class()(task_id=spec["task_id"], trigger_rule=spec.get("trigger_rule", "all_done"))
    return _unsupported_operator(spec)


@functools.cache
def _job_end_class() -> Any:
    from airflow.sdk import BaseOperator

    class LiminalJobEnd(BaseOperator):  # type: ignore[misc]
        """Liminal's job_end under `always_run`: runs after every task, and fails the run (by failing
        itself, the run's last task) when any other task of the run failed."""

        template_fields = ()
        ui_color = "#6d8fad"

        def execute(self, context: Any) -> Any:
            from airflow.exceptions import AirflowFailException

            ti = context["ti"]
            states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
            failed = sorted(
                t for t, state in states.items() if t != ti.task_id and state in ("failed", "upstream_failed")
            )
            for task_id, state in sorted(states.items()):
                self.log.info("%s finished with state %s", task_id, state)
            if failed:
                raise AirflowFailException(f"failing this run: task(s) {', '.join(failed)} failed")

    return LiminalJobEnd


@functools.cache
def _pod_operator_class() -> Any:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    class LiminalPodOperator(KubernetesPodOperator):  # type: ignore[misc]
        """KubernetesPodOperator with templating off; placeholders filled by plain lookup."""

        template_fields = ()
        cmds: list[str]
        arguments: list[str]
        env_vars: list[Any]

        def __init__(self, *, liminal_variables: Mapping[str, str] | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.liminal_variables = dict(liminal_variables or {})

        def execute(self, context: Any) -> Any:
            fill = runtime_filler(context, self.liminal_variables)
            self.cmds = [fill(c) for c in self.cmds]
            self.arguments = [fill(a) for a in self.arguments]
            for env in self.env_vars:
                if env.value is not None:
                    env.value = fill(env.value)
            return super().execute(context)

    return LiminalPodOperator


_POD_PASSED = (
    "in_cluster",
    "cluster_context",
    "service_account_name",
    "get_logs",
    "on_finish_action",
    "node_selector",
    "affinity",
    "tolerations",
    "annotations",
    "priority_class_name",
    "termination_grace_period",
    "active_deadline_seconds",
    "reattach_on_restart",
    "log_events_on_failure",
    "dnspolicy",
    "schedulername",
)
"""Executor options handed to KubernetesPodOperator as they are (controller.spec.airflow_args)."""


def _pod_operator(spec: Mapping[str, Any]) -> Any:
    from airflow.providers.cncf.kubernetes.secret import Secret
    from kubernetes.client import models as k8s

    resources = spec.get("resources") or {}
    volumes = [
        k8s.V1Volume(
            name=v["name"],
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=v["claim_name"]),
        )
        for v in spec.get("volumes", [])
    ]
    mounts = [
        k8s.V1VolumeMount(
            name=m["volume"], mount_path=m["path"], sub_path=m.get("sub_path"), read_only=m.get("read_only", False)
        )
        for m in spec.get("mounts", [])
    ]
    secrets = [Secret("volume", s["remote_path"], s["name"], s.get("key")) for s in spec.get("secrets", [])]
    options = spec.get("kubernetes", {})
    passed = {k: options[k] for k in _POD_PASSED if k in options}
    return _pod_operator_class()(
        task_id=spec["task_id"],
        trigger_rule=spec.get("trigger_rule", "all_success"),
        liminal_variables=spec.get("variables"),
        name=spec["pod_name"],
        namespace=options.get("namespace"),
        image=spec["image"],
        cmds=list(spec.get("cmds", [])),
        arguments=list(spec.get("arguments", [])),
        env_vars=[k8s.V1EnvVar(name=k, value=v) for k, v in spec.get("env", {}).items()],
        volumes=volumes,
        volume_mounts=mounts,
        secrets=secrets,
        labels=dict(spec.get("labels", {})),
        container_resources=k8s.V1ResourceRequirements(
            requests=resources.get("requests") or None, limits=resources.get("limits") or None
        ),
        image_pull_secrets=[k8s.V1LocalObjectReference(name=n) for n in options.get("image_pull_secrets", [])] or None,
        image_pull_policy=options.get("image_pull_policy", "IfNotPresent"),
        startup_timeout_seconds=int(options.get("startup_timeout_seconds", 300)),
        do_xcom_push=bool(spec.get("do_xcom_push", options.get("do_xcom_push", False))),
        **{"get_logs": True, "on_finish_action": "delete_pod", **passed},
    )


@functools.cache
def _docker_operator_class() -> Any:
    from airflow.providers.docker.operators.docker import DockerOperator

    class LiminalDockerOperator(DockerOperator):  # type: ignore[misc]
        """DockerOperator with templating off; placeholders filled by plain lookup."""

        template_fields = ()
        command: list[str] | None
        environment: dict[str, str] | None

        def __init__(self, *, liminal_variables: Mapping[str, str] | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.liminal_variables = dict(liminal_variables or {})

        def execute(self, context: Any) -> Any:
            fill = runtime_filler(context, self.liminal_variables)
            self.command = [fill(c) for c in self.command or []] or None
            self.environment = {k: fill(v) for k, v in (self.environment or {}).items()}
            return super().execute(context)

    return LiminalDockerOperator


def _docker_operator(spec: Mapping[str, Any]) -> Any:
    from docker.types import Mount

    mounts = []
    for m in spec.get("mounts", []):
        if m.get("local_path"):
            source = os.path.join(m["local_path"], m["sub_path"]) if m.get("sub_path") else m["local_path"]
            mounts.append(Mount(target=m["path"], source=source, type="bind", read_only=m.get("read_only", False)))
        else:
            mounts.append(
                Mount(target=m["path"], source=m["claim_name"], type="volume", read_only=m.get("read_only", False))
            )
    for s in spec.get("secrets", []):
        if s.get("local_path_file"):
            source = os.path.expanduser(s["local_path_file"])
            name = s.get("file_name") or os.path.basename(source)
            target = s["remote_path"].rstrip("/") + "/" + name
            mounts.append(Mount(target=target, source=source, type="bind", read_only=True))
    options = spec.get("docker", {})
    return _docker_operator_class()(
        task_id=spec["task_id"],
        trigger_rule=spec.get("trigger_rule", "all_success"),
        liminal_variables=spec.get("variables"),
        image=spec["image"],
        command=[*spec.get("cmds", []), *spec.get("arguments", [])] or None,
        environment=dict(spec.get("env", {})),
        mounts=mounts,
        docker_url=options.get("docker_url"),
        network_mode=options.get("network_mode"),
        mem_limit=spec.get("mem_limit"),
        cpus=float(spec.get("cpus") or 1.0),
        auto_remove="success",
        mount_tmp_dir=False,
        labels=dict(spec.get("labels", {})),
        do_xcom_push=bool(spec.get("do_xcom_push", False)),
    )


@functools.cache
def _unsupported_class() -> Any:
    from airflow.sdk import BaseOperator

    class LiminalUnsupported(BaseOperator):  # type: ignore[misc]
        """A task this controller cannot run: fails with the reason, so the DAG still loads."""

        template_fields = ()

        def __init__(self, *, reason: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.reason = reason

        def execute(self, context: Any) -> Any:
            raise RuntimeError(self.reason)

    return LiminalUnsupported


def _unsupported_operator(spec: Mapping[str, Any]) -> Any:
    return _unsupported_class()(
        task_id=spec["task_id"],
        trigger_rule=spec.get("trigger_rule", "all_success"),
        reason=str(spec.get("reason", "unsupported task")),
    )


def load_payload(text: str) -> dict[str, Any]:
    """Decode the `PIPELINE_JSON` line of a DAG file."""
    payload = json.loads(text)
    if not isinstance(payload, dict):
        raise ValueError("DAG payload is not a JSON object")
    return payload
