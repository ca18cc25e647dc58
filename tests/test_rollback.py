"""`liminal rollback`, for real: a revert commit pushed to the tracked branch, then a sync that
rebuilds no image (the content tags exist) and restores the DAG in the real Airflow 3 and the
model served on the real Docker engine."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.ledger import Ledger
from controller.render.dags import repo_payload_folder
from tests.airflow_rest import Rest
from tests.conftest import cli_env, commit_all, example_remote, git, liminal, need


@pytest.fixture
def rest() -> Rest:
    return Rest(need("LIMINAL_TEST_AIRFLOW_URL"))


@pytest.fixture
def repo(served_repo: str, rest: Rest) -> Iterator[str]:
    """The test's repository: its containers, and its DAGs in the shared Airflow, go afterwards."""
    yield served_repo
    rest.remove_repository(served_repo)


def _predict(url: str, x: float) -> object:
    request = urllib.request.Request(f"{url}/predict", data=json.dumps({"x": x}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_rollback_reverts_in_git_builds_nothing_and_restores_dag_and_service(
    tmp_path: Path, ledger: Ledger, repo: str, rest: Rest
) -> None:
    work = example_remote(tmp_path, own_images=True)  # a developer's clone
    dag = f"hello_training_{uuid.uuid4().hex[:8]}"  # dag_ids are global in the shared Airflow
    yml = work / "liminal.yml"
    yml.write_text(yml.read_text().replace("pipeline: hello_training", f"pipeline: {dag}"))
    commit_all(work, "a dag_id of this test's own")
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(origin))
    git(work, "remote", "add", "origin", str(origin))
    env = cli_env(
        tmp_path,
        ledger,
        LIMINAL_REGISTRY=need("LIMINAL_TEST_REGISTRY"),
        LIMINAL_BASE_IMAGE=need("LIMINAL_TEST_BASE_IMAGE"),
        LIMINAL_DAGS_FOLDER=need("LIMINAL_TEST_AIRFLOW_DAGS"),
        LIMINAL_AIRFLOW_URL=need("LIMINAL_TEST_AIRFLOW_URL"),
        LIMINAL_AIRFLOW_USERNAME=need("LIMINAL_TEST_AIRFLOW_USERNAME"),
        LIMINAL_AIRFLOW_PASSWORD=need("LIMINAL_TEST_AIRFLOW_PASSWORD"),
    )

    assert liminal("repo", "add", str(origin), "--name", repo, env=env).returncode == 0
    first = liminal("sync", repo, env=env)
    assert first.returncode == 0, first.stderr
    good = git(origin, "rev-parse", "main")
    payload = Path(env["LIMINAL_DAGS_FOLDER"]) / repo_payload_folder(repo) / f"{dag}.json"
    good_payload = json.loads(payload.read_text())
    assert rest.dag(dag)["timetable_summary"] == "0 6 * * *"

    # a bad change ships: a new schedule and a new model
    yml = work / "liminal.yml"
    yml.write_text(yml.read_text().replace("schedule: 0 6 * * *", "schedule: 0 3 * * *"))
    model = work / "serving" / "model.py"
    model.write_text(model.read_text().replace("2 * float", "-1 * float"))
    bad = commit_all(work, "new schedule and model")
    git(work, "push", "-q", "origin", "main")
    assert liminal("sync", repo, env=env).returncode == 0
    assert rest.dag(dag)["timetable_summary"] == "0 3 * * *"
    status = json.loads(liminal("status", repo, "--format", "json", env=env).stdout)[0]
    assert _predict(status["services"][0]["url"], 2) == {"y": -1.0}
    builds_before = len(json.loads(liminal("builds", repo, "--format", "json", "--limit", "100", env=env).stdout))

    started = time.monotonic()
    rolled = liminal("rollback", repo, env=env)
    seconds = time.monotonic() - started
    assert rolled.returncode == 0, rolled.stderr
    print(f"rollback: revert pushed, DAG live in Airflow and model served again in {seconds:.2f} s")
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
    assert {k: v for k, v in restored.items() if k not in ("origin", "tags")} == {
        k: v for k, v in good_payload.items() if k not in ("origin", "tags")
    }
    # Airflow itself runs the previous DAG again, from the revert commit
    live = rest.dag(dag)
    assert live["timetable_summary"] == "0 6 * * *" and not live["is_stale"]
    assert f"commit:{head[:12]}" in {t["name"] for t in live["tags"]}
    status = json.loads(liminal("status", repo, "--format", "json", env=env).stdout)[0]
    service = status["services"][0]
    assert status["last_applied_commit"] == head and service["health"] == "healthy"
    assert _predict(service["url"], 2) == {"y": 5.0}
    # which commit each resource came from
    provenance = json.loads(liminal("history", repo, "--resources", "--format", "json", env=env).stdout)
    assert {(r["kind"], r["name"]): r["commit"] for r in provenance}[("dag", dag)] == head


# The git side of rollback, on real repositories with images off: what it pushes and what it refuses.


def _origin_and_clone(tmp_path: Path) -> tuple[Path, Path]:
    """A bare origin holding the example, and a developer's clone of it."""
    work = example_remote(tmp_path)
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(origin))
    git(work, "remote", "add", "origin", str(origin))
    git(work, "fetch", "-q", "origin")
    git(work, "branch", "-q", "--set-upstream-to=origin/main")
    return origin, work


def _schedule(env: dict[str, str], repo: str) -> str:
    payload = Path(env["LIMINAL_DAGS_FOLDER"]) / repo_payload_folder(repo) / "hello_training.json"
    return str(json.loads(payload.read_text())["schedule"])


def _merge_pull_request(work: Path, branch: str, schedule: str) -> str:
    """A pull request's branch changing the schedule, merged with a merge commit, and pushed."""
    git(work, "checkout", "-q", "-b", branch)
    yml = work / "liminal.yml"
    yml.write_text(yml.read_text().replace("schedule: 0 6 * * *", f"schedule: {schedule}"))
    commit_all(work, f"{branch}: schedule {schedule}")
    git(work, "checkout", "-q", "main")
    git(work, "merge", "-q", "--no-ff", "-m", f"Merge pull request #1 from {branch}", branch)
    git(work, "push", "-q", "origin", "main")
    return git(work, "rev-parse", "HEAD")


def test_rollback_undoes_a_merged_pull_request_and_goes_back_over_several_commits(
    tmp_path: Path, ledger: Ledger
) -> None:
    origin, work = _origin_and_clone(tmp_path)
    env = cli_env(tmp_path, ledger, LIMINAL_IMAGES="off")
    good = git(origin, "rev-parse", "main")
    assert liminal("repo", "add", str(origin), "--name", "hello", env=env).returncode == 0
    assert liminal("sync", "hello", env=env).returncode == 0
    merge = _merge_pull_request(work, "nightly", "0 3 * * *")
    assert liminal("sync", "hello", env=env).returncode == 0
    assert _schedule(env, "hello") == "0 3 * * *"

    # `git revert` refuses a merge commit without -m; rollback undoes it as GitHub's Revert button does
    rolled = liminal("rollback", "hello", env=env)
    assert rolled.returncode == 0, rolled.stderr
    head = git(origin, "rev-parse", "main")
    assert git(origin, "rev-parse", "main^") == merge
    assert git(origin, "diff", good, head) == ""
    assert git(origin, "log", "-1", "--format=%s", "main") == f"Revert {merge[:12]} Merge pull request #1 from nightly"
    assert _schedule(env, "hello") == "0 6 * * *"

    # two more changes, one of them merged; --to goes back over both in one commit
    git(work, "pull", "-q", "--ff-only")
    merged = _merge_pull_request(work, "hourly", "0 * * * *")
    (work / "NOTES.md").write_text("notes\n")
    direct = commit_all(work, "notes")
    git(work, "push", "-q", "origin", "main")
    assert liminal("sync", "hello", env=env).returncode == 0
    assert _schedule(env, "hello") == "0 * * * *"
    rolled = liminal("rollback", "hello", "--to", head[:10], env=env)
    assert rolled.returncode == 0, rolled.stderr
    assert f"reverting 2 commit(s): {direct[:12]}, {merged[:12]}" in rolled.stdout
    newest = git(origin, "rev-parse", "main")
    assert git(origin, "diff", head, newest) == ""
    message = git(origin, "log", "-1", "--format=%B", "main")
    assert message.startswith(f"Roll back main to {head[:12]}")
    assert f"- {direct[:12]} notes" in message and f"- {merged[:12]} Merge pull request #1 from hourly" in message
    assert _schedule(env, "hello") == "0 6 * * *"
    provenance = json.loads(liminal("history", "hello", "--resources", "--format", "json", env=env).stdout)
    assert {r["commit"] for r in provenance} == {newest}


def test_rollback_refuses_what_it_cannot_do_and_leaves_the_branch_alone(tmp_path: Path, ledger: Ledger) -> None:
    origin, work = _origin_and_clone(tmp_path)
    env = cli_env(tmp_path, ledger, LIMINAL_IMAGES="off")
    first = git(origin, "rev-parse", "main")
    assert liminal("repo", "add", str(origin), "--name", "hello", env=env).returncode == 0

    def refused(*args: str) -> str:
        before = git(origin, "rev-parse", "main")
        out = liminal("rollback", "hello", *args, env=env)
        assert out.returncode == 1 and out.stdout == "", (out.stdout, out.stderr)
        assert git(origin, "rev-parse", "main") == before  # nothing was pushed
        return out.stderr.strip()

    assert refused() == f"error: hello: {first[:12]} is the first commit of main: there is nothing before it"
    # a commit the controller fetched, then force-pushed away: known, but no longer the branch's
    (work / "NOTES.md").write_text("notes\n")
    gone = commit_all(work, "pushed, then force-pushed away")
    git(work, "push", "-q", "origin", "main")
    assert liminal("sync", "hello", env=env).returncode == 0
    git(work, "reset", "-q", "--hard", first)
    (work / "README.md").write_text("readme\n")
    commit_all(work, "readme")
    git(work, "push", "-q", "--force", "origin", "main")
    head = git(origin, "rev-parse", "main")
    git(work, "checkout", "-q", "-b", "unmerged")
    (work / "OTHER.md").write_text("other\n")
    unmerged = commit_all(work, "on another branch only")
    git(work, "push", "-q", "origin", "unmerged")
    git(work, "checkout", "-q", "main")

    assert refused("--to", "no-such-commit") == "error: hello: 'no-such-commit' is not a commit of main"
    assert refused("--to", "--upload-pack=touch") == "error: hello: '--upload-pack=touch' is not a commit of main"
    assert refused("--to", unmerged) == f"error: hello: '{unmerged}' is not a commit of main"
    assert refused("--to", gone) == (
        f"error: hello: {gone[:12]} is not in the history of main (at {head[:12]}):"
        " a rollback goes back to one of the branch's own commits"
    )
    assert refused("--to", head) == f"error: hello: main is at {head[:12]} already: nothing to roll back"
    # a revert already pushed by hand: the branch holds the files of its target already
    git(work, "revert", "--no-edit", "HEAD")
    git(work, "revert", "--no-edit", "HEAD")
    git(work, "push", "-q", "origin", "main")
    again = git(origin, "rev-parse", "main")
    assert refused("--to", head) == (
        f"error: hello: main at {again[:12]} holds the same files as {head[:12]} already: nothing to roll back"
    )
    unknown = liminal("rollback", "unknown", env=env)
    assert unknown.returncode == 2 and "no tracked repository named 'unknown'" in unknown.stderr
