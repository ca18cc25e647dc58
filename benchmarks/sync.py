"""Benchmark: reconcile a git repository of 200 pipelines (one liminal.yml and image each).

Prints, in one run, against a real git repository, a SQLite ledger and a DAG folder:
- the first sync (everything created);
- a no-op reconcile (nothing changed since the last one), cold (new process state) and warm
  (median of the next runs in the same process, as the controller service runs them);
- a one-pipeline change: its time, and how many files were parsed and pipelines rendered.
Target (issue 4): no-op <= 100 ms once warm; a one-pipeline change renders and plans only what
changed.
"""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import structlog

from controller.ledger import Ledger
from controller.model import RepoRef, ResourceKind, RunStatus
from controller.render import RenderSettings
from controller.sync.cache import RenderCache
from controller.sync.deps import Deps
from controller.sync.reconcile import reconcile
from controller.sync.source import GitSource, RemotePolicy
from controller.targets.dag_folder import DagFolderTarget

LOCAL_REMOTES = RemotePolicy(allow_local=True)
"""The benchmarks' remotes are repositories on this machine."""

PIPELINES = 200
WARM_RUNS = 10
_GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def pipeline_yml(index: int, schedule_minute: int) -> str:
    """One deployable liminal.yml: an image built from its folder and a 5-task pipeline."""
    tasks = "".join(
        f"      - task: step_{t}\n"
        "        type: python\n"
        f"        image: bench/p{index:03d}\n"
        f"        cmd: python -u step.py --step {t}\n"
        "        env_vars:\n"
        f"          STEP: '{t}'\n"
        for t in range(5)
    )
    return (
        f"name: system_{index:03d}\n"
        "images:\n"
        f"  - image: bench/p{index:03d}\n"
        "    type: python\n"
        "    source: .\n"
        "pipelines:\n"
        f"  - pipeline: pipeline_{index:03d}\n"
        "    start_date: 2024-01-01\n"
        "    timeout_minutes: 30\n"
        f"    schedule: {schedule_minute} * * * *\n"
        "    tasks:\n" + tasks
    )


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` and return its output."""
    return subprocess.run(
        ["git", *args], cwd=cwd, env=_GIT_ENV, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(root: Path) -> None:
    """A git repository of PIPELINES folders, each with liminal.yml, step.py and requirements.txt."""
    root.mkdir()
    for i in range(PIPELINES):
        folder = root / "pipelines" / f"p{i:03d}"
        folder.mkdir(parents=True)
        (folder / "liminal.yml").write_text(pipeline_yml(i, i % 60), encoding="utf-8")
        (folder / "step.py").write_text(f"print('pipeline {i}')\n", encoding="utf-8")
        (folder / "requirements.txt").write_text("requests==2.32.3\n", encoding="utf-8")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "200 pipelines")


def timed(repo: str, deps: Deps) -> tuple[float, RunStatus, int]:
    """Milliseconds, status and outcome count of one reconcile."""
    start = time.perf_counter()
    run = reconcile(repo, deps)
    return (time.perf_counter() - start) * 1000, run.status, len(run.outcomes)


def _checkout_ms(remote: Path) -> float:
    """Time a fresh checkout of the branch head (the source stage's file writes)."""
    source = GitSource(Path(tempfile.mkdtemp()), policy=LOCAL_REMOTES)
    ref = RepoRef("bench", str(remote))
    commit = source.resolve(ref)
    start = time.perf_counter()
    source.checkout(ref, commit)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    """Print the figures."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        remote = base / "remote"
        make_repo(remote)
        ledger = Ledger(f"sqlite:///{base / 'ledger.db'}")
        ledger.add_repo(RepoRef("bench", str(remote)))

        def deps(cache: RenderCache) -> Deps:
            return Deps(
                source=GitSource(base / "cache", policy=LOCAL_REMOTES),
                ledger=ledger,
                targets={ResourceKind.DAG: DagFolderTarget(base / "dags")},
                settings=RenderSettings(),
                cache=cache,
            )

        first_ms, first_status, first_count = timed("bench", deps(RenderCache()))
        cold_ms, cold_status, _ = timed("bench", deps(RenderCache()))
        memo = RenderCache()
        warm = deps(memo)
        timed("bench", warm)
        warm_times = []
        for _ in range(WARM_RUNS):
            ms, status, _ = timed("bench", warm)
            assert status is RunStatus.NOOP, status
            warm_times.append(ms)

        yml = remote / "pipelines" / "p007" / "liminal.yml"
        yml.write_text(pipeline_yml(7, 59).replace("timeout_minutes: 30", "timeout_minutes: 45"), encoding="utf-8")
        git(remote, "commit", "-q", "-am", "change one pipeline")
        stats_before = memo.stats()
        change_ms, change_status, change_count = timed("bench", warm)
        checkout_ms = _checkout_ms(remote)
        stats = {k: v - stats_before.get(k, 0) for k, v in memo.stats().items()}
        after_ms, after_status, _ = timed("bench", warm)
        ledger.close()

    print(f"repository: {PIPELINES} pipelines in {PIPELINES} liminal.yml files, each with its own image")
    print(f"first sync ({first_count} resources created):     {first_ms:8.1f} ms  [{first_status.value}]")
    print(f"no-op reconcile, cold process cache:       {cold_ms:8.1f} ms  [{cold_status.value}]")
    print(
        f"no-op reconcile, warm (median of {WARM_RUNS}):      {statistics.median(warm_times):8.1f} ms  "
        f"(max {max(warm_times):.1f} ms; target <= 100 ms)"
    )
    print(f"one-pipeline change ({change_count} change applied):    {change_ms:8.1f} ms  [{change_status.value}]")
    print(
        f"  of {PIPELINES} files: parsed {stats.get('file_made', 0)}, reused {stats.get('file_reused', 0)}; "
        f"images hashed {stats.get('image_made', 0)}, reused {stats.get('image_reused', 0)}; "
        f"DAGs rendered {stats.get('dags_made', 0)}, reused {stats.get('dags_reused', 0)}"
    )
    print(f"  of which checking out the new commit (git archive, 600 files): {checkout_ms:.1f} ms")
    print(f"no-op after the change:                    {after_ms:8.1f} ms  [{after_status.value}]")


if __name__ == "__main__":
    main()
