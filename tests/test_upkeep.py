"""Running for months: retention in the real ledgers, checkout tidying and `git gc` on real git,
and one `liminal serve` per SQLite ledger."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from controller.ledger import Ledger
from controller.ledger import tables as t
from controller.model import (
    Action,
    BuildRecord,
    BuildStatus,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    RepoRef,
    Resource,
    ResourceKey,
    ResourceKind,
    ResourceOutcome,
    ResultCode,
    RunStatus,
    Trigger,
)
from controller.sync.source import RECENT, GitSource
from tests.conftest import LIMINAL, TEST_REMOTES, cli_env, commit_all, example_remote, git, liminal, running_controller


def _aged(ledger: Ledger, table: sa.Table, column: sa.Column[Any], ids: list[int], days: float) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c.id.in_(ids))
            .values({column.key: dt.datetime.now(dt.UTC) - dt.timedelta(days=days)})
        )


def test_retention_keeps_the_newest_runs_and_the_live_state_and_drops_the_rest(ledger: Ledger) -> None:
    ledger.add_repo(RepoRef("busy", "/nowhere"))
    ledger.add_repo(RepoRef("quiet", "/nowhere"))
    key = ResourceKey("busy", ResourceKind.DAG, "d")
    resource = Resource(key, "h" * 64, {"x": 1})
    ids = []
    for i in range(150):
        run = ledger.begin_run("busy", Trigger.POLL)
        ledger.set_attempted(run, "busy", f"{i:040x}")
        ledger.record(
            run, ResourceOutcome(key, Action.UPDATE, ResultCode.APPLIED, "h" * 64, "ok"), resource, f"{i:040x}"
        )
        ledger.finish_run(run, "busy", RunStatus.SUCCEEDED, applied_commit=f"{i:040x}")
        ids.append(run)
    quiet = ledger.begin_run("quiet", Trigger.POLL)
    ledger.finish_run(quiet, "quiet", RunStatus.FAILED, error="long ago")
    _aged(ledger, t.runs, t.runs.c.started_at, [*ids[:120], quiet], days=200)
    for n, status in enumerate(["processed", "queued", "ignored", "processed"]):
        row = ledger.record_delivery(
            Delivery(
                "github",
                f"d{n}",
                "push",
                DeliveryKind.PUSH,
                "busy",
                "refs/heads/main",
                None,
                None,
                DeliveryStatus(status),
            )
        )
        assert row is not None
        if n < 3:
            _aged(ledger, t.deliveries, t.deliveries.c.received_at, [row], days=200)
    for n in range(3):
        ledger.record_build(BuildRecord("busy", "img", f"img:{n}", f"{n}" * 64, BuildStatus.BUILT, None, 1.0, None))
    with ledger.engine.connect() as conn:
        build_ids = [r.id for r in conn.execute(sa.select(t.image_builds.c.id).order_by(t.image_builds.c.id))]
    _aged(ledger, t.image_builds, t.image_builds.c.started_at, build_ids, days=200)
    deployed_before = ledger.deployed_state("busy")

    pruned = ledger.prune_history(dt.timedelta(days=90), keep_runs=100)

    kept = [r.id for r in ledger.history("busy", limit=1000)]
    assert sorted(kept) == ids[50:], "the newest 100 runs stay; older ones past 90 days go"
    assert pruned.runs == 50 and pruned.outcomes == 50
    assert [r.id for r in ledger.history("quiet")] == [quiet], "a repository's last run stays, however old"
    assert ledger.deployed_state("busy") == deployed_before, "the live state is never pruned"
    assert ledger.status("busy").last_applied_commit == f"{149:040x}"
    assert sorted(d.delivery_id for d in ledger.deliveries()) == ["d1", "d3"], "queued and young deliveries stay"
    assert pruned.deliveries == 2
    assert [b["tag"] for b in ledger.builds("busy")] == ["img:2"], "the newest build of each image stays"
    with ledger.engine.connect() as conn:
        orphans = conn.execute(
            sa.select(sa.func.count()).select_from(t.outcomes).where(t.outcomes.c.run_id.not_in(sa.select(t.runs.c.id)))
        ).scalar()
    assert orphans == 0
    again = ledger.prune_history(dt.timedelta(days=90), keep_runs=100)
    assert (again.runs, again.deliveries, again.builds) == (0, 0, 0)


def test_tidy_keeps_the_live_the_recent_and_the_held_checkouts_and_gc_compacts(tmp_path: Path) -> None:
    remote = example_remote(tmp_path)
    commits = [git(remote, "rev-parse", "HEAD")]
    for i in range(11):
        (remote / "notes.txt").write_text(f"change {i}\n" * 2000)
        commits.append(commit_all(remote, f"change {i}"))
    source = GitSource(tmp_path / "cache", policy=TEST_REMOTES)
    repo = RepoRef("hello", str(remote))
    source.resolve(repo)
    snapshots = [source.checkout(repo, c) for c in commits]
    long_ago = time.time() - RECENT - 60
    for age, snap in enumerate(snapshots):  # used in commit order, all before RECENT
        os.utime(snap.root, (long_ago + age, long_ago + age))
    before = source.disk_usage(repo)
    live, held = commits[0], commits[4]
    with source.hold(snapshots[4]):
        removed = source.tidy(repo, {live}, window=3)
    left = sorted(p.name for p in (source._folder(repo) / "commits").iterdir() if p.is_dir())
    assert left == sorted({live, held, *commits[-3:]})
    assert removed == len(commits) - 5
    assert source.disk_usage(repo) < before
    assert source.disk_usage() >= source.disk_usage(repo) > 0
    # a tidied commit is checked out again from the mirror when asked for
    again = source.checkout(repo, commits[2])
    assert (again.root / "notes.txt").read_text().startswith("change 1\n")
    assert source.gc(repo, every=3600) is True
    assert source.gc(repo, every=3600) is False, "not again before `every` seconds"
    packs = list((source._folder(repo) / "mirror.git" / "objects" / "pack").glob("*.pack"))
    assert len(packs) == 1
    assert source.resolve(repo) == commits[-1]


def test_one_serve_per_sqlite_ledger_and_upkeep_reports_the_cache(tmp_path: Path) -> None:
    remote = example_remote(tmp_path)
    ledger = Ledger(f"sqlite:///{tmp_path / 'home' / 'ledger.db'}")
    ledger.add_repo(RepoRef("hello", str(remote)))
    env = cli_env(tmp_path, ledger, LIMINAL_IMAGES="off", LIMINAL_UPKEEP_INTERVAL="1", LIMINAL_POLL_INTERVAL="1")
    with running_controller(env, tmp_path / "serve.log") as (url, _):
        second = subprocess.run(
            [LIMINAL, "serve", "--listen", "127.0.0.1:1"],
            check=False,
            env=env,
            capture_output=True,
            timeout=60,
            text=True,
        )
        assert second.returncode != 0
        assert "SQLite is single-replica" in second.stderr and "PostgreSQL" in second.stderr
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
                families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
            cache = families.get("liminal_git_cache_bytes")
            if cache is not None and cache.samples[0].value > 0 and ledger.status("hello").last_applied_commit:
                break
            assert time.monotonic() < deadline, "no git cache figure after a sync and an upkeep pass"
            time.sleep(0.5)
        assert families["liminal_pruned"].type == "counter"
    status = liminal("status", "--format", "json", env=env)
    assert status.returncode == 0, status.stderr
    assert '"git_cache_bytes"' in status.stdout
    assert "git cache" in liminal("status", env=env).stdout
    ledger.close()


def test_deliveries_and_duties_are_claimed_by_one_replica(ledger: Ledger) -> None:
    ledger.add_repo(RepoRef("hello", "/nowhere"))
    ledger.join("a", "host-a", 1)
    ledger.join("b", "host-b", 2)
    row = ledger.record_delivery(Delivery("github", "x1", "push", DeliveryKind.PUSH, "hello"), "a")
    unclaimed = ledger.record_delivery(Delivery("github", "x2", "push", DeliveryKind.PUSH, "hello"))
    assert [d.id for d in ledger.claim_orphans("b", stale_after=10)] == [unclaimed], "a beats: its delivery stays"
    assert ledger.claim_orphans("a", stale_after=10) == [], "b holds x2 now"
    with ledger.engine.begin() as conn:  # a stops beating
        conn.execute(
            t.replicas.update()
            .where(t.replicas.c.id == "a")
            .values(heartbeat_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60))
        )
    assert [d.id for d in ledger.claim_orphans("b", stale_after=10)] == [row]
    assert ledger.claim_orphans("b", stale_after=10) == [], "claimed once"
    ledger.leave("b")  # a clean stop gives its queued deliveries back at once
    ledger.join("c", "host-c", 3)
    assert sorted(d.delivery_id for d in ledger.claim_orphans("c", stale_after=10)) == ["x1", "x2"]
    assert [r["id"] for r in ledger.replicas(stale_after=10)] == ["c"], "a is silent, b left"
    if ledger.is_sqlite:  # one replica serves a SQLite ledger: nothing to share
        assert ledger.claim_duty("hello", "poll", 60) and ledger.claim_duty("hello", "poll", 60)
    else:
        assert ledger.claim_duty("hello", "poll", 60) is True
        assert ledger.claim_duty("hello", "poll", 60) is False, "taken within the interval"
        assert ledger.claim_duty("hello", "drift", 60) is True, "each duty apart"
        assert ledger.claim_duty("hello", "poll", 0.0) is True
