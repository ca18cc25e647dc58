"""The `liminal` command. Exit codes: 0 success, 1 the input (or a sync) failed, 2 usage or configuration.

Errors become messages here and only here (`_fail`).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from controller.config import (
    ControllerSettings,
    controller_settings,
    log_format,
    log_level,
    placeholder_environ,
    render_settings,
    secret_values,
)
from controller.errors import ConfigError, InputError, LiminalError
from controller.model import (
    Deployed,
    Origin,
    Problem,
    RepoRef,
    RunStatus,
    ServiceEndpoint,
    Spec,
    Trigger,
)
from controller.names import is_repo_name
from controller.render.settings import ServingTarget

if TYPE_CHECKING:
    from controller.ledger import Ledger
    from controller.ports import CheckReporter
    from controller.sync.deps import Deps
    from controller.targets.images import BuildProgress

# Commands import what they use (git, Docker, Kubernetes, Airflow's client, SQL, the web app) when
# they run: `liminal --help` and `liminal validate` load none of it (tests/test_cli.py pins this).

__all__ = ["main"]

FORMATS = click.Choice(["text", "json"])


def _fail(exc: LiminalError, fmt: str) -> NoReturn:
    if isinstance(exc, InputError):
        _problems([*exc.problems, *exc.warnings], fmt)
        noun = "problem" if len(exc.problems) == 1 else "problems"
        more = f" and {len(exc.warnings)} warning(s)" if exc.warnings else ""
        if fmt != "json":
            click.echo(f"{len(exc.problems)} {noun}{more} found", err=True)
        sys.exit(1)
    click.echo(f"error: {exc}", err=True)
    sys.exit(2 if isinstance(exc, ConfigError) else 1)


def _problems(problems: Sequence[Problem], fmt: str) -> None:
    ordered = sorted(problems, key=Problem.sort_key)
    if fmt == "json":
        click.echo(json.dumps([p.as_json() for p in ordered], indent=2))
    else:
        for problem in ordered:
            click.echo(problem.render())


def _load(paths: Sequence[str]) -> Spec:
    return _load_with_root(paths)[0]


def _load_with_root(paths: Sequence[str]) -> tuple[Spec, Path]:
    from controller.spec.load import discover, load

    files = discover([Path(p) for p in paths or ["."]])
    if not files:
        raise ConfigError(f"no liminal.yml or liminal.yaml found under: {', '.join(paths or ['.'])}")
    roots = {f.root for f in files}
    if len(roots) > 1:
        raise ConfigError(f"the paths span several repositories ({', '.join(sorted(map(str, roots)))}); give one")
    return load(files, placeholder_environ()), files[0].root


QUIET_COMMANDS = frozenset({"validate", "show", "render"})
"""Commands that run only the pure stages: they never log, so they do not load the logging library."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="liminal-gitops")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Liminal GitOps controller: liminal.yml in git -> images, Airflow DAGs and services."""
    if ctx.invoked_subcommand not in QUIET_COMMANDS:
        _configure_logging()


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="Output format.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 1 when there is any).")
def validate(paths: tuple[str, ...], fmt: str, strict: bool) -> None:
    """Validate liminal.yml files: PATH is a file or a directory (default: the current one).

    Prints one line per problem, `file:line:col: error: path: message` (or `warning:` for what is
    deployed but has no effect); exits 1 when there is an error, or a warning with --strict.
    """
    try:
        spec = _load(paths)
    except LiminalError as exc:
        _fail(exc, fmt)
    _problems(spec.warnings, fmt)
    if strict and spec.warnings:
        if fmt != "json":
            click.echo(f"{len(spec.warnings)} warning(s) found; --strict makes them errors", err=True)
        sys.exit(1)
    if fmt == "json":
        return
    pipelines = sum(len(s.pipelines) for s in spec.systems)
    tasks = sum(len(p.tasks) for s in spec.systems for p in s.pipelines)
    click.echo(
        f"ok: {len(spec.files)} file(s), {len(spec.systems)} system(s), {pipelines} pipeline(s), {tasks} task(s), "
        f"{sum(len(s.images) for s in spec.systems)} image(s), {sum(len(s.services) for s in spec.systems)} "
        "service(s)" + (f", {len(spec.warnings)} warning(s)" if spec.warnings else "")
    )


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="Output format.")
def show(paths: tuple[str, ...], fmt: str) -> None:
    """Print the resolved spec (after super files, defaults and variables), as `helm template` does."""
    from controller.spec.show import spec_as_json, spec_as_text

    try:
        spec = _load(paths)
    except LiminalError as exc:
        _fail(exc, fmt)
    if fmt == "json":
        click.echo(json.dumps(spec_as_json(spec), indent=2))
    else:
        click.echo(spec_as_text(spec), nl=False)


@cli.command(name="render")
@click.argument("path", type=click.Path(exists=True), default=".")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True, help="Directory to write into.")
@click.option("--repo", default=None, help="Repository name stamped on the output (default: PATH's folder name).")
@click.option("--commit", default="", help="Commit stamped on DAG tags and annotations.")
@click.option(
    "--serving",
    type=click.Choice([t.value for t in ServingTarget]),
    default=None,
    help="Render services for this target (default: LIMINAL_SERVING, else docker).",
)
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="Output format.")
def render_command(*, path: str, out: str, repo: str | None, commit: str, serving: str | None, fmt: str) -> None:
    """Render PATH's DAG files, Dockerfiles, manifests and resources.json into --out, as `helm template` does.

    Writes nothing anywhere else and deploys nothing.
    """
    from controller.render import render
    from controller.render_output import resources_index, write_render

    try:
        spec, root = _load_with_root([path])
        settings = render_settings()
        if serving is not None:
            settings = dataclasses.replace(settings, serving=ServingTarget(serving))
        name = repo or Path(path).resolve().name
        desired = render(spec, root, settings, Origin(repo=name, commit=commit))
        written = write_render(desired, Path(out))
    except LiminalError as exc:
        _fail(exc, fmt)
    if fmt == "json":
        click.echo(json.dumps(resources_index(desired), indent=2))
    else:
        for resource in desired.resources:
            click.echo(f"{resource.key.kind:<8} {resource.content_hash[:12]}  {resource.key.name}")
        click.echo(f"wrote {written} file(s) to {out}", err=True)


def _deps(settings: ControllerSettings | None = None) -> tuple[Deps, Ledger]:
    from controller.compose import build_deps

    return build_deps(settings or controller_settings(), on_progress=_show_build)


def _show_build(progress: BuildProgress) -> None:
    # plain lines, one per step, each naming its image (builds run in parallel), as
    # `docker build --progress=plain` does; every output line is an image.build.log debug event
    if progress.phase == "log" and not progress.detail.startswith("Step "):
        return
    words = {"build": f"building {progress.tag}", "push": f"pushing to {progress.detail}"}
    text = words.get(progress.phase, progress.detail)
    if progress.phase == "build" and progress.detail:
        text += f" ({progress.detail})"
    click.echo(f"image {progress.image}: {'failed: ' if progress.phase == 'failed' else ''}{text}", err=True)


def _repo_names(ledger: Ledger, repo: str | None) -> list[str]:
    if repo is not None:
        return [ledger.repo(repo).name]
    names = [r.name for r in ledger.repos()]
    if not names:
        raise ConfigError("no repositories are tracked; add one with `liminal repo add URL`")
    return names


@cli.group()
def repo() -> None:
    """Track git repositories of liminal.yml files."""


@repo.command(name="add")
@click.argument("url")
@click.option("--branch", default="main", show_default=True, help="Branch to deploy.")
@click.option("--name", default=None, help="Name (default: the URL's last path part, without .git).")
@click.option("--no-prune", is_flag=True, help="Keep resources that disappear from git.")
@click.option("--no-self-heal", is_flag=True, help="Report live state changed by hand, but do not restore it.")
def repo_add(url: str, branch: str, name: str | None, no_prune: bool, no_self_heal: bool) -> None:
    """Track the repository at URL (https://, ssh://, user@host:path; http:// and local paths when the
    settings allow them). Credentials come from settings, never the URL."""
    from controller.compose import remote_policy as _remote_policy
    from controller.sync.source import SourceError, check_branch, check_remote

    try:
        settings = controller_settings()
        try:
            check_remote(url, _remote_policy(settings))
            check_branch(branch)
        except SourceError as exc:
            raise ConfigError(str(exc)) from None  # a usage error: exit 2
        derived = name or url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
        if not is_repo_name(derived):
            raise ConfigError(
                f"{derived!r} cannot name a repository: 1-100 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit (give one with --name)"
            )
        _, ledger = _deps(settings)
        ledger.add_repo(RepoRef(name=derived, url=url, branch=branch, prune=not no_prune, self_heal=not no_self_heal))
    except LiminalError as exc:
        _fail(exc, "text")
    click.echo(f"tracking {derived} ({url}, branch {branch})")


@repo.command(name="set")
@click.argument("name")
@click.option("--prune/--no-prune", default=None, help="Delete resources that disappear from git.")
@click.option("--self-heal/--no-self-heal", default=None, help="Restore live state changed by hand.")
def repo_set(name: str, prune: bool | None, self_heal: bool | None) -> None:
    """Change how the tracked repository NAME is synced; takes effect at its next reconcile."""
    try:
        _, ledger = _deps()
        ref = ledger.set_options(name, prune=prune, self_heal=self_heal)
    except LiminalError as exc:
        _fail(exc, "text")
    click.echo(f"{ref.name}: prune {'on' if ref.prune else 'off'}, self-heal {'on' if ref.self_heal else 'off'}")


@repo.command(name="list")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="Output format.")
def repo_list(fmt: str) -> None:
    """List tracked repositories."""
    try:
        _, ledger = _deps()
        repos = ledger.repos()
    except LiminalError as exc:
        _fail(exc, fmt)
    if fmt == "json":
        click.echo(json.dumps([dataclasses.asdict(r) for r in repos], indent=2))
        return
    for r in repos:
        flags = ("" if r.prune else "\tno-prune") + ("" if r.self_heal else "\tno-self-heal")
        click.echo(f"{r.name}\t{r.url}\t{r.branch}{flags}")


@cli.command()
@click.argument("repo", required=False)
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="Output format.")
def plan(repo: str | None, fmt: str) -> None:
    """Show what a sync would do now: fetch, render, observe drift and diff (changes nothing).

    Exactly what the next `liminal sync` does: the same path plans both. Exit code 1 when a
    commit is invalid."""
    from controller.sync.preview import preview
    from controller.views import preview_text

    try:
        deps, ledger = _deps()
        previews = [preview(name, deps) for name in _repo_names(ledger, repo)]
    except LiminalError as exc:
        _fail(exc, fmt)
    if fmt == "json":
        click.echo(json.dumps([p.as_json() for p in previews], indent=2))
    else:
        click.echo("\n".join(preview_text(p) for p in previews), nl=False)
    sys.exit(0 if all(p.valid for p in previews) else 1)


@cli.command()
@click.argument("repo", required=False)
def sync(repo: str | None) -> None:
    """Reconcile once: fetch, validate, render, plan, apply and record (every tracked repo by default)."""
    from controller.sync.reconcile import reconcile

    try:
        deps, ledger = _deps()
        runs = [reconcile(name, deps, trigger=Trigger.CLI) for name in _repo_names(ledger, repo)]
    except LiminalError as exc:
        _fail(exc, "text")
    from controller.views import not_deployed_why

    failed = False
    for run in runs:
        click.echo(
            f"{run.repo}: {run.status} at {(run.commit or '?')[:12]} (run {run.id})"
            + (f": {run.error}" if run.error else "")
        )
        for name in run.not_deployed:
            click.echo(f"  not deployed here: {name} ({not_deployed_why(name)})")
        failed = failed or run.status in (RunStatus.FAILED, RunStatus.INVALID)
    sys.exit(1 if failed else 0)


@cli.command()
@click.argument("repo")
@click.option("--to", "to", default=None, help="Roll back to this commit (default: revert the newest commit).")
@click.option("--no-sync", is_flag=True, help="Only push the revert; leave the sync to the controller.")
def rollback(repo: str, to: str | None, no_sync: bool) -> None:
    """Roll REPO back the GitOps way: revert commit(s) on its tracked branch, push, then sync.

    Images are tagged by content, so the sync that follows rebuilds nothing: the old tags exist.
    """
    from controller.sync.reconcile import reconcile
    from controller.sync.source import GitSource

    try:
        deps, ledger = _deps()
        ref = ledger.repo(repo)
        if not isinstance(deps.source, GitSource):
            raise ConfigError("rollback needs the git source")
        head, reverted = deps.source.revert(ref, to)
    except LiminalError as exc:
        _fail(exc, "text")
    click.echo(
        f"{repo}: pushed {head[:12]} to {ref.branch}, reverting {len(reverted)} commit(s): "
        + ", ".join(c[:12] for c in reverted)
    )
    if no_sync:
        return
    try:
        run = reconcile(repo, deps, trigger=Trigger.ROLLBACK)
    except LiminalError as exc:
        _fail(exc, "text")
    click.echo(
        f"{run.repo}: {run.status} at {(run.commit or '?')[:12]} (run {run.id})"
        + (f": {run.error}" if run.error else "")
    )
    sys.exit(0 if run.status in (RunStatus.SUCCEEDED, RunStatus.NOOP) else 1)


@cli.command()
@click.argument("repo", required=False)
@click.option("--limit", default=20, show_default=True, help="How many runs.")
@click.option("--resources", is_flag=True, help="Instead: each deployed resource and the commit it came from.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="Output format.")
def history(repo: str | None, limit: int, resources: bool, fmt: str) -> None:
    """The newest sync runs first (or, with --resources, which commit each deployed resource came from)."""
    from controller.views import run_json

    try:
        _, ledger = _deps()
        if repo is not None:
            ledger.repo(repo)
        if resources:
            deployed = [d for name in _repo_names(ledger, repo) for d in ledger.deployed_state(name).resources.values()]
            _show_provenance(sorted(deployed, key=lambda d: str(d.key)), fmt)
            return
        runs = ledger.history(repo, limit)
    except LiminalError as exc:
        _fail(exc, fmt)
    if fmt == "json":
        click.echo(json.dumps([run_json(r) for r in runs], indent=2, default=str))
        return
    for r in runs:
        click.echo(
            f"{r.id:>5} {r.started_at:%Y-%m-%d %H:%M:%S} {r.repo} {r.trigger} {(r.commit or '-')[:12]} {r.status}"
            + (f": {r.error}" if r.error else "")
        )


@cli.command()
@click.argument("repo", required=False)
@click.option("--limit", default=20, show_default=True, help="How many builds per repository.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="Output format.")
def builds(repo: str | None, limit: int, fmt: str) -> None:
    """Image builds and pushes, the newest first: image, result, tag, registry digest and seconds."""
    try:
        _, ledger = _deps()
        found = [dict(b, repo=name) for name in _repo_names(ledger, repo) for b in ledger.builds(name)[::-1][:limit]]
    except LiminalError as exc:
        _fail(exc, fmt)
    if fmt == "json":
        keys = ("repo", "image", "tag", "content_hash", "status", "digest", "seconds", "finished_at", "message")
        click.echo(json.dumps([{k: b[k] for k in keys} for b in found], indent=2, default=str))
        return
    for b in found:
        click.echo(
            f"{b['finished_at']:%Y-%m-%d %H:%M:%S} {b['repo']} {b['image']} {b['status']:<6} {b['tag']} "
            f"{b['digest'] or '-'} {b['seconds']:.1f}s" + (f": {b['message']}" if b["message"] else "")
        )


@cli.command()
@click.argument("repo", required=False)
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="Output format.")
def status(repo: str | None, fmt: str) -> None:
    """Attempted and applied commits, last run and resource count per repository."""
    from controller.views import run_json

    try:
        deps, ledger = _deps()
        found = [ledger.status(name) for name in _repo_names(ledger, repo)]
        served = {s.repo.name: _endpoints(deps, ledger, s.repo.name) for s in found}
        cache = {s.repo.name: deps.source.disk_usage(s.repo) for s in found}
    except LiminalError as exc:
        _fail(exc, fmt)
    if fmt == "json":
        out = [
            {
                "repo": s.repo.name,
                "state": s.state,
                "last_attempted_commit": s.last_attempted_commit,
                "last_applied_commit": s.last_applied_commit,
                "resources": s.resources,
                "self_heal": s.repo.self_heal,
                "drift": list(s.drift),
                "drift_observed_at": s.drift_observed_at.isoformat() if s.drift_observed_at else None,
                "last_checked_at": s.last_checked_at.isoformat() if s.last_checked_at else None,
                "last_checked_commit": s.last_checked_commit,
                "last_error": s.last_error,
                "last_run": run_json(s.last_run) if s.last_run else None,
                "git_cache_bytes": cache[s.repo.name],
                "services": [
                    {"name": name, "url": e.url, "health": e.health, "detail": e.detail}
                    for name, e in served[s.repo.name]
                ],
            }
            for s in found
        ]
        click.echo(json.dumps(out, indent=2, default=str))
        return
    for s in found:
        last = f"{s.last_run.status} (run {s.last_run.id})" if s.last_run else "never synced"
        click.echo(
            f"{s.repo.name}: {s.state}, applied {(s.last_applied_commit or '-')[:12]}, attempted "
            f"{(s.last_attempted_commit or '-')[:12]}, {s.resources} resource(s), last run {last}"
            + (f"\n  error: {s.last_error}" if s.last_error else "")
        )
        if s.last_checked_at is not None:
            click.echo(f"  last checked {s.last_checked_at:%Y-%m-%d %H:%M:%S} at {(s.last_checked_commit or '-')[:12]}")
        click.echo(f"  git cache {_mib(cache[s.repo.name])}")
        if s.drift:
            heal = "restoring (self-heal on)" if s.repo.self_heal else "not restored: self-heal is off"
            click.echo(f"  drift: {', '.join(s.drift)} changed by hand; {heal}")
        for name, e in served[s.repo.name]:
            click.echo(f"  service {name}: {e.url or '-'} {e.health}" + (f" ({e.detail})" if e.detail else ""))


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _show_provenance(deployed: list[Deployed], fmt: str) -> None:
    if fmt == "json":
        rows = [
            {
                "repo": d.key.repo,
                "kind": str(d.key.kind),
                "name": d.key.name,
                "commit": d.commit,
                "content_hash": d.content_hash,
            }
            for d in deployed
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    for d in deployed:
        click.echo(f"{d.key.repo} {d.key.kind:<8} {d.key.name:<30} from {d.commit[:12]}  {d.content_hash[:12]}")


def _endpoints(deps: Deps, ledger: Ledger, repo: str) -> list[tuple[str, ServiceEndpoint]]:
    """Each deployed service's URL and live health, asked of the serving target."""
    from controller.views import service_endpoints

    return service_endpoints(deps, list(ledger.deployed_state(repo).resources.values()))


def _check_reporters(settings: ControllerSettings) -> dict[str, CheckReporter]:
    """Where pull-request checks are shown: GitHub (an App's check runs, else a token's statuses)
    and GitLab, as the settings allow; the plan comment's marker is keyed by a secret the
    pull request's author does not have."""
    from webhooks.forge import ForgeApi
    from webhooks.github_app import GitHubAppTokens, StaticToken
    from webhooks.github_checks import GitHubChecks
    from webhooks.gitlab_checks import GitLabChecks

    out: dict[str, CheckReporter] = {}
    github = ForgeApi("GitHub", settings.github_api_url)
    tokens: Callable[[str], str] | None = None
    if settings.github_app_id and settings.github_app_private_key:
        tokens = GitHubAppTokens(
            settings.github_app_id,
            settings.github_app_private_key,
            github,
            installation_id=settings.github_app_installation_id,
        )
    elif settings.github_app_id or settings.github_app_private_key:
        raise ConfigError("a GitHub App needs both LIMINAL_GITHUB_APP_ID and LIMINAL_GITHUB_APP_PRIVATE_KEY")
    elif settings.github_token:
        tokens = StaticToken(settings.github_token)
    if tokens is not None:
        key = settings.github_webhook_secret or settings.github_app_private_key or settings.github_token or ""
        out["github"] = GitHubChecks(tokens, github, marker_key=key.encode())
    if settings.gitlab_token:
        key = settings.gitlab_webhook_token or settings.gitlab_token
        gitlab = ForgeApi("GitLab", settings.gitlab_api_url)
        out["gitlab"] = GitLabChecks(settings.gitlab_token, gitlab, marker_key=key.encode())
    return out


@cli.command()
@click.option("--listen", default=None, help="host:port (default: LIMINAL_LISTEN, else 127.0.0.1:8080).")
@click.option("--workers", default=2, show_default=True, help="Reconciles at a time.")
def serve(listen: str | None, workers: int) -> None:
    """Run the controller: webhooks, polling, the reconcile loop, health, metrics and the REST API.

    Stops cleanly on SIGTERM or Ctrl-C: running reconciles finish first.
    """
    import uvicorn

    from controller.api import ServeSettings, make_app
    from controller.sync.loop import ReconcileLoop
    from controller.sync.upkeep import Retention

    try:
        settings = controller_settings()
        deps, ledger = _deps(settings)
        host, _, port = (listen or settings.listen).rpartition(":")
        if not port.isdigit():
            raise ConfigError(f"LIMINAL_LISTEN must be host:port, not {listen or settings.listen!r}")
        reporters = _check_reporters(settings)
        ledger.claim_server()
        loop = ReconcileLoop(
            deps,
            retention=Retention(
                days=settings.retention_days,
                runs=settings.retention_runs,
                checkouts=settings.checkouts_kept,
                every=settings.upkeep_interval,
                gc_every=settings.gc_interval,
            ),
            workers=workers,
            poll_interval=settings.poll_interval,
            drift_interval=settings.drift_interval,
            reporters=reporters,
            public_url=settings.public_url or f"http://{host or '127.0.0.1'}:{port}",
        )
        app = make_app(
            ledger,
            loop,
            ServeSettings(
                github_secret=settings.github_webhook_secret,
                gitlab_token=settings.gitlab_webhook_token,
                api_token=settings.api_token,
                allow_unsigned=settings.allow_unsigned_webhooks,
                airflow_url=settings.airflow_url,
                reads_need_token=settings.api_reads_need_token,
            ),
        )
    except LiminalError as exc:
        _fail(exc, "text")
    loop.start()
    click.echo(f"liminal serve: http://{host or '127.0.0.1'}:{port} (API /api/v1, /metrics, /healthz)", err=True)
    # uvicorn returns after SIGTERM or SIGINT, once open requests are answered, and then raises the
    # signal again: with the default handler the process would die before the loop stops, cutting
    # reconciles short. This handler only notes it, so the loop stops cleanly and serve exits 0.
    stop_signals: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _: stop_signals.append(received))
    try:
        uvicorn.run(app, host=host or "127.0.0.1", port=int(port), log_level="warning", access_log=False)
    finally:
        loop.stop()
    import structlog

    structlog.get_logger("liminal.serve").info(
        "serve.stopped", signal=signal.Signals(stop_signals[0]).name if stop_signals else None
    )


def _configure_logging() -> None:
    import structlog

    try:
        level = log_level()
    except ConfigError as exc:
        _fail(exc, "text")
    # structured events go to stderr (JSON when LIMINAL_LOG_FORMAT=json); stdout is for results
    renderer: Any = (
        structlog.processors.JSONRenderer() if log_format() == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    secrets = secret_values()

    def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        from controller.errors import sanitize

        # no configured credential reaches a log line, whatever field it hides in
        if secrets:
            for key, value in event.items():
                if isinstance(value, str) and any(secret in value for secret in secrets):
                    event[key] = sanitize(value, secrets)
        return event

    def escape(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        # text from requests and repositories may hold control characters: a console line shows
        # them escaped, so nobody can forge a log line or move the terminal's cursor
        for key, value in event.items():
            if isinstance(value, str) and not value.isprintable():
                event[key] = "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
        return event

    structlog.configure(
        processors=[
            redact,
            *([] if log_format() == "json" else [escape]),  # JSON escapes them itself
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # one write per event line: print() writes the line and its newline apart, and the build
        # progress lines (from other threads) could land in between and be torn
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
    )


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="liminal")
