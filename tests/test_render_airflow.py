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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.model import DagFile, Origin, ResourceKind
from controller.render import RenderSettings, ServingTarget, render
from controller.render.dag_loader import runtime_filler
from controller.render.dags import dag_text, split_dag_text
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
variables:
  hostile: {text}
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
        cmd: '{{{{hostile}}}}'
        env_vars:
          VALUE: '{{{{hostile}}}}'
          RUN_DATE: '{{{{ds}}}}'
"""


def _airflow_python() -> Path:
    venv = Path(os.environ.get("AIRFLOW_VENV", REPO / ".airflow-venv"))
    python = venv / "bin" / "python"
    assert python.is_file(), (
        f"Airflow's virtualenv is missing at {venv}: run `. scripts/lib/airflow.sh` (scripts/test does)"
    )
    return python


def _in_airflow(folders: list[Path], work: Path) -> dict[str, Any]:
    """What Airflow's DagBag (in Airflow's own virtualenv, one process) makes of each DAG folder."""
    work.mkdir(parents=True, exist_ok=True)
    home = work / "airflow-home"
    home.mkdir(exist_ok=True)
    out = work / "result.json"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    done = subprocess.run(
        [str(_airflow_python()), str(REPO / "scripts" / "airflow_dagbag.py"), str(out), *map(str, folders)],
        env=env,
        capture_output=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    found: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return found


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
        (out / f.filename).write_text(dag_text(f), encoding="utf-8")
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
    loaded = _in_airflow(list(folders.values()), base / "airflow")
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
    assert tasks["end"]["trigger_rule"].lower().endswith("all_success")  # a failed task fails the run, as in Liminal
    assert tasks["prepare"]["image"].startswith("127.0.0.1:5000/hello/pipeline:")


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_hostile_strings_stay_inert_data_in_airflow(dagbag: dict[str, Any], index: int) -> None:
    found = dagbag[f"hostile-{index}"]
    assert found["import_errors"] == {}
    task = found["dags"]["hostile_pipeline"]["tasks"]["run"]
    # the strings reach the task as data: a variable filled by plain lookup when it runs
    assert task["arguments"] == ["{{hostile}}"]
    assert task["env"]["VALUE"] == "{{hostile}}"
    assert task["operator"]["liminal_variables"] == {"hostile": HOSTILE[index]}
    assert found["dags"]["hostile_pipeline"]["description"] == HOSTILE[index]
    assert not MARKER.exists()


def test_dag_code_is_byte_identical_whatever_the_strings(tmp_path: Path) -> None:
    codes = set()
    for i, text in enumerate([*HOSTILE, "plain"]):
        root = _hostile_repo(tmp_path / f"r{i}", text)
        (dag,) = _render_dags(root, tmp_path / f"out{i}", "hostile")
        code, payload = split_dag_text(dag_text(dag))
        codes.add(code)
        data = json.loads(payload)
        assert data["tasks"][1]["variables"] == {"hostile": text}
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
        "        mounts:\n          - mount: data\n            volume: data\n            path: /data\n"
        "        secrets:\n          - secret: creds\n            remote_path: /secret\n            sub_path: token\n"
        "secrets:\n  - secret: creds\n    local_path_file: /etc/liminal/creds.txt\n",
        encoding="utf-8",
    )
    out = tmp_path / "dags"
    _render_dags(root, out, "local", RenderSettings())
    found = _in_airflow([out], tmp_path / "airflow")[str(out)]
    assert found["import_errors"] == {}
    task = found["dags"]["local_pipeline"]["tasks"]["run"]
    assert task["type"] == "LiminalDockerOperator"
    assert task["command"] == ["/bin/bash", "-c", "python -u run.py"]  # as Liminal
    assert task["image"].startswith("local:")
    mounts = {m["Target"]: m for m in task["operator"]["mounts"]}
    assert (mounts["/data"]["Source"], mounts["/data"]["Type"]) == ("/tmp/liminal-data", "bind")
    assert mounts["/secret/token"]["Source"] == "/etc/liminal/creds.txt"  # local_path_file at remote_path/sub_path
    assert mounts["/secret/token"]["ReadOnly"] is True
    assert (task["operator"]["mem_limit"], task["operator"]["cpus"]) == (256 * 2**20, 0.5)


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
    assert runtime_filler(context)(text) == expected


def test_the_loader_fills_only_names_that_load_time_leaves_for_airflow() -> None:
    from controller.render.dag_loader import RUNTIME_NAMES
    from controller.spec.resolve import AIRFLOW_RUNTIME_NAMES

    # the loader is standalone inside Airflow, so it keeps its own list; it must stay a subset
    assert RUNTIME_NAMES <= AIRFLOW_RUNTIME_NAMES
    assert not RUNTIME_NAMES & {"conf", "var", "conn", "macros", "ti", "task_instance", "dag", "task"}


FIDELITY_YML = """\
name: Fidelity
always_run: true
metrics:
  namespace: DataScience
  backends: []
executors:
  - executor: pods
    type: kubernetes
    namespace: default
    image_pull_secrets: regcred, other
    node_selector:
      disk: ssd
    tolerations:
      - key: gpu
        operator: Exists
        effect: NoSchedule
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms:
            - matchExpressions:
                - {key: zone, operator: In, values: [a]}
    annotations:
      team: ds
    labels:
      app: fidelity
    resources:
      request_cpu: 250m
      limit_memory: 1Gi
    priority_class_name: batch
    is_delete_operator_pod: false
    in_cluster: false
    cluster_context: kind-ml
    service_account_name: trainer
    image_pull_policy: Always
    startup_timeout_seconds: 600
    get_logs: false
    do_xcom_push: false
    termination_grace_period: 30
    active_deadline_seconds: 3600
    reattach_on_restart: false
    log_events_on_failure: true
    dnspolicy: ClusterFirst
    schedulername: volcano
secrets:
  - secret: creds
volumes:
  - volume: scratch
    local:
      path: /srv/scratch
variables:
  region: eu
  per_task:
    region: us
images:
  - image: fidelity
    type: python
    source: code
pipelines:
  - pipeline: fidelity_pipeline
    description: trains the fidelity model
    schedule_interval: '@daily'
    start_date: 2024-01-01
    timeout_minutes: 5
    retries: 3
    retry_delay: 5m
    max_retry_delay: '1:00:00'
    execution_timeout: 90s
    email: [ds@example.com]
    email_on_failure: true
    email_on_retry: false
    depends_on_past: true
    retry_exponential_backoff: true
    end_date: 2030-01-01
    ignore_first_depends_on_past: false
    wait_for_past_depends_before_skipping: true
    wait_for_downstream: true
    priority_weight: 5
    weight_rule: upstream
    queue: gpu
    pool: trainers
    pool_slots: 2
    max_active_tis_per_dag: 3
    max_active_tis_per_dagrun: 2
    max_active_runs: 2
    max_active_tasks: 4
    catchup: true
    tags: [team-ds]
    tasks:
      - task: train
        type: python
        image: fidelity
        executor: pods
        cmd: echo {{region}} {{ds}}
        request_memory: 512Mi
        do_xcom_push: true
        output_path: /out
        output_destination_path: s3://bucket/out
        variables: per_task
        secrets:
          - secret: creds
            remote_path: /secret
            sub_path: token
            read_only: true
        mounts:
          - mount: scratch-mount
            volume: scratch
            path: /scratch
            sub_path: runs
            read_only: true
      - task: crunch
        type: spark
        image: fidelity
        executor: pods
        executors: 3
        master: local[2]
        class: org.example.Main
        application_source: app.py
        application_arguments:
          --input: data.csv
          --mode: '{{region}}'
        conf:
          spark:
            executor:
              memory: 2g
"""


@pytest.fixture(scope="module")
def fidelity(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The fidelity example rendered for Kubernetes and loaded by Airflow's DagBag."""
    root = tmp_path_factory.mktemp("fidelity") / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "code").mkdir()
    (root / "code" / "run.py").write_text("print('hi')\n", encoding="utf-8")
    (root / "liminal.yml").write_text(FIDELITY_YML, encoding="utf-8")
    out = root.parent / "dags"
    _render_dags(root, out, "fidelity")
    found: dict[str, Any] = _in_airflow([out], root.parent / "airflow")[str(out)]
    assert found["import_errors"] == {}
    return dict(found["dags"]["fidelity_pipeline"])


OPERATOR_EXPECTED = {
    "retries": 3,
    "retry_delay": "0:05:00",
    "max_retry_delay": "1:00:00",
    "execution_timeout": "0:01:30",
    "email": ["ds@example.com"],
    "email_on_failure": True,
    "email_on_retry": False,
    "depends_on_past": True,
    "retry_exponential_backoff": True,
    "end_date": "2030-01-01 00:00:00+00:00",
    "ignore_first_depends_on_past": False,
    "wait_for_past_depends_before_skipping": True,
    "wait_for_downstream": True,
    "priority_weight": 5,
    "weight_rule": "upstream",
    "queue": "gpu",
    "pool": "trainers",
    "pool_slots": 2,
    "max_active_tis_per_dag": 3,
    "max_active_tis_per_dagrun": 2,
}


def test_pipeline_keys_reach_every_task_as_default_args_in_airflow(fidelity: dict[str, Any]) -> None:
    from controller.spec.airflow_args import DEFAULT_ARGS

    assert set(OPERATOR_EXPECTED) == set(DEFAULT_ARGS)  # every honoured key is in the example and checked here
    assert (fidelity["max_active_runs"], fidelity["max_active_tasks"], fidelity["catchup"]) == (2, 4, True)
    assert (fidelity["description"], fidelity["schedule"]) == ("trains the fidelity model", "@daily")
    assert "team-ds" in fidelity["tags"]
    for name in ("train", "crunch", "start"):
        found = fidelity["tasks"][name]["operator"]
        seen = {k: found[k] for k in OPERATOR_EXPECTED}
        seen["weight_rule"] = str(seen["weight_rule"]).rsplit(".", 1)[-1].lower()
        assert seen == OPERATOR_EXPECTED, name


def test_always_run_gives_every_task_all_done_and_end_checks_the_run(fidelity: dict[str, Any]) -> None:
    tasks = fidelity["tasks"]
    assert {t["trigger_rule"].lower().rsplit(".", 1)[-1] for t in tasks.values()} == {"all_done"}
    assert tasks["end"]["type"] == "LiminalJobEnd"


def test_kubernetes_executor_options_reach_the_pod_operator(fidelity: dict[str, Any]) -> None:
    train = fidelity["tasks"]["train"]
    op = train["operator"]
    assert train["type"] == "LiminalPodOperator"
    assert op["node_selector"] == {"disk": "ssd"}
    assert op["image_pull_secrets"] == [{"name": "regcred"}, {"name": "other"}]
    assert op["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    terms = op["affinity"]["node_affinity"]["required_during_scheduling_ignored_during_execution"]
    assert terms["node_selector_terms"][0]["match_expressions"][0] == {"key": "zone", "operator": "In", "values": ["a"]}
    assert op["annotations"] == {"team": "ds"}
    assert op["labels"]["app"] == "fidelity"
    assert op["labels"]["app.kubernetes.io/managed-by"] == "liminal-controller"
    # the executor's resources, with the task's own request added
    assert op["container_resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert op["priority_class_name"] == "batch"
    assert op["on_finish_action"] == "keep_pod"  # is_delete_operator_pod: false
    assert op["do_xcom_push"] is True  # the task's own wins over the executor's
    assert (op["namespace"], op["service_account_name"]) == ("default", "trainer")
    assert (op["image_pull_policy"], op["startup_timeout_seconds"]) == ("Always", 600)
    assert (op["termination_grace_period"], op["active_deadline_seconds"]) == (30, 3600)
    assert train["operator_more"] == {
        "in_cluster": False,
        "cluster_context": "kind-ml",
        "get_logs": False,
        "reattach_on_restart": False,
        "log_events_on_failure": True,
        "dnspolicy": "ClusterFirst",
        "schedulername": "volcano",
    }
    assert (train["env"]["OUTPUT_PATH"], train["env"]["OUTPUT_DESTINATION_PATH"]) == ("/out", "s3://bucket/out")
    (mount,) = op["volume_mounts"]
    assert (mount["name"], mount["mount_path"], mount["sub_path"], mount["read_only"]) == (
        "scratch",
        "/scratch",
        "runs",
        True,
    )
    (volume,) = op["volumes"]
    assert volume["persistent_volume_claim"]["claim_name"] == "scratch-pvc"
    (secret,) = op["secrets"]
    assert (secret["deploy_target"], secret["secret"], secret["key"]) == ("/secret", "creds", "token")
    assert train["cmds"] == ["/bin/bash", "-c"]
    assert train["arguments"] == ["echo {{region}} {{ds}}"]
    assert op["liminal_variables"] == {"region": "us"}  # the task's variables win over the root's


def test_spark_submit_is_built_as_liminal_builds_it(fidelity: dict[str, Any]) -> None:
    crunch = fidelity["tasks"]["crunch"]
    assert "crunch_0" not in fidelity["tasks"]  # `executors` does not start copies of a spark application
    assert crunch["cmds"] == [
        "spark-submit",
        "--master",
        "local[2]",
        "--class",
        "org.example.Main",
        "--conf",
        "spark.executor.instances=3",
        "--conf",
        "spark.executor.memory=2g",
        "app.py",
        "--input",
        "data.csv",
        "--mode",
        "{{region}}",
    ]
    assert crunch["env"]["SPARK_LOCAL_HOSTNAME"] == "localhost"
    assert crunch["operator"]["liminal_variables"] == {"region": "eu"}


def test_every_honoured_key_is_a_parameter_of_airflow(tmp_path: Path) -> None:
    """The tables of controller.spec.airflow_args name parameters Airflow 3 really has."""
    from controller.spec.airflow_args import DAG_OPTIONS, DEFAULT_ARGS, KUBERNETES_OPTIONS

    code = (
        "import inspect, json\n"
        "from airflow.sdk import BaseOperator, DAG\n"
        "from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator\n"
        "print(json.dumps({n: sorted(inspect.signature(c.__init__).parameters) for n, c in "
        "[('base', BaseOperator), ('dag', DAG), ('pod', KubernetesPodOperator)]}))\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "AIRFLOW_HOME": str(home)}
    done = subprocess.run([str(_airflow_python()), "-c", code], env=env, capture_output=True, timeout=300, check=True)
    params = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert set(DEFAULT_ARGS) <= set(params["base"]), set(DEFAULT_ARGS) - set(params["base"])
    assert set(DAG_OPTIONS) <= set(params["dag"]), set(DAG_OPTIONS) - set(params["dag"])
    # `resources` becomes container_resources, `is_delete_operator_pod` on_finish_action (their Airflow 3 names)
    renamed = {"resources": "container_resources", "is_delete_operator_pod": "on_finish_action"}
    pod = {renamed.get(k, k) for k in KUBERNETES_OPTIONS}
    assert pod <= set(params["pod"]) | set(params["base"]), pod - set(params["pod"]) - set(params["base"])


# ---- generated specs: what validates renders, and what renders imports in Airflow -----------------

_POD_OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "image_pull_secrets": st.sampled_from(["regcred", ["a", "b"]]),
        "node_selector": st.just({"disk": "ssd"}),
        "tolerations": st.just([{"key": "k", "operator": "Exists"}]),
        "annotations": st.just({"a": "b"}),
        "labels": st.just({"team": "x"}),
        "resources": st.sampled_from([{"request_cpu": "100m"}, {"limits": {"memory": "1Gi"}}]),
        "do_xcom_push": st.booleans(),
        "is_delete_operator_pod": st.booleans(),
        "hostnetwork": st.just(True),  # refused
    },
)
_TASK = st.fixed_dictionaries(
    {"type": st.sampled_from(["python", "spark"]), "executor": st.sampled_from(["pods", "local"])},
    optional={
        "executors": st.integers(1, 3),
        "env_vars": st.dictionaries(
            st.sampled_from(["A", "B_1"]), st.sampled_from(["x", "{{ds}}", "{{v}}", "{{who}}", 1, True]), max_size=2
        ),
        "cmd": st.sampled_from(
            ["echo hi", "echo {{v}} {{ds}}", "echo {{yesterday_ds}}", "echo {{ macros.ds_add(ds, 1) }}"]
        ),
        "variables": st.sampled_from(["per", {"v": "own"}]),
        "do_xcom_push": st.booleans(),
        "limit_memory": st.just("256Mi"),
        "application_arguments": st.sampled_from([["--a", "{{v}}"], {"--k": "v"}]),
        "conf": st.sampled_from([{"spark.x": 1}, {"spark": {"executor": {"memory": "1g"}}}]),
    },
)
_PIPELINE_ARGS = st.fixed_dictionaries(
    {},
    optional={
        "retries": st.integers(0, 3),
        "retry_delay": st.sampled_from([5, "30s", "5m", "1:00:00", "1h30m", "soon"]),
        "email": st.sampled_from(["a@example.com", ["a@example.com", "b@example.com"]]),
        "email_on_failure": st.booleans(),
        "depends_on_past": st.booleans(),
        "execution_timeout": st.sampled_from(["10m", 600]),
        "max_active_runs": st.integers(1, 3),
        "catchup": st.booleans(),
        "tags": st.lists(st.sampled_from(["a", "b-c"]), max_size=2, unique=True),
        "custom_key": st.just("x"),  # Airflow ignores it: a warning
        "retires": st.just(3),  # a typo: an error
    },
)


def _spec(always_run: bool, pod: dict[str, Any], args: dict[str, Any], tasks: list[dict[str, Any]]) -> dict[str, Any]:
    named = []
    for i, drawn in enumerate(tasks):
        task = {"task": f"t{i}", "image": "gen", **drawn}
        if task["type"] == "python":
            task.setdefault("cmd", "echo hi")
        else:
            task.setdefault("application_source", "app.py")
        named.append(task)
    return {
        "name": "Generated",
        "always_run": always_run,
        "variables": {"v": "root", "per": {"v": "task"}},
        "executors": [{"executor": "pods", "type": "kubernetes", **pod}, {"executor": "local", "type": "docker"}],
        "images": [{"image": "gen", "type": "python", "source": "code"}],
        "pipelines": [
            {"pipeline": "generated", "start_date": "2024-01-01", "timeout_minutes": 5, **args, "tasks": named}
        ],
    }


def test_generated_specs_that_validate_render_and_import_in_airflow(tmp_path: Path) -> None:
    import yaml

    from controller.errors import InputError

    rendered: list[tuple[Path, int]] = []
    refused: list[int] = []

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        always_run=st.booleans(),
        pod=_POD_OPTIONS,
        args=_PIPELINE_ARGS,
        tasks=st.lists(_TASK, min_size=1, max_size=4),
    )
    def check(always_run: bool, pod: dict[str, Any], args: dict[str, Any], tasks: list[dict[str, Any]]) -> None:
        root = tmp_path / f"spec{len(rendered) + len(refused)}"
        (root / ".git").mkdir(parents=True)
        (root / "code").mkdir()
        (root / "liminal.yml").write_text(yaml.safe_dump(_spec(always_run, pod, args, tasks)), encoding="utf-8")
        try:
            spec = load(discover([root]), {})
        except InputError as exc:
            # refused: every problem located in the file, never a traceback
            assert exc.problems and all(p.file.endswith("liminal.yml") and p.line >= 1 for p in exc.problems)
            refused.append(1)
            return
        state = render(spec, root, K8S, Origin(repo="gen", commit="c0ffee" * 6 + "abcd"))
        out = root / "dags"
        out.mkdir()
        for resource in state.resources:
            if isinstance(resource.artifact, DagFile):
                (out / resource.artifact.filename).write_text(dag_text(resource.artifact), encoding="utf-8")
        rendered.append(
            (out, sum(p.partitions + 2 if p.partitions > 1 else 1 for p in spec.systems[0].pipelines[0].tasks))
        )

    check()
    assert rendered and refused, (len(rendered), len(refused))  # the strategy reaches both outcomes
    found = _in_airflow([f for f, _ in rendered], tmp_path / "airflow")
    for folder, tasks in rendered:
        bag = found[str(folder)]
        assert bag["import_errors"] == {}, (folder, bag["import_errors"])
        assert len(bag["dags"]["generated"]["tasks"]) == tasks, folder


def test_the_dag_loader_repeats_the_controller_s_rules_exactly() -> None:
    """The loader imports nothing of the controller (it runs inside Airflow), so it repeats three rules."""
    from controller.names import PLACEHOLDER_NAME, RUN_TIME_VALUES
    from controller.render import dag_loader
    from controller.spec.airflow_args import DURATION_ARGS

    assert dag_loader.RUNTIME_NAMES == RUN_TIME_VALUES
    assert dag_loader.DURATION_ARGS == DURATION_ARGS
    assert dag_loader._PLACEHOLDER.pattern == r"{{\s*(" + PLACEHOLDER_NAME.pattern + r")\s*}}"
