"""Benchmark: what untrusted content and anonymous clients can cost the controller (issue 16).

Prints one table:
1. `.dockerignore` matching of 10,000 file names with the catastrophic patterns (`*a*a*...*b`,
   which took the old regex matcher over a minute for ONE 60-character name), against the same
   names with simple patterns. Target: ratio <= 3x.
2. `liminal serve` taking 40 concurrent 25 MB webhook bodies with bad signatures: peak RSS
   growth (target < 150 MB) and /healthz p99 while it happens (target < 100 ms).
3. 100 concurrent anonymous API reads (the plan endpoint, repository status, runs) while the
   tracked git remote hangs: /healthz p99 (target < 100 ms).

Run: `python -m benchmarks.untrusted` from the repository root (.venv active).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from controller.ledger import Ledger
from controller.model import RepoRef
from controller.render.dockerignore import MATCH_BUDGET, parse_dockerignore

NAMES = 10_000
CATASTROPHIC = ["*a" * 8 + "*b", "*a" * 12 + "*b", "**/*a*a*a*a*a*a*c/**"]
SIMPLE = ["*.pyc", "**/__pycache__", "build"]
BODIES = 40
BODY_BYTES = 25 * 1024 * 1024
READERS = 100


def _names() -> list[str]:
    rnd = random.Random(16)
    out = []
    for i in range(NAMES):
        depth = rnd.randint(0, 3)
        parts = ["".join(rnd.choice("abcdefgh_") for _ in range(rnd.randint(3, 12))) for _ in range(depth)]
        leaf = "a" * 60 if i % 10 == 0 else "".join(rnd.choice("abcxyz") for _ in range(rnd.randint(5, 40)))
        out.append("/".join([*parts, leaf + rnd.choice([".py", ".pyc", ".csv", ""])]))
    return out


def _match_seconds(patterns: list[str], names: list[str]) -> float:
    best = float("inf")
    for _ in range(3):
        rules = parse_dockerignore("\n".join(patterns), budget=MATCH_BUDGET * 10)
        started = time.perf_counter()
        for name in names:
            rules.ignores(name)
        best = min(best, time.perf_counter() - started)
    return best


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 10) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = 0
    return status, time.perf_counter() - started


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] * 1000 if len(samples) >= 2 else float("nan")


_PROBE = """
import json, sys, time, urllib.request
url = sys.argv[1]
while True:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
            ok = response.status == 200
    except OSError:
        ok = False
    print(json.dumps([time.time(), time.perf_counter() - started if ok else 10.0]), flush=True)
    time.sleep(0.02)
"""


def _probing(url: str, work: Callable[[], object]) -> list[float]:
    """Run `work` while another process (as a monitor would, with its own interpreter) asks
    /healthz every 20 ms; the latencies of its answers (a miss counts as 10 s)."""
    prober = subprocess.Popen([sys.executable, "-c", _PROBE, f"{url}/healthz"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        started = time.time()
        work()
        ended = time.time()
    finally:
        prober.terminate()
        out, _ = prober.communicate(timeout=30)
    samples = [json.loads(line) for line in out.splitlines()]
    return [seconds for at, seconds in samples if started <= at <= ended + 10] or [float("nan")]


def _serve(base: Path, ledger_url: str, **extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "LIMINAL_HOME": str(base / "home"),
        "LIMINAL_LEDGER_URL": ledger_url,
        "LIMINAL_IMAGES": "off",
        "LIMINAL_DAGS_FOLDER": str(base / "dags"),
        "LIMINAL_GITHUB_WEBHOOK_SECRET": "bench-secret",
        "LIMINAL_API_TOKEN": "bench-token",
        "LIMINAL_POLL_INTERVAL": "3600",
        "LIMINAL_ALLOW_HTTP_REMOTES": "true",
        **extra,
    }
    exe = str(Path(sys.executable).parent / "liminal")
    proc = subprocess.Popen([exe, "serve", "--listen", f"127.0.0.1:{port}"], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while _get(f"{url}/healthz", timeout=1)[0] != 200:
        if time.monotonic() > deadline:
            raise SystemExit("liminal serve did not start")
        time.sleep(0.2)
    return proc, url


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def _bad_bodies(base: Path) -> tuple[float, float, str]:
    ledger_url = f"sqlite:///{base / 'bodies.db'}"
    Ledger(ledger_url).close()
    proc, url = _serve(base / "bodies", ledger_url)
    port = int(url.rsplit(":", 1)[1])
    body = b'{"x": "' + b"a" * (BODY_BYTES - 16) + b'"}'
    statuses: list[int] = []

    def send(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            conn.request(
                "POST",
                "/webhooks/github",
                body=body,
                headers={
                    "Content-Type": "application/json",
                    "X-GitHub-Event": "push",
                    "X-GitHub-Delivery": f"bad-{i}",
                    "X-Hub-Signature-256": "sha256=" + "0" * 64,
                },
            )
            statuses.append(conn.getresponse().status)
        except (ConnectionError, http.client.HTTPException):
            statuses.append(0)
        finally:
            conn.close()

    try:
        before = _peak_rss_mb(proc.pid)
        with ThreadPoolExecutor(BODIES) as pool:
            latencies = _probing(url, lambda: list(pool.map(send, range(BODIES))))
        growth = _peak_rss_mb(proc.pid) - before
    finally:
        _stop(proc)
    answered = {s: statuses.count(s) for s in sorted(set(statuses))}
    return growth, _p99(latencies), f"answers {answered} (0: refused while sending)"


def _hanging_remote(base: Path) -> tuple[float, str]:
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(512)  # accepts (the kernel does) and never answers
    ledger_url = f"sqlite:///{base / 'reads.db'}"
    ledger = Ledger(ledger_url)
    ledger.add_repo(RepoRef("stuck", f"http://127.0.0.1:{hang.getsockname()[1]}/stuck.git"))
    ledger.close()
    proc, url = _serve(base / "reads", ledger_url, LIMINAL_GIT_TIMEOUT="30")
    statuses: list[int] = []
    paths = ["/api/v1/repositories/stuck/plan", "/api/v1/repositories/stuck", "/api/v1/runs"]

    def read(i: int) -> None:
        statuses.append(_get(f"{url}{paths[i % len(paths)]}", timeout=30)[0])

    try:
        with ThreadPoolExecutor(READERS) as pool:
            latencies = _probing(url, lambda: list(pool.map(read, range(READERS * 5))))
    finally:
        _stop(proc)
        hang.close()
    answered = {s: statuses.count(s) for s in sorted(set(statuses))}
    return _p99(latencies), f"answers {answered}"


def main() -> None:
    """Print the figures."""
    names = _names()
    simple = _match_seconds(SIMPLE, names)
    catastrophic = _match_seconds(CATASTROPHIC, names)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        growth, bodies_p99, bodies_note = _bad_bodies(base)
        reads_p99, reads_note = _hanging_remote(base)
    print("| measure | figure | target | note |")
    print("| --- | --- | --- | --- |")
    print(f"| .dockerignore, {NAMES} names, simple patterns | {simple * 1000:.0f} ms | | {', '.join(SIMPLE)} |")
    print(
        f"| .dockerignore, {NAMES} names, catastrophic patterns | {catastrophic * 1000:.0f} ms "
        f"({catastrophic / simple:.2f}x simple) | <= 3x | {', '.join(CATASTROPHIC)} |"
    )
    print(f"| {BODIES} x 25 MB bad-signature bodies: peak RSS growth | {growth:.0f} MB | < 150 MB | {bodies_note} |")
    print(f"| ... /healthz p99 meanwhile | {bodies_p99:.1f} ms | < 100 ms | |")
    print(
        f"| {READERS} concurrent anonymous reads, git remote hanging: /healthz p99 | {reads_p99:.1f} ms | < 100 ms "
        f"| {reads_note} |"
    )


if __name__ == "__main__":
    main()
