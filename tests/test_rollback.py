"""`liminal rollback`, for real: a revert commit pushed to the tracked branch, then a sync that
rebuilds no image (the content tags exist) and restores the DAG and the served model."""

from __future__ import annotations

import json
import time
from pathlib import Path

from controller.ledger import Ledger
from controller.render.dags import repo_payload_folder
from tests.conftest import cli_env, commit_all, example_remote, git, liminal, need


def test_rollback_reverts_in_git_builds_nothing_and_restores_dag_and_service(
    tmp_path: Path, ledger: Ledger, served_repo: str
) -> None:
    repo = served_repo
    work = example_remote(tmp_path, own_images=True)  # a developer's clone
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(origin))
    git(work, "remote", "add", "origin", str(origin))
    env = cli_env(
        tmp_path,
        ledger,
        LIMINAL_REGISTRY=need("LIMINAL_TEST_REGISTRY"),
        LIMINAL_BASE_IMAGE=need("LIMINAL_TEST_BASE_IMAGE"),
    )
    assert liminal("repo", "add", str(origin), "--name", repo, env=env).returncode == 0
    first = liminal("sync", repo, env=env)
    assert first.returncode == 0, first.stderr
    good = git(origin, "rev-parse", "main")
    payload = tmp_path / "dags" / repo_payload_folder(repo) / "hello_training.json"
    good_payload = json.loads(payload.read_text())

    # a bad change ships: a new schedule and a new model
    yml = work / "liminal.yml"
    yml.write_text(yml.read_text().replace("schedule: 0 6 * * *", "schedule: 0 3 * * *"))
    model = work / "serving" / "model.py"
    model.write_text(model.read_text().replace("2 * float", "-1 * float"))
    bad = commit_all(work, "new schedule and model")
    git(work, "push", "-q", "origin", "main")
    assert liminal("sync", repo, env=env).returncode == 0
    assert json.loads(payload.read_text())["schedule"] == "0 3 * * *"
    builds_before = len(json.loads(liminal("builds", repo, "--format", "json", "--limit", "100", env=env).stdout))

    started = time.monotonic()
    rolled = liminal("rollback", repo, env=env)
    seconds = time.monotonic() - started
    assert rolled.returncode == 0, rolled.stderr
    print(f"rollback: revert pushed and state restored in {seconds:.2f} s")
    # git holds the story: a revert commit on the branch, after the bad one
    head = git(origin, "rev-parse", "main")
    assert git(origin, "rev-parse", "main^") == bad
    assert git(origin, "log", "-1", "--format=%s", "main").startswith(f"Revert {bad[:12]}")
    assert git(origin, "diff", good, head) == ""  # the tree is the good one again
    assert f"pushed {head[:12]}" in rolled.stdout and "succeeded" in rolled.stdout
    # no image was built again, and the DAG and the served model are the good ones
    builds_after = len(json.loads(liminal("builds", repo, "--format", "json", "--limit", "100", env=env).stdout))
    assert builds_after == builds_before
    restored = json.loads(payload.read_text())
    assert restored["schedule"] == "0 6 * * *"
    assert {k: v for k, v in restored.items() if k not in ("origin", "tags")} == {
        k: v for k, v in good_payload.items() if k not in ("origin", "tags")
    }
    status = json.loads(liminal("status", repo, "--format", "json", env=env).stdout)[0]
    service = status["services"][0]
    assert status["last_applied_commit"] == head and service["health"] == "healthy"
    import urllib.request

    request = urllib.request.Request(f"{service['url']}/predict", data=b'{"x": 2}', method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == {"y": 5.0}
    # which commit each resource came from
    provenance = json.loads(liminal("history", repo, "--resources", "--format", "json", env=env).stdout)
    assert {(r["kind"], r["name"]): r["commit"] for r in provenance}[("dag", "hello_training")] == head
