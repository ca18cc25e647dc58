"""Benchmark: validate a generated liminal.yml of 50 pipelines x 20 tasks.

Prints, in one run on the same file:
- our full load (parse with positions, schema, super/defaults/variables, semantic rules), in process;
- `liminal validate` and `check-jsonschema --schemafile schemas/liminal.schema.json` as commands
  (wall time, including interpreter start-up), median of several runs.
Target: in-process load <= 300 ms, and faster than check-jsonschema.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.corpus import big_liminal_yml
from controller.spec import SourceFile, load

REPO = Path(__file__).resolve().parent.parent
RUNS = 7


def _median_ms(fn: object, runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / ".git").mkdir()
        path = root / "liminal.yml"
        path.write_text(big_liminal_yml(50, 20), encoding="utf-8")
        source = SourceFile(path, "liminal.yml", root)
        spec = load([source], {})  # warm: compiles the schema once per process
        tasks = sum(len(p.tasks) for s in spec.systems for p in s.pipelines)
        in_process = _median_ms(lambda: load([source], {}))

        bindir = Path(sys.executable).parent
        ours_cmd = [str(bindir / "liminal"), "validate", str(root)]
        theirs_cmd = [
            str(bindir / "check-jsonschema"),
            "--schemafile",
            str(REPO / "schemas/liminal.schema.json"),
            str(path),
        ]
        for cmd in (ours_cmd, theirs_cmd):
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            assert result.returncode == 0, (cmd, result.stdout, result.stderr)
        ours = _median_ms(lambda: subprocess.run(ours_cmd, capture_output=True, check=True))
        theirs = _median_ms(lambda: subprocess.run(theirs_cmd, capture_output=True, check=True))

    size_kib = len(big_liminal_yml(50, 20).encode()) / 1024
    print(f"file: 50 pipelines x 20 tasks ({tasks} tasks after base before/after tasks), {size_kib:.0f} KiB")
    print(f"liminal load, in process (full validation):   {in_process:8.1f} ms  (target <= 300 ms)")
    print(f"liminal validate, command:                     {ours:8.1f} ms")
    print(f"check-jsonschema, command (schema only):       {theirs:8.1f} ms")
    print(f"check-jsonschema / liminal validate:           {theirs / ours:8.2f}x")


if __name__ == "__main__":
    main()
