"""`liminal sync` as real processes: killed with SIGKILL at random points, and run twice at once.

Each test runs on SQLite and on the real PostgreSQL server (the `ledger` fixture).
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.sync import pipeline_yml
from controller.ledger import Ledger
from controller.model import RepoRef, ResourceKind, RunStatus
from controller.render import RenderSettings
from controller.render.dags import repo_loader, repo_payload_folder
from controller.sync.deps import Deps, desired_for
from controller.sync.source import GitSource
from controller.targets.dag_folder import DagFolderTarget, stamped_hash
from tests.conftest import LIMINAL, TEST_REMOTES, commit_all, git

PIPELINES = 12
TRIALS = 20


def _tracked_remote(tmp_path: Path, ledger: Ledger) -> tuple[Path, dict[str, str]]:
    """A git repository of PIPELINES pipelines tracked as `crash`, and the environment of `liminal`."""
    remote = tmp_path / "remote"
    _make_remote(remote, 0)
    git(remote, "init", "-q", "-b", "main")
    commit_all(remote, "start")
    env = {
        **os.environ,
        "LIMINAL_HOME": str(tmp_path / "home"),
        "LIMINAL_LEDGER_URL": ledger.url,
        "LIMINAL_DAGS_FOLDER": str(tmp_path / "dags"),
        "LIMINAL_IMAGES": "off",  # these tests are about the ledger and the DAG folder
        "LIMINAL_ALLOW_LOCAL_REMOTES": "true",
    }
    subprocess.run([LIMINAL, "repo", "add", str(remote), "--name", "crash"], env=env, check=True, capture_output=True)
    return remote, env


def _make_remote(root: Path, minute: int) -> None:
    for i in range(PIPELINES):
        folder = root / f"p{i:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "liminal.yml").write_text(pipeline_yml(i, minute), encoding="utf-8")
        (folder / "step.py").write_text(f"print({i})\n", encoding="utf-8")


def _run_outcomes(ledger: Ledger, run_id: int) -> int:
    return sum(len(r.outcomes) for r in ledger.history("crash", limit=5) if r.id == run_id)


def test_sigkill_at_random_points_then_the_next_sync_converges(tmp_path: Path, ledger: Ledger) -> None:
    seed = int(os.environ.get("LIMINAL_CRASH_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    remote, env = _tracked_remote(tmp_path, ledger)
    source = GitSource(tmp_path / "verify-cache", policy=TEST_REMOTES)
    render_deps = Deps(source, ledger, {ResourceKind.DAG: DagFolderTarget(tmp_path / "x")}, RenderSettings())
    interrupted_in_apply = 0
    for trial in range(TRIALS):
        _make_remote(remote, trial + 1)  # every pipeline changes: a full wave to apply
        head = commit_all(remote, f"trial {trial}")
        last_run = ledger.history("crash", limit=1)
        first_new_run = (last_run[0].id if last_run else 0) + 1
        proc = subprocess.Popen([LIMINAL, "sync", "crash"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if trial % 4 == 0:
            time.sleep(rng.uniform(0.0, 1.5))  # anywhere: start-up, fetch, checkout, render, apply
        else:
            wanted = rng.randrange(PIPELINES)  # after `wanted` outcomes are recorded, mid-apply
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                if _run_outcomes(ledger, first_new_run) >= wanted:
                    break
                time.sleep(0.002)
        proc.kill()
        proc.wait()
        recorded = _run_outcomes(ledger, first_new_run)
        interrupted_in_apply += 0 < recorded < PIPELINES
        done = subprocess.run([LIMINAL, "sync", "crash"], env=env, capture_output=True, text=True, check=False)
        context = f"seed {seed}, trial {trial}: {done.stderr[-2000:]}"
        assert done.returncode == 0, context
        # converged: the ledger says the head is applied, and each DAG file holds the desired content
        status = ledger.status("crash")
        assert status.last_applied_commit == head, context
        desired = {r.key: r for r in desired_for(source.fetch(RepoRef("crash", str(remote))), render_deps).resources}
        deployed = ledger.deployed_state("crash")
        assert {k: d.content_hash for k, d in deployed.resources.items()} == {
            k: r.content_hash for k, r in desired.items()
        }, context
        payloads = tmp_path / "dags" / repo_payload_folder("crash")
        for key, resource in desired.items():
            assert stamped_hash(payloads / f"{key.name}.json") == resource.content_hash, context
        # exactly the loader file, its folder and one payload per pipeline: no temp file left
        loader = repo_loader("crash")
        assert sorted(p.name for p in (tmp_path / "dags").iterdir()) == sorted([loader[0], payloads.name])
        assert (tmp_path / "dags" / loader[0]).read_text() == loader[1]
        assert sorted(p.name for p in payloads.iterdir()) == sorted(f"{k.name}.json" for k in desired)
        # nothing applied twice: after a kill, what had reached the folder is adopted, not rewritten
        runs = [r for r in ledger.history("crash", limit=10) if r.id >= first_new_run]
        assert all(r.status is not RunStatus.RUNNING for r in runs), context
        applied = Counter(
            (o.key, o.content_hash) for r in runs for o in r.outcomes if o.code.value in ("applied", "deleted")
        )
        assert not [k for k, n in applied.items() if n > 1], context
    assert interrupted_in_apply >= TRIALS // 4, f"seed {seed}: only {interrupted_in_apply} kills fell mid-apply"


def test_two_concurrent_syncs_of_one_repository_apply_once(tmp_path: Path, ledger: Ledger) -> None:
    _, env = _tracked_remote(tmp_path, ledger)
    holder = Ledger(ledger.url)
    try:
        with holder.lock("crash"):  # both processes must wait here
            procs = [
                subprocess.Popen([LIMINAL, "sync", "crash"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for _ in range(2)
            ]
            time.sleep(3)
            assert [p.poll() for p in procs] == [None, None]
            assert ledger.history("crash") == []  # neither has begun a run
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        holder.close()
    assert [p.returncode for p in procs] == [0, 0], results
    first, second = sorted(ledger.history("crash"), key=lambda r: r.id)
    assert first.status is RunStatus.SUCCEEDED and len(first.outcomes) == PIPELINES
    assert second.status is RunStatus.NOOP and second.outcomes == ()
    assert first.finished_at is not None and second.started_at >= first.finished_at  # one after the other


@pytest.fixture(autouse=True)
def _console_script_installed() -> None:
    assert Path(LIMINAL).exists(), f"{LIMINAL} is missing: run the tests through scripts/test"
