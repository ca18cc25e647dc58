"""Liminal GitOps controller: fixed Airflow 3 DAG loader.

A standalone DAG file (`liminal render`) is this module's text followed by one line of data,
`PIPELINE_JSON`, and one fixed line that builds the DAG. The controller instead delivers one
loader file per repository, this module's text plus `PAYLOAD_FOLDER` and a fixed loop, that
builds a DAG from each pipeline's JSON file in that folder: a new pipeline of a known repository
then goes live through Airflow's reparse API of an existing file, without waiting for Airflow to
list the folder again. No string from a liminal.yml is ever Python source
here: names, commands and environment values arrive as JSON data, operators take them as
arguments, and Jinja templating is switched off on every operator (`template_fields = ()`).

Airflow's own run-time values may still be used in `cmd` and `env_vars` as `{{ ds }}`; only the
names in RUNTIME_NAMES are filled in, by plain lookup, when the task runs. Variables, connections
and Airflow's configuration are never reachable from a liminal.yml.

The module imports Airflow only inside `build_dag`, so the pure helpers can be tested without it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
from collections.abc import Mapping
from typing import Any

FORMAT = 1
"""Payload version this loader reads; a different one is refused, never guessed at."""

RUNTIME_NAMES = frozenset(
    {
        "ds",
        "ds_nodash",
        "ts",
        "ts_nodash",
        "ts_nodash_with_tz",
        "logical_date",
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

_PLACEHOLDER = re.compile(r"{{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*)\s*}}")


def fill_runtime(text: str, context: Mapping[str, Any]) -> str:
    """Replace `{{ name }}` / `{{ name.key }}` for names in RUNTIME_NAMES by plain lookup.

    Anything else, and any name whose value is missing, stays as written: no expression is
    evaluated, no attribute starting with `_` is read, and nothing callable is called.
    """
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
    default_args: dict[str, Any] = {"owner": payload.get("owner") or "airflow"}
    if payload.get("retries") is not None:
        default_args["retries"] = int(payload["retries"])
    if payload.get("retry_delay_seconds") is not None:
        default_args["retry_delay"] = dt.timedelta(seconds=int(payload["retry_delay_seconds"]))
    timeout = payload.get("timeout_minutes")
    dag = DAG(
        doc_md=provenance(payload),
        dag_id=payload["dag_id"],
        description=payload.get("description"),
        schedule=payload.get("schedule"),
        start_date=dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC),
        dagrun_timeout=dt.timedelta(minutes=int(timeout)) if timeout else None,
        catchup=False,
        default_args=default_args,
        tags=list(payload.get("tags", [])),
        max_active_runs=int(payload.get("max_active_runs", 1)),
        render_template_as_native_obj=False,
        is_paused_upon_creation=payload.get("paused"),
    )
    with dag:
        tasks = {spec["task_id"]: _operator(spec) for spec in payload["tasks"]}
        for spec in payload["tasks"]:
            for upstream in spec.get("upstream", []):
                tasks[upstream] >> tasks[spec["task_id"]]
    return dag


def _operator(spec: Mapping[str, Any]) -> Any:
    kind = spec["operator"]
    if kind == "kubernetes":
        return _pod_operator(spec)
    if kind == "docker":
        return _docker_operator(spec)
    if kind == "empty":
        from airflow.providers.standard.operators.empty import EmptyOperator

        return EmptyOperator(task_id=spec["task_id"], trigger_rule=spec.get("trigger_rule", "all_success"))
    return _unsupported_operator(spec)


@functools.cache
def _pod_operator_class() -> Any:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    class LiminalPodOperator(KubernetesPodOperator):  # type: ignore[misc]
        """KubernetesPodOperator with templating off; run-time names filled by plain lookup."""

        template_fields = ()
        cmds: list[str]
        arguments: list[str]
        env_vars: list[Any]

        def execute(self, context: Any) -> Any:
            self.cmds = [fill_runtime(c, context) for c in self.cmds]
            self.arguments = [fill_runtime(a, context) for a in self.arguments]
            for env in self.env_vars:
                if env.value is not None:
                    env.value = fill_runtime(env.value, context)
            return super().execute(context)

    return LiminalPodOperator


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
    secrets = [Secret("volume", s["remote_path"], s["name"]) for s in spec.get("secrets", [])]
    options = spec.get("kubernetes", {})
    return _pod_operator_class()(
        task_id=spec["task_id"],
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
        in_cluster=options.get("in_cluster"),
        cluster_context=options.get("cluster_context"),
        service_account_name=options.get("service_account_name"),
        image_pull_policy=options.get("image_pull_policy", "IfNotPresent"),
        startup_timeout_seconds=int(options.get("startup_timeout_seconds", 300)),
        get_logs=True,
        on_finish_action="delete_pod",
    )


@functools.cache
def _docker_operator_class() -> Any:
    from airflow.providers.docker.operators.docker import DockerOperator

    class LiminalDockerOperator(DockerOperator):  # type: ignore[misc]
        """DockerOperator with templating off; run-time names filled by plain lookup."""

        template_fields = ()
        command: list[str] | None
        environment: dict[str, str] | None

        def execute(self, context: Any) -> Any:
            self.command = [fill_runtime(c, context) for c in self.command or []] or None
            self.environment = {k: fill_runtime(v, context) for k, v in (self.environment or {}).items()}
            return super().execute(context)

    return LiminalDockerOperator


def _docker_operator(spec: Mapping[str, Any]) -> Any:
    from docker.types import Mount

    mounts = []
    for m in spec.get("mounts", []):
        if m.get("local_path"):
            source = os.path.join(m["local_path"], m.get("sub_path") or "")
            mounts.append(Mount(target=m["path"], source=source, type="bind", read_only=m.get("read_only", False)))
        else:
            mounts.append(Mount(target=m["path"], source=m["claim_name"], type="volume"))
    for s in spec.get("secrets", []):
        if s.get("local_path_file"):
            source = os.path.expanduser(s["local_path_file"])
            target = s["remote_path"].rstrip("/") + "/" + os.path.basename(source)
            mounts.append(Mount(target=target, source=source, type="bind", read_only=True))
    options = spec.get("docker", {})
    return _docker_operator_class()(
        task_id=spec["task_id"],
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
    return _unsupported_class()(task_id=spec["task_id"], reason=str(spec.get("reason", "unsupported task")))


def load_payload(text: str) -> dict[str, Any]:
    """Decode the `PIPELINE_JSON` line of a DAG file."""
    payload = json.loads(text)
    if not isinstance(payload, dict):
        raise ValueError("DAG payload is not a JSON object")
    return payload
