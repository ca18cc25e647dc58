"""Fast tests of the core: plan, apply, reconcile, preview and the loop's scheduling, over the
in-memory fakes of the ports (tests/fakes.py). No git, SQL, Docker, Airflow or Kubernetes: the
whole file runs in seconds. The real parts are tested against the real things elsewhere."""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.errors import TargetError, TransientError
from controller.model import (
    Action,
    Deployed,
    DeployedState,
    DesiredState,
    Origin,
    Plan,
    RepoRef,
    Resource,
    ResourceKey,
    ResourceKind,
    ResultCode,
    RunStatus,
    Snapshot,
    Trigger,
)
from controller.render import RenderSettings
from controller.sync.apply import apply
from controller.sync.deps import Deps
from controller.sync.loop import ReconcileLoop
from controller.sync.plan import plan
from controller.sync.preview import preview
from controller.sync.reconcile import reconcile
from controller.sync.requeue import requeue
from controller.views import preview_text
from tests.conftest import EXAMPLE
from tests.fakes import FakeLedger, FakeSource, FakeTarget, fake_targets

IMAGE, DAG, SERVICE = ResourceKind.IMAGE, ResourceKind.DAG, ResourceKind.SERVICE


def key(kind: ResourceKind, name: str) -> ResourceKey:
    return ResourceKey("r", kind, name)


def res(kind: ResourceKind, name: str, content: str, *needs: ResourceKey) -> Resource:
    return Resource(key(kind, name), content, {"content": content, "stamp": {"liminal-gitops/commit": "c"}}, needs)


def desired(*resources: Resource) -> DesiredState:
    return DesiredState(Origin("r", "c" * 40), resources)


def deployed(*resources: Resource) -> DeployedState:
    return DeployedState({r.key: Deployed(r.key, r.content_hash, "b" * 40, r.body) for r in resources})


# ---- plan -------------------------------------------------------------------------------------------

IMG = res(IMAGE, "img", "i1")
DAG_A = res(DAG, "a", "a1", IMG.key)
SVC = res(SERVICE, "svc", "s1", IMG.key)


@pytest.mark.parametrize(
    ("wanted", "live", "options", "expected"),
    [
        ((IMG, DAG_A), (), {}, [("create", "image/img"), ("create", "dag/a")]),
        ((IMG, DAG_A), (IMG, DAG_A), {}, [("noop", "image/img"), ("noop", "dag/a")]),
        ((IMG, res(DAG, "a", "a2")), (IMG, DAG_A), {}, [("noop", "image/img"), ("update", "dag/a")]),
        ((IMG,), (IMG, DAG_A, SVC), {}, [("noop", "image/img"), ("delete", "service/svc"), ("delete", "dag/a")]),
        ((IMG,), (IMG, DAG_A), {"prune": False}, [("noop", "image/img")]),
        ((IMG, DAG_A), (IMG, DAG_A), {"drifted": frozenset({DAG_A.key})}, [("noop", "image/img"), ("update", "dag/a")]),
        ((SVC, DAG_A, IMG), (), {}, [("create", "image/img"), ("create", "dag/a"), ("create", "service/svc")]),
    ],
    ids=["create", "in-sync", "update", "prune-newest-wave-first", "no-prune", "drift", "waves"],
)
def test_plan(
    wanted: tuple[Resource, ...], live: tuple[Resource, ...], options: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    found = plan(desired(*wanted), deployed(*live), **options)
    assert [(str(c.action), f"{c.key.kind}/{c.key.name}") for c in found.changes] == expected


def test_a_diff_ends_every_line_and_the_brief_one_leaves_out_the_commit_stamp() -> None:
    (change,) = plan(desired(res(DAG, "a", "a2")), deployed(res(DAG, "a", "a1"))).changes
    assert change.diff.endswith("\n") and all(line for line in change.diff.split("\n")[:-1])
    assert "liminal-gitops/commit" in change.diff and "liminal-gitops/commit" not in change.brief
    assert '-  "content": "a1"' in change.brief and '+  "content": "a2"' in change.brief


# ---- apply ------------------------------------------------------------------------------------------


def _apply(
    the_plan: Plan, wanted: DesiredState, live: DeployedState, targets: dict[ResourceKind, FakeTarget]
) -> list[tuple[str, str]]:
    recorded: list[tuple[str, str]] = []
    result = apply(
        the_plan,
        wanted,
        live,
        targets,
        lambda outcome, resource: recorded.append((f"{outcome.key.kind}/{outcome.key.name}", str(outcome.code))),
        source=Snapshot(RepoRef("r", "u"), "c" * 40, Path()),
    )
    assert [(f"{o.key.kind}/{o.key.name}", str(o.code)) for o in result.outcomes] == recorded
    return recorded


def test_apply_skips_what_depends_on_a_failure_and_prunes_nothing_after_one() -> None:
    targets = fake_targets(IMAGE, DAG, SERVICE)
    targets[IMAGE].failing["img"] = TargetError("image/img", "the Dockerfile does not build")
    old = res(DAG, "old", "o1")
    wanted, live = desired(IMG, DAG_A, SVC, res(DAG, "b", "b1")), deployed(old)
    outcomes = _apply(plan(wanted, live), wanted, live, targets)
    assert outcomes == [
        ("image/img", "failed"),
        ("dag/a", "skipped"),  # waits for the image, which failed
        ("dag/b", "applied"),  # needs nothing that failed
        ("service/svc", "skipped"),
        ("dag/old", "skipped"),  # not pruned: another change failed in this run
    ]
    assert targets[DAG].applied == ["dag/b"] and targets[DAG].deleted == []


def test_apply_adopts_what_is_live_already_and_prunes_after_success() -> None:
    targets = fake_targets(IMAGE, DAG, SERVICE)
    targets[DAG].live[DAG_A.key] = DAG_A.content_hash  # applied before a crash, never recorded
    old_svc, old_dag = res(SERVICE, "gone", "g1"), res(DAG, "gone", "g1")
    wanted, live = desired(IMG, DAG_A), deployed(old_dag, old_svc)
    outcomes = _apply(plan(wanted, live), wanted, live, targets)
    assert outcomes == [
        ("image/img", "applied"),
        ("dag/a", "in_sync"),
        ("service/gone", "deleted"),  # services first: they use the DAGs' and images' outputs
        ("dag/gone", "deleted"),
    ]
    assert targets[DAG].applied == []


def test_a_target_that_raises_fails_its_whole_group_with_the_retry_delay() -> None:
    class Unreachable(FakeTarget):
        def apply(self, resources, source):  # type: ignore[no-untyped-def]
            raise TransientError("cannot reach the target", retry_after=7)
            yield  # a generator, as targets are

    targets: dict[ResourceKind, FakeTarget] = {DAG: Unreachable()}
    wanted = desired(res(DAG, "a", "a1"), res(DAG, "b", "b1"))
    result = apply(
        plan(wanted, deployed()),
        wanted,
        deployed(),
        targets,
        lambda o, r: None,
        source=Snapshot(RepoRef("r", "u"), "c" * 40, Path()),
    )
    assert [(o.code, o.retry_after, o.action) for o in result.outcomes] == [(ResultCode.FAILED, 7, Action.CREATE)] * 2


# ---- requeue ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "attempt", "rand", "after"),
    [
        (None, 0, 0.5, None),  # permanent: waits for a change
        (None, 5, 0.5, None),
        (30.0, 0, 0.0, 30.0),  # the first retry is exactly what the error says
        (30.0, 1, 0.5, 60.0),  # repeats double ...
        (30.0, 1, 0.0, 48.0),  # ... with jitter of ±20%
        (30.0, 1, 1.0, 72.0),
        (30.0, 10, 0.5, 600.0),  # ... up to the cap
    ],
)
def test_requeue(retry_after: float | None, attempt: int, rand: float, after: float | None) -> None:
    decision = requeue(retry_after, attempt, rand=lambda: rand)
    assert decision.after == after
    assert decision.describe() == (
        "waits for a new commit, a drift repair or an explicit sync" if after is None else f"retry in {after:g} s"
    )


# ---- reconcile and preview over fakes -------------------------------------------------------------


class World:
    """A repository of the bundled example behind the fakes."""

    def __init__(self, tmp_path: Path, *, self_heal: bool = True) -> None:
        self.source = FakeSource(tmp_path / "commits")
        self.ledger = FakeLedger()
        self.ledger.add_repo(RepoRef("hello", "fake://hello", self_heal=self_heal))
        self.targets = fake_targets(IMAGE, DAG, SERVICE)
        self.deps = Deps(self.source, self.ledger, self.targets, RenderSettings(), cache=None)
        self.commit = self.push({})

    def push(self, files: dict[str, str]) -> str:
        return self.source.push("hello", files, base=self.source.commits[self.head] if self.source.commits else EXAMPLE)

    @property
    def head(self) -> str:
        return self.source.history["hello"][-1]

    def edit_yml(self, old: str, new: str) -> str:
        text = (self.source.commits[self.head] / "liminal.yml").read_text()
        assert old in text
        return self.push({"liminal.yml": text.replace(old, new)})


def test_reconcile_returns_what_it_did_and_records_the_same(tmp_path: Path) -> None:
    world = World(tmp_path)
    run = reconcile("hello", world.deps, trigger=Trigger.POLL)
    assert (run.status, run.commit, run.applied_commit, run.requeue) == (
        RunStatus.SUCCEEDED,
        world.commit,
        world.commit,
        None,
    )
    assert run.plan["create"] == 4 and len(run.outcomes) == 4 and run.ok
    (recorded,) = world.ledger.runs
    assert (recorded.id, recorded.status, dict(recorded.summary)) == (run.id, run.status, run.summary)
    assert world.ledger.applied_commit("hello") == world.commit
    again = reconcile("hello", world.deps, trigger=Trigger.POLL)
    assert again.status is RunStatus.NOOP and again.outcomes == ()


def test_an_invalid_commit_waits_for_a_change_and_what_is_live_stays(tmp_path: Path) -> None:
    world = World(tmp_path)
    good = reconcile("hello", world.deps).commit
    bad = world.edit_yml("timeout_minutes: 30", "timeout_minutes: soon")
    run = reconcile("hello", world.deps, trigger=Trigger.WEBHOOK)
    assert (run.status, run.commit, run.applied_commit) == (RunStatus.INVALID, bad, None)
    assert run.requeue is not None and run.requeue.waits_for_change
    assert run.error is not None and run.error.endswith("(waits for a new commit, a drift repair or an explicit sync)")
    assert run.problems and run.problems[0].file == "liminal.yml" and run.problems[0].line > 0
    assert world.ledger.applied_commit("hello") == good
    # the loop's next poll of the same commit records nothing
    assert reconcile("hello", world.deps, trigger=Trigger.POLL, unless_commit=bad).id is None
    assert len(world.ledger.runs) == 2


@pytest.mark.parametrize(
    ("error", "after"),
    [
        (TransientError("registry down", retry_after=12), 12.0),
        (TargetError("image/hello/server", "no such base"), None),
    ],
    ids=["transient", "permanent"],
)
def test_a_failed_change_retries_only_when_retrying_can_help(
    tmp_path: Path, error: Exception, after: float | None
) -> None:
    world = World(tmp_path)
    world.targets[IMAGE].failing["hello/server"] = error  # type: ignore[assignment]
    run = reconcile("hello", world.deps, trigger=Trigger.POLL)
    assert run.status is RunStatus.FAILED and run.requeue is not None and run.requeue.after == after
    assert run.error is not None and run.error.endswith(f"({run.requeue.describe()})")
    codes = {f"{o.key.kind}/{o.key.name}": str(o.code) for o in run.outcomes}
    assert codes == {
        "image/hello/server": "failed",
        "image/hello/pipeline": "applied",
        "dag/hello_training": "applied",
        "service/hello_server": "skipped",
    }
    assert world.ledger.applied_commit("hello") is None


def test_the_preview_is_what_the_next_sync_does_drift_included(tmp_path: Path) -> None:
    world = World(tmp_path)
    reconcile("hello", world.deps)
    world.targets[DAG].live[key(DAG, "x")] = "stray"  # unrelated: ignored
    dag = next(k for k in world.targets[DAG].live if k.name == "hello_training")
    world.targets[DAG].live[dag] = "edited by hand"
    world.edit_yml("schedule: 0 6 * * *", "schedule: 0 7 * * *")  # the DAG changes, too
    world.targets[SERVICE].live.clear()  # the container was removed behind our back
    shown = preview("hello", world.deps)
    assert shown.drift == ("service/hello_server",)
    listed = [(str(c.action), f"{c.key.kind}/{c.key.name}", c.drifted) for c in shown.plan.changes]
    assert [c for c in listed if c[0] != "noop"] == [
        ("update", "dag/hello_training", False),
        ("update", "service/hello_server", True),
    ]
    text = preview_text(shown)
    assert text.splitlines()[1:3] == [
        "  ~ update dag/hello_training",
        "  ~ update service/hello_server   (drift: the live copy differs; restoring it)",
    ]
    assert text.endswith("Plan: 0 to create, 2 to update, 0 to delete.\n")
    assert '-    "schedule": "0 6 * * *",\n' in shown.plan.changes[2].diff
    run = reconcile("hello", world.deps)
    did = sorted(f"{o.key.kind}/{o.key.name}" for o in run.outcomes)
    assert did == ["dag/hello_training", "service/hello_server"] and run.healed == ("service/hello_server",)


def test_with_self_heal_off_the_preview_reports_drift_and_the_sync_leaves_it(tmp_path: Path) -> None:
    world = World(tmp_path, self_heal=False)
    reconcile("hello", world.deps)
    world.targets[SERVICE].live.clear()
    shown = preview("hello", world.deps)
    assert shown.plan.is_noop and shown.drift == ("service/hello_server",)
    assert "  ! drift  service/hello_server   (self-heal is off: reported, not restored)" in preview_text(shown)
    run = reconcile("hello", world.deps)
    assert run.status is RunStatus.NOOP and run.drift == ("service/hello_server",) and run.outcomes == ()
    assert world.ledger.drift["hello"] == ["service/hello_server"]


def test_an_invalid_head_previews_as_its_problems(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.edit_yml("timeout_minutes: 30", "timeout_minutes: soon")
    shown = preview("hello", world.deps)
    assert not shown.valid and shown.plan.changes == ()
    text = preview_text(shown)
    assert "invalid, 1 problem(s); nothing would change" in text and "liminal.yml:" in text and text.endswith("\n")


# ---- the loop's scheduling --------------------------------------------------------------------------


def wait_for(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_loop_retries_a_transient_failure_after_the_delay_its_message_names(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.targets[DAG].failing["hello_training"] = TransientError("Airflow is restarting", retry_after=0.6)
    loop = ReconcileLoop(world.deps, poll_interval=3600, drift_interval=3600)
    loop.start()
    try:
        loop.request("hello", Trigger.API)
        wait_for(lambda: len(world.ledger.runs) >= 2 and world.ledger.runs[1].status is not RunStatus.RUNNING)
        first, second = world.ledger.runs[:2]
        assert first.error is not None and first.error.endswith("(retry in 0.6 s)")
        assert second.trigger is Trigger.RETRY
        assert first.finished is not None
        waited = second.started - first.finished
        assert 0.6 <= waited < 0.6 + 0.5, waited
        world.targets[DAG].failing.clear()
        wait_for(lambda: world.ledger.applied_commit("hello") == world.commit)
    finally:
        loop.stop()


def test_the_loop_does_not_run_a_commit_that_failed_for_good_until_something_changes(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.targets[IMAGE].failing["hello/server"] = TargetError("image/hello/server", "the Dockerfile does not build")
    loop = ReconcileLoop(world.deps, poll_interval=3600, drift_interval=3600)
    loop.start()
    try:
        loop.request("hello", Trigger.POLL)
        wait_for(lambda: len(world.ledger.runs) == 1 and world.ledger.runs[0].status is RunStatus.FAILED)
        assert world.ledger.runs[0].error is not None and "waits for a new commit" in world.ledger.runs[0].error
        for trigger in (Trigger.POLL, Trigger.WEBHOOK, Trigger.POLL):
            before = world.source.fetches
            loop.request("hello", trigger)
            wait_for(functools.partial(lambda seen: world.source.fetches > seen and loop.depth == 0, before))
        time.sleep(0.7)  # a webhook's debounce, and any retry that would come
        assert len(world.ledger.runs) == 1  # fetched, found the same commit: nothing run or recorded
        loop.request("hello", Trigger.API)  # an operator asks: it runs
        wait_for(lambda: len(world.ledger.runs) == 2 and world.ledger.runs[1].status is RunStatus.FAILED)
        world.targets[IMAGE].failing.clear()
        fixed = world.push({"serving/requirements.txt": "\n"})  # a new commit: it runs
        loop.request("hello", Trigger.POLL)
        wait_for(lambda: world.ledger.applied_commit("hello") == fixed)
        assert [r.trigger for r in world.ledger.runs] == [Trigger.POLL, Trigger.API, Trigger.POLL]
    finally:
        loop.stop()


def test_the_render_cache_is_safe_across_the_loop_s_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from controller.sync.cache import RenderCache

    cache = RenderCache(max_entries=20)

    def work(thread: int) -> list[int]:
        keys = [(i * 7 + thread) % 50 for i in range(500)]
        return [cache.get_or_make("n", k, functools.partial(pow, k, 2)) for k in keys]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    for thread, values in enumerate(results):
        assert values == [((i * 7 + thread) % 50) ** 2 for i in range(500)]
    stats = cache.stats()
    assert stats["n_made"] + stats["n_reused"] == 8 * 500 and len(cache) <= 20


def _scrape(loop: ReconcileLoop, ledger: FakeLedger) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from controller.api import _LoopCollector

    registry = CollectorRegistry()
    registry.register(_LoopCollector(loop, ledger))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    kinds = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert kinds["liminal_sync_runs"] == kinds["liminal_drift_healed"] == kinds["liminal_image_builds"] == "counter"
    assert kinds["liminal_sync_duration_seconds"] == "histogram" and kinds["liminal_queue_depth"] == "gauge"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_what_happened_and_never_go_back(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.targets[IMAGE].failing["hello/server"] = TargetError("image/hello/server", "does not build")
    loop = ReconcileLoop(world.deps, poll_interval=3600, drift_interval=3600)
    loop.start()
    scrapes = [_scrape(loop, world.ledger)]
    try:
        loop.request("hello", Trigger.API)  # fails: the server image does not build
        wait_for(lambda: len(world.ledger.runs) == 1 and world.ledger.runs[0].finished is not None)
        scrapes.append(_scrape(loop, world.ledger))
        world.targets[IMAGE].failing.clear()
        loop.request("hello", Trigger.API)  # succeeds
        wait_for(lambda: world.ledger.applied_commit("hello") == world.commit)
        wait_for(lambda: loop.counted().duration_count == 2)
        world.targets[SERVICE].live.clear()  # drift, restored by the next run
        loop.request("hello", Trigger.API)
        wait_for(lambda: loop.counted().duration_count == 3)
        scrapes.append(_scrape(loop, world.ledger))
    finally:
        loop.stop()
    last = scrapes[-1]
    runs = {labels: v for (name, labels), v in last.items() if name == "liminal_sync_runs_total"}
    assert runs == {(("repo", "hello"), ("result", "failed")): 1, (("repo", "hello"), ("result", "succeeded")): 2}
    assert last[("liminal_sync_duration_seconds_count", ())] == 3
    assert last[("liminal_drift_healed_total", (("repo", "hello"),))] == 1
    # applied: pipeline (run 1), server (run 2); failed: server (run 1)
    assert last[("liminal_image_builds_total", (("result", "applied"),))] == 2
    assert last[("liminal_image_builds_total", (("result", "failed"),))] == 1
    assert last[("liminal_drifted_resources", (("repo", "hello"), ("self_heal", "true")))] == 0
    for before, after in itertools.pairwise(scrapes):
        for (name, labels), value in before.items():
            if name.endswith(("_total", "_bucket", "_count", "_sum")):
                assert after.get((name, labels), 0) >= value, (name, labels)
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in last.items()
        if name == "liminal_sync_duration_seconds_bucket"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets) and buckets[-1][1] == 3


def test_a_poll_that_finds_nothing_new_adds_no_run(tmp_path: Path) -> None:
    world = World(tmp_path)
    assert reconcile("hello", world.deps, trigger=Trigger.POLL).id is not None  # applies: kept
    quiet = reconcile("hello", world.deps, trigger=Trigger.POLL)
    assert (quiet.id, quiet.status, quiet.ok) == (None, RunStatus.NOOP, True)
    assert len(world.ledger.runs) == 1 and world.ledger.forgotten == 1
    world.targets[SERVICE].live.clear()  # drift is news: the poll that restores it is a run
    assert reconcile("hello", world.deps, trigger=Trigger.POLL).healed == ("service/hello_server",)
    assert reconcile("hello", world.deps, trigger=Trigger.CLI).id is not None  # asked for: always kept
    assert len(world.ledger.runs) == 3


def test_polls_of_an_unchanged_head_fetch_nothing_even_after_a_restart(tmp_path: Path) -> None:
    world = World(tmp_path)
    assert reconcile("hello", world.deps, trigger=Trigger.CLI).ok  # live, before this loop started
    fetched = world.source.fetches
    loop = ReconcileLoop(world.deps, poll_interval=0.2, drift_interval=3600, jitter=0.0)
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while loop.counted().unchanged_polls < 3:
            assert time.monotonic() < deadline, "no poll found the head unchanged"
            time.sleep(0.05)
        assert world.source.fetches == fetched and world.source.asked >= 3  # asked, never fetched
        runs = len(world.ledger.runs)
        newer = world.edit_yml("schedule: 0 6 * * *", "schedule: 0 7 * * *")
        while world.ledger.applied_commit("hello") != newer:
            assert time.monotonic() < deadline + 10, "the moved head was not deployed"
            time.sleep(0.05)
        assert world.source.fetches == fetched + 1 and len(world.ledger.runs) == runs + 1
    finally:
        loop.stop()
