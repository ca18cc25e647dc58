"""Configuration from `liminal-controller.yaml` and the environment: the only module reading `os.environ`.

The file (path in LIMINAL_CONFIG; unset: $LIMINAL_HOME/liminal-controller.yaml when it exists)
holds the same names as the environment, lower case and without the `LIMINAL_` prefix
(`registry: 127.0.0.1:5000`); the environment wins.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import yaml

from controller.errors import ConfigError
from controller.model import Policies, RepoPolicy
from controller.render.settings import RenderSettings, ServingTarget

__all__ = [
    "DEFAULT_CONFIG",
    "KNOWN_NAMES",
    "SECRET_NAMES",
    "ControllerSettings",
    "controller_settings",
    "log_format",
    "log_level",
    "placeholder_environ",
    "read_config",
    "render_settings",
    "secret_values",
]

_SECRET_LIKE = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|(^|_)KEY($|_)", re.IGNORECASE)

DEFAULT_CONFIG = "liminal-controller.yaml"
"""Read from $LIMINAL_HOME (default ./.liminal) when LIMINAL_CONFIG is unset."""

KNOWN_NAMES = frozenset(
    {
        "home",
        "ledger_url",
        "dags_folder",
        "airflow_url",
        "airflow_username",
        "airflow_password",
        "airflow_token",
        "airflow_parse_timeout",
        "rollout_timeout",
        "registry",
        "base_image",
        "spark_base_image",
        "python_base_images",
        "namespace",
        "serving",
        "task_docker_url",
        "git_token",
        "git_username",
        "git_ssh_key_file",
        "github_webhook_secret",
        "gitlab_webhook_token",
        "github_token",
        "gitlab_token",
        "github_app_id",
        "github_app_private_key",
        "github_app_installation_id",
        "api_token",
        "listen",
        "poll_interval",
        "drift_interval",
        "allow_unsigned_webhooks",
        "public_url",
        "github_api_url",
        "gitlab_api_url",
        "images",
        "registry_username",
        "registry_password",
        "allow_local_remotes",
        "allow_http_remotes",
        "git_timeout",
        "placeholder_env",
        "policy_file",
        "retention_days",
        "retention_runs",
        "checkouts_kept",
        "upkeep_interval",
        "gc_interval",
        "render_cache_entries",
        "docker_host",
        "api_reads",
    }
)
"""Settings names, as written in the file; the environment spells them `LIMINAL_<NAME>`."""

SECRET_NAMES = frozenset(
    {
        "ledger_url",
        "airflow_password",
        "airflow_token",
        "git_token",
        "github_webhook_secret",
        "gitlab_webhook_token",
        "github_token",
        "gitlab_token",
        "github_app_private_key",
        "api_token",
        "registry_password",
    }
)
"""Settings that may hold credentials: each can also be read from a file named by
`LIMINAL_<NAME>_FILE` (or `<name>_file` in the config file), as mounted Kubernetes or Docker
secrets are. The value itself wins over the file."""


def placeholder_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables that `{{name}}` placeholders may read at load time: only those the
    operator lists in LIMINAL_PLACEHOLDER_ENV (comma-separated names; unset: none).

    Liminal fills placeholders from the whole environment after `variables`. A controller holds
    credentials and addresses in its environment, and a pull request's content is untrusted, so
    nothing is read unless named: a liminal.yml must never copy the controller's environment into
    a plan, a DAG or a manifest. A listed name that looks like a credential, or a `LIMINAL_*`
    setting, is a configuration error.
    """
    source = os.environ if environ is None else environ
    return _placeholder_environ(read_config(source), source)


def _placeholder_environ(values: Mapping[str, str], source: Mapping[str, str]) -> dict[str, str]:
    names = [n.strip() for n in values.get("placeholder_env", "").split(",") if n.strip()]
    for name in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(f"LIMINAL_PLACEHOLDER_ENV: {name!r} is not an environment variable name")
        if name.startswith("LIMINAL_") or _SECRET_LIKE.search(name):
            raise ConfigError(
                f"LIMINAL_PLACEHOLDER_ENV names {name}, which looks like a credential or a controller setting;"
                " placeholders never read those"
            )
    return {name: source[name] for name in names if name in source}


def log_format(environ: Mapping[str, str] | None = None) -> str:
    """`json` or `console` (LIMINAL_LOG_FORMAT): how structured log events are written to stderr."""
    env = os.environ if environ is None else environ
    return "json" if env.get("LIMINAL_LOG_FORMAT", "").lower() == "json" else "console"


def log_level(environ: Mapping[str, str] | None = None) -> int:
    """The lowest level of log events written (LIMINAL_LOG_LEVEL: debug, info, warning, error; default info).

    Debug adds every line of image build output (`image.build.log`)."""
    env = os.environ if environ is None else environ
    name = env.get("LIMINAL_LOG_LEVEL", "info").strip().lower() or "info"
    levels = {"debug": 10, "info": 20, "warning": 30, "error": 40}
    if name not in levels:
        raise ConfigError(f"LIMINAL_LOG_LEVEL must be one of {', '.join(levels)}, not {name!r}")
    return levels[name]


def read_config(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The merged settings (file, then environment) as name -> text, names as in KNOWN_NAMES.

    A secret's `_file` form is read here, so nothing downstream knows where a value came from.
    """
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    path = env.get("LIMINAL_CONFIG")
    if path:
        values.update(_read_file(Path(path)))
    else:  # the file beside the state, where `./scripts/demo` writes its settings
        default = Path(env.get("LIMINAL_HOME") or ".liminal") / DEFAULT_CONFIG
        if default.is_file():
            values.update(_read_file(default))
    for name in KNOWN_NAMES:
        if f"LIMINAL_{name.upper()}" in env:
            values[name] = env[f"LIMINAL_{name.upper()}"]
    for name in SECRET_NAMES:
        from_env = env.get(f"LIMINAL_{name.upper()}_FILE")
        if from_env:
            values[f"{name}_file"] = from_env
        secret_file = values.pop(f"{name}_file", None)
        if secret_file and not values.get(name):
            values[name] = _read_secret(name, secret_file)
    return values


def secret_values(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The configured credentials' values, for redaction (empty when the configuration is unreadable)."""
    try:
        values = read_config(environ)
    except ConfigError:
        return ()
    found = {values[name] for name in SECRET_NAMES if values.get(name)}
    # the ledger URL's password is the secret part, not the whole URL
    return tuple(sorted((v for v in found if len(v) >= 4), key=len, reverse=True))


def _read_secret(name: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        # the path may be shown; the content never is
        raise ConfigError(f"cannot read LIMINAL_{name.upper()}_FILE {path}: {exc.strerror}") from exc


def render_settings(environ: Mapping[str, str] | None = None) -> RenderSettings:
    """RenderSettings from file and environment; unset names keep their documented defaults."""
    return _render_settings(read_config(environ))


def _render_settings(values: Mapping[str, str]) -> RenderSettings:
    defaults = RenderSettings()
    serving = values.get("serving", defaults.serving.value)
    if serving not in ServingTarget.__members__.values():
        raise ConfigError(f"LIMINAL_SERVING must be one of {', '.join(ServingTarget)}; got {serving!r}")
    return RenderSettings(
        registry=values.get("registry", defaults.registry),
        base_image=values.get("base_image") or defaults.base_image,
        python_base_images=_python_base_images(values.get("python_base_images", "")),
        spark_base_image=values.get("spark_base_image") or defaults.spark_base_image,
        namespace=values.get("namespace") or defaults.namespace,
        serving=ServingTarget(serving),
        docker_url=values.get("task_docker_url") or defaults.docker_url,
    )


def _python_base_images(text: str) -> tuple[tuple[str, str], ...]:
    """`3.11=python:3.11-slim,3.12=registry/py:3.12` as sorted (version, image) pairs."""
    pairs: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        version, sep, image = (x.strip() for x in item.partition("="))
        if not sep or not re.fullmatch(r"[0-9]+\.[0-9]+", version) or not image:
            raise ConfigError(
                f"LIMINAL_PYTHON_BASE_IMAGES takes VERSION=IMAGE pairs separated by commas (3.11=python:3.11-slim); "
                f"got {item!r}"
            )
        pairs[version] = image
    return tuple(sorted(pairs.items()))


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """Where the controller keeps its state and where it deploys."""

    home: Path
    """Working directory: git cache, SQLite ledger, locks (LIMINAL_HOME, default ./.liminal)."""

    ledger_url: str
    """SQLAlchemy URL of the ledger (LIMINAL_LEDGER_URL, default sqlite:///$LIMINAL_HOME/ledger.db)."""

    dags_folder: Path
    """Airflow dags folder DAG files are written to (LIMINAL_DAGS_FOLDER, default $LIMINAL_HOME/dags)."""

    render: RenderSettings
    """What shapes rendered content."""

    git_token: str | None = None
    """HTTPS token for git remotes (LIMINAL_GIT_TOKEN or LIMINAL_GIT_TOKEN_FILE); never logged."""

    git_username: str = "x-access-token"
    """User name sent with the token (LIMINAL_GIT_USERNAME)."""

    git_ssh_key_file: str | None = None
    """SSH private key for ssh:// remotes (LIMINAL_GIT_SSH_KEY_FILE)."""

    images: bool = True
    """Build and push images on the Docker engine (LIMINAL_IMAGES=docker|off)."""

    docker_host: str | None = None
    """The Docker engine images are built on and local services run on (LIMINAL_DOCKER_HOST,
    e.g. unix:///run/docker.sock); unset: DOCKER_HOST, as the docker SDK reads it."""

    registry_username: str | None = None
    """Registry user (LIMINAL_REGISTRY_USERNAME); with LIMINAL_REGISTRY_PASSWORD(_FILE)."""

    registry_password: str | None = None

    airflow_url: str | None = None
    """Airflow 3 API server (LIMINAL_AIRFLOW_URL, e.g. http://127.0.0.1:8080); unset: DAGs only go to the folder."""

    airflow_username: str | None = None
    """Airflow user (LIMINAL_AIRFLOW_USERNAME) with LIMINAL_AIRFLOW_PASSWORD(_FILE), or LIMINAL_AIRFLOW_TOKEN(_FILE)."""

    airflow_password: str | None = None
    airflow_token: str | None = None

    airflow_parse_timeout: float = 60.0
    """Seconds to wait for Airflow to show a delivered DAG (LIMINAL_AIRFLOW_PARSE_TIMEOUT)."""

    kubeconfig: str | None = None
    """Kubeconfig file for LIMINAL_SERVING=kubernetes (KUBECONFIG, its first file); unset: ~/.kube/config,
    else the in-cluster service account."""

    rollout_timeout: float = 300.0
    """Seconds a service's rollout may take before its change fails (LIMINAL_ROLLOUT_TIMEOUT)."""

    listen: str = "127.0.0.1:8080"
    """Address `liminal serve` listens on (LIMINAL_LISTEN, host:port)."""

    poll_interval: float = 180.0
    """Seconds between polls of each repository, jittered by 20% (LIMINAL_POLL_INTERVAL)."""

    drift_interval: float = 60.0
    """Seconds between observations of each repository's live state, without a fetch, jittered by
    20% (LIMINAL_DRIFT_INTERVAL); drift is restored when the repository's self-heal is on."""

    github_webhook_secret: str | None = None
    gitlab_webhook_token: str | None = None
    api_token: str | None = None
    """Bearer token for the API's POST endpoints (LIMINAL_API_TOKEN(_FILE)); unset, they are refused."""

    api_reads_need_token: bool = False
    """LIMINAL_API_READS=token: the API's reads and the web UI need the API token too (a browser
    signs in once per session); `public` (default): anyone who reaches the controller may read."""

    github_token: str | None = None
    """Token that shows pull-request checks on GitHub (LIMINAL_GITHUB_TOKEN(_FILE)): commit statuses
    and the plan comment; check runs only when it is a GitHub App's installation token."""

    github_app_id: str | None = None
    """The GitHub App that shows pull-request checks as check runs (LIMINAL_GITHUB_APP_ID); with
    its private key it takes the place of `github_token`."""

    github_app_private_key: str | None = None
    """The GitHub App's private key, PEM (LIMINAL_GITHUB_APP_PRIVATE_KEY(_FILE))."""

    github_app_installation_id: str | None = None
    """The App's installation (LIMINAL_GITHUB_APP_INSTALLATION_ID); unset, it is looked up per repository."""

    gitlab_token: str | None = None
    """Token that shows merge-request checks on GitLab (LIMINAL_GITLAB_TOKEN(_FILE)): a commit
    status and the plan note."""

    github_api_url: str = "https://api.github.com"
    """GitHub's REST API (LIMINAL_GITHUB_API_URL; GitHub Enterprise: https://HOST/api/v3)."""

    gitlab_api_url: str = "https://gitlab.com/api/v4"
    """GitLab's REST API (LIMINAL_GITLAB_API_URL; self-hosted: https://HOST/api/v4)."""

    public_url: str | None = None
    """How users reach this controller (LIMINAL_PUBLIC_URL): check statuses link to its API."""

    allow_unsigned_webhooks: bool = False
    """Serve a webhook endpoint without its secret (LIMINAL_ALLOW_UNSIGNED_WEBHOOKS=true); never in production."""

    allow_local_remotes: bool = False
    """Track local paths and file:// remotes (LIMINAL_ALLOW_LOCAL_REMOTES=true): the demo and tests.
    Off by default: whoever adds a repository could otherwise deploy any directory the controller reads."""

    allow_http_remotes: bool = False
    """Track plain http:// remotes and send them the git token (LIMINAL_ALLOW_HTTP_REMOTES=true).
    Off by default: the token and the content would cross the network in clear text."""

    policies: Policies = field(default_factory=Policies)
    """What each repository's liminal.yml may ask for (LIMINAL_POLICY_FILE); the safe default without one."""

    git_timeout: float = 300.0
    """Seconds one git command may take before it is killed (LIMINAL_GIT_TIMEOUT): a hanging remote
    never holds a worker."""

    placeholders: Mapping[str, str] = field(default_factory=dict)
    """The environment variables `{{NAME}}` placeholders may read (LIMINAL_PLACEHOLDER_ENV)."""

    retention_days: float = 90.0
    """Runs, outcomes, processed deliveries and image build records older than this many days
    are deleted (LIMINAL_RETENTION_DAYS); what is live never is."""

    retention_runs: int = 100
    """Runs kept per repository whatever their age (LIMINAL_RETENTION_RUNS)."""

    checkouts_kept: int = 5
    """Per-commit checkouts kept per repository besides the live one (LIMINAL_CHECKOUTS_KEPT)."""

    upkeep_interval: float = 600.0
    """Seconds between upkeep passes of `liminal serve`: retention, checkout tidying, git gc when
    due, the disk-usage figure (LIMINAL_UPKEEP_INTERVAL)."""

    gc_interval: float = 86400.0
    """Seconds between `git gc` runs of each repository's mirror (LIMINAL_GC_INTERVAL)."""

    render_cache_entries: int = 5000
    """Parsed files, rendered pipelines and desired states a process keeps in memory, least
    recently used dropped first (LIMINAL_RENDER_CACHE_ENTRIES; about 10 KB each for a small
    liminal.yml). About five per tracked repository keep every poll and small change cheap."""

    def __repr__(self) -> str:
        return (
            f"ControllerSettings(home={self.home}, ledger_url=<hidden>, dags_folder={self.dags_folder}, "
            f"git_token={'***' if self.git_token else None}, images={self.images}, airflow_url={self.airflow_url})"
        )


def controller_settings(environ: Mapping[str, str] | None = None) -> ControllerSettings:
    """ControllerSettings from file and environment; every name has a default that needs no config."""
    env = os.environ if environ is None else environ
    values = read_config(env)
    home = Path(values.get("home") or ".liminal").absolute()
    token = values.get("git_token") or None
    render = _render_settings(values)
    return ControllerSettings(
        home=home,
        ledger_url=values.get("ledger_url") or f"sqlite:///{home / 'ledger.db'}",
        dags_folder=Path(values.get("dags_folder") or home / "dags").absolute(),
        render=render,
        git_token=token,
        git_username=values.get("git_username") or "x-access-token",
        git_ssh_key_file=values.get("git_ssh_key_file") or None,
        images=_images(values.get("images", "docker")),
        docker_host=values.get("docker_host") or None,
        registry_username=values.get("registry_username") or None,
        registry_password=values.get("registry_password") or None,
        airflow_url=values.get("airflow_url") or None,
        airflow_username=values.get("airflow_username") or None,
        airflow_password=values.get("airflow_password") or None,
        airflow_token=values.get("airflow_token") or None,
        airflow_parse_timeout=_seconds("airflow_parse_timeout", values.get("airflow_parse_timeout") or "60"),
        kubeconfig=(env.get("KUBECONFIG") or "").split(os.pathsep)[0] or None,
        rollout_timeout=_seconds("rollout_timeout", values.get("rollout_timeout") or "300"),
        listen=values.get("listen") or "127.0.0.1:8080",
        poll_interval=_seconds("poll_interval", values.get("poll_interval") or "180"),
        drift_interval=_seconds("drift_interval", values.get("drift_interval") or "60"),
        github_webhook_secret=values.get("github_webhook_secret") or None,
        gitlab_webhook_token=values.get("gitlab_webhook_token") or None,
        api_token=values.get("api_token") or None,
        api_reads_need_token=_reads(values.get("api_reads", "public"), values.get("api_token")),
        allow_unsigned_webhooks=_flag(values.get("allow_unsigned_webhooks")),
        github_token=values.get("github_token") or None,
        github_app_id=values.get("github_app_id") or None,
        github_app_private_key=values.get("github_app_private_key") or None,
        github_app_installation_id=values.get("github_app_installation_id") or None,
        gitlab_token=values.get("gitlab_token") or None,
        github_api_url=values.get("github_api_url") or "https://api.github.com",
        gitlab_api_url=values.get("gitlab_api_url") or "https://gitlab.com/api/v4",
        public_url=values.get("public_url") or None,
        allow_local_remotes=_flag(values.get("allow_local_remotes")),
        allow_http_remotes=_flag(values.get("allow_http_remotes")),
        git_timeout=_seconds("git_timeout", values.get("git_timeout") or "300"),
        policies=_policies(values.get("policy_file"), render.namespace),
        placeholders=MappingProxyType(_placeholder_environ(values, env)),
        retention_days=_number("retention_days", values.get("retention_days") or "90", 0.001, 36500),
        retention_runs=int(_number("retention_runs", values.get("retention_runs") or "100", 1, 1_000_000)),
        checkouts_kept=int(_number("checkouts_kept", values.get("checkouts_kept") or "5", 1, 1000)),
        upkeep_interval=_number("upkeep_interval", values.get("upkeep_interval") or "600", 1, 86400),
        gc_interval=_number("gc_interval", values.get("gc_interval") or "86400", 60, 30 * 86400),
        render_cache_entries=int(
            _number("render_cache_entries", values.get("render_cache_entries") or "5000", 100, 10_000_000)
        ),
    )


_POLICY_KEYS = frozenset(
    {"executor_types", "namespaces", "service_accounts", "cluster_contexts", "docker_settings", "host_mounts"}
)


def _policies(path: str | None, namespace: str) -> Policies:
    """The policy file: `default:` (every repository not named) and `repositories: {NAME: ...}`,
    each a mapping of RepoPolicy fields; a repository's entry starts from `default`. A list may be
    `["*"]` (anything). Without a file: the safe default, with the controller's namespace."""
    builtin = RepoPolicy(namespaces=(namespace,))
    if not path:
        return Policies(default=builtin)
    where = f"LIMINAL_POLICY_FILE {path}"
    data = _read_yaml(Path(path), where) or {}
    if not isinstance(data, dict) or set(data) - {"default", "repositories"}:
        raise ConfigError(f"{where} must be a mapping with `default` and `repositories`")
    default = _policy(data.get("default"), builtin, f"{where}: default")
    repositories = data.get("repositories") or {}
    if not isinstance(repositories, dict):
        raise ConfigError(f"{where}: `repositories` must map repository names to policies")
    return Policies(
        default=default,
        repositories=MappingProxyType(
            {
                str(name): _policy(entry, default, f"{where}: repositories.{name}")
                for name, entry in repositories.items()
            }
        ),
    )


def _policy(entry: object, base: RepoPolicy, where: str) -> RepoPolicy:
    if entry is None:
        return base
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping")
    unknown = sorted(str(k) for k in entry if k not in _POLICY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_POLICY_KEYS))})")
    changes: dict[str, object] = {}
    for key, value in entry.items():
        if key in ("docker_settings", "host_mounts"):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: `{key}` must be true or false")
            changes[key] = value
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f'{where}: `{key}` must be a list of names (or ["*"] for any)')
        if "*" in value:
            changes[key] = None
        elif key == "executor_types":
            wrong = sorted(set(value) - {"kubernetes", "airflow", "emr", "docker"})
            if wrong:
                raise ConfigError(f"{where}: unknown executor type(s) {', '.join(wrong)}")
            changes[key] = frozenset(value)
        else:
            changes[key] = tuple(value)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def _seconds(name: str, value: str) -> float:
    try:
        found = float(value)
    except ValueError:
        found = -1.0
    if not 0 < found <= 3600:
        raise ConfigError(f"LIMINAL_{name.upper()} must be a number of seconds (0 < s <= 3600); got {value!r}")
    return found


def _number(name: str, value: str, low: float, high: float) -> float:
    try:
        found = float(value)
    except ValueError:
        found = low - 1
    if not low <= found <= high:
        raise ConfigError(f"LIMINAL_{name.upper()} must be a number from {low:g} to {high:g}; got {value!r}")
    return found


def _reads(value: str, token: str | None) -> bool:
    if value not in ("public", "token"):
        raise ConfigError(f"LIMINAL_API_READS must be public or token; got {value!r}")
    if value == "token" and not token:
        raise ConfigError("LIMINAL_API_READS=token needs LIMINAL_API_TOKEN (or LIMINAL_API_TOKEN_FILE)")
    return value == "token"


def _images(value: str) -> bool:
    if value not in ("docker", "off"):
        raise ConfigError(f"LIMINAL_IMAGES must be docker or off; got {value!r}")
    return value == "docker"


def _read_yaml(path: Path, what: str) -> object:
    """An operator's YAML file; ConfigError naming `what` when it cannot be read or parsed."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        # the position only: PyYAML's message quotes the offending line, which may hold a secret
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{what} is not valid YAML{where}") from None


def _read_file(path: Path) -> dict[str, str]:
    data = _read_yaml(path, f"config file {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of setting names to values")
    allowed = KNOWN_NAMES | {f"{n}_file" for n in SECRET_NAMES}
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return {str(k): "" if v is None else str(v) for k, v in data.items()}
