"""Benchmark: one controller for many repositories and pipelines, in one run, side by side.

Synthetic repositories (each `--pipelines` pipelines) are served over smart HTTP by git's own
`git http-backend` (tests/git_http.py); `liminal serve` tracks them with a SQLite ledger, images
off, DAGs to a folder, polling at `--interval` (default: the controller's default, 180 s) and
observing drift at its default 60 s.

1. Idle: for each count in `--repos`, wait until every repository is live and the first upkeep
   pass is done, then measure the serve process's CPU (share of one core) over `--window`
   seconds, and its RSS.
2. Push -> live, with the largest count tracked: a one-pipeline change pushed to a repository,
   and its webhook sent; seconds until the ledger says the commit is live (p50/p95).
3. Webhook ingest with the largest count tracked: signed GitHub pushes from 8 keep-alive
   connections; deliveries/s and p99, and the same load against a minimal FastAPI endpoint that
   only checks the HMAC (benchmarks/hmac_only.py).
4. One repository of `--big` pipelines, as CLI processes: first `liminal sync`, a no-op
   `liminal plan`, and `liminal plan` after a one-pipeline change.

    python -m benchmarks.scale [--repos 100,1000] [--window 180] [--big 10000]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.corpus import big_liminal_yml
from benchmarks.sync import git
from benchmarks.webhooks import free_port, running, send_all, signed
from controller.ledger import Ledger
from controller.model import RepoRef
from tests.git_http import serve_git, url_of

SECRET = "scale-bench"
EXE = str(Path(sys.executable).parent / "liminal")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _env(base: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "LIMINAL_HOME": str(base / "home"),
        "LIMINAL_LEDGER_URL": f"sqlite:///{base / 'ledger.db'}",
        "LIMINAL_IMAGES": "off",
        "LIMINAL_DAGS_FOLDER": str(base / "dags"),
        "LIMINAL_ALLOW_HTTP_REMOTES": "true",
        "LIMINAL_ALLOW_LOCAL_REMOTES": "true",
        "LIMINAL_LOG_FORMAT": "json",
        **extra,
    }


def _system(work: Path, pipelines: int, tasks: int) -> None:
    """A liminal.yml of `pipelines` pipelines whose image is built from worker/ (a change to the
    file is then a change to pipelines, not to the image every task runs)."""
    (work / "worker").mkdir(parents=True)
    (work / "worker" / "step.py").write_text("print('step')\n")
    (work / "liminal.yml").write_text(big_liminal_yml(pipelines, tasks).replace("source: .", "source: worker"))


def _template(base: Path, pipelines: int) -> Path:
    work = base / "template"
    _system(work, pipelines, 2)
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "initial")
    bare = base / "template.git"
    git(base, "clone", "-q", "--bare", str(work), str(bare))
    return bare


def _live(ledger: Ledger, names: list[str]) -> int:
    return sum(1 for n in names if ledger.status(n).last_applied_commit)


def _idle(
    base: Path, server: Any, count: int, *, window: float, interval: str, drift: str = "60"
) -> tuple[float, float]:
    """Share of one core and RSS (MB) of `liminal serve` tracking `count` repositories, all live
    (added to the ledger in `base` unless they are there already)."""
    ledger = Ledger(f"sqlite:///{base / 'ledger.db'}")
    names = [f"r{i:04d}" for i in range(count)]
    known = {r.name for r in ledger.repos()}
    for name in names:
        if name not in known:
            ledger.add_repo(RepoRef(name, url_of(server, f"{name}.git")))
    port = free_port()
    env = _env(base, LIMINAL_POLL_INTERVAL=interval, LIMINAL_DRIFT_INTERVAL=drift, LIMINAL_GITHUB_WEBHOOK_SECRET=SECRET)
    log = base / f"serve-{count}-{drift}.log"
    with running([EXE, "serve", "--listen", f"127.0.0.1:{port}"], env, port, log) as proc:
        began = time.monotonic()
        while _live(ledger, names) < count:
            time.sleep(2)
        print(f"  {count} repositories live after {time.monotonic() - began:.0f} s", flush=True)
        # the first upkeep pass (30 s after start: every mirror's first `git gc`, every
        # checkout folder listed) is start-up work; the window starts after it, and so leaves
        # out the later passes (every 600 s) too
        while '"event": "upkeep.done"' not in log.read_text():
            time.sleep(2)
        print(f"  first upkeep pass done after {time.monotonic() - began:.0f} s", flush=True)
        time.sleep(5)
        cpu = _cpu_seconds(proc.pid)
        time.sleep(window)
        share = (_cpu_seconds(proc.pid) - cpu) / window
        rss = _rss_mb(proc.pid)
        if proc.poll() is not None:
            raise SystemExit(f"liminal serve stopped: {log.read_text()[-2000:]}")
    ledger.close()
    print(f"  idle with {count}, drift every {drift} s: {share * 100:.1f}% of a core, RSS {rss:.0f} MB", flush=True)
    return share, rss


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--repos", default="100,1000")
    parser.add_argument("--pipelines", type=int, default=10)
    parser.add_argument("--window", type=float, default=180.0)
    parser.add_argument("--interval", default="180")
    parser.add_argument("--big", type=int, default=10_000)
    args = parser.parse_args()
    counts = [int(c) for c in args.repos.split(",")]
    print(f"machine: {os.cpu_count()} cores; SQLite ledger; images off; DAGs to a folder", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        served = root / "served"
        served.mkdir()
        template = _template(root, args.pipelines)
        for i in range(max(counts)):
            shutil.copytree(template, served / f"r{i:04d}.git")
        with serve_git(served) as server:
            results = {}
            for count in counts:
                base = root / f"run-{count}"
                base.mkdir()
                results[f"{count}"] = _idle(base, server, count, window=args.window, interval=args.interval)
            # the same repositories, all live, with drift checks off: what polling alone costs
            largest = max(counts)
            results[f"{largest}, drift checks off"] = _idle(
                root / f"run-{largest}", server, largest, window=args.window, interval=args.interval, drift="3600"
            )
            latencies, ingest = _push_and_ingest(root, served, server, largest, args.interval)
            ordered = sorted(latencies)
            print(f"  push -> live: p50 {statistics.median(ordered):.2f} s", flush=True)
            print(f"  ingest: ours {ingest[0]}, HMAC only {ingest[1]}", flush=True)
        big = _big(root, args.big)
    print()
    print("| measure | figure | target |")
    print("| --- | --- | --- |")
    for label, (share, rss) in results.items():
        print(
            f"| idle CPU, {label} repositories x {args.pipelines} pipelines, poll {args.interval} s | "
            f"{share * 100:.1f}% of a core, RSS {rss:.0f} MB | < 5% |"
        )
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    print(
        f"| push -> live, {max(counts)} tracked ({len(ordered)} pushes) | "
        f"p50 {statistics.median(ordered):.2f} s, p95 {p95:.2f} s | p50 < 1 s |"
    )
    (ours, ours_p99), (plain, plain_p99) = ingest
    print(f"| webhook ingest, {max(counts)} tracked | {ours:.0f}/s, p99 {ours_p99:.0f} ms | >= 1,000/s, p99 < 50 ms |")
    print(
        f"| minimal HMAC-only FastAPI endpoint | {plain:.0f}/s, p99 {plain_p99:.0f} ms | ratio {plain / ours:.2f}x "
        "(target <= 2x) |"
    )
    for label, seconds in big:
        print(f"| {args.big:,} pipelines: {label} | {seconds:.2f} s | |")


def _push_and_ingest(
    root: Path, served: Path, server: Any, count: int, interval: str
) -> tuple[list[float], tuple[tuple[float, float], tuple[float, float]]]:
    base = root / f"run-{count}"  # the ledger and cache of the largest idle run: all live already
    ledger = Ledger(f"sqlite:///{base / 'ledger.db'}")
    port = free_port()
    env = _env(base, LIMINAL_POLL_INTERVAL=interval, LIMINAL_GITHUB_WEBHOOK_SECRET=SECRET)
    latencies: list[float] = []
    with running([EXE, "serve", "--listen", f"127.0.0.1:{port}"], env, port, base / "serve-push.log"):
        for i in range(20):
            name = f"r{(i * 37) % count:04d}"
            work = root / f"work-{i}"
            git(root, "clone", "-q", str(served / f"{name}.git"), str(work))
            yml = work / "liminal.yml"
            text = re.sub(r"(?m)^    schedule: .*$", f"    schedule: {i % 60} 1 * * *", yml.read_text(), count=1)
            yml.write_text(text)
            git(work, "commit", "-q", "-am", f"push {i}")
            git(work, "push", "-q", "origin", "main")
            commit = git(work, "rev-parse", "HEAD")
            payload = {
                "ref": "refs/heads/main",
                "after": commit,
                "deleted": False,
                "repository": {"full_name": f"bench/{name}", "clone_url": url_of(server, f"{name}.git")},
            }
            started = time.perf_counter()
            send_all(port, signed(SECRET, payload, 1, prefix=f"push-{i}"), threads=1)
            while ledger.status(name).last_applied_commit != commit:
                time.sleep(0.02)
            latencies.append(time.perf_counter() - started)
        payload = {
            "ref": "refs/heads/other",
            "after": "0" * 39 + "1",
            "deleted": False,
            "repository": {"full_name": "bench/r0000", "clone_url": url_of(server, "r0000.git")},
        }
        bodies = signed(SECRET, payload, 3000, prefix="ingest")
        ours = _rate(send_all(port, bodies))
    ledger.close()
    plain_port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "benchmarks.hmac_only:app",
        "--port",
        str(plain_port),
        "--log-level",
        "warning",
    ]
    with running(command, {**os.environ, "BENCH_SECRET": SECRET}, plain_port, root / "hmac-only.log"):
        plain = _rate(send_all(plain_port, signed(SECRET, payload, 3000, prefix="plain")))
    return latencies, (ours, plain)


def _rate(sent: tuple[list[float], list[int], float]) -> tuple[float, float]:
    latencies, statuses, seconds = sent
    ordered = sorted(latencies)
    return statuses.count(202) / seconds, ordered[int(len(ordered) * 0.99) - 1] * 1000


def _big(root: Path, pipelines: int) -> list[tuple[str, float]]:
    """Seconds of CLI processes on one repository of `pipelines` pipelines."""
    base = root / "big"
    work = base / "repo"
    # a monorepo of systems of 1,000 pipelines each (one file may hold 4 MB: a 10,000-pipeline file is refused)
    for k in range(max(1, pipelines // 1000)):
        folder = work / f"system{k:02d}"
        _system(folder, min(1000, pipelines), 1)
        yml = folder / "liminal.yml"
        text = yml.read_text().replace("GeneratedSystem", f"GeneratedSystem{k}").replace("gen/worker", f"gen/worker{k}")
        yml.write_text(text.replace("pipeline: pipeline_", f"pipeline: s{k}_pipeline_"))
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "big")
    env = _env(base)

    def timed(*command: str) -> float:
        started = time.perf_counter()
        subprocess.run([EXE, *command], env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started

    subprocess.run([EXE, "repo", "add", str(work), "--name", "big"], env=env, check=True, stdout=subprocess.DEVNULL)
    out = [("first `liminal sync`", timed("sync", "big")), ("no-op `liminal plan`", timed("plan", "big"))]
    yml = work / "system00" / "liminal.yml"
    yml.write_text(yml.read_text().replace("schedule: 0 * * * *", "schedule: 30 2 * * *", 1))
    git(work, "commit", "-q", "-am", "one pipeline")
    out.append(("`liminal plan` of a one-pipeline change", timed("plan", "big")))
    out.append(("`liminal sync` of it", timed("sync", "big")))
    return out


if __name__ == "__main__":
    main()
