"""The `liminal` command as users and pre-commit run it: output shape and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, liminal

EXAMPLE = REPO / "examples" / "hello-liminal"


def test_validate_bundled_example_exits_0() -> None:
    result = liminal("validate", str(EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: 1 file(s), 1 system(s), 1 pipeline(s), 4 task(s), 2 image(s), 1 service(s)")


def test_validate_json_lists_problems_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "liminal.yml").write_text("name: x\npipelines:\n  - pipeline: p\n    timeout_minutes: ten\n")
    result = liminal("validate", "--format", "json", str(tmp_path))
    assert result.returncode == 1
    problems = json.loads(result.stdout)
    assert problems == [
        {
            "file": str(tmp_path / "liminal.yml"),
            "line": 4,
            "column": 22,
            "path": "$.pipelines[0].timeout_minutes",
            "message": "expected an integer, got the string 'ten'",
            "rule": "schema/type",
            "severity": "error",
        }
    ]


def test_validate_text_is_one_line_per_problem(tmp_path: Path) -> None:
    (tmp_path / "liminal.yml").write_text("name: x\nownr: me\nimages:\n  - image: a\n")
    result = liminal("validate", ".", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "liminal.yml:2:1: error: $.ownr: unknown key 'ownr' in liminal.yml; did you mean 'owner'?",
        "liminal.yml:4:5: error: $.images[0]: missing required key 'type' in image",
    ]
    assert result.stderr.strip() == "2 problems found"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert liminal("validate", str(tmp_path / "missing")).returncode == 2
    assert liminal("validate", "--format", "xml", str(EXAMPLE)).returncode == 2
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    result = liminal("validate", str(empty_dir))
    assert result.returncode == 2
    assert "no liminal.yml or liminal.yaml found" in result.stderr


def test_show_json_has_tasks_in_run_order() -> None:
    result = liminal("show", "--format", "json", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)
    (system,) = spec["systems"]
    (pipeline,) = system["pipelines"]
    assert [t["name"] for t in pipeline["tasks"]] == ["start", "prepare", "train", "end"]
    prepare = pipeline["tasks"][1]
    # run-time fields keep their placeholders; the variables they name are filled when the task runs
    assert prepare["env_vars"] == {"OUTPUT_DIR": "{{output_dir}}", "RUN_DATE": "{{ds}}"}
    assert prepare["variables"] == {"output_dir": "/mnt/data/output"}
    assert prepare["executor"] == "default_k8s"
    assert prepare["executor_type"] == "kubernetes"
    assert prepare["mounts"] == [
        {"name": "data", "volume": "data", "path": "/mnt/data", "sub_path": None, "read_only": False}
    ]
    assert pipeline["tasks"][2]["partitions"] == 2


def test_show_text_names_effective_executor_and_image() -> None:
    result = liminal("show", str(EXAMPLE))
    assert result.returncode == 0
    assert "    2. prepare  [python]  executor: default_k8s (kubernetes)" in result.stdout
    assert "         image: hello/pipeline" in result.stdout


@pytest.mark.parametrize(
    ("name", "content", "rule"),
    [
        ("malformed", b"name: [\n", "yaml-syntax"),
        ("non_utf8", b"name: \xc3\x28\n", "encoding"),
        ("empty", b"", "empty"),
        ("tabs", b"name: x\npipelines:\n\t- pipeline: p\n", "yaml-syntax"),
        ("duplicate", b"name: x\nname: y\n", "duplicate-key"),
        ("wrong_type", b"name: x\npipelines: {}\n", "schema/type"),
        (
            "task_type",
            b"name: x\npipelines:\n  - pipeline: p\n    tasks:\n      - {task: t, type: bash}\n",
            "schema/enum",
        ),
        ("escape", b"name: x\nimages:\n  - {image: a, type: python, source: ../..}\n", "source-escape"),
        (
            "billion_laughs",
            b"".join(
                [b"a: &a [x,x,x,x,x,x,x,x,x,x]\n"]
                + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 10)}]\n".encode() for i in range(8)]
                + [b"name: x\n"]
            ),
            "alias-bomb",
        ),
        ("deep_flow", b"name: x\nvariables:\n  v: " + b"[" * 10_000 + b"]" * 10_000 + b"\n", "yaml-syntax"),
        ("deep_block", b"name: x\nvariables:\n  v:\n    " + b"- " * 10_000 + b"x\n", "too-deep"),
    ],
)
def test_hostile_input_gives_one_clear_error_and_exit_1(tmp_path: Path, name: str, content: bytes, rule: str) -> None:
    (tmp_path / "liminal.yml").write_bytes(content)
    result = liminal("validate", "--format", "json", str(tmp_path))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    problems = json.loads(result.stdout)
    assert [p["rule"] for p in problems] == [rule]


def test_fifty_megabyte_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "liminal.yml"
    with big.open("wb") as f:
        f.write(b"name: x\nvariables:\n")
        line = b"  k%d: " + b"v" * 100 + b"\n"
        f.write(b"".join(line.replace(b"%d", str(i).encode()) for i in range(470_000)))
    assert big.stat().st_size > 50 * 1024 * 1024
    result = liminal("validate", "--format", "json", str(tmp_path))
    assert result.returncode == 1
    (problem,) = json.loads(result.stdout)
    assert problem["rule"] == "too-large"
    assert problem["message"].endswith("bytes; the limit is 4194304")


def test_pre_commit_hook_definition_runs_validate() -> None:
    import yaml

    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    (hook,) = hooks
    assert hook["id"] == "liminal-validate"
    assert hook["entry"] == "liminal validate"
    assert "liminal" in hook["files"]


def test_no_secret_environment_reaches_show(tmp_path: Path) -> None:
    (tmp_path / "liminal.yml").write_text(
        "name: x\npipelines:\n  - pipeline: p\n    start_date: 2024-01-01\n    timeout_minutes: 1\n"
        "    token: '{{API_TOKEN}}'\n    home: '{{SOME_DIR}}'\n"
    )
    env = {**os.environ, "API_TOKEN": "s3cr3t", "SOME_DIR": "/d"}
    result = liminal("show", "--format", "json", str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr
    assert "s3cr3t" not in result.stdout and "/d" not in result.stdout  # unlisted: nothing is read
    args = json.loads(result.stdout)["systems"][0]["pipelines"][0]["unused"]
    assert args == {"token": "{{API_TOKEN}}", "home": "{{SOME_DIR}}"}
    result = liminal("show", "--format", "json", str(tmp_path), env={**env, "LIMINAL_PLACEHOLDER_ENV": "SOME_DIR"})
    args = json.loads(result.stdout)["systems"][0]["pipelines"][0]["unused"]
    assert args == {"token": "{{API_TOKEN}}", "home": "/d"}


def test_render_writes_dags_dockerfiles_manifests_and_index(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = liminal(
        "render", str(EXAMPLE), "--out", str(out), "--serving", "kubernetes", "--repo", "hello", "--commit", "abc123"
    )
    assert result.returncode == 0, result.stderr
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "dags/liminal__hello__hello_training.py",
        "images/hello__pipeline/Dockerfile",
        "images/hello__pipeline/context.txt",
        "images/hello__server/Dockerfile",
        "images/hello__server/context.txt",
        "manifests/hello_server.yaml",
        "requires/claim-default__data-pvc.json",
        "resources.json",
    ]
    index = json.loads((out / "resources.json").read_text())
    assert index["repo"] == "hello" and index["commit"] == "abc123"
    assert [(r["kind"], r["name"]) for r in index["resources"]] == [
        ("claim", "default/data-pvc"),
        ("image", "hello/pipeline"),
        ("image", "hello/server"),
        ("dag", "hello_training"),
        ("service", "hello_server"),
    ]
    assert all(len(r["hash"]) == 64 for r in index["resources"])
    # printed lines name kind, short hash and name
    assert result.stdout.splitlines()[1] == f"image    {index['resources'][1]['hash'][:12]}  hello/pipeline"


def test_render_replaces_an_earlier_render_but_not_other_folders(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert liminal("render", str(EXAMPLE), "--out", str(out)).returncode == 0
    (out / "dags" / "stale.py").write_text("old")
    assert liminal("render", str(EXAMPLE), "--out", str(out)).returncode == 0
    assert not (out / "dags" / "stale.py").exists()
    assert (out / "services" / "hello_server.json").is_file()
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    result = liminal("render", str(EXAMPLE), "--out", str(other))
    assert result.returncode == 2
    assert "holds no resources.json; refusing to overwrite it" in result.stderr
    assert (other / "notes.txt").read_text() == "keep me"


def test_render_of_invalid_input_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "liminal.yml").write_text("name: x\npipelines:\n  - pipeline: p\n    timeout_minutes: ten\n")
    result = liminal("render", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "liminal.yml:4:22: error: $.pipelines[0].timeout_minutes" in result.stdout
    assert not (tmp_path / "out").exists()


def test_render_refuses_a_bad_serving_setting(tmp_path: Path) -> None:
    env = {**os.environ, "LIMINAL_SERVING": "swarm"}
    result = liminal("render", str(EXAMPLE), "--out", str(tmp_path / "o"), env=env)
    assert result.returncode == 2
    assert "LIMINAL_SERVING must be one of docker, kubernetes; got 'swarm'" in result.stderr


def test_the_cli_module_loads_no_adapter() -> None:
    """`liminal --help` and `liminal validate` answer at once: the CLI imports git, Docker, Kubernetes,
    Airflow's client, SQL and the web app only inside the commands that use them."""
    heavy = ("fastapi", "sqlalchemy", "alembic", "docker", "kubernetes", "airflow_client", "git", "httpx", "uvicorn")
    # --help needs neither the stages nor the logging library
    needless = (*heavy, "structlog", "controller.spec.load", "controller.render.desired", "controller.sync")
    code = f"import sys, controller.cli; print([m for m in {needless!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout
    # validate loads the stages it runs, and still no adapter
    code = (
        "import sys\nfrom controller.cli import cli\n"
        f"try:\n    cli(['validate', {str(EXAMPLE)!r}])\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {(*heavy, 'structlog')!r} if m in sys.modules], 'controller.spec.load' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip().endswith("[] True"), result.stdout
