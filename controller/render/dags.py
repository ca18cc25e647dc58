"""Airflow DAG files: each pipeline becomes the fixed loader (`dag_loader.py`) plus its JSON data.

`pipeline_payload` is the pure part: tasks in Liminal's order, partitions fanned out as Liminal
does (`<task>_parallelize` -> `<task>_0..N-1` -> `<task>`), each partition told its index and
count through LIMINAL_SPLIT_ID and LIMINAL_NUM_SPLITS, images named by content tag.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

from controller.model import DagFile, ExecutorType, ImageBuild, Origin, Pipeline, System, Task, k8s_name
from controller.render.hashing import plain
from controller.render.settings import RenderSettings

__all__ = [
    "PARTITION_COUNT_ENV",
    "PARTITION_INDEX_ENV",
    "cpu_count",
    "dag_file",
    "dag_filename",
    "dag_text",
    "loader_source",
    "memory_bytes",
    "pipeline_payload",
    "repo_loader",
    "repo_payload_folder",
    "split_dag_text",
    "stamp_payload",
]

PARTITION_INDEX_ENV = "LIMINAL_SPLIT_ID"
"""0-based index of a partition of a task with `executors: N` (Liminal's name)."""

PARTITION_COUNT_ENV = "LIMINAL_NUM_SPLITS"
"""The number of partitions N (Liminal's name)."""

PAYLOAD_PREFIX = "PIPELINE_JSON = "
_TAIL = "dag = build_dag(load_payload(PIPELINE_JSON))\n"
FOLDER_PREFIX = "PAYLOAD_FOLDER = "
_FOLDER_TAIL = """\
for _dag in build_folder(os.path.join(os.path.dirname(os.path.abspath(__file__)), PAYLOAD_FOLDER)):
    globals()["dag__" + _dag.dag_id] = _dag
"""

_CONTAINER_TYPES = frozenset({"python", "spark"})
_MARKER_TYPES = frozenset({"job_start", "job_end"})


@functools.cache
def loader_source() -> str:
    """The fixed loader text every DAG file starts with."""
    return resources.files("controller.render").joinpath("dag_loader.py").read_text(encoding="utf-8")


def dag_filename(repo: str, dag_id: str) -> str:
    """A file name that no repo or pipeline name can turn into a path (`/`, `..`) or collide on."""
    slug = re.sub(r"[^a-z0-9]+", "_", repo.lower()).strip("_")[:40] or "repo"
    return f"liminal__{slug}__{dag_id}.py"


def repo_payload_folder(repo: str) -> str:
    """The folder (beside the repository's loader file) holding one `<dag_id>.json` per pipeline.

    A short hash of the name keeps two repositories apart whose names slug alike (`a-b`, `a_b`)."""
    slug = re.sub(r"[^a-z0-9]+", "_", repo.lower()).strip("_")[:40] or "repo"
    return f"liminal__{slug}_{hashlib.sha256(repo.encode()).hexdigest()[:6]}"


@functools.lru_cache(maxsize=4096)  # asked for every repository at every drift check
def repo_loader(repo: str) -> tuple[str, str]:
    """(file name, text) of the repository's loader file: fixed but for its folder's name, which is
    derived from the repository name and holds only `[a-z0-9_]`."""
    folder = repo_payload_folder(repo)
    return f"{folder}.py", loader_source() + "\n\n" + FOLDER_PREFIX + json.dumps(folder) + "\n" + _FOLDER_TAIL


def pipeline_payload(
    pipeline: Pipeline,
    system: System,
    images: Mapping[str, ImageBuild],
    settings: RenderSettings,
) -> dict[str, Any]:
    """The pipeline as the loader's JSON data (no origin stamp). Pure.

    Trigger rules as Liminal sets them: every task waits for the one before it to succeed, so a
    failed task stops the rest and fails the run; with the root `always_run: true` every task runs
    once the one before it is done, and `end` fails the run when any task failed.
    """
    trigger_rule = "all_done" if pipeline.always_run else "all_success"
    out_tasks: list[dict[str, Any]] = []
    previous: list[str] = []
    for task in pipeline.tasks:
        base = _task_spec(task, system, images, settings, always_run=pipeline.always_run)
        base["upstream"] = previous
        base["trigger_rule"] = trigger_rule
        if task.partitions > 1 and base["operator"] in ("kubernetes", "docker"):
            fan_out = f"{task.name}_parallelize"
            out_tasks.append(
                {"task_id": fan_out, "operator": "empty", "upstream": previous, "trigger_rule": trigger_rule}
            )
            parts = []
            for i in range(task.partitions):
                part = dict(base)
                part["task_id"] = f"{task.name}_{i}"
                if "pod_name" in base:
                    part["pod_name"] = k8s_name(f"{task.name}-{i}")
                part["env"] = {
                    **base["env"],
                    PARTITION_INDEX_ENV: str(i),
                    PARTITION_COUNT_ENV: str(task.partitions),
                }
                part["upstream"] = [fan_out]
                part["trigger_rule"] = "all_success"
                out_tasks.append(part)
                parts.append(part["task_id"])
            # as Liminal: the join waits for every partition to succeed
            out_tasks.append(
                {"task_id": task.name, "operator": "empty", "upstream": parts, "trigger_rule": "all_success"}
            )
        else:
            out_tasks.append(base)
        previous = [task.name]
    payload: dict[str, Any] = {
        "format": 2,
        "dag_id": pipeline.name,
        "description": pipeline.description,
        "owner": pipeline.owner,
        "schedule": pipeline.schedule,
        "start_date": pipeline.start_date.isoformat(),
        "timeout_minutes": pipeline.timeout_minutes or None,
        "tasks": out_tasks,
        "default_args": plain(pipeline.default_args),
    }
    options = plain(pipeline.dag_options)
    tags = options.pop("tags", None)
    if tags:
        payload["extra_tags"] = tags
    if options:
        payload["dag_options"] = options
    if pipeline.paused is not None:
        payload["paused"] = pipeline.paused
    return payload


def stamp_payload(payload: Mapping[str, Any], origin: Origin, content_hash: str) -> dict[str, Any]:
    """The payload with the DAG tags that say where it came from (outside the content hash)."""
    tags = ["liminal", f"repo:{origin.repo}"[:100]]
    if origin.commit:
        tags.append(f"commit:{origin.commit[:12]}")
    tags += [t[:100] for t in payload.get("extra_tags", []) if t not in tags]
    return {**payload, "tags": tags, "origin": {"repo": origin.repo, "commit": origin.commit, "hash": content_hash}}


def dag_file(repo: str, stamped: Mapping[str, Any]) -> DagFile:
    """The DAG file: loader text, then the payload as one JSON string literal, then a fixed call.

    The payload is JSON encoded twice with ASCII escapes, which makes it a valid Python string
    literal on one line whatever it holds (quotes, newlines, `\"\"\"`, `{{`, code).
    """
    # read-only mappings are turned into dicts as they are met (a whole plain() copy of every
    # payload first was a third of rendering a commit of 10,000 unchanged pipelines)
    payload = json.dumps(stamped, sort_keys=True, ensure_ascii=True, default=_as_dict)
    dag_id = str(stamped["dag_id"])
    return DagFile(dag_id=dag_id, filename=dag_filename(repo, dag_id), payload=payload)


def _as_dict(value: object) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    raise TypeError(f"{type(value).__name__} is not JSON data")


def dag_text(dag: DagFile) -> str:
    """The standalone DAG file: the loader text, then the payload as one string literal, then a fixed call."""
    return loader_source() + "\n\n" + PAYLOAD_PREFIX + json.dumps(dag.payload) + "\n" + _TAIL


def split_dag_text(text: str) -> tuple[str, str]:
    """Split a DAG file into (code without the payload line, payload JSON). For tests and drift checks."""
    code: list[str] = []
    payload = ""
    for line in text.splitlines(keepends=True):
        if line.startswith(PAYLOAD_PREFIX):
            payload = json.loads(line[len(PAYLOAD_PREFIX) :])
        else:
            code.append(line)
    return "".join(code), payload


def _task_spec(
    task: Task, system: System, images: Mapping[str, ImageBuild], settings: RenderSettings, *, always_run: bool
) -> dict[str, Any]:
    executor = next((e for e in system.executors if e.name == task.executor), None)
    volumes = {v.name: v for v in system.volumes}
    secrets = {s.name: s for s in system.secrets}
    spec: dict[str, Any] = {"task_id": task.name}
    if task.type in _MARKER_TYPES and task.executor_type is ExecutorType.AIRFLOW:
        # Liminal's job_end fails the run when a task failed; it only runs after a failure with always_run
        spec["operator"] = "job_end" if task.type == "job_end" and always_run else "empty"
        return spec
    if task.type not in _CONTAINER_TYPES or not task.executor_type.runs_containers:
        spec["operator"] = "unsupported"
        spec["reason"] = (
            f"task type '{task.type}' on a '{task.executor_type}' executor is not run by the Liminal GitOps "
            "controller (it runs python and spark tasks on kubernetes or docker executors, and job_start/job_end "
            "in Airflow)"
        )
        return spec
    image = task.image or ""
    if not task.external_image and image in images:
        image = images[image].tag
    cmds, arguments = _command(task)
    options = dict(executor.options) if executor is not None else {}
    env = dict(task.env_vars)
    for key, name in (("output_path", "OUTPUT_PATH"), ("output_destination_path", "OUTPUT_DESTINATION_PATH")):
        if task.options.get(key) is not None:
            env[name] = str(task.options[key])
    if task.type == "spark":
        env.setdefault("SPARK_LOCAL_HOSTNAME", "localhost")  # as Liminal: spark-submit in a container
    spec.update(
        operator="kubernetes" if task.executor_type is ExecutorType.KUBERNETES else "docker",
        image=image,
        cmds=cmds,
        arguments=arguments,
        env=env,
        labels={"app.kubernetes.io/managed-by": "liminal-controller"},
    )
    if task.variables:
        spec["variables"] = dict(task.variables)
    if task.options.get("do_xcom_push") is not None:
        spec["do_xcom_push"] = bool(task.options["do_xcom_push"])
    used = [volumes[m.volume] for m in task.mounts if m.volume in volumes]
    if task.executor_type is ExecutorType.KUBERNETES:
        spec["pod_name"] = k8s_name(task.name)
        pod = {"namespace": settings.namespace} | {k: plain(v) for k, v in options.items()}
        resources = pod.pop("resources", {})
        spec["labels"] = {**pod.pop("labels", {}), **spec["labels"]}
        spec["kubernetes"] = pod
        spec["volumes"] = [
            {"name": k8s_name(v.name), "claim_name": v.claim_name} for v in {v.name: v for v in used}.values()
        ]
        spec["mounts"] = [
            {"volume": k8s_name(m.volume), "path": m.path, "sub_path": m.sub_path, "read_only": m.read_only}
            for m in task.mounts
        ]
        spec["secrets"] = [
            {"name": k8s_name(s.secret), "remote_path": s.remote_path, "key": s.sub_path} for s in task.secrets
        ]
        # the task's own quantities win over the executor's `resources`
        task_resources = _resources(task)
        spec["resources"] = {
            group: {**resources.get(group, {}), **task_resources.get(group, {})}
            for group in ("requests", "limits")
            if resources.get(group) or task_resources.get(group)
        }
    else:
        spec["docker"] = {"docker_url": settings.docker_url} | {k: plain(v) for k, v in options.items()}
        spec["mounts"] = [
            {
                "path": m.path,
                "sub_path": m.sub_path,
                "read_only": m.read_only,
                "local_path": volumes[m.volume].local_path if m.volume in volumes else None,
                "claim_name": volumes[m.volume].claim_name if m.volume in volumes else m.volume,
            }
            for m in task.mounts
        ]
        spec["secrets"] = [
            {
                "remote_path": s.remote_path,
                "local_path_file": secrets[s.secret].local_path_file if s.secret in secrets else None,
                "file_name": s.sub_path,
            }
            for s in task.secrets
        ]
        limits = _resources(task).get("limits", {})
        if "memory" in limits:
            spec["mem_limit"] = memory_bytes(limits["memory"])
        if "cpu" in limits:
            spec["cpus"] = cpu_count(limits["cpu"])
    return spec


def _command(task: Task) -> tuple[list[str], list[str]]:
    """Container command and arguments, as Liminal builds them. The `cmd` string is handed to
    `/bin/bash -c` as one argument; it is never split, templated or run by the controller. A spark
    task runs spark-submit with its master, class, conf, application and arguments."""
    if task.type == "spark":
        opts = task.options
        argv = ["spark-submit"]
        for flag in ("master", "class"):
            if opts.get(flag):
                argv += [f"--{flag}", str(opts[flag])]
        conf = opts.get("conf")
        if isinstance(conf, Mapping):
            for key in sorted(conf):
                argv += ["--conf", f"{key}={conf[key]}"]
        if opts.get("application_source"):
            argv.append(str(opts["application_source"]))
        args = opts.get("application_arguments")
        if isinstance(args, list | tuple):
            argv += [str(a) for a in args]
        elif isinstance(args, Mapping):  # Liminal interleaves a map's keys and values
            for key, value in args.items():
                argv += [str(key), str(value)]
        return argv, []
    if task.cmd:
        return ["/bin/bash", "-c"], [task.cmd]
    return [], []


def _resources(task: Task) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key, (group, name) in {
        "request_cpu": ("requests", "cpu"),
        "request_memory": ("requests", "memory"),
        "limit_cpu": ("limits", "cpu"),
        "limit_memory": ("limits", "memory"),
    }.items():
        value = task.options.get(key)
        if value is not None:
            out.setdefault(group, {})[name] = str(value)
    return out


_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (`512Mi`, `1G`, `1000`) in bytes, as Docker's mem_limit takes it."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T|)", quantity.strip())
    if match is None:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def cpu_count(quantity: str) -> float:
    """A Kubernetes CPU quantity (`500m`, `2`) as Docker's fractional `cpus`."""
    text = quantity.strip()
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)
