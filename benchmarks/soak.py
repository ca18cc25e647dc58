"""Soak benchmark (minutes, not hours): does `liminal serve`'s footprint stay flat?

One `liminal serve` process tracks 20 local repositories polled every second (SQLite ledger,
DAG folder, images off). 2,000 commits are pushed round-robin over the run (each changes a
pipeline and adds a file: new git objects); every 100th commit a deployed DAG file is deleted by
hand (drift, restored by self-heal). Upkeep runs every 10 s with a short retention
(LIMINAL_RETENTION_DAYS=0.001, i.e. 86 s, and 20 runs kept per repository) so that pruning
happens within the run; the defaults (90 days, 100 runs) bound the same way, later.

Printed after every 500 commits, then after 30 s with nothing pushed: ledger rows (runs,
outcomes, deliveries) and file bytes, git cache bytes (mirrors, i.e. the repositories' objects,
and the rest: checkouts and bookkeeping), the process's RSS, open file descriptors and threads.
Target (issue 19): flat after warm-up; the git cache beyond the mirrors grows by less than 1 MB
per repository per 1,000 further commits; no-op polls (about 20 a second here) add no runs.

    .venv/bin/python -m benchmarks.soak [--commits 2000] [--repos 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.sync import _GIT_ENV
from controller.ledger import Ledger
from controller.model import RepoRef
from controller.render.dags import repo_payload_folder

LIMINAL = str(Path(sys.executable).parent / "liminal")


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=_GIT_ENV, check=True, capture_output=True)


def _system(name: str, version: int) -> str:
    pipelines = []
    for k in range(2):
        pipelines.append(
            f"  - pipeline: {name}_p{k}\n"
            "    start_date: 2024-01-01\n"
            "    timeout_minutes: 30\n"
            f"    schedule: {version % 60} {k} * * *\n"
            "    tasks:\n"
            "      - task: t\n"
            "        type: python\n"
            "        image: soak/task\n"
            f"        cmd: python -c 'print({version})'\n"
        )
    head = f"name: {name}\nimages:\n  - image: soak/task\n    type: python\n    source: .\npipelines:\n"
    return head + "".join(pipelines)


def _bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def _proc(pid: int) -> tuple[int, int, int]:
    """RSS (bytes), open file descriptors and threads of process `pid`."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields["VmRSS"].split()[0]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--repos", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="liminal-soak-"))
    home, dags = work / "home", work / "dags"
    names = [f"soak{i:02d}" for i in range(args.repos)]
    remotes = {}
    ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
    for name in names:
        remote = work / "remotes" / name
        remote.mkdir(parents=True)
        (remote / "liminal.yml").write_text(_system(name, 0))
        _git(remote, "init", "-q", "-b", "main")
        _git(remote, "add", "-A")
        _git(remote, "commit", "-q", "-m", "initial")
        remotes[name] = remote
        ledger.add_repo(RepoRef(name, str(remote)))
    env = {
        **os.environ,
        "LIMINAL_HOME": str(home),
        "LIMINAL_DAGS_FOLDER": str(dags),
        "LIMINAL_ALLOW_LOCAL_REMOTES": "true",
        "LIMINAL_IMAGES": "off",
        "LIMINAL_POLL_INTERVAL": "1",
        "LIMINAL_DRIFT_INTERVAL": "5",
        "LIMINAL_UPKEEP_INTERVAL": "10",
        "LIMINAL_RETENTION_DAYS": "0.001",
        "LIMINAL_RETENTION_RUNS": "20",
        "LIMINAL_LOG_LEVEL": "warning",
    }
    log = (work / "serve.log").open("wb")
    serve = subprocess.Popen([LIMINAL, "serve", "--listen", "127.0.0.1:18799"], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen("http://127.0.0.1:18799/healthz", timeout=2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "liminal serve did not start"
            time.sleep(0.2)
    started = time.monotonic()
    print(f"{args.repos} repositories polled every 1 s; {args.commits} commits; work in {work}")
    header = (
        f"{'commits':>7} {'min':>5} {'runs':>6} {'outcomes':>8} {'deliv':>5} {'ledger MB':>9} "
        f"{'mirrors MB':>10} {'other cache MB':>14} {'RSS MB':>7} {'fds':>4} {'threads':>7} {'memo':>6}"
    )
    print(header)

    def sample(commits: int) -> None:
        rows = ledger.size()
        ledger_bytes = sum(_bytes(p) for p in [home] if p.exists()) - _bytes(home / "git")
        mirrors = sum(_bytes(p) for p in (home / "git").glob("*/mirror.git"))
        cache = _bytes(home / "git")
        rss, fds, threads = _proc(serve.pid)
        with urllib.request.urlopen("http://127.0.0.1:18799/metrics", timeout=30) as response:
            metrics = response.read().decode()
        found = [line.split()[-1] for line in metrics.splitlines() if line.startswith("liminal_render_cache_entries ")]
        memo = int(float(found[0])) if found else -1
        print(
            f"{commits:>7} {(time.monotonic() - started) / 60:>5.1f} {rows['runs']:>6} {rows['outcomes']:>8} "
            f"{rows['deliveries']:>5} {ledger_bytes / 2**20:>9.2f} {mirrors / 2**20:>10.2f} "
            f"{(cache - mirrors) / 2**20:>14.2f} {rss / 2**20:>7.1f} {fds:>4} {threads:>7} {memo:>6}",
            flush=True,
        )

    sample(0)
    try:
        for i in range(1, args.commits + 1):
            name = names[i % len(names)]
            remote = remotes[name]
            (remote / "liminal.yml").write_text(_system(name, i))
            (remote / f"notes-{i % 10}.txt").write_text(f"commit {i}\n" * 50)  # new objects, same tree size
            _git(remote, "add", "-A")
            _git(remote, "commit", "-q", "-m", f"commit {i}")
            if i % 100 == 0:  # drift: a deployed DAG removed by hand; self-heal restores it
                victim = dags / repo_payload_folder(names[(i // 100) % len(names)])
                for payload in sorted(victim.glob("*.json"))[:1]:
                    payload.unlink()
            time.sleep(0.1)
            if i % 500 == 0:
                sample(i)
        time.sleep(30)  # nothing pushed: polls (about 20 a second) find nothing new
        sample(args.commits)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
        log.close()
        ledger.close()


if __name__ == "__main__":
    main()
