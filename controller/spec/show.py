"""Present a resolved Spec: as JSON data, or as text a person reads top to bottom. Pure."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Mapping
from typing import Any

from controller.model import Spec, Task

__all__ = ["spec_as_json", "spec_as_text"]


def _data(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_data(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def spec_as_json(spec: Spec) -> dict[str, Any]:
    """The Spec as JSON-ready data (dates as ISO strings, enums as their values)."""
    data: dict[str, Any] = _data(spec)
    return data


def _task_lines(index: int, task: Task) -> list[str]:
    head = f"    {index}. {task.name}  [{task.type}]  executor: {task.executor} ({task.executor_type})"
    lines = [head]
    if task.image:
        lines.append(f"         image: {task.image}{' (external)' if task.external_image else ''}")
    if task.cmd:
        lines.append(f"         cmd: {task.cmd}")
    if task.partitions > 1:
        lines.append(f"         partitions: {task.partitions}")
    for name, value in task.env_vars.items():
        lines.append(f"         env {name}={value}")
    for mount in task.mounts:
        ro = " (read-only)" if mount.read_only else ""
        lines.append(f"         mount {mount.volume} at {mount.path}{ro}")
    for secret in task.secrets:
        lines.append(f"         secret {secret.secret} at {secret.remote_path}")
    for name, value in task.variables.items():
        lines.append(f"         variable {name}={value} (filled when the task runs, after the DAG run's conf)")
    for key, value in task.options.items():
        lines.append(f"         {key}: {_data(value)}")
    return lines


def spec_as_text(spec: Spec) -> str:
    """A readable outline: systems, images, pipelines with tasks in run order, services."""
    out: list[str] = []
    for system in spec.systems:
        chain = " -> ".join(system.supers) or "none"
        out.append(f"system {system.name}  ({system.file}; inherits: {chain})")
        for image in system.images:
            eps = ", ".join(f"{e.path} -> {e.module}.{e.function}" for e in image.endpoints)
            out.append(
                f"  image {image.name}  [{image.type}]  source: {image.source}" + (f"  endpoints: {eps}" if eps else "")
            )
        for pipeline in system.pipelines:
            out.append(
                f"  pipeline {pipeline.name}  schedule: {pipeline.schedule or 'none'}  start: "
                f"{pipeline.start_date.isoformat()}  timeout: {pipeline.timeout_minutes}m  owner: {pipeline.owner}"
            )
            for key, value in pipeline.default_args.items():
                out.append(f"    default_args {key}: {_data(value)}")
            for key, value in pipeline.unused.items():
                out.append(f"    ignored (no Airflow operator takes it) {key}: {_data(value)}")
            for i, task in enumerate(pipeline.tasks, 1):
                out.extend(_task_lines(i, task))
        for service in system.services:
            out.append(f"  service {service.name}  image: {service.image}")
        out.append("")
    return "\n".join(out)
