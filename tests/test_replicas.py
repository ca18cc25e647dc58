"""Two `liminal serve` replicas on one real PostgreSQL ledger, as processes: webhooks sent to
both in turn, every commit applied once, and a replica killed with SIGKILL mid-sync whose work
the survivor finishes. Writes to the shared DAG folder are counted by the kernel (inotify)."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import select
import signal
import struct
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import sqlalchemy as sa

from controller.ledger import Ledger
from controller.ledger import tables as t
from controller.model import RepoRef, ResourceKind, ResultCode, RunStatus
from controller.render.dags import repo_payload_folder
from tests.conftest import cli_env, commit_all, git, postgres_ledger, running_controller
from tests.test_serve import SECRET, _post, _push, _sign

IN_MOVED_TO = 0x80


class FolderWrites:
    """Counts files renamed into `folders` (how the DAG folder target puts each payload in place),
    read from the kernel's inotify events: what was written, not what the controller says."""

    def __init__(self, folders: list[Path]) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK)
        assert self.fd >= 0
        self.names: dict[int, Path] = {}
        for folder in folders:
            wd = libc.inotify_add_watch(self.fd, str(folder).encode(), IN_MOVED_TO)
            assert wd >= 0
            self.names[wd] = folder
        self.count: Counter[tuple[str, str]] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            if not select.select([self.fd], [], [], 0.1)[0]:
                continue
            data = os.read(self.fd, 1 << 16)
            at = 0
            while at < len(data):
                wd, _, _, size = struct.unpack_from("iIII", data, at)
                name = data[at + 16 : at + 16 + size].rstrip(b"\0").decode()
                at += 16 + size
                if name.endswith(".json"):
                    self.count[(self.names[wd].name, name[: -len(".json")])] += 1

    def close(self) -> None:
        time.sleep(0.5)  # events already queued are read
        self._stop.set()
        self._thread.join()
        os.close(self.fd)


def _system(name: str, pipelines: int, hour: int) -> str:
    parts = [f"name: {name}", "images:", "  - image: rp/task", "    type: python", "    source: .", "pipelines:"]
    for k in range(pipelines):
        parts += [
            f"  - pipeline: {name.lower()}_p{k}",
            "    start_date: 2024-01-01",
            "    timeout_minutes: 30",
            f"    schedule: {k % 60} {hour % 24} * * *",
            "    tasks:",
            "      - task: t",
            "        type: python",
            "        image: rp/task",
            f"        cmd: python -c 'print({hour})'",
        ]
    return "\n".join(parts) + "\n"


def _remote(tmp_path: Path, name: str, pipelines: int) -> Path:
    repo = tmp_path / "remotes" / name
    repo.mkdir(parents=True)
    (repo / "liminal.yml").write_text(_system(name, pipelines, 0))
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "initial")
    return repo


def _deliver(url: str, body: bytes, signature: str) -> int:
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": signature,
    }
    return _post(url, "/webhooks/github", body, headers)[0]


def _until(predicate: object, seconds: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - started < seconds, f"timed out after {seconds} s: {what}"
        time.sleep(0.2)
    return time.monotonic() - started


def _applied(ledger: Ledger, repo: str) -> list[tuple[str, str | None]]:
    """(pipeline, content hash) of each DAG outcome that applied, over every kept run of `repo`."""
    return [
        (o.key.name, o.content_hash)
        for run in ledger.history(repo, limit=100_000)
        for o in run.outcomes
        if o.key.kind is ResourceKind.DAG and o.code is ResultCode.APPLIED
    ]


def test_two_replicas_share_the_work_and_the_survivor_finishes_a_killed_sync(tmp_path: Path) -> None:
    names = [f"r{i}" for i in range(10)]
    with postgres_ledger() as ledger, ExitStack() as stack:
        remotes = {name: _remote(tmp_path, name, 1) for name in names}
        remotes["big"] = _remote(tmp_path, "big", 300)
        for name, remote in remotes.items():
            ledger.add_repo(RepoRef(name, str(remote)))
        dags = tmp_path / "dags"
        folders = [dags / repo_payload_folder(name) for name in remotes]
        for folder in folders:
            folder.mkdir(parents=True)
        writes = FolderWrites(folders)
        stack.callback(writes.close)
        served = []
        for replica in ("a", "b"):
            env = cli_env(
                tmp_path,
                ledger,
                LIMINAL_HOME=str(tmp_path / f"home-{replica}"),  # a cache of its own, as each pod has
                LIMINAL_DAGS_FOLDER=str(dags),  # the DAG folder they share
                LIMINAL_IMAGES="off",
                LIMINAL_GITHUB_WEBHOOK_SECRET=SECRET,
                LIMINAL_POLL_INTERVAL="3600",
                LIMINAL_DRIFT_INTERVAL="5",
                LIMINAL_LOG_FORMAT="json",
            )
            served.append(stack.enter_context(running_controller(env, tmp_path / f"serve-{replica}.log")))
        (url_a, proc_a), (url_b, _) = served

        # 200 pushes over 10 repositories, their webhooks sent to the replicas in turn
        newest: dict[str, str] = {}
        pushes = []
        for i in range(200):
            name = names[i % 10]
            (remotes[name] / "liminal.yml").write_text(_system(name, 1, i + 1))
            newest[name] = commit_all(remotes[name], f"push {i}")
            body = json.dumps(_push(remotes[name], newest[name])).encode()
            pushes.append(body)
        signatures = _sign(pushes)
        for i, body in enumerate(pushes):
            assert _deliver((url_a, url_b)[i % 2], body, signatures[i]) == 202
        _until(
            lambda: all(ledger.status(n).last_applied_commit == newest[n] for n in names),
            120,
            "every repository at its newest commit",
        )
        _until(lambda: all(d.status == "processed" for d in ledger.deliveries(1000)), 60, "every delivery processed")
        with ledger.engine.connect() as conn:
            claimed = Counter(r.claimed_by for r in conn.execute(sa.select(t.deliveries.c.claimed_by)))
        assert len(claimed) == 2 and sum(claimed.values()) == 200, claimed  # each replica took its own
        for name in names:
            applied = _applied(ledger, name)
            assert len(applied) == len(set(applied)), f"{name}: a DAG version applied twice: {applied}"
            written = writes.count[(repo_payload_folder(name), f"{name}_p0")]
            assert written == len(applied), f"{name}: {written} writes to the DAG folder, {len(applied)} recorded"

        # a replica killed with SIGKILL in the middle of a sync: the other one finishes it
        big = remotes["big"]
        (big / "liminal.yml").write_text(_system("big", 300, 1000))
        target = commit_all(big, "big change")
        body = json.dumps(_push(big, target)).encode()
        assert _deliver(url_a, body, _sign([body])[0]) == 202

        def running() -> bool:
            run = ledger.status("big").last_run
            return run is not None and run.status is RunStatus.RUNNING

        _until(running, 60, "replica a starts the sync")
        os.kill(proc_a.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        proc_a.wait()
        took = _until(lambda: ledger.status("big").last_applied_commit == target, 60, "the survivor applies it")
        print(f"killed mid-sync: the survivor applied the commit {time.monotonic() - killed_at:.1f} s later")
        assert took <= 30
        runs = ledger.history("big", limit=10)
        assert any(r.status is RunStatus.FAILED and "interrupted" in (r.error or "") for r in runs)
        applied = _applied(ledger, "big")
        assert len(applied) == len(set(applied))
        deployed = ledger.deployed_state("big").resources
        assert len([k for k in deployed if k.kind is ResourceKind.DAG]) == 300
        assert all(d.commit == target for k, d in deployed.items() if k.kind is ResourceKind.DAG)
        payloads = sorted((dags / repo_payload_folder("big")).glob("*.json"))
        assert len(payloads) == 300 and all("print(1000)" in p.read_text() for p in payloads)
        assert not [p for p in dags.rglob("*") if p.name.startswith(".")], "a temporary file left behind"
