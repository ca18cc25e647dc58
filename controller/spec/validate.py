"""Semantic rules over a resolved liminal.yml, building the typed System as they pass.

Pure apart from reading the repository tree to check that image sources exist and stay inside it.
Every problem is located at the text it is about, in whichever file that text came from.
"""

from __future__ import annotations

import datetime as dt
import keyword
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from croniter import croniter

from controller.model import (
    Endpoint,
    Executor,
    ExecutorType,
    Image,
    ImageType,
    Mount,
    Pipeline,
    Problem,
    Secret,
    SecretMount,
    Service,
    System,
    Task,
    Volume,
    Where,
    freeze,
    k8s_name,
)
from controller.names import (
    DAG_ID,
    DOCKER_REPO,
    DOCKER_TAG,
    ENV_NAME,
    K8S_LABEL,
    PLACEHOLDER_NAME,
    RUN_TIME_VALUES,
    TASK_ID,
)
from controller.spec.airflow_args import executor_options, pipeline_arguments
from controller.spec.resolve import AIRFLOW_RUNTIME_NAMES, RUNTIME_FIELDS, placeholders, task_variables
from controller.spec.schema import suggest
from controller.spec.yaml_positions import Node, json_path, to_plain

__all__ = ["SourceFile", "check_unique", "k8s_name", "mapping_items", "validate_system"]

SCHEDULE_PRESETS = frozenset(
    {
        "@once",
        "@continuous",
        "@hourly",
        "@daily",
        "@weekly",
        "@monthly",
        "@quarterly",
        "@yearly",
        "@annually",
        "@none",
    }
)

# Which executor types can run which task types.
EXECUTOR_TASK_TYPES: Mapping[ExecutorType, frozenset[str]] = {
    ExecutorType.KUBERNETES: frozenset({"python", "spark"}),
    ExecutorType.DOCKER: frozenset({"python", "spark"}),
    ExecutorType.EMR: frozenset({"spark", "sql"}),
    ExecutorType.AIRFLOW: frozenset(
        {"job_start", "job_end", "create_cloudformation_stack", "delete_cloudformation_stack"}
    ),
}
_TASK_KNOWN = frozenset(
    {
        "task",
        "type",
        "description",
        "executor",
        "image",
        "cmd",
        "env_vars",
        "mounts",
        "secrets",
        "executors",
        "env",
        "variables",
        "no_cache",
    }
)
_SERVICE_KNOWN = frozenset({"service", "name", "description", "image"})


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A liminal.yml on disk: `display` is how problems name it; `root` is its repository root."""

    path: Path
    display: str
    root: Path


@dataclass
class _Context:
    files: Mapping[str, SourceFile]
    problems: list[Problem] = field(default_factory=list)

    def add(self, node: Node, message: str, rule: str, *, at_key: bool = False) -> None:
        self.problems.append(node.problem(message, rule, at_key=at_key))

    def warn(self, node: Node, message: str, rule: str, *, at_key: bool = True) -> None:
        self.problems.append(node.problem(message, rule, at_key=at_key).as_warning())


def _text(node: Node | None) -> str | None:
    if node is None or node.value is None:
        return None
    return node.value if isinstance(node.value, str) else str(node.value)


def mapping_items(node: Node | None) -> list[Node]:
    """The mappings in the list `node` (nothing when it is not a list)."""
    if node is None or not isinstance(node.value, list):
        return []
    return [item for item in node.value if isinstance(item.value, dict)]


def check_unique(
    ctx_problems: list[Problem],
    nodes: Iterable[Node],
    key: Callable[[Node], str | None],
    what: str,
    rule: str,
) -> None:
    """Report every node whose `key` repeats an earlier one, naming where the first one is."""
    seen: dict[str, Node] = {}
    for node in nodes:
        name = key(node)
        if name is None:
            continue
        first = seen.get(name)
        if first is None:
            seen[name] = node
            continue
        ctx_problems.append(node.problem(f"{what} '{name}' is defined twice (first at {where(first, node)})", rule))


def where(first: Node, here: Node) -> str:
    """Where `first` is, said from `here`: `line 3, column 5`, with the file when it differs."""
    at = f"line {first.line}, column {first.col}"
    return at if first.file == here.file else f"{first.file}, {at}"


def _name_of(field_name: str) -> Callable[[Node], str | None]:
    def get(node: Node) -> str | None:
        return _text(node.get(field_name))

    return get


def _k8s_collisions(ctx: _Context, nodes: list[tuple[str, Node]], what: str) -> None:
    seen: dict[str, tuple[str, Node]] = {}
    for name, node in nodes:
        mapped = k8s_name(name)
        if not K8S_LABEL.fullmatch(mapped) or len(mapped) > 63:
            ctx.add(
                node,
                f"{what} name '{name}' cannot become a Kubernetes name (got '{mapped}'; use letters, "
                "digits, '-' and '_', at most 63, starting and ending with a letter or digit)",
                "name-mapping",
            )
            continue
        if mapped in seen and seen[mapped][0] != name:
            other, first = seen[mapped]
            ctx.add(
                node,
                f"{what} '{name}' and '{other}' (at {first.file}:{first.line}:{first.col}) both become "
                f"the Kubernetes name '{mapped}'",
                "name-collision",
            )
            continue
        seen.setdefault(mapped, (name, node))


# ---- images ----------------------------------------------------------------------------------


def _image_reference_ok(name: str) -> bool:
    repo, _, tag = name.partition(":")
    if "@" in name:
        repo = name.split("@", 1)[0]
        tag = ""
    return bool(DOCKER_REPO.fullmatch(repo.lower())) and (not tag or bool(DOCKER_TAG.fullmatch(tag)))


def _is_external(name: str) -> bool:
    """A full image reference with a tag or digest (e.g. `python:3.11-slim`), not a declared image."""
    last = name.rsplit("/", 1)[-1]
    return (":" in last or "@" in name) and _image_reference_ok(name)


def _source_dir(ctx: _Context, system_file: str, image: Node, source_node: Node | None) -> str:
    # Liminal builds every image of a system relative to the system's own liminal.yml, even when
    # the image is declared in a super file (archetypes package the app's code).
    src = ctx.files.get(system_file)
    source = _text(source_node) or "."
    where = source_node or image
    if src is None:  # an image from the built-in base file: nothing on disk to check
        return source
    if Path(source).is_absolute() or ".." in Path(source).parts:
        ctx.add(
            where,
            f"source '{source}' must be a relative path inside the repository (no '..', not absolute)",
            "source-escape",
        )
        return source
    root = src.root.resolve()
    target = src.path.parent / source
    resolved = target.resolve()
    if not resolved.is_relative_to(root):
        ctx.add(
            where,
            # where it leads is not said: the controller's own paths are none of a pull request's business
            f"source '{source}' leads outside the repository (through a symlink)",
            "source-escape",
        )
        return source
    if not resolved.is_dir():
        what = "is not a directory" if resolved.exists() else "does not exist"
        ctx.add(
            where,
            f"source '{source}' {what} (looked for {resolved.relative_to(root).as_posix() or '.'}/ in the repository)",
            "source-missing",
        )
        return source
    escaping = _escaping_symlink(resolved, root)
    if escaping is not None:
        ctx.add(
            where,
            f"source '{source}' contains a symlink leading outside the repository: "
            f"{escaping.relative_to(root).as_posix()}",
            "source-escape",
        )
    return resolved.relative_to(root).as_posix() or "."


_PYTHON_VERSION = re.compile(r"[0-9]+\.[0-9]+")


def _where(node: Node) -> Where:
    return Where(node.file, node.key_line, node.key_col, json_path(node.path))


def _repo_file(ctx: _Context, system_file: str, node: Node) -> str | None:
    """A file named relative to the system's liminal.yml, as a path relative to the repository root;
    a problem when it is not a regular file inside the repository."""
    src = ctx.files.get(system_file)
    given = _text(node) or ""
    if src is None:
        return given
    if not given or Path(given).is_absolute() or ".." in Path(given).parts:
        ctx.add(
            node, f"'{given}' must be a relative path inside the repository (no '..', not absolute)", "source-escape"
        )
        return None
    root = src.root.resolve()
    resolved = (src.path.parent / given).resolve()
    if not resolved.is_relative_to(root):
        ctx.add(node, f"'{given}' leads outside the repository (through a symlink)", "source-escape")
        return None
    if not resolved.is_file():
        ctx.add(node, f"'{given}' is not a file in the repository", "source-missing")
        return None
    return resolved.relative_to(root).as_posix()


def _escaping_symlink(directory: Path, root: Path) -> Path | None:
    for current, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in (*dirs, *files):
            path = Path(current) / name
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                return path
    return None


def _endpoints(ctx: _Context, image: Node) -> tuple[Endpoint, ...]:
    items = mapping_items(image.get("endpoints"))
    check_unique(ctx.problems, items, _name_of("endpoint"), "endpoint", "unique-name")
    out = []
    for ep in items:
        module, function, path = _text(ep.get("module")), _text(ep.get("function")), _text(ep.get("endpoint"))
        if module is None or function is None or path is None:
            continue
        if not all(part.isidentifier() and not keyword.iskeyword(part) for part in module.split(".")):
            ctx.add(
                ep.get("module") or ep,
                f"module '{module}' is not a Python module path (identifiers separated by dots)",
                "identifier",
            )
        if not function.isidentifier() or keyword.iskeyword(function):
            ctx.add(ep.get("function") or ep, f"function '{function}' is not a Python identifier", "identifier")
        out.append(Endpoint(path=path, module=module, function=function))
    return tuple(out)


def _images(ctx: _Context, root: Node) -> dict[str, Image]:
    out: dict[str, Image] = {}
    nodes = mapping_items(root.get("images"))
    for node in nodes:
        name = _text(node.get("image"))
        kind = _text(node.get("type"))
        if name is None or kind not in ImageType.__members__.values():
            continue
        if not _image_reference_ok(name):
            ctx.add(
                node.get("image") or node,
                f"image name '{name}' is not a valid Docker reference (lower-case "
                "letters, digits, '.', '_', '-', '/' and an optional ':tag')",
                "name-mapping",
            )
        version_node = node.get("python_version")
        version = _text(version_node)
        if version_node is not None and (version is None or not _PYTHON_VERSION.fullmatch(version)):
            ctx.add(
                version_node, f"python_version {version!r} must be MAJOR.MINOR, quoted (e.g. '3.11')", "python-version"
            )
        if version_node is not None and kind == ImageType.SPARK:
            ctx.warn(
                version_node,
                "python_version has no effect on a spark image: it starts from the operator's LIMINAL_SPARK_BASE_IMAGE",
                "unused-key",
            )
            version = None
        pip_conf_node = node.get("pip_conf")
        out[name] = Image(
            name=name,
            type=ImageType(str(kind)),
            source=_source_dir(ctx, root.file, node, node.get("source")),
            no_cache=bool(node.get("no_cache") and node.value["no_cache"].value),
            build_cmd=_text(node.get("build_cmd")),
            endpoints=_endpoints(ctx, node),
            defined_in=node.file,
            python_version=version,
            python_version_at=_where(version_node) if version_node is not None and version else None,
            pip_conf=_repo_file(ctx, root.file, pip_conf_node) if pip_conf_node is not None else None,
        )
    lowered = [(name.lower(), image_node) for image_node in nodes if (name := _text(image_node.get("image")))]
    seen: dict[str, Node] = {}
    for low, image_node in lowered:
        if low in seen and _text(seen[low].get("image")) != _text(image_node.get("image")):
            ctx.add(
                image_node,
                f"image '{_text(image_node.get('image'))}' and '{_text(seen[low].get('image'))}' "
                "differ only in case; Docker names are lower case",
                "name-collision",
            )
        seen.setdefault(low, image_node)
    return out


# ---- pipelines and tasks ---------------------------------------------------------------------


def _start_date(ctx: _Context, pipeline: Node) -> dt.date:
    node = pipeline.get("start_date")
    if node is None or node.value is None:
        ctx.add(
            pipeline,
            "pipeline has no start_date (set it on the pipeline or in pipeline_defaults)",
            "required",
        )
        return dt.date(1970, 1, 1)
    value = node.value
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        ctx.add(node, f"start_date '{value}' is not a date (YYYY-MM-DD)", "start-date")
        return dt.date(1970, 1, 1)


def _schedule(ctx: _Context, pipeline: Node) -> str | None:
    node = pipeline.get("schedule_interval") or pipeline.get("schedule")
    text = _text(node)
    if node is None or text is None:
        return None
    if text in SCHEDULE_PRESETS:
        return text
    if text.startswith("@") or not croniter.is_valid(text):
        ctx.add(
            node,
            f"schedule '{text}' is not a cron expression (5 fields, e.g. '0 * * * *') or an Airflow "
            f"preset ({', '.join(sorted(SCHEDULE_PRESETS))})",
            "cron",
        )
    return text


def _env_vars(ctx: _Context, task: Node) -> dict[str, str]:
    node = task.get("env_vars")
    out: dict[str, str] = {}
    if node is None or not isinstance(node.value, dict):
        return out
    for name, value in node.value.items():
        if not ENV_NAME.fullmatch(name):
            ctx.add(value, f"'{name}' is not a valid environment variable name", "env-name", at_key=True)
        out[name] = "" if value.value is None else _as_env_text(value.value)
    return out


def _as_env_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)  # Liminal passes str(v): True -> "True"
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True, slots=True)
class _SystemScope:
    images: Mapping[str, Image]
    executors: Mapping[str, Executor]
    volumes: Mapping[str, Volume]
    secrets: Mapping[str, Secret]
    variables: Mapping[str, Any]
    always_run: bool = False


def _task(ctx: _Context, node: Node, scope: _SystemScope) -> Task | None:
    name = _text(node.get("task"))
    kind = _text(node.get("type"))
    if name is None or kind is None:
        return None
    if not TASK_ID.fullmatch(name):
        ctx.add(
            node.get("task") or node,
            f"task name '{name}' may only hold letters, digits, '-' and '_' (it becomes the Airflow task_id)",
            "name-mapping",
        )
    executor_node = node.get("executor")
    executor_name = _text(executor_node)
    executor: Executor | None = None
    if executor_name is None:
        ctx.add(
            node,
            f"{kind} task '{name}' has no executor (set `executor`, or task_defaults.{kind}.executor)",
            "unknown-executor",
        )
    else:
        executor = scope.executors.get(executor_name)
        if executor is None:
            declared = ", ".join(sorted(scope.executors)) or "none"
            ctx.add(
                executor_node or node,
                f"executor '{executor_name}' is not declared (declared: {declared})"
                f"{suggest(executor_name, scope.executors)}",
                "unknown-executor",
            )
        elif kind not in EXECUTOR_TASK_TYPES[executor.type]:
            ctx.add(
                executor_node or node,
                f"executor '{executor_name}' ({executor.type}) cannot run {kind} tasks; "
                f"it runs: {', '.join(sorted(EXECUTOR_TASK_TYPES[executor.type]))}",
                "executor-task-type",
            )
    runs_container = executor is not None and executor.type.runs_containers
    image = _text(node.get("image"))
    external = False
    if runs_container:
        if image is None:
            ctx.add(
                node,
                f"{kind} task '{name}' has no image (set `image`, or task_defaults.{kind}.image)",
                "required",
            )
        elif image not in scope.images:
            if _is_external(image):
                external = True
            else:
                ctx.add(
                    node.get("image") or node,
                    f"image '{image}' is not declared in images; declare it, or give a full reference with a "
                    f"tag (e.g. python:3.11-slim){suggest(image, scope.images)}",
                    "unknown-image",
                )
    cmd = _text(node.get("cmd"))
    if kind == "python" and runs_container and cmd is None:
        ctx.add(node, f"python task '{name}' has no cmd", "required")
    if kind == "spark" and _text(node.get("application_source")) is None:
        ctx.add(node, f"spark task '{name}' has no application_source", "required")
    if kind == "spark" and (cmd_node := node.get("cmd")) is not None:
        ctx.add(
            cmd_node,
            "a spark task runs spark-submit built from application_source, class, master, conf and "
            "application_arguments (as in Liminal); `cmd` is not used",
            "spark-cmd",
            at_key=True,
        )
    if kind == "sql" and _text(node.get("query")) is None:
        ctx.add(node, f"sql task '{name}' has no query", "required")
    if executor is not None and (executor.type is ExecutorType.EMR or kind in _NOT_RUN):
        ctx.warn(
            node.get("type") or node,
            f"{kind} tasks on {executor.type} executors are not run by the Liminal GitOps controller: the task "
            "is deployed as one that fails with this reason when it runs",
            "not-run",
            at_key=False,
        )
    docker = executor is not None and executor.type is ExecutorType.DOCKER
    mounts = []
    for m in mapping_items(node.get("mounts")):
        volume = _text(m.get("volume")) or ""
        if volume not in scope.volumes:
            declared = ", ".join(sorted(scope.volumes)) or "none"
            ctx.add(
                m.get("volume") or m,
                f"mount names volume '{volume}', which is not declared in volumes "
                f"(declared: {declared}){suggest(volume, scope.volumes)}",
                "unknown-volume",
            )
        path = _text(m.get("path")) or ""
        if not path.startswith("/"):
            ctx.add(m.get("path") or m, f"mount path '{path}' must be absolute", "mount-path")
        read_only = m.get("read_only")
        mounts.append(
            Mount(
                name=_text(m.get("mount")) or volume,
                volume=volume,
                path=path,
                sub_path=_text(m.get("sub_path")),
                read_only=bool(read_only and read_only.value),
            )
        )
    secrets = []
    for s in mapping_items(node.get("secrets")):
        secret = _text(s.get("secret")) or ""
        if secret not in scope.secrets:
            ctx.add(
                s.get("secret") or s,
                f"secret '{secret}' is not declared in secrets{suggest(secret, scope.secrets)}",
                "unknown-secret",
            )
        read_only = s.get("read_only")
        if read_only is not None and read_only.value is not True:
            ctx.add(
                read_only,
                "secrets are always mounted read-only (a Kubernetes secret volume, or a read-only bind of "
                "local_path_file); `read_only: false` cannot be honoured",
                "secret-read-only",
            )
        sub_path_node = s.get("sub_path")
        sub_path = _text(sub_path_node)
        if sub_path_node is not None and (not sub_path or "/" in sub_path or sub_path in (".", "..")):
            ctx.add(
                sub_path_node, "sub_path names one key (file) of the secret: no '/', not '.' or '..'", "secret-sub-path"
            )
        secrets.append(
            SecretMount(secret=secret, remote_path=_text(s.get("remote_path")) or "/secret", sub_path=sub_path or None)
        )
    variables = node.get("variables")
    if (
        variables is not None
        and isinstance(variables.value, str)
        and not isinstance(scope.variables.get(variables.value), dict)
    ):
        ctx.add(
            variables,
            f"task variables name '{variables.value}', which is not a map in `variables`",
            "unknown-variables",
        )
    partitions_node = node.get("executors")
    partitions = partitions_node.value if partitions_node is not None and isinstance(partitions_node.value, int) else 1
    _unused_task_keys(ctx, node, kind, docker)
    options = {k: to_plain(v) for k, v in node.value.items() if k not in _TASK_KNOWN}
    if kind == "spark":
        options.update(_spark_options(ctx, node, partitions))
        partitions = 1
    return Task(
        name=name,
        type=kind,
        executor=executor_name or "",
        executor_type=executor.type if executor is not None else ExecutorType.AIRFLOW,
        image=image,
        external_image=external,
        cmd=cmd,
        env_vars=freeze(_env_vars(ctx, node)),
        mounts=tuple(mounts),
        secrets=tuple(secrets),
        partitions=partitions,
        description=_text(node.get("description")),
        options=freeze(options),
        variables=freeze(_run_time_variables(ctx, node, scope)),
    )


_NOT_RUN = frozenset({"sql", "create_cloudformation_stack", "delete_cloudformation_stack"})


def _unused_task_keys(ctx: _Context, node: Node, kind: str, docker: bool) -> None:
    """Warnings for keys a task may carry (Liminal accepts them) that change nothing here."""
    env = node.get("env")
    if env is not None:
        ctx.warn(env, "`env` is not read (as in Liminal); use `env_vars`", "unused-key")
    no_cache = node.get("no_cache")
    if no_cache is not None:
        ctx.warn(no_cache, "`no_cache` on a task has no effect; set it on the image", "unused-key")
    if kind == "python" and (source := node.get("application_source")) is not None:
        ctx.warn(source, "`application_source` is read by spark tasks only; a python task runs `cmd`", "unused-key")
    if docker:
        for key in ("request_cpu", "request_memory"):
            if (found := node.get(key)) is not None:
                ctx.warn(found, f"`{key}` has no effect on a docker executor (Docker takes limits only)", "unused-key")


def _spark_options(ctx: _Context, node: Node, partitions: int) -> dict[str, Any]:
    """Spark's conf flattened with dots (`spark: {executor: {memory: 1g}}` is `spark.executor.memory`),
    and `executors: N` as `spark.executor.instances`: N executors of one application."""
    conf_node = node.get("conf")
    flat: dict[str, str] = {}
    if conf_node is not None and isinstance(conf_node.value, dict):
        _flatten(conf_node, "", flat)
    executors = node.get("executors")
    if executors is not None and partitions > 1:
        if "spark.executor.instances" in flat:
            ctx.add(
                executors,
                "`executors` asks for spark.executor.instances, which `conf` sets too; set one of them",
                "spark-executors",
                at_key=True,
            )
        flat["spark.executor.instances"] = str(partitions)
    return {"conf": flat} if flat or conf_node is not None else {}


def _flatten(node: Node, prefix: str, out: dict[str, str]) -> None:
    for key, child in node.value.items():
        name = f"{prefix}{key}"
        if isinstance(child.value, dict):
            _flatten(child, name + ".", out)
        else:
            out[name] = _as_env_text(child.value)


def _run_time_variables(ctx: _Context, task: Node, scope: _SystemScope) -> dict[str, str]:
    """The variables the task's run-time strings name (system variables, then the task's own), as
    text; every other placeholder there is checked: Airflow templates and objects are refused, names
    nothing defines are a warning (only a DAG run's conf can fill them)."""
    effective = {k: _as_env_text(v) for k, v in scope.variables.items()}
    effective.update({str(k): _as_env_text(v) for k, v in task_variables(task, scope.variables).items()})
    used: dict[str, str] = {}
    for key in sorted(RUNTIME_FIELDS):
        field_node = task.get(key)
        if field_node is None:
            continue
        for text_node in _strings(field_node):
            for inner in placeholders(text_node.value):
                _check_placeholder(ctx, text_node, inner, effective, used)
    return used


def _strings(node: Node) -> list[Node]:
    value = node.value
    if isinstance(value, str):
        return [node]
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return [s for child in children for s in _strings(child)]
    return []


def _check_placeholder(
    ctx: _Context, node: Node, inner: str, effective: Mapping[str, str], used: dict[str, str]
) -> None:
    if not PLACEHOLDER_NAME.fullmatch(inner):
        ctx.add(
            node,
            f"'{{{{ {inner} }}}}' is a template expression; Airflow templates are never evaluated here. Use a plain "
            "name: a variable, a DAG-run conf key, or an Airflow run-time value such as {{ds}}",
            "template",
        )
        return
    if inner in effective:
        used[inner] = effective[inner]
        return
    root = inner.split(".", 1)[0]
    if root in RUN_TIME_VALUES:
        return
    if root in AIRFLOW_RUNTIME_NAMES:
        ctx.add(
            node,
            f"'{{{{{inner}}}}}' names Airflow's `{root}`, which a liminal.yml cannot read (run-time values it may "
            f"name: {', '.join(sorted(RUN_TIME_VALUES))})",
            "template",
        )
        return
    ctx.warn(
        node,
        f"'{{{{{inner}}}}}' is neither a variable nor an Airflow run-time value: it is filled only when a DAG run's "
        "conf gives it, and stays as written otherwise",
        "unknown-placeholder",
        at_key=False,
    )


def _pipeline(ctx: _Context, node: Node, scope: _SystemScope, owner: str | None) -> Pipeline | None:
    name = _text(node.get("pipeline"))
    if name is None:
        return None
    if not DAG_ID.fullmatch(name):
        ctx.add(
            node.get("pipeline") or node,
            f"pipeline name {name!r} may only hold letters, digits, '.', '-' and '_', not start with '.', and be at "
            "most 250 long (it becomes the Airflow dag_id and a file name)",
            "name-mapping",
        )
    timeout = node.get("timeout_minutes")
    if timeout is None:
        ctx.add(
            node,
            "pipeline has no timeout_minutes (set it on the pipeline or in pipeline_defaults)",
            "required",
        )
    # a `type: pipeline` task only marks where a pipeline's own tasks go in pipeline_defaults.tasks
    task_nodes = [t for t in mapping_items(node.get("tasks")) if _text(t.get("type")) != "pipeline"]
    check_unique(ctx.problems, task_nodes, _name_of("task"), "task", "unique-name")
    # names that are not valid task ids are reported once, by _task
    _k8s_collisions(ctx, [(n, t) for t in task_nodes if (n := _text(t.get("task"))) and TASK_ID.fullmatch(n)], "task")
    tasks = tuple(t for t in (_task(ctx, n, scope) for n in task_nodes) if t is not None)
    passed = pipeline_arguments(node)
    ctx.problems.extend(passed.problems)
    _metrics(ctx, node.get("metrics"))
    monitoring = node.get("monitoring")
    if monitoring is not None:
        ctx.warn(
            monitoring, "`monitoring` is not used by the controller (Liminal drops it from pipelines too)", "unused-key"
        )
    return Pipeline(
        name=name,
        owner=_text(node.get("owner")) or owner,
        start_date=_start_date(ctx, node),
        schedule=_schedule(ctx, node),
        timeout_minutes=timeout.value if timeout is not None and isinstance(timeout.value, int) else 0,
        tasks=tasks,
        description=_text(node.get("description")),
        default_args=freeze(passed.default_args),
        paused=_paused(ctx, node),
        dag_options=freeze(passed.dag_options),
        unused=freeze(passed.unused),
        always_run=scope.always_run,
    )


def _metrics(ctx: _Context, node: Node | None) -> None:
    """Liminal's `metrics` (namespace, backends): its job_start/job_end report to the backends listed.
    No backend can be reached from here; an empty list (what Liminal's examples use) reports nothing."""
    if node is None or not isinstance(node.value, dict):
        return
    backends = node.get("backends")
    for backend in backends.value if backends is not None and isinstance(backends.value, list) else []:
        ctx.add(
            backend,
            f"metrics backend {backend.value!r} is not supported: the controller's job_start/job_end tasks report no "
            "metrics (Airflow's own StatsD/OpenTelemetry metrics cover each run); CloudWatch would need AWS "
            "credentials in Airflow. Use `backends: []`",
            "metrics-backend",
        )


def _paused(ctx: _Context, pipeline: Node) -> bool | None:
    node = pipeline.get("paused")
    if node is None or node.value is None:
        return None
    if not isinstance(node.value, bool):
        ctx.add(node, f"paused must be true or false, not {node.value!r}", "type")
        return None
    return node.value


def _service(ctx: _Context, node: Node, images: Mapping[str, Image]) -> Service | None:
    name = _text(node.get("service")) or _text(node.get("name"))
    if name is None:
        ctx.add(node, "service has no name (set `service`)", "required")
        return None
    image = _text(node.get("image"))
    if image is None:
        ctx.add(node, f"service '{name}' has no image", "required")
        return None
    declared = images.get(image)
    if declared is None:
        ctx.add(
            node.get("image") or node,
            f"service image '{image}' is not declared in images{suggest(image, images)}",
            "unknown-image",
        )
    elif declared.type is not ImageType.PYTHON_SERVER:
        ctx.add(
            node.get("image") or node,
            f"service image '{image}' is a {declared.type} image; a service needs a python_server image",
            "service-image-type",
        )
    for key, used in (("source", "the image's `source` is what is built"), ("endpoints", "the image's are served")):
        if (found := node.get(key)) is not None:
            ctx.warn(found, f"`{key}` on a service has no effect; {used}", "unused-key")
    options = {k: to_plain(v) for k, v in node.value.items() if k not in _SERVICE_KNOWN}
    return Service(name=name, image=image, description=_text(node.get("description")), options=freeze(options))


def service_name(node: Node) -> str | None:
    """The name of a service node (`service`, or `name` when `service` is empty)."""
    return _text(node.get("service")) or _text(node.get("name"))


def validate_system(
    resolved: Node,
    supers: tuple[str, ...],
    variables: Mapping[str, Any],
    files: Mapping[str, SourceFile],
) -> tuple[System | None, list[Problem]]:
    """Apply the semantic rules to one resolved system and build its typed form.

    Returns the System (None when a required part is missing) and the problems found; the System
    is only usable when the problem list is empty.
    """
    ctx = _Context(files)
    name = _text(resolved.get("name")) or ""
    owner = _text(resolved.get("owner"))
    images = _images(ctx, resolved)
    executor_nodes = {n: e for e in mapping_items(resolved.get("executors")) if (n := _text(e.get("executor")))}
    executors = {}
    for n, e in executor_nodes.items():
        kind = _text(e.get("type"))
        if kind not in ExecutorType.__members__.values():
            continue
        options, found = executor_options(e, str(kind))
        ctx.problems.extend(found)
        executors[n] = Executor(name=n, type=ExecutorType(str(kind)), options=freeze(options))
    volume_nodes = mapping_items(resolved.get("volumes"))
    check_unique(ctx.problems, volume_nodes, _name_of("volume"), "volume", "unique-name")
    _k8s_collisions(ctx, [(n, v) for v in volume_nodes if (n := _text(v.get("volume")))], "volume")
    volumes = {}
    for v in volume_nodes:
        vname = _text(v.get("volume"))
        if vname is None:
            continue
        local = v.get("local")
        local_node = local.get("path") if local is not None else None
        local_path = _text(local_node)
        if local_node is not None and local_path is not None and not local_path.startswith("/"):
            # Liminal resolves it against the folder `liminal deploy` ran in; a controller has no such folder
            # (a checkout changes with every commit), so the volume is used as one without `local`
            ctx.warn(
                local_node,
                f"relative local path '{local_path}' is not used: it names a folder of the machine that ran "
                "`liminal deploy`, and a controller has none; the volume is used as one without `local` (a Docker "
                f"named volume '{_text(v.get('claim_name')) or vname + '-pvc'}', or that existing Kubernetes claim)",
                "volume-local-path",
                at_key=False,
            )
            local_path = None
        volumes[vname] = Volume(
            name=vname,
            claim_name=_text(v.get("claim_name")) or f"{vname}-pvc",
            local_path=local_path,
        )
    secret_nodes = mapping_items(resolved.get("secrets"))
    check_unique(ctx.problems, secret_nodes, _name_of("secret"), "secret", "unique-name")
    secrets = {
        n: Secret(name=n, local_path_file=_text(s.get("local_path_file")))
        for s in secret_nodes
        if (n := _text(s.get("secret")))
    }
    always_run = resolved.get("always_run")
    scope = _SystemScope(
        images, executors, volumes, secrets, variables, always_run is not None and always_run.value is True
    )
    _metrics(ctx, resolved.get("metrics"))
    pipelines = tuple(
        p for p in (_pipeline(ctx, n, scope, owner) for n in mapping_items(resolved.get("pipelines"))) if p is not None
    )
    service_nodes = mapping_items(resolved.get("services"))
    services = tuple(s for s in (_service(ctx, n, images) for n in service_nodes) if s is not None)
    monitoring = resolved.get("monitoring")
    if monitoring is not None:
        ctx.warn(monitoring, "`monitoring` is not used by the controller (metrics and alerts go nowhere)", "unused-key")
    system = System(
        name=name,
        file=resolved.file,
        owner=owner,
        supers=supers,
        images=tuple(images.values()),
        executors=tuple(executors.values()),
        volumes=tuple(volumes.values()),
        secrets=tuple(secrets.values()),
        pipelines=pipelines,
        services=services,
        variables=freeze(variables),
        monitoring=freeze(to_plain(monitoring)) if monitoring is not None else freeze({}),
    )
    return system, ctx.problems
