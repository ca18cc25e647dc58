"""Generate schemas/liminal.schema.json (JSON Schema 2020-12 for liminal.yml).

The schema is data, but the task types share most of their keys; writing it from these tables
keeps the eight task shapes consistent. `tests/test_schema.py` checks the committed file equals
this output, so edit here and run `python scripts/generate_schema.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SCHEMA_ID = "https://liminal-gitops.dev/schemas/liminal.schema.json"
OUT = Path(__file__).resolve().parent.parent / "schemas" / "liminal.schema.json"

Schema = dict[str, Any]


def s(description: str, **kw: Any) -> Schema:
    """A string property."""
    return {"type": "string", "description": description, **kw}


def cpu(description: str) -> Schema:
    """A Kubernetes CPU quantity: a number of cores, or millicores with `m`."""
    return {
        "anyOf": [
            {"type": "number", "exclusiveMinimum": 0},
            {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?m?$"},
        ],
        "description": description,
    }


def memory(description: str) -> Schema:
    """A Kubernetes memory quantity: bytes with an optional decimal or binary suffix."""
    return {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$", "description": description}


def ref(name: str, description: str) -> Schema:
    return {"$ref": f"#/$defs/{name}", "description": description}


NAME = {"type": "string", "minLength": 1}
ENV_VARS: Schema = {
    "type": "object",
    "description": "Environment variables set in the task's container. Values are turned into strings.",
    "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
}
MOUNTS: Schema = {
    "type": "array",
    "description": "Volumes mounted into the task's container.",
    "items": {"$ref": "#/$defs/mount"},
}
TASK_SECRETS: Schema = {
    "type": "array",
    "description": "Declared secrets made available to the task.",
    "items": {"$ref": "#/$defs/taskSecret"},
}

COMMON_TASK: dict[str, Schema] = {
    "task": {**NAME, "description": "Task name, unique within its pipeline; becomes the Airflow task_id."},
    "type": ref("taskType", "Task type: what the task does."),
    "description": s("Free text shown in Airflow as the task's documentation."),
    "executor": s(
        "Name of an executor (see `executors`) that runs the task. Defaults per task type "
        "come from `task_defaults` (Liminal's base: kubernetes for python/spark, airflow for "
        "job_start/job_end)."
    ),
    "variables": {
        "description": "Task variables: a map, or the name of a map in the root `variables` section. They fill "
        "`{{name}}` in the task's `cmd`, `env_vars` and Spark arguments when the task runs, after the DAG run's "
        "conf and before Airflow's run-time values (Liminal's order); the task's own win over the root's.",
        "type": ["object", "string"],
    },
    "env_vars": ENV_VARS,
    "env": {
        "type": "object",
        "description": "Not read by Liminal (it reads `env_vars`); accepted with a warning so that files written "
        "for it stay valid. Use `env_vars`.",
    },
}
CONTAINER_TASK: dict[str, Schema] = {
    "image": s(
        "Image to run: the name of an image in `images`, or a full external reference with a tag "
        "or digest (e.g. `python:3.11-slim`)."
    ),
    "cmd": s(
        "Command run in the container by `/bin/bash -c`, as in Liminal (the image needs bash). `{{name}}` is "
        "filled when the task runs: DAG-run conf, task variables, then Airflow's run-time values (`{{ds}}`)."
    ),
    "mounts": MOUNTS,
    "secrets": TASK_SECRETS,
    "executors": {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "description": "python: run N parallel partitions of this task, each told its index and the count "
        "(LIMINAL_SPLIT_ID, LIMINAL_NUM_SPLITS). spark: N Spark executors (spark.executor.instances).",
    },
    "no_cache": {
        "type": "boolean",
        "description": "No effect (a warning says so); image caching is set on the image.",
    },
    "application_source": s("spark: the application to run (a python file or jar); not read by python tasks."),
    "request_cpu": cpu("CPU request (Kubernetes quantity, e.g. `500m` or `2`)."),
    "request_memory": memory("Memory request (Kubernetes quantity, e.g. `512Mi`)."),
    "limit_cpu": cpu("CPU limit (Kubernetes quantity)."),
    "limit_memory": memory("Memory limit (Kubernetes quantity)."),
    "do_xcom_push": {
        "type": "boolean",
        "description": "Push the task's result to XCom (kubernetes: /airflow/xcom/return.json; docker: the "
        "last line of output).",
    },
    "output_path": s("Sets OUTPUT_PATH in the container."),
    "output_destination_path": s("Sets OUTPUT_DESTINATION_PATH in the container."),
}
SPARK_TASK: dict[str, Schema] = {
    "application_arguments": {
        "type": ["array", "object"],
        "description": "Arguments after the application: a list as written, or a map as key, value, key, value "
        "(as Liminal).",
    },
    "class": s("Entry point class of a JVM application."),
    "master": s("Spark master URL."),
    "conf": {
        "type": "object",
        "description": "Spark configuration properties, passed as `--conf key=value`; nested maps are joined "
        "with dots (`spark: {executor: {memory: 1g}}` is spark.executor.memory).",
    },
}
SQL_TASK: dict[str, Schema] = {
    "query": s("The Spark SQL query."),
    "output_table": s("Name of the output table."),
    "output_path": s("Output location."),
    "format": s("Output format (json, parquet, csv). Default parquet."),
    "partition_columns": s("Comma-separated partition column names."),
    "sub_partition_columns": s("Comma-separated sub-partition column names."),
}
STACK_TASK: dict[str, Schema] = {
    "stack_name": s("CloudFormation stack name."),
}

TASK_TYPES: dict[str, tuple[str, dict[str, Schema]]] = {
    "python": ("Runs a command in a container built from a python image.", {**COMMON_TASK, **CONTAINER_TASK}),
    "spark": ("Submits a Spark application.", {**COMMON_TASK, **CONTAINER_TASK, **SPARK_TASK}),
    "sql": ("Runs a Spark SQL query.", {**COMMON_TASK, **SQL_TASK}),
    "job_start": ("Marks the start of a pipeline run (metrics).", dict(COMMON_TASK)),
    "job_end": ("Marks the end of a pipeline run (metrics).", dict(COMMON_TASK)),
    "create_cloudformation_stack": (
        "Creates an AWS CloudFormation stack.",
        {
            **COMMON_TASK,
            **STACK_TASK,
            "properties": {"type": "object", "description": "CreateStack parameters."},
        },
    ),
    "delete_cloudformation_stack": ("Deletes an AWS CloudFormation stack.", {**COMMON_TASK, **STACK_TASK}),
    "pipeline": (
        "Placeholder in `pipeline_defaults.tasks`: stands for the pipeline's own tasks.",
        {k: COMMON_TASK[k] for k in ("task", "type", "description")},
    ),
}


def task_shape(kind: str, keys: dict[str, Schema], *, defaults: bool) -> Schema:
    props = {k: v for k, v in keys.items() if not (defaults and k in ("task", "type"))}
    title = f"{kind} task defaults" if defaults else f"{kind} task"
    return {"title": title, "type": "object", "properties": props, "additionalProperties": False}


def build() -> Schema:
    defs: dict[str, Schema] = {}
    defs["taskType"] = {
        "title": "task type",
        "enum": list(TASK_TYPES),
        "description": "; ".join(f"`{k}`: {v[0]}" for k, v in TASK_TYPES.items()),
    }
    for kind, (_, keys) in TASK_TYPES.items():
        defs[f"{kind}Task"] = task_shape(kind, keys, defaults=False)
        defs[f"{kind}TaskDefaults"] = task_shape(kind, keys, defaults=True)
    defs["task"] = {
        "title": "task",
        "type": "object",
        "description": "One step of a pipeline. Its allowed keys depend on `type`.",
        "required": ["task", "type"],
        "properties": {"type": {"$ref": "#/$defs/taskType"}},
        "allOf": [
            {
                "if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
                "then": {"$ref": f"#/$defs/{kind}Task"},
            }
            for kind in TASK_TYPES
        ],
    }
    defs["mount"] = {
        "title": "mount",
        "type": "object",
        "required": ["volume", "path"],
        "additionalProperties": False,
        "properties": {
            "mount": s("Name of the mount."),
            "volume": s("Name of a volume in `volumes`."),
            "path": s("Path inside the container."),
            "sub_path": s("Sub-path of the volume to mount."),
            "read_only": {"type": "boolean", "description": "Mount read-only."},
        },
    }
    defs["taskSecret"] = {
        "title": "task secret",
        "type": "object",
        "required": ["secret"],
        "additionalProperties": False,
        "properties": {
            "secret": s("Name of a secret in the root `secrets` section."),
            "remote_path": s("Directory inside the container where the secret appears."),
            "sub_path": s(
                "One key of the secret (kubernetes), or the file name of `local_path_file` (docker): it appears "
                "as `remote_path/sub_path`."
            ),
            "read_only": {
                "type": "boolean",
                "description": "Secrets are always mounted read-only; `false` is an error.",
            },
        },
    }
    defs["endpoint"] = {
        "title": "endpoint",
        "type": "object",
        "required": ["endpoint", "module", "function"],
        "additionalProperties": False,
        "properties": {
            "endpoint": s("URL path served, e.g. `/predict`.", pattern="^/"),
            "module": s("Python module (dotted path) holding the function, relative to the image source."),
            "function": s("Function called with the request's JSON body (or None); its return value is the response."),
        },
    }
    defs["image"] = {
        "title": "image",
        "type": "object",
        "required": ["image", "type"],
        "additionalProperties": False,
        "properties": {
            "image": {**NAME, "description": "Image name (a Docker repository name, optionally with a tag)."},
            "type": {
                "title": "image type",
                "enum": ["python", "python_server", "spark"],
                "description": "`python`: your code with its requirements.txt; `python_server`: the same, "
                "serving `endpoints` over HTTP; `spark`: a Spark-ready python image.",
            },
            "source": s("Directory with the code to package, relative to this liminal.yml. Default `.`."),
            "no_cache": {"type": "boolean", "description": "Build without the Docker layer cache."},
            "build_cmd": s("Command run while building the image (e.g. to compile)."),
            "python_version": {
                "type": ["string", "number"],
                "description": "Python version (`'3.11'`, quoted) choosing the base image among those the operator "
                "configures (LIMINAL_PYTHON_BASE_IMAGES); a version without one is an error.",
            },
            "pip_conf": s(
                "A pip.conf in the repository (relative to this liminal.yml), installed as /etc/pip.conf "
                "before `pip install -r requirements.txt`."
            ),
            "endpoints": {
                "type": "array",
                "items": {"$ref": "#/$defs/endpoint"},
                "description": "HTTP endpoints of a python_server image.",
            },
            "description": s("Free text."),
        },
    }
    defs["executor"] = {
        "title": "executor",
        "type": "object",
        "required": ["executor", "type"],
        "description": "Where tasks run. kubernetes executors take KubernetesPodOperator arguments (namespace, "
        "resources, image_pull_secrets, node_selector, affinity, tolerations, annotations, labels, do_xcom_push, "
        "...; see docs/liminal-compatibility.md); docker executors take docker_url and network_mode. Any other "
        "key is an error. emr executors are accepted, but their tasks are not run (a warning says so).",
        "properties": {
            "executor": {**NAME, "description": "Executor name, referenced by tasks."},
            "type": {
                "title": "executor type",
                "enum": ["kubernetes", "airflow", "emr", "docker"],
                "description": "`kubernetes`: a pod per task; `airflow`: inside Airflow (job_start/job_end); "
                "`emr`: AWS EMR steps; `docker`: a container on the local Docker engine.",
            },
            "description": s("Free text."),
        },
        "additionalProperties": True,
    }
    defs["volume"] = {
        "title": "volume",
        "type": "object",
        "required": ["volume"],
        "additionalProperties": False,
        "properties": {
            "volume": {**NAME, "description": "Volume name, referenced by mounts."},
            "claim_name": s("PersistentVolumeClaim name. Default `<volume>-pvc`."),
            "local": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"path": s("Host directory backing the volume in local runs.")},
                "description": "Local (development) backing of the volume.",
            },
            "description": s("Free text."),
        },
    }
    defs["secret"] = {
        "title": "secret",
        "type": "object",
        "required": ["secret"],
        "additionalProperties": False,
        "properties": {
            "secret": {**NAME, "description": "Secret name, referenced by tasks."},
            "local_path_file": s("File holding the secret for local runs."),
            "description": s("Free text."),
        },
    }
    defs["service"] = {
        "title": "service",
        "type": "object",
        "additionalProperties": False,
        "description": "A long-running server built from a python_server image.",
        "properties": {
            "service": {
                "type": ["string", "null"],
                "description": "Service name (a Kubernetes name is derived from it).",
            },
            "name": s("Service name, when `service` is left empty (accepted for compatibility)."),
            "description": s("Free text."),
            "image": s("Name of a python_server image in `images`."),
            "type": {"enum": ["python_server"], "description": "Service type."},
            "source": s("No effect (a warning says so); the image's `source` is what is built."),
            "endpoints": {
                "type": "array",
                "items": {"$ref": "#/$defs/endpoint"},
                "description": "No effect (a warning says so); the image's `endpoints` are served.",
            },
            "env_vars": ENV_VARS,
            "replicas": {"type": "integer", "minimum": 0, "description": "Number of replicas. Default 1."},
            "port": {
                "type": "integer",
                "minimum": 1,
                "maximum": 65535,
                "description": "Port the service answers on: the Kubernetes Service port (default 80), and "
                "the host port on 127.0.0.1 with local Docker (default: one Docker picks).",
            },
            "request_cpu": cpu("CPU request (Kubernetes quantity). Default `100m`."),
            "request_memory": memory("Memory request (Kubernetes quantity). Default `128Mi`."),
            "limit_cpu": cpu("CPU limit (Kubernetes quantity). Default: none."),
            "limit_memory": memory("Memory limit (Kubernetes quantity). Default: none."),
        },
    }
    defs["pipeline"] = {
        "title": "pipeline",
        "type": "object",
        "required": ["pipeline"],
        "description": "A pipeline: one Airflow DAG of tasks run in order. As Liminal, other keys go to the "
        "DAG's default_args: Airflow operator arguments (retries, retry_delay, email, email_on_failure, "
        "depends_on_past, execution_timeout, ...) are checked and passed on; max_active_runs, max_active_tasks "
        "and catchup are DAG arguments; a key close to one of these is an error, any other has no effect and "
        "is a warning.",
        "properties": {
            "pipeline": {**NAME, "description": "Pipeline name: the Airflow dag_id. Unique per controller."},
            "owner": s("Owner shown in Airflow. Default: the root `owner`."),
            "description": s("Free text shown as the DAG's documentation."),
            "start_date": {
                "type": "string",
                "format": "date",
                "description": "First logical date, `YYYY-MM-DD`.",
            },
            "schedule": {
                "type": ["string", "null"],
                "description": "Cron expression (`0 * * * *`) or Airflow preset (`@daily`); empty for "
                "manual runs only.",
            },
            "schedule_interval": {
                "type": ["string", "null"],
                "description": "Liminal's older name of `schedule` (used when `schedule` is not set).",
            },
            "timeout_minutes": {
                "type": "integer",
                "minimum": 1,
                "description": "A run that takes longer fails (dagrun_timeout).",
            },
            "paused": {
                "type": "boolean",
                "description": "Liminal GitOps: the DAG's pause state, set at creation and kept on every deploy "
                "(false unpauses it on its first deploy). Unset: Airflow's default at creation, then left to "
                "Airflow's users.",
            },
            "tasks": {
                "type": "array",
                "items": {"$ref": "#/$defs/task"},
                "description": "Tasks, run in order.",
            },
            "metrics": ref("metrics", "Liminal's metrics settings; only `backends: []` can be honoured."),
            "tags": {"type": "array", "items": {"type": "string"}, "description": "Extra Airflow DAG tags."},
            "retries": {"type": "integer", "minimum": 0, "description": "Retries of a failed task."},
            "retry_delay": {
                "type": ["number", "string"],
                "description": "Wait between retries: seconds, or `30s`, `5m`, `1h30m`, `H:MM:SS`.",
            },
            "retry_delay_seconds": {
                "type": "integer",
                "minimum": 0,
                "description": "Liminal GitOps: `retry_delay` in seconds (older files).",
            },
        },
        "additionalProperties": True,
    }
    defs["pipelineDefaults"] = {
        "title": "pipeline defaults",
        "type": "object",
        "description": "Defaults merged into every pipeline (the pipeline wins). Free-form, as in Liminal.",
        "properties": {
            "before_tasks": {
                "type": "array",
                "items": {"$ref": "#/$defs/task"},
                "description": "Tasks run before each pipeline's tasks (only from a `type: super` "
                "file; outer supers' run first).",
            },
            "after_tasks": {
                "type": "array",
                "items": {"$ref": "#/$defs/task"},
                "description": "Tasks run after each pipeline's tasks (only from a `type: super` "
                "file; outer supers' run last).",
            },
            "tasks": {
                "type": "array",
                "items": {"$ref": "#/$defs/task"},
                "description": "Tasks of a pipeline that declares none.",
            },
            "description": s("Free text."),
        },
        "additionalProperties": True,
    }
    defs["taskDefaults"] = {
        "title": "task defaults",
        "type": "object",
        "description": "Defaults per task type, merged into every task of that type (the task wins; maps such "
        "as env_vars are merged).",
        "properties": {
            "description": s("Free text."),
            **{
                kind: ref(f"{kind}TaskDefaults", f"Defaults for every `{kind}` task.")
                for kind in TASK_TYPES
                if kind != "pipeline"
            },
        },
        "additionalProperties": True,
    }
    defs["metrics"] = {
        "title": "metrics",
        "type": "object",
        "additionalProperties": False,
        "description": "Liminal's job_start/job_end metrics. No backend is reachable from the controller's "
        "tasks: a non-empty `backends` is an error (CloudWatch needs AWS credentials in Airflow).",
        "properties": {
            "namespace": s("Metrics namespace."),
            "backends": {"type": "array", "items": {"type": "string"}, "description": "Must be empty."},
        },
    }
    defs["monitoring"] = {
        "title": "monitoring",
        "type": "object",
        "additionalProperties": False,
        "description": "Not used by the controller (a warning says so).",
        "properties": {
            "metrics_backends": {
                "type": "array",
                "items": {"type": "object", "required": ["metrics_backend", "type"]},
                "description": "Metrics backends (`metrics_backend`, `type`, backend settings).",
            },
            "alerts_backends": {
                "type": "array",
                "items": {"type": "object", "required": ["alerts_backend", "type"]},
                "description": "Alert backends paired with a metrics backend.",
            },
        },
    }
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "liminal.yml",
        "description": "An Apache Liminal system: images, pipelines and services, deployed by the Liminal "
        "GitOps controller.",
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {**NAME, "description": "Name of this liminal system; `super` files are found by it."},
            "owner": s("Default owner of the pipelines."),
            "type": {
                "enum": ["super", "sub"],
                "description": "`super`: a base other files inherit from; `sub` (default): a deployable system.",
            },
            "super": s("Name of the `type: super` file this one inherits from. Default: Liminal's base."),
            "description": s("Free text."),
            "always_run": {
                "type": "boolean",
                "description": "Run every task once the one before it is done, even when it failed; the run then "
                "still fails (its `end` task fails when any task failed). Default false: a failed task stops the "
                "tasks after it and fails the run.",
            },
            "variables": {
                "type": "object",
                "description": "Values for `{{name}}` placeholders: filled when the file is loaded, except in a "
                "task's `cmd`, `env_vars` and Spark arguments, where they are filled when the task runs, after "
                "the DAG run's conf (Liminal's order).",
            },
            "volumes": {
                "type": "array",
                "items": {"$ref": "#/$defs/volume"},
                "description": "Volumes tasks mount.",
            },
            "images": {
                "type": "array",
                "items": {"$ref": "#/$defs/image"},
                "description": "Images to build.",
            },
            "executors": {
                "type": "array",
                "items": {"$ref": "#/$defs/executor"},
                "description": "Executors tasks run on (merged with the super files').",
            },
            "pipelines": {
                "type": "array",
                "items": {"$ref": "#/$defs/pipeline"},
                "description": "Pipelines: Airflow DAGs.",
            },
            "services": {
                "type": "array",
                "items": {"$ref": "#/$defs/service"},
                "description": "Long-running servers.",
            },
            "pipeline_defaults": {"$ref": "#/$defs/pipelineDefaults"},
            "task_defaults": {"$ref": "#/$defs/taskDefaults"},
            "service_defaults": {
                "type": "object",
                "description": "Defaults merged into every service (the service wins). Free-form.",
            },
            "monitoring": {"$ref": "#/$defs/monitoring"},
            "metrics": {"$ref": "#/$defs/metrics"},
            "secrets": {
                "type": "array",
                "items": {"$ref": "#/$defs/secret"},
                "description": "Secrets tasks use.",
            },
        },
        "$defs": defs,
    }
    return root


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {OUT}\n")
