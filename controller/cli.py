"""The `liminal` command. Exit codes: 0 success, 1 the input (or a sync) failed, 2 usage or configuration.

Errors become messages here and only here (`_fail`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import click

from controller.config import placeholder_environ, render_settings
from controller.errors import ConfigError, InputError, LiminalError
from controller.model import Origin, Spec
from controller.render import ServingTarget, render
from controller.render_output import resources_index, write_render
from controller.spec.load import discover, load
from controller.spec.show import spec_as_json, spec_as_text

__all__ = ["main"]

FORMATS = click.Choice(["text", "json"])


def _fail(exc: LiminalError, fmt: str) -> NoReturn:
    if isinstance(exc, InputError):
        if fmt == "json":
            click.echo(json.dumps([p.as_json() for p in exc.problems], indent=2))
        else:
            for problem in exc.problems:
                click.echo(problem.render())
            noun = "problem" if len(exc.problems) == 1 else "problems"
            click.echo(f"{len(exc.problems)} {noun} found", err=True)
        sys.exit(1)
    click.echo(f"error: {exc}", err=True)
    sys.exit(2 if isinstance(exc, ConfigError) else 1)


def _load(paths: Sequence[str]) -> Spec:
    return _load_with_root(paths)[0]


def _load_with_root(paths: Sequence[str]) -> tuple[Spec, Path]:
    files = discover([Path(p) for p in paths or ["."]])
    if not files:
        raise ConfigError(f"no liminal.yml or liminal.yaml found under: {', '.join(paths or ['.'])}")
    roots = {f.root for f in files}
    if len(roots) > 1:
        raise ConfigError(f"the paths span several repositories ({', '.join(sorted(map(str, roots)))}); give one")
    return load(files, placeholder_environ()), files[0].root


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="liminal-gitops")
def cli() -> None:
    """Liminal GitOps controller: liminal.yml in git -> images, Airflow DAGs and services."""


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="Output format.")
def validate(paths: tuple[str, ...], fmt: str) -> None:
    """Validate liminal.yml files: PATH is a file or a directory (default: the current one).

    Prints one line per problem, `file:line:col: error: path: message`; exits 1 when there is any.
    """
    try:
        spec = _load(paths)
    except LiminalError as exc:
        _fail(exc, fmt)
    if fmt == "json":
        click.echo("[]")
        return
    pipelines = sum(len(s.pipelines) for s in spec.systems)
    tasks = sum(len(p.tasks) for s in spec.systems for p in s.pipelines)
    click.echo(
        f"ok: {len(spec.files)} file(s), {len(spec.systems)} system(s), {pipelines} pipeline(s), {tasks} task(s), "
        f"{sum(len(s.images) for s in spec.systems)} image(s), {sum(len(s.services) for s in spec.systems)} "
        "service(s)"
    )


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="Output format.")
def show(paths: tuple[str, ...], fmt: str) -> None:
    """Print the resolved spec (after super files, defaults and variables), as `helm template` does."""
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


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="liminal")
