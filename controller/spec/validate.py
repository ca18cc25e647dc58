"""Semantic rules over a resolved liminal.yml, building the typed System as they pass.

Pure apart from reading the repository tree to check that image sources exist and stay inside it.
Every problem is located at the text it is about, in whichever file that text came from.
"""

from __future__ import annotations

import datetime as dt
import keyword
import os
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
    freeze,
    k8s_name,
)
from controller.names import DAG_ID, DOCKER_REPO, DOCKER_TAG, ENV_NAME, K8S_LABEL, TASK_ID
from controller.spec.schema import suggest
from controller.spec.yaml_positions import Node, to_plain

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
_PIPELINE_KNOWN = frozenset(
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
        out[name] = Image(
            name=name,
            type=ImageType(str(kind)),
            source=_source_dir(ctx, root.file, node, node.get("source")),
            no_cache=bool(node.get("no_cache") and node.value["no_cache"].value),
            build_cmd=_text(node.get("build_cmd")),
            endpoints=_endpoints(ctx, node),
            defined_in=node.file,
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
    if kind == "sql" and _text(node.get("query")) is None:
        ctx.add(node, f"sql task '{name}' has no query", "required")
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
        secrets.append(SecretMount(secret=secret, remote_path=_text(s.get("remote_path")) or "/secret"))
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
    options = {k: to_plain(v) for k, v in node.value.items() if k not in _TASK_KNOWN}
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
    default_args = {k: to_plain(v) for k, v in node.value.items() if k not in _PIPELINE_KNOWN}
    return Pipeline(
        name=name,
        owner=_text(node.get("owner")) or owner,
        start_date=_start_date(ctx, node),
        schedule=_schedule(ctx, node),
        timeout_minutes=timeout.value if timeout is not None and isinstance(timeout.value, int) else 0,
        tasks=tasks,
        description=_text(node.get("description")),
        default_args=freeze(default_args),
        paused=_paused(ctx, node),
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
    executors = {
        n: Executor(
            name=n,
            type=ExecutorType(str(_text(e.get("type")))),
            options=freeze({k: to_plain(v) for k, v in e.value.items() if k not in ("executor", "type")}),
        )
        for n, e in executor_nodes.items()
        if _text(e.get("type")) in ExecutorType.__members__.values()
    }
    volume_nodes = mapping_items(resolved.get("volumes"))
    check_unique(ctx.problems, volume_nodes, _name_of("volume"), "volume", "unique-name")
    _k8s_collisions(ctx, [(n, v) for v in volume_nodes if (n := _text(v.get("volume")))], "volume")
    volumes = {}
    for v in volume_nodes:
        vname = _text(v.get("volume"))
        if vname is None:
            continue
        local = v.get("local")
        volumes[vname] = Volume(
            name=vname,
            claim_name=_text(v.get("claim_name")) or f"{vname}-pvc",
            local_path=_text(local.get("path")) if local is not None else None,
        )
    secret_nodes = mapping_items(resolved.get("secrets"))
    check_unique(ctx.problems, secret_nodes, _name_of("secret"), "secret", "unique-name")
    secrets = {
        n: Secret(name=n, local_path_file=_text(s.get("local_path_file")))
        for s in secret_nodes
        if (n := _text(s.get("secret")))
    }
    scope = _SystemScope(images, executors, volumes, secrets, variables)
    pipelines = tuple(
        p for p in (_pipeline(ctx, n, scope, owner) for n in mapping_items(resolved.get("pipelines"))) if p is not None
    )
    service_nodes = mapping_items(resolved.get("services"))
    services = tuple(s for s in (_service(ctx, n, images) for n in service_nodes) if s is not None)
    monitoring = resolved.get("monitoring")
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
