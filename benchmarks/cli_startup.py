"""Benchmark: how fast the CLI answers, as a process, against `python -c pass` in the same run.

Prints the median wall time of 10 runs of each:
- `python -c pass` (the interpreter alone: the floor);
- `liminal --help`;
- `liminal validate` on the bundled example;
- `liminal plan` on a repository of the bundled example already synced (SQLite ledger, images off:
  a fetch of a local repository, a render, an observation of the DAG folder, a diff).
Targets (issue 18): `--help` <= 0.3 s and `validate` <= 0.5 s on the 2-core machine.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "hello-liminal"
RUNS = 10


def _median(cmd: list[str], env: dict[str, str]) -> float:
    subprocess.run(cmd, env=env, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Print the table."""
    liminal = str(Path(sys.executable).parent / "liminal")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        remote = root / "remote"
        shutil.copytree(EXAMPLE, remote, ignore=shutil.ignore_patterns("__pycache__"))
        git = ["git", "-C", str(remote), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        subprocess.run(["git", "init", "-q", "-b", "main", str(remote)], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", "example"], check=True)
        env = {
            **os.environ,
            "LIMINAL_HOME": str(root / "home"),
            "LIMINAL_LEDGER_URL": f"sqlite:///{root / 'ledger.db'}",
            "LIMINAL_DAGS_FOLDER": str(root / "dags"),
            "LIMINAL_ALLOW_LOCAL_REMOTES": "true",
            "LIMINAL_IMAGES": "off",
            "LIMINAL_LOG_LEVEL": "warning",
        }
        subprocess.run([liminal, "repo", "add", str(remote), "--name", "hello"], env=env, check=True)
        subprocess.run([liminal, "sync"], env=env, check=True, capture_output=True)
        rows = [
            ("python -c pass", [sys.executable, "-c", "pass"], None),
            ("liminal --help", [liminal, "--help"], 0.3),
            ("liminal validate examples/hello-liminal", [liminal, "validate", str(EXAMPLE)], 0.5),
            ("liminal plan (synced repository)", [liminal, "plan"], None),
        ]
        print(f"CLI start-up, median of {RUNS} runs as processes ({os.cpu_count()} cores)")
        print(f"{'command':<42} {'seconds':>8} {'target':>8}")
        for name, cmd, target in rows:
            seconds = _median(cmd, env)
            mark = "" if target is None else (f"<= {target:g}" + (" ok" if seconds <= target else " MISSED"))
            print(f"{name:<42} {seconds:8.3f} {mark:>8}")


if __name__ == "__main__":
    main()
