"""The sync engine over real git repositories and a real ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from controller.errors import ConfigError, sanitize
from controller.ledger import Ledger
from controller.model import Action, Origin, RepoRef, ResourceKind, RunStatus, Trigger
from controller.render import RenderSettings
from controller.render.dags import repo_payload_folder
from controller.sync.cache import RenderCache
from controller.sync.deps import Deps, desired_for
from controller.sync.plan import plan
from controller.sync.reconcile import reconcile
from controller.sync.source import GitCredentials, GitSource
from controller.targets.dag_folder import DagFolderTarget
from tests.conftest import TEST_REMOTES, commit_all, example_remote, git, make_deps
from tests.git_http import serve_git, url_of


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A working repository holding the example, on branch main."""
    return example_remote(tmp_path)


def write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def render_only_deps(tmp_path: Path, cache: RenderCache | None = None) -> Deps:
    """Deps for desired_for alone: every kind managed, no ledger (desired_for does not use it)."""
    return Deps(
        source=GitSource(tmp_path / "cache", policy=TEST_REMOTES),
        ledger=None,  # type: ignore[arg-type]
        targets={k: DagFolderTarget(tmp_path) for k in ResourceKind},
        settings=RenderSettings(),
        cache=cache,
    )


def payload(tmp_path: Path, name: str = "hello_training", repo: str = "hello") -> Path:
    """Where the DAG-folder target puts a pipeline's payload."""
    return tmp_path / "dags" / repo_payload_folder(repo) / f"{name}.json"


def test_first_sync_applies_then_noop_then_update(tmp_path: Path, remote: Path, ledger: Ledger) -> None:
    ledger.add_repo(RepoRef("hello", str(remote)))
    deps = make_deps(tmp_path, ledger)
    first = reconcile("hello", deps)
    assert first.status is RunStatus.SUCCEEDED
    assert [(o.key.name, o.action, o.code.value) for o in first.outcomes] == [
        ("hello_training", Action.CREATE, "applied")
    ]
    dag = payload(tmp_path)
    written = dag.stat().st_mtime_ns
    second = reconcile("hello", deps)
    assert second.status is RunStatus.NOOP and second.outcomes == ()
    assert dag.stat().st_mtime_ns == written  # a no-op touches nothing
    yml = remote / "liminal.yml"
    yml.write_text(yml.read_text().replace("schedule: 0 6 * * *", "schedule: 0 7 * * *"))
    new_commit = commit_all(remote, "move schedule")
    third = reconcile("hello", deps)
    assert third.status is RunStatus.SUCCEEDED and third.commit == new_commit
    assert [(o.action, o.code.value) for o in third.outcomes] == [(Action.UPDATE, "applied")]
    assert '"schedule": "0 7 * * *"' in dag.read_text()
    status = ledger.status("hello")
    assert status.last_applied_commit == new_commit == status.last_attempted_commit
    assert [r.status for r in ledger.history("hello")] == [RunStatus.SUCCEEDED, RunStatus.NOOP, RunStatus.SUCCEEDED]


def test_the_deployed_state_is_read_by_hash_and_bodies_only_where_asked(
    tmp_path: Path, remote: Path, ledger: Ledger
) -> None:
    ledger.add_repo(RepoRef("hello", str(remote)))
    yml = remote / "liminal.yml"
    yml.write_text(yml.read_text().replace("pipelines:\n", "pipelines:\n" + _SECOND_PIPELINE, 1))
    commit_all(remote, "two pipelines")
    assert reconcile("hello", make_deps(tmp_path, ledger)).status is RunStatus.SUCCEEDED
    full = ledger.deployed_state("hello")
    hashes = ledger.deployed_state("hello", bodies=False)
    assert len(full.resources) == 2 and set(hashes.resources) == set(full.resources)
    assert all(d.body == {} and d.content_hash == full.resources[k].content_hash for k, d in hashes.resources.items())
    one = next(iter(full.resources))
    some = ledger.deployed_state("hello", bodies={one})
    assert some.resources[one].body == full.resources[one].body != {}
    assert all(d.body == {} for k, d in some.resources.items() if k != one)


_SECOND_PIPELINE = """  - pipeline: second
    start_date: 2024-01-01
    timeout_minutes: 10
    schedule: 0 1 * * *
    tasks:
      - task: only
        type: python
        image: hello/pipeline
        cmd: python -u prepare.py
"""


def test_invalid_commit_keeps_the_last_good_state(tmp_path: Path, remote: Path, ledger: Ledger) -> None:
    ledger.add_repo(RepoRef("hello", str(remote)))
    deps = make_deps(tmp_path, ledger)
    good = reconcile("hello", deps).commit
    before = (payload(tmp_path)).read_bytes()
    (remote / "liminal.yml").write_text("name: broken\npipelines:\n  - pipeline: p\n    timeout_minutes: ten\n")
    bad = commit_all(remote, "break it")
    run = reconcile("hello", deps)
    assert run.status is RunStatus.INVALID
    assert run.error is not None and "liminal.yml:4:22" in run.error
    assert (payload(tmp_path)).read_bytes() == before
    status = ledger.status("hello")
    assert (status.last_attempted_commit, status.last_applied_commit) == (bad, good)


def test_pipeline_removed_from_git_is_pruned_unless_disabled(tmp_path: Path, remote: Path, ledger: Ledger) -> None:
    ledger.add_repo(RepoRef("hello", str(remote)))
    ledger.add_repo(RepoRef("kept", str(remote), prune=False))
    deps = make_deps(tmp_path, ledger)
    reconcile("hello", deps)
    reconcile("kept", deps)
    yml = remote / "liminal.yml"
    yml.write_text(yml.read_text().replace("pipeline: hello_training", "pipeline: hello_training_v2"))
    commit_all(remote, "rename pipeline")
    run = reconcile("hello", deps)
    assert sorted((o.key.name, o.action.value, o.code.value) for o in run.outcomes) == [
        ("hello_training", "delete", "deleted"),
        ("hello_training_v2", "create", "applied"),
    ]
    assert not (payload(tmp_path)).exists()
    assert payload(tmp_path, "hello_training_v2").exists()
    kept = reconcile("kept", deps)
    assert [o.action.value for o in kept.outcomes] == ["create"]
    assert payload(tmp_path, repo="kept").exists()


def test_force_push_and_deleted_branch(tmp_path: Path, remote: Path, ledger: Ledger) -> None:
    ledger.add_repo(RepoRef("hello", str(remote)))
    deps = make_deps(tmp_path, ledger)
    first = reconcile("hello", deps).commit
    (remote / "extra.txt").write_text("x")
    commit_all(remote, "extra")
    git(remote, "reset", "-q", "--hard", "HEAD~1")
    (remote / "other.txt").write_text("y")
    rewritten = commit_all(remote, "rewritten history")
    run = reconcile("hello", deps)
    assert run.commit == rewritten != first and run.status is RunStatus.NOOP
    git(remote, "checkout", "-q", "-b", "other")
    git(remote, "branch", "-q", "-D", "main")
    gone = reconcile("hello", deps)
    assert gone.status is RunStatus.FAILED
    assert gone.error == f"branch 'main' does not exist on {remote}"
    assert ledger.status("hello").last_applied_commit == rewritten
    assert (payload(tmp_path)).exists()


def test_polls_that_find_nothing_new_move_the_last_check_and_add_no_run(
    tmp_path: Path, remote: Path, ledger: Ledger
) -> None:
    ledger.add_repo(RepoRef("hello", str(remote)))
    deps = make_deps(tmp_path, ledger)
    applied = reconcile("hello", deps, trigger=Trigger.POLL)
    assert applied.status is RunStatus.SUCCEEDED and applied.id is not None
    first_check = ledger.status("hello").last_checked_at
    for _ in range(3):
        assert reconcile("hello", deps, trigger=Trigger.POLL).id is None
    status = ledger.status("hello")
    assert [r.id for r in ledger.history("hello")] == [applied.id]
    assert status.last_run is not None and status.last_run.id == applied.id and status.state == "synced"
    assert first_check is not None and status.last_checked_at is not None and status.last_checked_at > first_check
    assert status.last_checked_commit == applied.commit
    # a poll after a failure is news even when it changes nothing: it is kept
    away = remote.with_name("away")
    remote.rename(away)  # the git server is down for one poll
    try:
        failed = reconcile("hello", deps, trigger=Trigger.POLL)
    finally:
        away.rename(remote)
    assert failed.status is RunStatus.FAILED and failed.id is not None
    back = reconcile("hello", deps, trigger=Trigger.POLL)
    assert back.status is RunStatus.NOOP and back.id is not None and ledger.status("hello").state == "synced"
    assert reconcile("hello", deps, trigger=Trigger.POLL).id is None
    assert [r.status for r in ledger.history("hello")] == [RunStatus.NOOP, RunStatus.FAILED, RunStatus.SUCCEEDED]


def test_unreachable_remote_is_a_recorded_transient_error(tmp_path: Path, ledger: Ledger) -> None:
    ledger.add_repo(RepoRef("gone", "http://127.0.0.1:9/nothing.git"))
    run = reconcile("gone", make_deps(tmp_path, ledger), trigger=Trigger.POLL)
    assert run.status is RunStatus.FAILED and run.requeue is not None and run.requeue.after == 30
    assert run.error is not None and run.error.startswith("cannot fetch http://127.0.0.1:9/nothing.git")
    assert run.error.endswith("(retry in 30 s)")  # the loop's run: the loop retries after that long
    again = reconcile("gone", make_deps(tmp_path, ledger), trigger=Trigger.RETRY, attempt=1)
    assert again.requeue is not None and again.requeue.after is not None and 48 <= again.requeue.after <= 72
    assert again.error is not None and again.error.endswith(f"(retry in {again.requeue.after:g} s)")
    by_hand = reconcile("gone", make_deps(tmp_path, ledger))  # `liminal sync` is not retried: it says nothing of one
    assert by_hand.error is not None and "retry" not in by_hand.error


def test_checkout_is_per_commit_and_never_changes(tmp_path: Path, remote: Path) -> None:
    source = GitSource(tmp_path / "cache", policy=TEST_REMOTES)
    ref = RepoRef("hello", str(remote))
    snap = source.fetch(ref)
    (remote / "liminal.yml").write_text((remote / "liminal.yml").read_text() + "\n# changed\n")
    commit_all(remote, "change")
    newer = source.fetch(ref)
    assert newer.root != snap.root
    assert not (snap.root / "liminal.yml").read_text().endswith("# changed\n")
    assert source.fetch(ref, snap.commit).root == snap.root


def test_plan_orders_waves_and_diffs(tmp_path: Path, remote: Path) -> None:
    deps = render_only_deps(tmp_path)
    snapshot = deps.source.fetch(RepoRef("hello", str(remote)))
    desired = desired_for(snapshot, deps)
    from controller.model import DeployedState

    result = plan(desired, DeployedState())
    assert [(c.key.kind.value, c.action.value) for c in result.changes] == [
        ("claim", "create"),
        ("image", "create"),
        ("image", "create"),
        ("dag", "create"),
        ("service", "create"),
    ]
    assert result.changes[3].diff.startswith("--- deployed/dag/hello_training\n+++ desired/dag/hello_training\n")
    assert desired.origin == Origin("hello", snapshot.commit)


def test_repo_names_are_unique_and_unknown_repos_are_config_errors(ledger: Ledger) -> None:
    ledger.add_repo(RepoRef("a", "/x"))
    with pytest.raises(ConfigError, match="already tracked"):
        ledger.add_repo(RepoRef("a", "/y"))
    with pytest.raises(ConfigError, match="no tracked repository named 'b'"):
        ledger.repo("b")


def test_tokens_never_appear_in_errors() -> None:
    assert sanitize("fatal: https://user:s3cret@host/x.git denied s3cret", ("s3cret",)) == (
        "fatal: https://***@host/x.git denied ***"
    )
    assert "s3cret" not in repr(GitCredentials(token="s3cret"))


def test_cached_render_equals_full_render_across_commits(tmp_path: Path, remote: Path) -> None:
    """The render cache never changes a result: every commit renders the same with and without it."""
    cached = render_only_deps(tmp_path, RenderCache())
    uncached = Deps(cached.source, cached.ledger, cached.targets, cached.settings, cache=None)
    ref = RepoRef("hello", str(remote))
    yml = remote / "liminal.yml"

    def edits() -> Iterator[str]:
        yield "initial"
        (remote / "pipeline" / "extra.py").write_text("X = 1\n")  # image context only
        yield "context file"
        yml.write_text(yml.read_text().replace("schedule: 0 6 * * *", "schedule: 0 9 * * *"))
        yield "schedule"
        (remote / "pipeline" / "link").symlink_to("extra.py")  # a symlink: tree id not trusted
        yield "symlink"
        (remote / "pipeline" / "extra.py").write_text("X = 2\n")  # changes what the link shows
        yield "through symlink"
        (remote / "pipeline" / "link").unlink()
        (remote / "pipeline" / "extra.py").unlink()
        yield "back"

    seen = []
    for message in edits():
        if message != "initial":
            commit_all(remote, message)
        snapshot = cached.source.fetch(ref)
        with_cache = desired_for(snapshot, cached)
        assert desired_for(snapshot, cached) is with_cache  # the same commit is not rendered again
        without = desired_for(snapshot, uncached)
        assert [(r.key, r.content_hash, r.body, r.artifact) for r in with_cache.resources] == [
            (r.key, r.content_hash, r.body, r.artifact) for r in without.resources
        ]
        seen.append({r.key.name: r.content_hash for r in with_cache.resources})
    # each edit changed some hash, so the comparisons above compared something
    assert all(a != b for a, b in itertools.pairwise(seen))


def _five_pipelines(tmp_path: Path) -> Path:
    """A repository of five systems of one pipeline each, each with its own image."""
    from benchmarks.sync import pipeline_yml

    remote = tmp_path / "remote"
    for i in range(5):
        write_file(remote / f"p{i}" / "liminal.yml", pipeline_yml(i, i))
        write_file(remote / f"p{i}" / "step.py", f"print({i})\n")
    git(remote, "init", "-q", "-b", "main")
    commit_all(remote, "five")
    return remote


ONE_OF_FIVE = {
    "desired_made": 1,
    "file_made": 1,
    "file_reused": 4,
    "system_made": 1,
    "system_reused": 4,
    "image_made": 1,  # the image's tree holds the changed liminal.yml
    "image_reused": 4,
    "dags_made": 1,
    "dags_reused": 4,
}
"""What a commit changing one of _five_pipelines costs the render cache."""


def test_a_one_pipeline_change_loads_and_renders_only_that_pipeline(tmp_path: Path) -> None:
    from benchmarks.sync import pipeline_yml

    remote = _five_pipelines(tmp_path)
    cache = RenderCache()
    deps = render_only_deps(tmp_path, cache)
    ref = RepoRef("five", str(remote))
    desired_for(deps.source.fetch(ref), deps)
    before = cache.stats()
    write_file(remote / "p3" / "liminal.yml", pipeline_yml(3, 30))
    commit_all(remote, "one pipeline")
    desired_for(deps.source.fetch(ref), deps)
    delta = {k: v - before.get(k, 0) for k, v in cache.stats().items() if v != before.get(k, 0)}
    assert delta == ONE_OF_FIVE


def test_a_new_process_loads_and_renders_only_what_a_commit_changed_from_the_stored_parts(tmp_path: Path) -> None:
    import dataclasses

    from benchmarks.sync import pipeline_yml
    from controller.sync.cache import DesiredStore

    remote = _five_pipelines(tmp_path)
    store = DesiredStore(tmp_path / "desired")
    first = dataclasses.replace(render_only_deps(tmp_path, RenderCache()), store=store)
    ref = RepoRef("five", str(remote))
    desired_for(first.source.fetch(ref), first)
    units = sorted((tmp_path / "desired" / "units").iterdir())
    assert len(units) == 15, "per pipeline file: its parse, its system with its DAGs, its image"

    write_file(remote / "p3" / "liminal.yml", pipeline_yml(3, 30))
    commit_all(remote, "one pipeline")
    cache = RenderCache()  # another process: its own memory, the same folder
    second = dataclasses.replace(first, cache=cache, store=DesiredStore(tmp_path / "desired"))
    snapshot = second.source.fetch(ref)
    made = desired_for(snapshot, second)
    assert {k: v for k, v in cache.stats().items() if v} == ONE_OF_FIVE
    fresh = desired_for(snapshot, render_only_deps(tmp_path))
    assert [(r.key, r.content_hash, r.body, r.artifact) for r in made.resources] == [
        (r.key, r.content_hash, r.body, r.artifact) for r in fresh.resources
    ]
    added = set((tmp_path / "desired" / "units").iterdir()) - set(units)
    assert len(added) == 3, "the changed file's units are written; the others are on disk already"
    for unit in units[:2]:  # a unit gone (tidied, or unreadable) is made again, nothing else
        unit.write_bytes(b"not a unit")
    third = dataclasses.replace(first, cache=RenderCache(), store=DesiredStore(tmp_path / "desired"))
    write_file(remote / "p1" / "liminal.yml", pipeline_yml(1, 10))
    commit_all(remote, "another")
    snapshot = third.source.fetch(ref)
    assert [(r.key, r.content_hash) for r in desired_for(snapshot, third).resources] == [
        (r.key, r.content_hash) for r in desired_for(snapshot, render_only_deps(tmp_path)).resources
    ]


def test_tree_ids_leave_out_directories_holding_symlinks(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    write_file(remote / "a" / "b" / "f.txt", "x")
    write_file(remote / "c" / "g.txt", "y")
    (remote / "a" / "b" / "link").symlink_to("../../c")
    git(remote, "init", "-q", "-b", "main")
    commit = commit_all(remote, "tree")
    source = GitSource(tmp_path / "cache", policy=TEST_REMOTES)
    trees = source.trees(source.fetch(RepoRef("t", str(remote))))
    assert trees == {"c": git(remote, "rev-parse", f"{commit}:c")}


def _ledger_text(ledger: Ledger) -> str:
    """Every row of every ledger table, as text."""
    from controller.ledger import tables

    out = []
    with ledger.engine.connect() as conn:
        for table in tables.metadata.sorted_tables:
            out += [repr(tuple(row)) for row in conn.execute(sa.select(table))]
    return "\n".join(out)


@pytest.fixture
def served(tmp_path: Path, remote: Path) -> Path:
    """A bare clone of `remote` under tmp/served, to be served over HTTP as hello.git."""
    root = tmp_path / "served"
    root.mkdir()
    git(root, "clone", "-q", "--bare", str(remote), "hello.git")
    git(remote, "remote", "add", "origin", str(root / "hello.git"))
    return root


def test_sync_over_http_with_a_token_that_never_leaks(
    tmp_path: Path, remote: Path, served: Path, ledger: Ledger
) -> None:
    token = "glpat-" + uuid.uuid4().hex
    with serve_git(served, token=token) as server:
        url = url_of(server, "hello.git")
        ledger.add_repo(RepoRef("hello", url))
        ledger.add_repo(RepoRef("wrong", url))
        deps = make_deps(tmp_path, ledger)
        good = Deps(
            GitSource(tmp_path / "cache", GitCredentials(token=token), TEST_REMOTES),
            ledger,
            deps.targets,
            deps.settings,
        )
        first = reconcile("hello", good)
        assert first.status is RunStatus.SUCCEEDED and first.commit == git(remote, "rev-parse", "HEAD")
        assert any(auth for _, _, auth in server.requests)  # the token went over the wire, as Basic auth
        yml = remote / "liminal.yml"
        yml.write_text(yml.read_text().replace("schedule: 0 6 * * *", "schedule: 0 8 * * *"))
        pushed = commit_all(remote, "over http")
        git(remote, "push", "-q", "origin", "main")
        second = reconcile("hello", good)
        assert (second.status, second.commit) == (RunStatus.SUCCEEDED, pushed)
        wrong_token = "glpat-" + uuid.uuid4().hex
        bad = Deps(
            GitSource(tmp_path / "cache", GitCredentials(token=wrong_token), TEST_REMOTES),
            ledger,
            deps.targets,
            deps.settings,
        )
        denied = reconcile("wrong", bad)
        assert denied.status is RunStatus.FAILED
        assert denied.error is not None and denied.error.startswith(f"cannot fetch {url}:")
        assert denied.requeue is not None and denied.requeue.after == 30  # the loop retries it
        stored = _ledger_text(ledger)
        assert token not in stored and wrong_token not in stored
        cached = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "cache").rglob("*") if p.is_file())
        assert token not in cached and wrong_token not in cached  # not in git config, FETCH_HEAD, askpass


def test_force_push_over_http(tmp_path: Path, remote: Path, served: Path, ledger: Ledger) -> None:
    with serve_git(served) as server:
        ledger.add_repo(RepoRef("hello", url_of(server, "hello.git")))
        deps = make_deps(tmp_path, ledger)
        reconcile("hello", deps)
        yml = remote / "liminal.yml"
        yml.write_text(yml.read_text().replace("schedule: 0 6 * * *", "schedule: 0 5 * * *"))
        commit_all(remote, "to be rewritten")
        git(remote, "push", "-q", "origin", "main")
        assert reconcile("hello", deps).status is RunStatus.SUCCEEDED
        git(remote, "reset", "-q", "--hard", "HEAD~1")
        yml.write_text(yml.read_text().replace("schedule: 0 6 * * *", "schedule: 0 4 * * *"))
        rewritten = commit_all(remote, "rewritten")
        git(remote, "push", "-q", "--force", "origin", "main")
        run = reconcile("hello", deps)
        assert (run.status, run.commit) == (RunStatus.SUCCEEDED, rewritten)
        assert '"schedule": "0 4 * * *"' in (payload(tmp_path)).read_text()


def test_a_fetch_killed_mid_ref_update_does_not_block_later_fetches(tmp_path: Path, remote: Path) -> None:
    source = GitSource(tmp_path / "cache", policy=TEST_REMOTES)
    ref = RepoRef("hello", str(remote))
    source.fetch(ref)
    mirror = next((tmp_path / "cache").glob("hello-*/mirror.git"))
    (mirror / "refs" / "heads" / "main.lock").write_text("")  # what kill -9 during `git fetch` leaves
    (mirror / "packed-refs.lock").write_text("")
    (remote / "extra.txt").write_text("x")
    newer = commit_all(remote, "after the crash")
    assert source.fetch(ref).commit == newer


def test_the_ledger_knows_the_newest_migration() -> None:
    from importlib import resources

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from controller.ledger.store import HEAD_REVISION

    config = Config()
    config.set_main_option("script_location", str(resources.files("controller.ledger") / "migrations"))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_the_migrations_make_exactly_the_tables_the_code_uses(ledger: Ledger) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from controller.ledger import tables

    with ledger.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), tables.metadata)
    assert differences == []


@pytest.mark.parametrize("python", ["with tar filters", "before 3.11.4"])
def test_an_archive_member_leading_out_is_refused(tmp_path: Path, python: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import tarfile

    from controller.sync.source import SourceError, extract_tar

    if python == "before 3.11.4":  # Debian 12's Python 3.11.2 has no extraction filters
        monkeypatch.delattr(tarfile, "tar_filter")

    def archive(*members: tuple[str, bytes, int]) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            for name, data, mode in members:
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()

    good = tmp_path / "good"
    extract_tar(archive(("a/liminal.yml", b"name: x\n", 0o4777)), good)
    assert (good / "a" / "liminal.yml").read_bytes() == b"name: x\n"
    assert (good / "a" / "liminal.yml").stat().st_mode & 0o7777 == 0o755  # no set-id, no group/other write
    with pytest.raises(SourceError, match="refusing"):
        extract_tar(archive(("../escaped", b"x", 0o644)), tmp_path / "bad")
    assert not (tmp_path / "escaped").exists()


def test_a_desired_state_rendered_by_one_process_is_read_by_the_next_and_only_under_the_same_key(
    tmp_path: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from controller.sync import deps as deps_module
    from controller.sync.cache import DesiredStore
    from controller.sync.deps import desired_for

    store = DesiredStore(tmp_path / "desired")
    first = dataclasses.replace(render_only_deps(tmp_path), cache=RenderCache(), store=store)
    snapshot = first.source.fetch(RepoRef("hello", str(remote)))
    made = desired_for(snapshot, first)
    (stored,) = (tmp_path / "desired").glob("*.pickle")
    assert oct(stored.parent.stat().st_mode & 0o777) == "0o700"

    def no_render(*args: object) -> None:
        raise AssertionError("rendered again")

    with monkeypatch.context() as patched:  # another process: its own memory, the same folder
        patched.setattr(deps_module, "_desired", no_render)
        again = desired_for(snapshot, dataclasses.replace(first, cache=RenderCache()))
    assert again == made and again is not made
    other = dataclasses.replace(first, cache=RenderCache(), settings=RenderSettings(registry="registry.example"))
    assert desired_for(snapshot, other) != made  # other settings: another key, rendered
    stored.write_bytes(b"not a state")  # unreadable: rendered again, with a warning
    third = desired_for(snapshot, dataclasses.replace(first, cache=RenderCache()))
    assert third == made and len(list((tmp_path / "desired").glob("*.pickle"))) == 2


def test_the_desired_store_keeps_its_bound_and_the_newest_states(tmp_path: Path) -> None:
    from controller.sync.cache import DesiredStore

    store = DesiredStore(tmp_path / "desired", keep=20)
    for i in range(40):
        store.put(f"k{i:02d}", {"state": i})
    kept = list((tmp_path / "desired").glob("*.pickle"))
    assert 20 <= len(kept) <= 22, "pruned after every tenth of the bound of writes"
    assert all(store.get(f"k{i:02d}") == {"state": i} for i in range(30, 40)), "the newest stay"
    assert store.get("k00") is None, "the oldest went first"
