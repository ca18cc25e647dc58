"""Generated liminal.yml files for benchmarks (and tests that need a big, valid file)."""

from __future__ import annotations


def big_liminal_yml(pipelines: int = 50, tasks: int = 20) -> str:
    """A valid liminal.yml with `pipelines` pipelines of `tasks` python tasks each."""
    out = [
        "name: GeneratedSystem",
        "owner: Benchmark",
        "variables:",
        "  out_dir: /mnt/out",
        "volumes:",
        "  - volume: data",
        "    claim_name: data-pvc",
        "images:",
        "  - image: gen/worker",
        "    type: python",
        "    source: .",
        "pipelines:",
    ]
    for p in range(pipelines):
        out += [
            f"  - pipeline: pipeline_{p:03d}",
            "    start_date: 2024-01-01",
            "    timeout_minutes: 30",
            f"    schedule: {p % 60} * * * *",
            "    tasks:",
        ]
        for t in range(tasks):
            out += [
                f"      - task: step_{t:02d}",
                "        type: python",
                "        description: generated step",
                "        image: gen/worker",
                f"        cmd: python -u step.py --step {t} --out '{{{{out_dir}}}}/{{{{ds}}}}'",
                "        env_vars:",
                f"          STEP: '{t}'",
                "          MODE: batch",
                "        mounts:",
                "          - mount: data",
                "            volume: data",
                "            path: /mnt/data",
            ]
    return "\n".join(out) + "\n"
