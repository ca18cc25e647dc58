"""Benchmark: how fast the CLI answers, as a process, against `python -c pass` in the same run.

Prints the median wall time of 10 runs of each:
- `python -c pass` (the interpreter alone: the floor);
- `liminal --help`;
- `liminal validate` on the bundled example;
- `liminal plan` on a repository of the bundled example already synced (SQLite ledger, images off:
  a fetch of a local repository, a render, an observation of the DAG folder, a diff).
With `--before REV`, the same commands of the code at git revision REV (checked out in a temporary
worktree, run with the same interpreter and packages) are measured in the same run, beside.
Targets (issue 18): `--help` <= 0.3 s and `validate` <= 0.5 s on the 2-core machine.
"""

from __future__ import annotations

import argparse
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
# the CLI of whatever code PYTHONPATH puts first (the console script would always run this checkout's)
CLI = "import sys; from controller.cli import main; sys.argv = ['liminal', *sys.argv[1:]]; main()"


def _median(cmd: list[str], env: dict[str, str]) -> float:
    # run from the temporary folder: `python -c` puts the working directory first on sys.path
    cwd = env["LIMINAL_HOME"]
    subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _environment(root: Path, code: Path, remote: Path) -> dict[str, str]:
    """A home, ledger and DAG folder of its own, the code at `code`, and the example synced."""
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "LIMINAL_HOME": str(root / "home"),
        "LIMINAL_LEDGER_URL": f"sqlite:///{root / 'ledger.db'}",
        "LIMINAL_DAGS_FOLDER": str(root / "dags"),
        "LIMINAL_ALLOW_LOCAL_REMOTES": "true",
        "LIMINAL_IMAGES": "off",
        "LIMINAL_LOG_LEVEL": "warning",
    }
    (root / "home").mkdir(parents=True)
    cli = [sys.executable, "-c", CLI]
    add = [*cli, "repo", "add", str(remote), "--name", "hello"]
    subprocess.run(add, env=env, cwd=root / "home", check=True, capture_output=True)
    subprocess.run([*cli, "sync"], env=env, cwd=root / "home", check=True, capture_output=True)
    return env


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="also measure the code at this git revision, in the same run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        remote = root / "remote"
        shutil.copytree(EXAMPLE, remote, ignore=shutil.ignore_patterns("__pycache__"))
        git = ["git", "-C", str(remote), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        subprocess.run(["git", "init", "-q", "-b", "main", str(remote)], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", "example"], check=True)
        columns = {"now": _environment(root / "now", REPO, remote)}
        if args.before:
            old = root / "before-code"
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(old), args.before], check=True
            )
            columns[args.before[:12]] = _environment(root / "before", old, remote)
        cli = [sys.executable, "-c", CLI]
        rows = [
            ("python -c pass", [sys.executable, "-c", "pass"], None),
            ("liminal --help", [*cli, "--help"], 0.3),
            ("liminal validate examples/hello-liminal", [*cli, "validate", str(EXAMPLE)], 0.5),
            ("liminal plan (synced repository)", [*cli, "plan"], None),
        ]
        try:
            print(f"CLI start-up: median seconds of {RUNS} runs as processes ({os.cpu_count()} cores)")
            print(f"{'command':<42}" + "".join(f" {name:>12}" for name in reversed(columns)) + "   target")
            for name, cmd, target in rows:
                seconds = {label: _median(cmd, env) for label, env in columns.items()}
                mark = "" if target is None else f"<= {target:g}" + (" ok" if seconds["now"] <= target else " MISSED")
                print(f"{name:<42}" + "".join(f" {seconds[c]:12.3f}" for c in reversed(columns)) + f"   {mark}")
        finally:
            if args.before:
                remove = ["git", "-C", str(REPO), "worktree", "remove", "--force", str(root / "before-code")]
                subprocess.run(remove, check=False)


if __name__ == "__main__":
    main()
