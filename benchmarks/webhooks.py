"""Benchmark: webhook ingest of `liminal serve` on 127.0.0.1.

Starts `liminal serve` (SQLite ledger, one tracked repository), then a load generator sends signed
GitHub push deliveries (distinct delivery ids, the tracked branch) over keep-alive connections
from several threads. Prints deliveries per second answered 202 and persisted (counted in the
ledger afterwards), and latency p50/p99. Target: >= 500/s with p99 < 50 ms on this 2-core machine.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.sync import git
from controller.ledger import Ledger
from controller.model import RepoRef

DELIVERIES = 5000
THREADS = 8
SECRET = "bench-" + uuid.uuid4().hex


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(command: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A server process (output to `log`), once its /healthz answers; stopped with SIGTERM after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            for _ in range(600):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                        break
                except OSError:
                    time.sleep(0.1)
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)


def signed(secret: str, payload: dict[str, object], count: int, prefix: str = "bench") -> list[tuple[str, bytes, str]]:
    """`count` push deliveries of `payload` (each its own message), signed as GitHub signs them."""
    out = []
    for i in range(count):
        body = json.dumps({**payload, "head_commit": {"message": f"push {i}"}}).encode()
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        out.append((f"{prefix}-{i}", body, signature))
    return out


def send_all(
    port: int, bodies: list[tuple[str, bytes, str]], threads: int = THREADS
) -> tuple[list[float], list[int], float]:
    """POST every delivery to /webhooks/github over `threads` keep-alive connections: each one's
    latency, each status, and the seconds it all took."""
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(part: list[tuple[str, bytes, str]]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        codes: list[int] = []
        for delivery, body, signature in part:
            started = time.perf_counter()
            connection.request(
                "POST",
                "/webhooks/github",
                body=body,
                headers={
                    "Content-Type": "application/json",
                    "X-GitHub-Event": "push",
                    "X-GitHub-Delivery": delivery,
                    "X-Hub-Signature-256": signature,
                },
            )
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            codes.append(response.status)
        connection.close()
        with lock:
            latencies.extend(mine)
            statuses.extend(codes)

    workers = [threading.Thread(target=worker, args=(bodies[i::threads],)) for i in range(threads)]
    started = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return latencies, statuses, time.perf_counter() - started


def main() -> None:
    """Print the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        remote = base / "remote"
        remote.mkdir()
        git(remote, "init", "-q", "-b", "main")
        (remote / "liminal.yml").write_text(
            "name: bench\npipelines:\n  - pipeline: bench_webhooks\n    start_date: 2024-01-01\n"
            "    timeout_minutes: 10\n    tasks:\n      - task: t\n        type: python\n"
            "        image: busybox:1\n        cmd: echo hi\n"
        )
        git(remote, "add", "-A")
        git(remote, "commit", "-q", "-m", "initial")
        commit = git(remote, "rev-parse", "HEAD")
        ledger_url = f"sqlite:///{base / 'ledger.db'}"
        ledger = Ledger(ledger_url)
        ledger.add_repo(RepoRef("bench", str(remote)))
        port = free_port()
        env = {
            **os.environ,
            "LIMINAL_HOME": str(base / "home"),
            "LIMINAL_LEDGER_URL": ledger_url,
            "LIMINAL_IMAGES": "off",
            "LIMINAL_DAGS_FOLDER": str(base / "dags"),
            "LIMINAL_GITHUB_WEBHOOK_SECRET": SECRET,
            "LIMINAL_GITLAB_WEBHOOK_TOKEN": SECRET,
            "LIMINAL_POLL_INTERVAL": "3600",
            "LIMINAL_LOG_FORMAT": "json",  # as in production: one JSON event per delivery
            "LIMINAL_ALLOW_LOCAL_REMOTES": "true",  # the tracked remote is a directory here
        }
        exe = str(Path(sys.executable).parent / "liminal")
        with running([exe, "serve", "--listen", f"127.0.0.1:{port}"], env, port, base / "serve.log"):
            payload = {
                "ref": "refs/heads/main",
                "after": commit,
                "deleted": False,
                "repository": {"full_name": "bench/bench", "clone_url": str(remote)},
                "pusher": {"name": "bench"},
                "head_commit": {"id": commit},
            }
            bodies = signed(SECRET, payload, DELIVERIES)
            latencies, statuses, seconds = send_all(port, bodies)
        persisted = len(ledger.deliveries(DELIVERIES + 10))
        runs = len(ledger.history("bench", limit=1000))
        ledger.close()
    accepted = statuses.count(202)
    ordered = sorted(latencies)
    print(f"{DELIVERIES} signed push deliveries, {THREADS} keep-alive connections, SQLite ledger")
    print(f"answered 202: {accepted}, persisted in the ledger: {persisted}, reconciles: {runs}")
    print(f"throughput: {accepted / seconds:.0f} deliveries/s verified and persisted ({seconds:.2f} s)")
    print(
        f"latency: p50 {statistics.median(ordered) * 1000:.1f} ms, "
        f"p99 {ordered[int(len(ordered) * 0.99) - 1] * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
