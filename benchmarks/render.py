"""Benchmark: render 50 pipelines x 20 tasks plus a 2,000-file image context, and a no-change re-render.

Prints, in one run: load, render (first and second run: the page cache is warm on the second)
and the size of the DAG files. No target is set by the issue; the figures show where time goes
(hashing the build context dominates).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.corpus import big_liminal_yml
from controller.model import DagFile, Origin
from controller.render import RenderSettings, render
from controller.render.dags import dag_text
from controller.spec import discover, load

RUNS = 5


def main() -> None:
    """Print the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / ".git").mkdir()
        (root / "liminal.yml").write_text(big_liminal_yml(), encoding="utf-8")
        for i in range(2000):
            folder = root / f"pkg{i // 100:02d}"
            folder.mkdir(exist_ok=True)
            (folder / f"mod{i:04d}.py").write_text(f"VALUE = {i}\n" * 200, encoding="utf-8")
        files = discover([root])
        start = time.perf_counter()
        spec = load(files, {})
        load_ms = (time.perf_counter() - start) * 1000
        times = []
        state = None
        for _ in range(RUNS):
            start = time.perf_counter()
            state = render(spec, root, RenderSettings(), Origin("bench", "0" * 40))
            times.append((time.perf_counter() - start) * 1000)
        assert state is not None
        dag_bytes = sum(len(dag_text(r.artifact)) for r in state.resources if isinstance(r.artifact, DagFile))
        print(f"load 50x20 liminal.yml:            {load_ms:7.1f} ms")
        print(f"render (first run):                {times[0]:7.1f} ms")
        print(f"render (median of next {RUNS - 1}):       {statistics.median(times[1:]):7.1f} ms")
        print(f"resources: {len(state.resources)}, DAG files {dag_bytes / 1024:.0f} KiB, context 2,000 files")


if __name__ == "__main__":
    main()
