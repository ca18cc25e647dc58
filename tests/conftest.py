"""Shared fixtures: the Liminal compatibility corpus rebuilt in its original layout, git helpers,
and a fresh ledger on SQLite or on the real PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from controller.ledger import Ledger
from controller.model import ResourceKind, Spec
from controller.render import RenderSettings
from controller.spec import discover, load
from controller.sync.deps import Deps
from controller.sync.source import GitSource, RemotePolicy
from controller.targets.dag_folder import DagFolderTarget

TEST_REMOTES = RemotePolicy(allow_local=True, allow_http=True)
"""The tests' remotes: local paths and git http-backend on 127.0.0.1."""

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "liminal-examples"
LIMINAL = str(Path(sys.executable).parent / "liminal")
"""The installed console script."""

# Source directories the original Apache Liminal repository holds beside these files; the
# corpus copies only the liminal.yml files, so the tests recreate the directories.
ORIGINAL_SOURCE_DIRS = (
    "examples/liminal-getting-started/helloworld",
    "examples/liminal-getting-started/myserver",
    "tests/runners/airflow/liminal/write_inputs",
    "tests/runners/airflow/liminal/write_outputs",
    "tests/runners/airflow/liminal/myserver",
    "tests/runners/apps/test_app/helloworld",
    "tests/runners/apps/test_app/myserver",
    "tests/runners/apps/test_spark_app/wordcount",
)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus files at their original paths (`a__b__liminal.yml` -> `a/b/liminal.yml`), in a git repo."""
    assert CORPUS.is_dir(), f"the compatibility corpus is missing: {CORPUS} (shared/ must sit beside the checkout)"
    root = tmp_path_factory.mktemp("liminal-repo")
    (root / ".git").mkdir()
    for f in sorted(CORPUS.iterdir()):
        if f.suffix not in (".yml", ".yaml"):
            continue
        target = root / f.name.replace("__", "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    for d in ORIGINAL_SOURCE_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    return root


def load_paths(paths: Sequence[Path], environ: dict[str, str] | None = None) -> Spec:
    """Load the liminal.yml files under `paths` as the CLI does."""
    return load(discover(list(paths)), environ or {})


@pytest.fixture
def write(tmp_path: Path) -> object:
    """Write files into a fresh repository and return its root."""
    (tmp_path / ".git").mkdir()

    def _write(files: dict[str, str | bytes]) -> Path:
        for name, content in files.items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        return tmp_path

    return _write


GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A fresh, migrated ledger on SQLite (for tests where the ledger's engine is beside the point)."""
    found = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield found
    found.close()


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """A fresh, migrated ledger on SQLite or on the real PostgreSQL server."""
    if request.param == "sqlite":
        found = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        yield found
        found.close()
        return
    with postgres_ledger() as found:
        yield found


@contextmanager
def postgres_ledger() -> Iterator[Ledger]:
    """A fresh, migrated ledger in a database of its own on the real PostgreSQL server."""
    base = os.environ.get("LIMINAL_TEST_POSTGRES_URL")
    assert base, "LIMINAL_TEST_POSTGRES_URL is not set: run the tests through scripts/test (it starts PostgreSQL)"
    name = f"liminal_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    found = Ledger(url)
    yield found
    found.close()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str, seconds: float) -> bool:
    """Poll `url` until it answers 200 (True) or `seconds` pass (False)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def liminal(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script in a subprocess, exactly as a user would."""
    return subprocess.run([LIMINAL, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300, check=False)


EXAMPLE = REPO / "examples" / "hello-liminal"


def make_deps(tmp_path: Path, ledger: Ledger) -> Deps:
    """Deps of a reconcile into a DAG folder (`tmp_path/dags`), with a git cache in `tmp_path/cache`."""
    return Deps(
        source=GitSource(tmp_path / "cache", policy=TEST_REMOTES),
        ledger=ledger,
        targets={ResourceKind.DAG: DagFolderTarget(tmp_path / "dags")},
        settings=RenderSettings(),
    )


def need(name: str) -> str:
    """A setting the test services export (scripts/test starts them); a clear failure without it."""
    value = os.environ.get(name)
    assert value, f"{name} is not set: run the tests through scripts/test (it starts the services they use)"
    return value


def example_remote(tmp_path: Path, *, own_images: bool = False) -> Path:
    """A working repository holding the bundled example, on branch main. With `own_images`, the
    image names carry a suffix of this test's own, so that nothing another test built is found."""
    repo = tmp_path / "remote"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__"))
    if own_images:
        yml = repo / "liminal.yml"
        yml.write_text(yml.read_text().replace("hello/", f"hello{uuid.uuid4().hex[:8]}/"))
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "initial")
    return repo


@pytest.fixture
def docker_client() -> Iterator[Any]:
    """A client of the Docker engine scripts/lib/docker.sh starts."""
    import docker

    need("DOCKER_HOST")
    found = docker.from_env()
    yield found
    found.close()


def cli_env(tmp_path: Path, ledger: Ledger, **env: str) -> dict[str, str]:
    """The environment for a `liminal` process of this test: its own home and DAG folder, `ledger`,
    and `env` on top (full variable names, e.g. LIMINAL_IMAGES="off")."""
    return {
        **os.environ,
        "LIMINAL_HOME": str(tmp_path / "home"),
        "LIMINAL_LEDGER_URL": ledger.url,
        "LIMINAL_DAGS_FOLDER": str(tmp_path / "dags"),
        # the tests' remotes are local paths and git http-backend on 127.0.0.1
        "LIMINAL_ALLOW_LOCAL_REMOTES": "true",
        "LIMINAL_ALLOW_HTTP_REMOTES": "true",
        **env,
    }


@contextmanager
def running_controller(env: dict[str, str], logs: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`liminal serve` as a real process with `env`, on a free port, its output in `logs`:
    (its URL, the process). Stopped with SIGTERM, as Kubernetes stops it."""
    port = free_port()
    out = logs.open("wb")
    proc = subprocess.Popen([LIMINAL, "serve", "--listen", f"127.0.0.1:{port}"], env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        assert answers(f"{url}/healthz", 30), logs.read_text()[-3000:]
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        out.close()


@pytest.fixture
def served_repo(docker_client: Any) -> Iterator[str]:
    """A repository name of this test's own; the containers served for it are removed afterwards."""
    name = f"repo-{uuid.uuid4().hex[:8]}"
    yield name
    for container in docker_client.containers.list(all=True, filters={"label": f"liminal-gitops/repo={name}"}):
        container.remove(force=True)
