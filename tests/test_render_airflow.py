"""Rendered DAG files in a real Airflow 3 (DagBag, in Airflow's own virtualenv) and rendered manifests
against the real Kubernetes OpenAPI schemas (kubernetes-validate). Inputs: the Liminal corpus,
the bundled example, and hostile strings that must stay inert data."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any, ClassVar

import kubernetes_validate
import pytest

from controller.model import DagFile, Origin, ResourceKind
from controller.render import RenderSettings, ServingTarget, render
from controller.render.dag_loader import fill_runtime
from controller.render.dags import split_dag_text
from controller.spec import discover, load
from tests.conftest import REPO
from tests.test_corpus import LOADS

K8S = RenderSettings(serving=ServingTarget.KUBERNETES, registry="127.0.0.1:5000")
MARKER = Path("/tmp") / f"liminal-injected-{uuid.uuid4().hex}"

HOSTILE = [
    '"""',
    "'''",
    "line one\nline two",
    "{{ conf.get('core', 'fernet_key') }}",
    "{{ var.value.secret }}",
    f"__import__('os').system('touch {MARKER}')",
    f"$(touch {MARKER})",
    f"`touch {MARKER}`; rm -rf / && echo | cat > x",
    "\\ backslash \\n \\u0041",
    "\u2028 \x00-free unicode: \u00e9\u4e2d",
    '"); import os; os.system("id"); ("',
]

HOSTILE_YML = """\
name: Hostile
images:
  - image: hostile
    type: python
    source: code
pipelines:
  - pipeline: hostile_pipeline
    description: {text}
    start_date: 2024-01-01
    timeout_minutes: 5
    schedule: '@daily'
    tasks:
      - task: run
        type: python
        image: hostile
        description: {text}
        cmd: {text}
        env_vars:
          VALUE: {text}
          RUN_DATE: '{{{{ds}}}}'
"""


def _airflow_python() -> Path:
    venv = Path(os.environ.get("AIRFLOW_VENV", REPO / ".airflow-venv"))
    python = venv / "bin" / "python"
    assert python.is_file(), (
        f"Airflow's virtualenv is missing at {venv}: run `. scripts/lib/airflow.sh` (scripts/test does)"
    )
    return python


def _hostile_repo(root: Path, text: str) -> Path:
    (root / ".git").mkdir(parents=True)
    (root / "code").mkdir()
    (root / "code" / "run.py").write_text("print('hi')\n", encoding="utf-8")
    (root / "liminal.yml").write_text(HOSTILE_YML.format(text=json.dumps(text)), encoding="utf-8")
    return root


def _render_dags(root: Path, out: Path, repo: str, settings: RenderSettings = K8S) -> list[DagFile]:
    spec = load(discover([root]), {})
    state = render(spec, root, settings, Origin(repo=repo, commit="c0ffee" * 6 + "abcd"))
    out.mkdir(parents=True)
    files = [r.artifact for r in state.resources if isinstance(r.artifact, DagFile)]
    for f in files:
        (out / f.filename).write_text(f.text, encoding="utf-8")
    return files


@pytest.fixture(scope="module")
def dagbag(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Render every input, then load all folders in one Airflow process."""
    base = tmp_path_factory.mktemp("dags")
    folders: dict[str, Path] = {}
    for directory in sorted(LOADS):
        folders[directory] = base / directory.replace("/", "__")
        _render_dags(corpus / directory, folders[directory], directory)
    folders["example"] = base / "example"
    _render_dags(REPO / "examples" / "hello-liminal", folders["example"], "hello-liminal")
    for i, text in enumerate(HOSTILE):
        root = _hostile_repo(tmp_path_factory.mktemp("hostile"), text)
        folders[f"hostile-{i}"] = base / f"hostile-{i}"
        _render_dags(root, folders[f"hostile-{i}"], "hostile")
    out = base / "result.json"
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    result = subprocess.run(
        [str(_airflow_python()), str(REPO / "scripts" / "airflow_dagbag.py"), str(out), *map(str, folders.values())],
        env=env,
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-4000:]
    loaded = json.loads(out.read_text(encoding="utf-8"))
    return {name: loaded[str(folder)] for name, folder in folders.items()}


@pytest.mark.parametrize("directory", sorted(d for d in LOADS if LOADS[d][1]))
def test_corpus_dags_import_in_airflow_3(dagbag: dict[str, Any], directory: str) -> None:
    found = dagbag[directory]
    assert found["import_errors"] == {}
    assert sorted(found["dags"]) == sorted(LOADS[directory][1])
    for dag in found["dags"].values():
        assert "liminal" in dag["tags"] and f"repo:{directory}" in dag["tags"]
        for task in dag["tasks"].values():
            assert task["template_fields"] == []  # no liminal.yml string is ever a Jinja template


def test_example_dag_in_airflow_matches_the_pipeline(dagbag: dict[str, Any]) -> None:
    found = dagbag["example"]
    assert found["import_errors"] == {}
    dag = found["dags"]["hello_training"]
    assert dag["schedule"] == "0 6 * * *"
    assert dag["owner"] == "Data Science Team"
    assert dag["dagrun_timeout_s"] == 1800
    assert dag["start_date"].startswith("2024-01-01T00:00:00")
    assert sorted(dag["tags"]) == ["commit:c0ffeec0ffee", "liminal", "repo:hello-liminal"]
    tasks = dag["tasks"]
    assert tasks["train_1"]["type"] == "LiminalPodOperator"
    assert tasks["train_1"]["env"]["LIMINAL_SPLIT_ID"] == "1"
    assert tasks["train_1"]["upstream"] == ["train_parallelize"]
    assert tasks["train"]["upstream"] == ["train_0", "train_1"]
    assert tasks["end"]["trigger_rule"].lower().endswith("all_done")
    assert tasks["prepare"]["image"].startswith("127.0.0.1:5000/hello/pipeline:")


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_hostile_strings_stay_inert_data_in_airflow(dagbag: dict[str, Any], index: int) -> None:
    found = dagbag[f"hostile-{index}"]
    assert found["import_errors"] == {}
    task = found["dags"]["hostile_pipeline"]["tasks"]["run"]
    assert task["arguments"] == [HOSTILE[index]]
    assert task["env"]["VALUE"] == HOSTILE[index]
    assert found["dags"]["hostile_pipeline"]["description"] == HOSTILE[index]
    assert not MARKER.exists()


def test_dag_code_is_byte_identical_whatever_the_strings(tmp_path: Path) -> None:
    codes = set()
    for i, text in enumerate([*HOSTILE, "plain"]):
        root = _hostile_repo(tmp_path / f"r{i}", text)
        (dag,) = _render_dags(root, tmp_path / f"out{i}", "hostile")
        code, payload = split_dag_text(dag.text)
        codes.add(code)
        data = json.loads(payload)
        assert data["tasks"][1]["arguments"] == [text]
    assert len(codes) == 1


def test_docker_executor_renders_a_docker_operator_in_airflow(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "code").mkdir()
    (root / "code" / "run.py").write_text("print('hi')\n", encoding="utf-8")
    (root / "liminal.yml").write_text(
        "name: Local\nexecutors:\n  - executor: local\n    type: docker\nvolumes:\n  - volume: data\n"
        "    local:\n      path: /tmp/liminal-data\nimages:\n  - image: local\n    type: python\n    source: code\n"
        "pipelines:\n  - pipeline: local_pipeline\n    start_date: 2024-01-01\n    timeout_minutes: 5\n"
        "    tasks:\n      - task: run\n        type: python\n        image: local\n        executor: local\n"
        "        cmd: python -u run.py\n        limit_memory: 256Mi\n        limit_cpu: 500m\n"
        "        mounts:\n          - mount: data\n            volume: data\n            path: /data\n",
        encoding="utf-8",
    )
    out = tmp_path / "dags"
    _render_dags(root, out, "local", RenderSettings())
    result_file = tmp_path / "result.json"
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "AIRFLOW_HOME": str(home)}
    subprocess.run(
        [str(_airflow_python()), str(REPO / "scripts" / "airflow_dagbag.py"), str(result_file), str(out)],
        env=env,
        capture_output=True,
        timeout=600,
        check=True,
    )
    found = json.loads(result_file.read_text(encoding="utf-8"))[str(out)]
    assert found["import_errors"] == {}
    task = found["dags"]["local_pipeline"]["tasks"]["run"]
    assert task["type"] == "LiminalDockerOperator"
    assert task["command"] == ["/bin/sh", "-c", "python -u run.py"]
    assert task["image"].startswith("local:")


def _manifests(root: Path) -> list[dict[str, Any]]:
    state = render(load(discover([root]), {}), root, K8S, Origin("r", "0" * 40))
    return [m for r in state.resources if r.key.kind is ResourceKind.SERVICE for m in r.body["manifests"]]


@pytest.mark.parametrize("directory", sorted(d for d in LOADS if LOADS[d][2]))
def test_corpus_manifests_pass_the_kubernetes_schemas(corpus: Path, directory: str) -> None:
    manifests = _manifests(corpus / directory)
    assert [m["kind"] for m in manifests] == ["Deployment", "Service"] * len(LOADS[directory][2])
    for manifest in manifests:
        kubernetes_validate.validate(manifest, "1.37.0", strict=True)


def test_example_manifests_pass_the_kubernetes_schemas() -> None:
    for manifest in _manifests(REPO / "examples" / "hello-liminal"):
        kubernetes_validate.validate(manifest, "1.37.0", strict=True)


def test_a_broken_manifest_is_caught_by_the_schemas() -> None:
    (deployment, _) = _manifests(REPO / "examples" / "hello-liminal")
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.37.0", strict=True)


class _Run:
    conf: ClassVar[dict[str, str]] = {"k": "v", "_hidden": "no"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ ds }}", "2024-05-01"),
        ("day={{ds}}/{{ ds_nodash }}", "day=2024-05-01/20240501"),
        ("{{ dag_run.conf.k }}", "v"),
        ("{{ dag_run.conf._hidden }}", "{{ dag_run.conf._hidden }}"),
        ("{{ conf.get('core', 'fernet_key') }}", "{{ conf.get('core', 'fernet_key') }}"),
        ("{{ var.value.secret }}", "{{ var.value.secret }}"),
        ("{{ macros.ds_add(ds, 1) }}", "{{ macros.ds_add(ds, 1) }}"),
        ("{{ params.missing }}", "{{ params.missing }}"),
        ("{{ ds | upper }}", "{{ ds | upper }}"),
        ("no placeholders", "no placeholders"),
    ],
)
def test_run_time_names_are_filled_by_plain_lookup_only(text: str, expected: str) -> None:
    context = {
        "ds": "2024-05-01",
        "ds_nodash": "20240501",
        "dag_run": _Run(),
        "params": {},
        "conf": "airflow-config",
        "var": "variables",
    }
    assert fill_runtime(text, context) == expected


def test_the_loader_fills_only_names_that_load_time_leaves_for_airflow() -> None:
    from controller.render.dag_loader import RUNTIME_NAMES
    from controller.spec.resolve import AIRFLOW_RUNTIME_NAMES

    # the loader is standalone inside Airflow, so it keeps its own list; it must stay a subset
    assert RUNTIME_NAMES <= AIRFLOW_RUNTIME_NAMES
    assert not RUNTIME_NAMES & {"conf", "var", "conn", "macros", "ti", "task_instance", "dag", "task"}
