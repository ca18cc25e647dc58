"""Shared, immutable types passed between the stages (source -> load -> render -> plan -> apply).

Every type is a frozen dataclass holding tuples and read-only mappings, so a stage can never
change what an earlier stage produced.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import urllib.parse
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

__all__ = [
    "EMPTY",
    "UNRESTRICTED",
    "Action",
    "BuildRecord",
    "BuildStatus",
    "Change",
    "CheckReport",
    "Conclusion",
    "ContextFile",
    "DagFile",
    "DeliveryKind",
    "DeliveryStatus",
    "Deployed",
    "DeployedState",
    "DesiredState",
    "Endpoint",
    "Executor",
    "ExecutorType",
    "ForgeText",
    "Health",
    "Image",
    "ImageBuild",
    "ImageType",
    "Memo",
    "Mount",
    "Origin",
    "Pipeline",
    "Plan",
    "Policies",
    "Problem",
    "PullRequest",
    "RepoPolicy",
    "RepoRef",
    "Resource",
    "ResourceKey",
    "ResourceKind",
    "ResourceOutcome",
    "ResultCode",
    "RunStatus",
    "Secret",
    "SecretMount",
    "Service",
    "ServiceDeployment",
    "Snapshot",
    "Spec",
    "SyncRun",
    "System",
    "TargetResult",
    "Task",
    "Trigger",
    "Volume",
    "Where",
    "freeze",
    "k8s_name",
    "memoized",
]

EMPTY: Mapping[str, Any] = MappingProxyType({})
"""The shared empty read-only mapping."""

_T = TypeVar("_T")


class Memo(Protocol):
    """A content-keyed cache that load and render may use to skip work; results never depend on it.

    One Memo view belongs to one checkout: `tree_id` answers for that checkout's directories.
    """

    def tree_id(self, path: str) -> str | None:
        """Git's id of the repository-relative directory `path` ('' or '.' for the root), or None
        when it is unknown or holds a symlink (a symlink's target is not fixed by the id)."""
        ...

    def get_or_make(self, space: str, key: Hashable, make: Callable[[], _T]) -> _T:
        """The value stored under (`space`, `key`), made by `make()` and stored on a miss."""
        ...


def memoized(memo: Memo | None, space: str, key: Hashable | None, make: Callable[[], _T]) -> _T:
    """`make()` through `memo`; made afresh when there is no memo or no trustworthy key (None)."""
    if memo is None or key is None:
        return make()
    return memo.get_or_make(space, key, make)


def freeze(value: Any) -> Any:
    """Return a deep read-only copy of JSON-like data: dicts become mappings, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def k8s_name(name: str) -> str:
    """The Kubernetes name derived from a Liminal name: lower case, `_` and `.` become `-`."""
    return re.sub(r"[_.]", "-", name.lower())


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the input, located as precisely as a compiler would.

    `line` and `col` are 1-based; `path` is a JSON path into the file (`$.pipelines[0].tasks[1]`).
    `rule` names the check that failed, so tools can filter or count problems.
    """

    file: str
    line: int
    col: int
    path: str
    message: str
    rule: str
    severity: str = "error"
    """`error` (the file is not deployed) or `warning` (deployed; something in it has no effect or
    may not do what it seems to). `liminal validate --strict` treats warnings as errors."""

    @property
    def is_error(self) -> bool:
        """True for an error, False for a warning."""
        return self.severity == "error"

    def as_warning(self) -> Problem:
        """The same problem with severity `warning`."""
        return Problem(self.file, self.line, self.col, self.path, self.message, self.rule, "warning")

    def render(self) -> str:
        """Format as `file:line:col: error: path: message` (or `warning:`), the shape editors and CI parse."""
        return f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.path}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        """The problem as the JSON object `liminal validate --format json` prints."""
        return {
            "file": self.file,
            "line": self.line,
            "column": self.col,
            "path": self.path,
            "message": self.message,
            "rule": self.rule,
            "severity": self.severity,
        }

    def sort_key(self) -> tuple[str, int, int, str]:
        """Order problems by file and position."""
        return (self.file, self.line, self.col, self.message)


@dataclass(frozen=True, slots=True)
class Where:
    """A place in a liminal.yml, kept by load for problems that only render can find."""

    file: str
    line: int
    col: int
    path: str

    def problem(self, message: str, rule: str) -> Problem:
        """An error at this place."""
        return Problem(self.file, self.line, self.col, self.path, message, rule)


class ImageType(enum.StrEnum):
    """Image kinds Liminal builds."""

    PYTHON = "python"
    PYTHON_SERVER = "python_server"
    SPARK = "spark"

    @property
    def serves_http(self) -> bool:
        """True when the image runs the serving runtime."""
        return self is ImageType.PYTHON_SERVER


class ExecutorType(enum.StrEnum):
    """Where a task runs."""

    KUBERNETES = "kubernetes"
    AIRFLOW = "airflow"
    EMR = "emr"
    DOCKER = "docker"

    @property
    def runs_containers(self) -> bool:
        """True when the executor runs the task's image as a container."""
        return self in (ExecutorType.KUBERNETES, ExecutorType.DOCKER)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An HTTP endpoint of a python_server image mapped to `module.function`."""

    path: str
    module: str
    function: str


@dataclass(frozen=True, slots=True)
class Image:
    """An image to build. `source` is relative to the repository root (POSIX separators)."""

    name: str
    type: ImageType
    source: str
    no_cache: bool
    build_cmd: str | None
    endpoints: tuple[Endpoint, ...]
    defined_in: str
    python_version: str | None = None
    """Liminal's `python_version`: which configured base image the build starts from (None: the default)."""
    python_version_at: Where | None = None
    pip_conf: str | None = None
    """Liminal's `pip_conf`: a pip.conf in the repository (POSIX, relative to its root) used by `pip install`."""


@dataclass(frozen=True, slots=True)
class Executor:
    """A named executor; `options` are its extra settings (e.g. KubernetesPodOperator arguments)."""

    name: str
    type: ExecutorType
    options: Mapping[str, Any] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class Volume:
    """A volume tasks may mount."""

    name: str
    claim_name: str
    local_path: str | None


@dataclass(frozen=True, slots=True)
class Mount:
    """A volume mounted into a task's container."""

    name: str
    volume: str
    path: str
    sub_path: str | None = None
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret declared at the root of a liminal.yml."""

    name: str
    local_path_file: str | None


@dataclass(frozen=True, slots=True)
class SecretMount:
    """A declared secret made available to a task at `remote_path`."""

    secret: str
    remote_path: str
    sub_path: str | None = None
    """One key of the secret (one file), which then appears as `remote_path/sub_path`."""


@dataclass(frozen=True, slots=True)
class Task:
    """A task after defaults, super files and variables are applied.

    `partitions` is Liminal's `executors: N`: N parallel copies of the task.
    `external_image` is True when `image` is a full reference, not a declared image.
    `options` holds the type-specific settings (spark `conf`, sql `query`, ...).
    """

    name: str
    type: str
    executor: str
    executor_type: ExecutorType
    image: str | None = None
    external_image: bool = False
    cmd: str | None = None
    env_vars: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    mounts: tuple[Mount, ...] = ()
    secrets: tuple[SecretMount, ...] = ()
    partitions: int = 1
    description: str | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    variables: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    """The variables (the system's, then the task's own) that the task's run-time strings name,
    as text: filled when the task runs, after the DAG run's conf (Liminal's order)."""


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A pipeline: one Airflow DAG. `tasks` are in run order, before/after tasks included."""

    name: str
    owner: str | None
    start_date: dt.date
    schedule: str | None
    timeout_minutes: int
    tasks: tuple[Task, ...]
    description: str | None = None
    default_args: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    paused: bool | None = None
    """The DAG's pause state as git says; None leaves it to Airflow (Liminal's behaviour)."""
    dag_options: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    """DAG arguments besides default_args (`max_active_runs`, `max_active_tasks`, `catchup`)."""
    unused: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    """Pipeline keys no Airflow operator takes: Liminal passes them on, Airflow ignores them (each is
    a warning); kept so that `liminal show` can say what was resolved."""
    always_run: bool = False
    """Liminal's root `always_run`: every task runs whatever failed before it, and `end` then fails
    the run if anything failed."""


@dataclass(frozen=True, slots=True)
class Service:
    """A long-running python_server service."""

    name: str
    image: str
    description: str | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class System:
    """One resolved liminal.yml (a subliminal with its super chain applied)."""

    name: str
    file: str
    owner: str | None
    supers: tuple[str, ...]
    images: tuple[Image, ...]
    executors: tuple[Executor, ...]
    volumes: tuple[Volume, ...]
    secrets: tuple[Secret, ...]
    pipelines: tuple[Pipeline, ...]
    services: tuple[Service, ...]
    variables: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    monitoring: Mapping[str, Any] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class Spec:
    """Everything a repository declares: the input of render."""

    systems: tuple[System, ...]
    files: tuple[str, ...] = field(default=())
    warnings: tuple[Problem, ...] = ()
    """Located warnings of every file, sorted (errors raise InputError instead)."""


# ---- desired state: what render produces and plan compares ----------------------------------


class ResourceKind(enum.StrEnum):
    """What a resource is; the kind decides the apply wave (images, claims and secrets first, then
    DAGs, then services)."""

    IMAGE = "image"
    CLAIM = "claim"
    """A PersistentVolumeClaim a Kubernetes task mounts: made from a `local` volume, else required to exist."""
    SECRET = "secret"
    """A Kubernetes Secret a task mounts: never made from git, required to exist."""
    DAG = "dag"
    SERVICE = "service"

    @property
    def wave(self) -> int:
        """Apply order: a DAG or service may only go live once the images, claims and secrets it names exist."""
        return {
            ResourceKind.IMAGE: 0,
            ResourceKind.CLAIM: 0,
            ResourceKind.SECRET: 0,
            ResourceKind.DAG: 1,
            ResourceKind.SERVICE: 2,
        }[self]


@dataclass(frozen=True, slots=True, order=True)
class ResourceKey:
    """A resource's identity: (repo, kind, name). Its content is identified by the content hash."""

    repo: str
    kind: ResourceKind
    name: str

    def __str__(self) -> str:
        return f"{self.repo}/{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where rendered content came from: stamped on DAG tags and manifest annotations.

    The stamp is not part of any content hash: a commit that leaves a resource unchanged does
    not touch it, so the stamp names the commit that last changed what is deployed.
    """

    repo: str
    commit: str


@dataclass(frozen=True, slots=True)
class ContextFile:
    """One file of an image build context.

    `path` is POSIX, relative to the context root. `mode` is normalised to 0o644, 0o755 or
    0o120777 (symlink) because git only keeps those and umasks differ between machines.
    `origin` is the file's path in the repository checkout (POSIX, relative to its root, so a
    build spec names the same files in every checkout); `data` holds generated files (Dockerfile,
    serving runtime).
    `link` is a symlink's target.
    """

    path: str
    mode: int
    sha256: str
    size: int
    origin: str | None = None
    data: bytes | None = None
    link: str | None = None


@dataclass(frozen=True, slots=True)
class ImageBuild:
    """Everything needed to build one image, without touching Docker.

    `tag` is `registry/name:<first 12 hex of content_hash>`; `files` are sorted by path and
    include the generated `Dockerfile`.
    """

    name: str
    repository: str
    tag: str
    dockerfile: str
    files: tuple[ContextFile, ...]
    no_cache: bool
    content_hash: str


@dataclass(frozen=True, slots=True)
class DagFile:
    """A rendered Airflow DAG: `payload` is the stamped pipeline as one line of JSON (what the
    controller delivers). The standalone file (the fixed loader followed by that JSON) is made
    from it when written (controller.render.dags.dag_text): kept per DAG, the loader was 95% of
    every desired state in memory and on disk."""

    dag_id: str
    filename: str
    payload: str


@dataclass(frozen=True, slots=True)
class ServiceDeployment:
    """A rendered service as its target applies it: the container of the local Docker engine
    (`target` "docker"), or the manifests of Kubernetes (`target` "kubernetes")."""

    target: str
    container: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    manifests: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> ServiceDeployment | None:
        """The deployment a (stamped) service body describes; None when it is not one. What the
        ledger keeps is the body, so deployed services are read back through this."""
        if not isinstance(body, Mapping):
            return None
        if body.get("target") == "docker" and isinstance(body.get("container"), Mapping):
            return cls("docker", container=MappingProxyType(dict(body["container"])))
        if body.get("target") == "kubernetes" and isinstance(body.get("manifests"), list | tuple):
            return cls("kubernetes", manifests=tuple(MappingProxyType(dict(m)) for m in body["manifests"]))
        return None


@dataclass(frozen=True, slots=True)
class Resource:
    """One thing the controller deploys.

    `body` is JSON-ready data describing the rendered content (what is recorded and diffed);
    `content_hash` is a sha256 over it, origin stamp excluded. `artifact` is the typed payload
    a target applies (an `ImageBuild`, a `DagFile`, or None when the body is the payload).
    """

    key: ResourceKey
    content_hash: str
    body: Mapping[str, Any]
    depends_on: tuple[ResourceKey, ...] = ()
    artifact: ImageBuild | DagFile | ServiceDeployment | None = None

    @property
    def wave(self) -> int:
        """The apply wave of this resource's kind."""
        return self.key.kind.wave


@dataclass(frozen=True, slots=True)
class DesiredState:
    """What one repository at one commit wants deployed: the output of render (pure data)."""

    origin: Origin
    resources: tuple[Resource, ...]
    warnings: tuple[Problem, ...] = ()
    """What the files ask for that has no effect or may not do what it seems (deployed anyway)."""
    not_deployed: tuple[ResourceKey, ...] = ()
    """What the files ask for that no target of this controller deploys (images off, no serving
    target): left out of the plan, and said so, never a silent no-op."""

    def by_key(self) -> Mapping[ResourceKey, Resource]:
        """The resources indexed by key."""
        return MappingProxyType({r.key: r for r in self.resources})


# ---- sync: sources, plans, outcomes ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RepoRef:
    """A tracked repository. `url` never holds credentials (they come from files or the environment)."""

    name: str
    url: str
    branch: str = "main"
    prune: bool = True
    self_heal: bool = True
    """Restore live state that drifted from git (Argo CD's selfHeal); off, drift is only reported."""


@dataclass(frozen=True, slots=True)
class RepoPolicy:
    """What a repository's liminal.yml may ask for beyond its own pipelines (Argo CD's AppProject,
    kept small). The operator sets it; a liminal.yml asking for more is invalid.

    The default is safe: every executor type, the controller's namespace only, no service account,
    no Kubernetes cluster context, no Docker engine or network override, no host paths."""

    executor_types: frozenset[str] | None = None
    """Executor types allowed (`kubernetes`, `airflow`, `emr`, `docker`); None: all."""

    namespaces: tuple[str, ...] | None = ("default",)
    """Kubernetes namespaces an executor's `namespace` may name (the controller's namespace by
    default); None: any."""

    service_accounts: tuple[str, ...] | None = ()
    """Kubernetes service accounts an executor's `service_account_name` may name; None: any."""

    cluster_contexts: tuple[str, ...] | None = ()
    """kubeconfig contexts an executor's `cluster_context` may name (another cluster is another
    trust domain); None: any."""

    docker_settings: bool = False
    """May a `docker` executor set `docker_url` (another engine) or `network_mode` (e.g. `host`)."""

    host_mounts: bool = False
    """May volumes use `local.path` and secrets `local_path_file` (paths on the host that runs the task)."""


UNRESTRICTED = RepoPolicy(
    namespaces=None,
    service_accounts=None,
    cluster_contexts=None,
    docker_settings=True,
    host_mounts=True,
)
"""No policy: what `liminal validate` and `render` check a working copy against (the operator's own)."""


@dataclass(frozen=True, slots=True)
class Policies:
    """The policy of each tracked repository: `repositories[name]`, else `default`."""

    default: RepoPolicy = field(default_factory=RepoPolicy)
    repositories: Mapping[str, RepoPolicy] = field(default_factory=lambda: EMPTY)

    def for_repo(self, name: str) -> RepoPolicy:
        """The policy that applies to the repository named `name`."""
        return self.repositories.get(name, self.default)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One commit of a repository checked out read-only at `root`."""

    repo: RepoRef
    commit: str
    root: Path


class Action(enum.StrEnum):
    """What a plan does to one resource."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    NOOP = "noop"

    @property
    def changes_something(self) -> bool:
        """True unless the resource is already as desired."""
        return self is not Action.NOOP


@dataclass(frozen=True, slots=True)
class Deployed:
    """What the ledger says is deployed for one resource."""

    key: ResourceKey
    content_hash: str
    commit: str
    body: Mapping[str, Any] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class DeployedState:
    """Everything the ledger says is deployed for one repository."""

    resources: Mapping[ResourceKey, Deployed] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Change:
    """One resource's planned change. `diff` is a unified diff of the rendered bodies."""

    key: ResourceKey
    action: Action
    desired_hash: str | None
    deployed_hash: str | None
    diff: str = ""
    brief: str = ""
    """The diff without the volatile fields (commit and hash stamps): what a person reads."""
    drifted: bool = False
    """An update that restores a live resource changed behind the controller's back."""

    @property
    def wave(self) -> int:
        """The apply wave (images, DAGs, services); deletes run in reverse order."""
        return self.key.kind.wave


@dataclass(frozen=True, slots=True)
class Plan:
    """The changes that make what is deployed equal to what git wants."""

    changes: tuple[Change, ...]

    @property
    def is_noop(self) -> bool:
        """True when nothing needs to change."""
        return not any(c.action.changes_something for c in self.changes)

    def counts(self) -> dict[str, int]:
        """How many changes of each action, for summaries."""
        out = {a.value: 0 for a in Action}
        for change in self.changes:
            out[change.action.value] += 1
        return out


class ResultCode(enum.StrEnum):
    """How applying one change ended."""

    APPLIED = "applied"
    IN_SYNC = "in_sync"
    FAILED = "failed"
    SKIPPED = "skipped"
    DELETED = "deleted"

    @property
    def ok(self) -> bool:
        """True when the resource is now as desired."""
        return self in (ResultCode.APPLIED, ResultCode.IN_SYNC, ResultCode.DELETED)


class Health(enum.StrEnum):
    """How a served resource is doing, as its target reports it (UNKNOWN: the target cannot tell)."""

    HEALTHY = "healthy"
    PROGRESSING = "progressing"
    STARTING = "starting"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    STOPPED = "stopped"
    ABSENT = "absent"
    UNKNOWN = "unknown"

    @classmethod
    def of(cls, text: str) -> Health:
        """The health a target's own word names (Docker's `running`/`healthy`...), UNKNOWN for others."""
        try:
            return cls(text)
        except ValueError:
            return cls.UNKNOWN


class Trigger(enum.StrEnum):
    """What started a sync run."""

    CLI = "cli"
    API = "api"
    WEBHOOK = "webhook"
    POLL = "poll"
    RETRY = "retry"
    DRIFT = "drift"
    ROLLBACK = "rollback"


class DeliveryKind(enum.StrEnum):
    """What a webhook delivery asks for."""

    PUSH = "push"
    PULL_REQUEST = "pull_request"
    PING = "ping"
    OTHER = "other"


class DeliveryStatus(enum.StrEnum):
    """Where a webhook delivery is: QUEUED until a run covers it (or it is refused)."""

    QUEUED = "queued"
    PROCESSED = "processed"
    IGNORED = "ignored"
    DUPLICATE = "duplicate"


class BuildStatus(enum.StrEnum):
    """How one image build ended."""

    BUILT = "built"
    PUSHED = "pushed"
    FAILED = "failed"


class Conclusion(enum.StrEnum):
    """How a pull-request check ended (GitHub's check run conclusions; GitLab's states are mapped)."""

    SUCCESS = "success"
    """Valid, nothing to warn about: merging deploys the plan."""
    NEUTRAL = "neutral"
    """Valid with warnings: merging deploys the plan, but something in it has no effect here."""
    FAILURE = "failure"
    """Invalid (nothing would be deployed), or the check could not run."""
    CANCELLED = "cancelled"
    """Superseded: a newer head of the same pull request is checked instead."""


@dataclass(frozen=True, slots=True)
class PullRequest:
    """The pull (merge) request head a check is about, as its forge names it."""

    provider: str
    project: str
    """GitHub `owner/name`, GitLab project id."""
    number: int
    commit: str
    web_url: str | None = None
    """The repository's page (`https://github.com/owner/name`), for links to lines; None: no links."""
    plan_url: str | None = None
    """The controller's page with the whole plan (a check run's details, a status's target)."""


@dataclass(frozen=True, slots=True)
class ForgeText:
    """What a forge accepts: its largest texts, and where a file at a commit lives under a
    repository's page (`blob` on GitHub, `-/blob` on GitLab)."""

    summary_chars: int
    comment_chars: int
    blob: str
    annotations: int = 500
    """Problems put on lines at most; the rest are counted in the summary."""

    def line_url(self, pr: PullRequest, path: str, line: int) -> str | None:
        """The forge's page of `path` at the checked commit, scrolled to `line`."""
        if not pr.web_url:
            return None
        quoted = urllib.parse.quote(path, safe="/")
        return f"{pr.web_url.rstrip('/')}/{self.blob}/{pr.commit}/{quoted}#L{line}"


@dataclass(frozen=True, slots=True)
class CheckReport:
    """A pull-request check's outcome in forge words, cut to the forge's limits."""

    conclusion: Conclusion
    title: str
    """One line (a commit status's description; a check run's title)."""
    summary: str
    """Markdown: what merging would deploy, per kind, with content hashes; warnings."""
    annotations: tuple[Problem, ...] = ()
    """Problems and warnings to put on their lines."""
    comment: str | None = None
    """The plan comment's Markdown (table, folded diffs, problems linked to lines); None leaves
    the pull request's comment as it is (a superseded head must not overwrite a newer plan)."""


@dataclass(frozen=True, slots=True)
class TargetResult:
    """What a target reports for one resource it applied or deleted: the code and why. `apply`
    makes the outcome of it (the plan knows the action and the hash)."""

    key: ResourceKey
    code: ResultCode
    message: str = ""
    retry_after: float | None = None
    """Set when the failure is temporary (a target unreachable): the loop retries after this long."""


@dataclass(frozen=True, slots=True)
class ResourceOutcome:
    """What happened to one resource in an apply."""

    key: ResourceKey
    action: Action
    code: ResultCode
    content_hash: str | None
    message: str = ""
    retry_after: float | None = None
    """Set when the failure is temporary (a target unreachable): the loop retries after this long."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook delivery, as recorded before it is acknowledged.

    `kind` is `push` (the tracked branch moved: reconcile), `pull_request` (check a PR's head),
    `ping` or `other`; `status` is `queued` until processed, then `processed` or `ignored`.
    """

    provider: str
    delivery_id: str
    event: str
    kind: DeliveryKind
    repo: str | None = None
    ref: str | None = None
    commit: str | None = None
    pull_request: int | None = None
    status: DeliveryStatus = DeliveryStatus.QUEUED
    reason: str | None = None
    id: int | None = None
    project: str | None = None
    """The provider's name for the repository (GitHub `owner/name`, GitLab project id), for statuses."""
    web_url: str | None = None
    """The repository's page on the forge (a pull request's check links problems to its lines)."""


@dataclass(frozen=True, slots=True)
class ServiceEndpoint:
    """Where a deployed service answers, and how it is doing (for `liminal status`)."""

    url: str | None
    health: Health
    detail: str = ""


class RunStatus(enum.StrEnum):
    """How a sync run ended (RUNNING while it has not)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    NOOP = "noop"
    FAILED = "failed"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class SyncRun:
    """One reconcile of one repository, as recorded in the ledger."""

    id: int
    repo: str
    trigger: Trigger
    commit: str | None
    status: RunStatus
    started_at: dt.datetime
    finished_at: dt.datetime | None
    error: str | None
    outcomes: tuple[ResourceOutcome, ...] = ()
    summary: Mapping[str, Any] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class Pruned:
    """Ledger rows one retention pass removed, by table."""

    runs: int = 0
    outcomes: int = 0
    deliveries: int = 0
    builds: int = 0


@dataclass(frozen=True, slots=True)
class BuildRecord:
    """One finished build (and push), for the ledger's image_builds table."""

    repo: str
    image: str
    tag: str
    content_hash: str
    status: BuildStatus
    digest: str | None
    seconds: float
    message: str | None
