"""Every Liminal key is honoured or refused: the refusals and warnings, each at its file:line:col.

Fast stage tests (load and render only). What is honoured is proven in Airflow by
tests/test_liminal_runs.py (runs) and tests/test_render_airflow.py (operators in Airflow's DagBag).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.errors import InputError
from controller.model import ImageBuild, Origin, Problem, ResourceKind, Spec
from controller.render import RenderSettings, ServingTarget, render
from controller.render.dag_loader import runtime_filler
from controller.spec.airflow_args import parse_duration
from tests.conftest import LIMINAL, load_paths

Write = Callable[[dict[str, str]], Path]

HEAD = """\
name: fid
executors:
  - executor: pods
    type: kubernetes{executor}
  - executor: local
    type: docker
{root}pipelines:
  - pipeline: p
    start_date: 2024-01-01
    timeout_minutes: 5
{pipeline}    tasks:
      - task: t
        type: python
        image: python:3.11-slim
        executor: {runs_on}
        cmd: {cmd}
{task}"""


def spec_text(
    *,
    executor: str = "",
    root: str = "",
    pipeline: str = "",
    task: str = "",
    cmd: str = "echo hi",
    runs_on: str = "pods",
) -> str:
    return HEAD.format(executor=executor, root=root, pipeline=pipeline, task=task, cmd=json.dumps(cmd), runs_on=runs_on)


def problems_of(write: Write, text: str, **files: str) -> list[Problem]:
    root = write({"liminal.yml": text, **files})
    with pytest.raises(InputError) as caught:
        load_paths([root])
    return list(caught.value.problems)


def loads(write: Write, text: str, **files: str) -> Spec:
    root = write({"liminal.yml": text, **files})
    return load_paths([root])


def where(problem: Problem) -> tuple[int, int, str, str]:
    return problem.line, problem.col, problem.path, problem.rule


# ---- pipeline keys -> default_args ---------------------------------------------------------


def test_a_misspelt_airflow_argument_is_an_error_with_did_you_mean(write: Write) -> None:
    (problem,) = problems_of(write, spec_text(pipeline="    retires: 3\n"))
    assert where(problem) == (11, 5, "$.pipelines[0].retires", "airflow-argument")
    assert "did you mean 'retries'?" in problem.message


def test_a_key_no_airflow_operator_takes_is_a_warning_and_stays_out_of_the_dag(write: Write) -> None:
    spec = loads(write, spec_text(pipeline="    team_budget: 12\n"))
    (warning,) = spec.warnings
    assert (warning.severity, warning.rule, warning.line, warning.col) == ("warning", "unused-key", 11, 5)
    assert "has no effect" in warning.message
    pipeline = spec.systems[0].pipelines[0]
    assert "team_budget" not in pipeline.default_args and pipeline.unused == {"team_budget": 12}


@pytest.mark.parametrize(
    ("line", "rule", "needle"),
    [
        ("    retries: -1\n", "schema/range", ">= 0"),
        ("    retry_delay: soon\n", "airflow-argument", "must be a duration"),
        ("    email_on_failure: maybe\n", "airflow-argument", "true or false"),
        ("    trigger_rule: all_done\n", "airflow-argument", "always_run"),
        ("    on_failure_callback: x\n", "airflow-argument", "Python code"),
        ("    sla: 60\n", "airflow-argument", "no SLAs"),
        ("    weight_rule: heavy\n", "airflow-argument", "downstream, upstream, absolute"),
    ],
)
def test_pipeline_arguments_are_checked_as_airflow_takes_them(write: Write, line: str, rule: str, needle: str) -> None:
    (problem,) = problems_of(write, spec_text(pipeline=line))
    assert (problem.line, problem.rule) == (11, rule) and needle in problem.message, problem


def test_durations_are_converted_to_what_airflow_expects(write: Write) -> None:
    spec = loads(write, spec_text(pipeline="    retry_delay: 1h30m\n    execution_timeout: '0:10:00'\n"))
    args = spec.systems[0].pipelines[0].default_args
    assert (args["retry_delay"], args["execution_timeout"]) == (5400.0, 600.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(300, 300.0), (1.5, 1.5), ("30s", 30.0), ("5m", 300.0), ("2d", 172800.0), ("1h30m", 5400.0), ("1:00", 60.0)],
)
def test_duration_forms(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", [-1, True, "", "5x", "1h30", "m", "1:2:3:4", "a:b", None])
def test_not_durations(text: object) -> None:
    assert parse_duration(text) is None


# ---- executors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        ("hostnetwork: true", "may not set `hostnetwork`"),
        ("security_context: {privileged: true}", "may not set `security_context`"),
        ("node_selecter: {a: b}", "did you mean 'node_selector'?"),
        ("tolerations: {key: x}", "list of mappings"),
        ("image_pull_policy: Sometimes", "Always, IfNotPresent, Never"),
        ("resources: {cpu: 1}", "unknown key 'cpu'"),
    ],
)
def test_kubernetes_executor_options_are_checked(write: Write, option: str, needle: str) -> None:
    (problem,) = problems_of(write, spec_text(executor=f"\n    {option}"))
    assert (problem.line, problem.rule) == (5, "executor-option") and needle in problem.message, problem


def test_a_docker_executor_takes_only_its_own_options(write: Write) -> None:
    text = spec_text().replace("    type: docker\n", "    type: docker\n    node_selector: {a: b}\n")
    (problem,) = problems_of(write, text)
    assert where(problem) == (7, 5, "$.executors[1].node_selector", "executor-option")
    assert "it takes: docker_url, network_mode" in problem.message


def test_an_emr_executor_is_a_warning_that_its_tasks_do_not_run(write: Write) -> None:
    text = spec_text(runs_on="emr").replace(
        "    type: docker\n", "    type: docker\n  - executor: emr\n    type: emr\n"
    )
    text = text.replace("type: python\n        image", "type: spark\n        application_source: a.py\n        image")
    text = text.replace('        cmd: "echo hi"\n', "")
    (warning,) = loads(write, text).warnings
    assert warning.rule == "not-run" and "not run by the Liminal GitOps controller" in warning.message


# ---- tasks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "rule", "needle"),
    [
        ("echo {{ macros.ds_add(ds, 1) }}", "template", "Airflow templates are never evaluated"),
        ("echo {{ var.value.secret }}", "template", "cannot read"),
        ("echo {{conn.db.password}}", "template", "cannot read"),
        ("echo {{ dag_run.conf['x'] }}", "template", "template expression"),
    ],
)
def test_airflow_templates_in_a_command_are_refused(write: Write, cmd: str, rule: str, needle: str) -> None:
    (problem,) = problems_of(write, spec_text(cmd=cmd))
    assert (problem.line, problem.path, problem.rule) == (16, "$.pipelines[0].tasks[0].cmd", rule)
    assert needle in problem.message


def test_a_name_only_a_run_conf_can_fill_is_a_warning(write: Write) -> None:
    (warning,) = loads(write, spec_text(cmd="echo {{who}} {{ds}}")).warnings
    assert (warning.rule, warning.line) == ("unknown-placeholder", 16) and "DAG run's conf" in warning.message


def test_task_variables_are_filled_when_the_task_runs(write: Write) -> None:
    text = spec_text(
        root="variables:\n  v: root\n  named:\n    v: named\n",
        cmd="echo {{v}}",
        task="        variables: named\n",
    )
    task = loads(write, text).systems[0].pipelines[0].tasks[1]
    assert task.cmd == "echo {{v}}" and dict(task.variables) == {"v": "named"}
    assert runtime_filler({}, task.variables)(task.cmd) == "echo named"


def test_a_spark_task_with_cmd_is_refused(write: Write) -> None:
    text = spec_text(task="        application_source: app.py\n").replace("type: python", "type: spark")
    (problem,) = problems_of(write, text)
    assert (problem.line, problem.rule) == (16, "spark-cmd") and "spark-submit" in problem.message


def test_spark_executors_conflicting_with_conf_is_refused(write: Write) -> None:
    task = (
        "        application_source: app.py\n        executors: 2\n        conf:\n"
        "          spark.executor.instances: 4\n"
    )
    text = spec_text(task=task).replace("type: python", "type: spark").replace('        cmd: "echo hi"\n', "")
    (problem,) = problems_of(write, text)
    assert problem.rule == "spark-executors" and problem.line == 17


@pytest.mark.parametrize(
    ("secret", "rule"),
    [("read_only: false", "secret-read-only"), ("sub_path: ../x", "secret-sub-path")],
)
def test_secret_mounts_that_cannot_be_honoured_are_refused(write: Write, secret: str, rule: str) -> None:
    text = spec_text(
        root="secrets:\n  - secret: creds\n",
        task=f"        secrets:\n          - secret: creds\n            remote_path: /s\n            {secret}\n",
    )
    (problem,) = problems_of(write, text)
    assert (problem.line, problem.rule) == (22, rule), problem


def test_a_relative_local_path_is_a_warning_and_the_volume_a_named_one(write: Write) -> None:
    text = spec_text(
        runs_on="local",
        root="volumes:\n  - volume: data\n    local:\n      path: ./data\n",
        task="        mounts:\n          - volume: data\n            path: /data\n",
    )
    spec = loads(write, text)
    (warning,) = spec.warnings
    assert (warning.line, warning.col, warning.rule) == (10, 13, "volume-local-path")
    assert "a controller has none" in warning.message
    assert spec.systems[0].volumes[0].local_path is None  # a Docker named volume `data-pvc`, not a bind


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("env:\n          A: b", "unused-key"),
        ("no_cache: true", "unused-key"),
        ("application_source: a.py", "unused-key"),
    ],
)
def test_task_keys_without_effect_are_warnings(write: Write, key: str, rule: str) -> None:
    (warning,) = loads(write, spec_text(task=f"        {key}\n")).warnings
    assert (warning.rule, warning.line, warning.severity) == (rule, 17, "warning")


# ---- root sections ---------------------------------------------------------------------------------


def test_metrics_with_backends_are_refused_and_without_accepted(write: Write) -> None:
    loads(write, spec_text(root="metrics:\n  namespace: DS\n  backends: []\n"))
    (problem,) = problems_of(write, spec_text(root="metrics:\n  namespace: DS\n  backends: [cloudwatch]\n"))
    assert (problem.line, problem.col, problem.rule) == (9, 14, "metrics-backend")
    assert "CloudWatch" in problem.message


def test_monitoring_is_a_warning(write: Write) -> None:
    (warning,) = loads(write, spec_text(root="monitoring:\n  metrics_backends: []\n")).warnings
    assert (warning.rule, warning.line) == ("unused-key", 7)


def test_python_version_picks_the_configured_base_image_or_is_refused(write: Write) -> None:
    text = (
        "name: img\nimages:\n  - image: app\n    type: python\n    source: code\n    python_version: '3.12'\n"
        "    pip_conf: code/pip.conf\n"
    )
    root = write({"liminal.yml": text, "code/run.py": "", "code/pip.conf": "[global]\nindex-url = http://pypi.local\n"})
    spec = load_paths([root])
    settings = RenderSettings(python_base_images=(("3.12", "py:3.12"),))
    (resource,) = render(spec, root, settings, Origin("r", "c")).resources
    build = resource.artifact
    assert isinstance(build, ImageBuild)
    assert build.dockerfile.startswith("# Generated") and "FROM py:3.12\n" in build.dockerfile
    assert "COPY __liminal__/pip.conf /etc/pip.conf\n" in build.dockerfile
    conf = next(f for f in build.files if f.path == "__liminal__/pip.conf")
    assert conf.data == b"[global]\nindex-url = http://pypi.local\n"
    # the default base counts for the version its tag names
    (default,) = render(spec, root, RenderSettings(base_image="python:3.12-slim"), Origin("r", "c")).resources
    assert isinstance(default.artifact, ImageBuild) and "FROM python:3.12-slim\n" in default.artifact.dockerfile
    with pytest.raises(InputError) as caught:
        render(spec, root, RenderSettings(), Origin("r", "c"))
    (problem,) = caught.value.problems
    assert (problem.line, problem.col, problem.rule) == (6, 5, "python-version")
    assert "LIMINAL_PYTHON_BASE_IMAGES" in problem.message


def test_python_version_on_a_spark_image_is_a_warning(write: Write) -> None:
    text = "name: img\nimages:\n  - image: app\n    type: spark\n    source: code\n    python_version: '3.12'\n"
    (warning,) = loads(write, text, **{"code/run.py": ""}).warnings
    assert (warning.line, warning.col, warning.rule) == (6, 5, "unused-key")
    assert "LIMINAL_SPARK_BASE_IMAGE" in warning.message


def test_a_pip_conf_outside_the_repository_is_refused(write: Write) -> None:
    text = "name: img\nimages:\n  - image: app\n    type: python\n    source: code\n    pip_conf: ../../etc/pip.conf\n"
    (problem,) = problems_of(write, text, **{"code/run.py": ""})
    assert (problem.line, problem.rule) == (6, "source-escape")


# ---- the CLI: warnings, --strict, JSON severity -------------------------------------------------


def test_validate_prints_warnings_and_strict_makes_them_fail(write: Write) -> None:
    root = write({"liminal.yml": spec_text(pipeline="    team_budget: 12\n")})
    result = subprocess.run([LIMINAL, "validate", str(root)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert ":11:5: warning: $.pipelines[0].team_budget: `team_budget` is not an argument" in result.stdout
    assert "1 warning(s)" in result.stdout
    strict = subprocess.run([LIMINAL, "validate", "--strict", str(root)], capture_output=True, text=True, check=False)
    assert strict.returncode == 1 and "--strict makes them errors" in strict.stderr
    as_json = subprocess.run(
        [LIMINAL, "validate", "--format", "json", str(root)], capture_output=True, text=True, check=False
    )
    (found,) = json.loads(as_json.stdout)
    assert (found["severity"], found["rule"], found["line"]) == ("warning", "unused-key", 11)


# ---- Liminal's own tree ----------------------------------------------------------------------------


def test_liminal_s_whole_example_tree_loads_as_one_tree_without_a_traceback(corpus: Path) -> None:
    """Liminal's repository holds a super named `base` (its defaults); files without `super` inherit it."""
    with pytest.raises(InputError) as caught:
        load_paths([corpus])
    rules = {p.rule for p in caught.value.problems}
    # only the documented failures: plugin types, the empty test file, two files named MyPipeline,
    # and the spark demo's service named as the getting-started one
    assert rules <= {"schema/enum", "empty", "duplicate-liminal-name", "name-collision"}, caught.value.problems
    spec = load_paths([corpus / "examples" / "spark-app-demo" / "k8s"])
    assert spec.systems[0].supers[-1] == "base"


def test_a_repository_s_own_base_super_is_the_root_of_every_chain(write: Write) -> None:
    base = (
        "name: base\ntype: super\nexecutors:\n  - executor: mine\n    type: docker\n"
        "task_defaults:\n  python:\n    executor: mine\n"
    )
    sub = "name: app\npipelines:\n  - pipeline: p\n    start_date: 2024-01-01\n    timeout_minutes: 5\n    tasks:\n"
    sub += "      - task: t\n        type: python\n        image: python:3.11-slim\n        cmd: echo\n"
    spec = loads(write, sub, **{"defaults/liminal.yml": base})
    (system,) = spec.systems
    assert system.supers == ("base",)
    assert [t.executor for t in system.pipelines[0].tasks] == ["mine"]


# ---- services ------------------------------------------------------------------------------------


SERVICE_YML = """\
name: svc
images:
  - image: server
    type: python_server
    source: code
    endpoints:
      - endpoint: /predict
        module: model
        function: predict
services:
  - service: model_server
    image: server
    replicas: 3
    port: 8088
    env_vars:
      MODE: fast
      DEBUG: true
    request_cpu: 250m
    request_memory: 256Mi
    limit_cpu: 1
    limit_memory: 1Gi
"""


def test_service_keys_reach_the_deployment_and_the_container(write: Write) -> None:
    root = write({"liminal.yml": SERVICE_YML, "code/model.py": "def predict(b):\n    return b\n"})
    spec = load_paths([root])
    kube = render(spec, root, RenderSettings(serving=ServingTarget.KUBERNETES), Origin("r", "c"))
    body = next(r.body for r in kube.resources if r.key.kind is ResourceKind.SERVICE)
    deployment, service = body["manifests"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 3
    assert service["spec"]["ports"][0]["port"] == 8088
    assert container["env"] == [{"name": "DEBUG", "value": "true"}, {"name": "MODE", "value": "fast"}]
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    local = render(spec, root, RenderSettings(), Origin("r", "c"))
    run = next(r.body for r in local.resources if r.key.kind is ResourceKind.SERVICE)["container"]
    assert run["ports"] == {"8080/tcp": ["127.0.0.1", 8088]}
    assert run["environment"] == {"DEBUG": "true", "MODE": "fast"}
    assert (run["mem_limit"], run["nano_cpus"]) == (2**30, 10**9)


def test_plan_and_sync_report_the_warnings(tmp_path: Path) -> None:
    from controller.ledger import Ledger
    from tests.conftest import cli_env, commit_all, example_remote, liminal

    remote = example_remote(tmp_path)
    yml = remote / "liminal.yml"
    yml.write_text(yml.read_text().replace("schedule: 0 6 * * *", "schedule: 0 6 * * *\n    team_budget: 12"))
    commit_all(remote, "a key Airflow ignores")
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        env = cli_env(tmp_path, ledger, LIMINAL_IMAGES="off")
        assert liminal("repo", "add", str(remote), "--name", "hello", env=env).returncode == 0
        plan = liminal("plan", env=env)
        assert plan.returncode == 0, plan.stderr
        assert "warning: $.pipelines[0].team_budget: `team_budget` is not an argument" in plan.stdout
        (found,) = json.loads(liminal("plan", "--format", "json", env=env).stdout)
        assert [w["rule"] for w in found["warnings"]] == ["unused-key"]
        assert liminal("sync", env=env).returncode == 0
        (run,) = ledger.history("hello")
        assert any("team_budget" in w for w in run.summary["warnings"])
    finally:
        ledger.close()


def test_retry_delay_seconds_is_retry_delay_and_tags_are_checked(write: Write) -> None:
    spec = loads(write, spec_text(pipeline="    retry_delay_seconds: 90\n    tags: [team]\n"))
    pipeline = spec.systems[0].pipelines[0]
    assert pipeline.default_args["retry_delay"] == 90.0 and list(pipeline.dag_options["tags"]) == ["team"]
    (problem,) = problems_of(write, spec_text(pipeline="    retry_delay_seconds: 90\n    retry_delay: 5m\n"))
    assert (problem.line, problem.rule) == (11, "airflow-argument") and "keep one" in problem.message
