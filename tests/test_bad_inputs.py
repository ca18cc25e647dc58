"""The bad-input corpus (tests/bad/*.yml): each file gives exactly one problem, located exactly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from controller.errors import InputError
from tests.conftest import load_paths

BAD = Path(__file__).resolve().parent / "bad"

# file stem: (line, column, JSON path, rule, message)
EXPECTED: dict[str, tuple[int, int, str, str, str]] = {
    "bad_cron": (
        6,
        15,
        "$.pipelines[0].schedule",
        "cron",
        "schedule '0 25 * * *' is not a cron expression (5 fields, e.g. '0 * * * *') or an Airflow preset (@annually, @continuous, @daily, @hourly, @monthly, @none, @once, @quarterly, @weekly, @yearly)",
    ),
    "bad_env_name": (
        16,
        11,
        "$.pipelines[0].tasks[0].env_vars['MY VAR']",
        "env-name",
        "'MY VAR' is not a valid environment variable name",
    ),
    "bad_function": (
        8,
        19,
        "$.images[0].endpoints[0].function",
        "identifier",
        "function 'class' is not a Python identifier",
    ),
    "bad_image_name": (
        3,
        12,
        "$.images[0].image",
        "name-mapping",
        "image name 'My App' is not a valid Docker reference (lower-case letters, digits, '.', '_', '-', '/' and an optional ':tag')",
    ),
    "bad_module": (
        7,
        17,
        "$.images[0].endpoints[0].module",
        "identifier",
        "module 'my-module' is not a Python module path (identifiers separated by dots)",
    ),
    "bad_pipeline_name": (
        3,
        15,
        "$.pipelines[0].pipeline",
        "name-mapping",
        "pipeline name 'my pipeline' may only hold letters, digits, '.', '-' and '_', not start with '.', and be at most 250 long (it becomes the Airflow dag_id and a file name)",
    ),
    "bad_start_date": (
        4,
        17,
        "$.pipelines[0].start_date",
        "start-date",
        "start_date 'yesterday' is not a date (YYYY-MM-DD)",
    ),
    "bad_task_name": (
        11,
        15,
        "$.pipelines[0].tasks[0].task",
        "name-mapping",
        "task name 'train model' may only hold letters, digits, '-' and '_' (it becomes the Airflow task_id)",
    ),
    "duplicate_image": (5, 5, "$.images[1]", "unique-name", "image 'app' is defined twice (first at line 3, column 5)"),
    "duplicate_key": (3, 1, "$.owner", "duplicate-key", "duplicate key 'owner' (first defined at line 2, column 1)"),
    "duplicate_pipeline": (
        6,
        5,
        "$.pipelines[1]",
        "unique-name",
        "pipeline 'p' is defined twice (first at line 3, column 5)",
    ),
    "duplicate_service": (
        8,
        5,
        "$.services[1]",
        "unique-name",
        "service 's' is defined twice (first at line 6, column 5)",
    ),
    "duplicate_task": (
        15,
        9,
        "$.pipelines[0].tasks[1]",
        "unique-name",
        "task 't' is defined twice (first at line 11, column 9)",
    ),
    "empty": (1, 1, "$", "empty", "file is empty; a liminal.yml needs at least `name`"),
    "endpoint_without_slash": (
        6,
        19,
        "$.images[0].endpoints[0].endpoint",
        "schema/pattern",
        "the string 'predict' must match ^/",
    ),
    "env_value_map": (
        17,
        13,
        "$.pipelines[0].tasks[0].env_vars.A",
        "schema/type",
        "expected a string, a number, true or false or nothing, got a mapping",
    ),
    "env_vars_list": (15, 19, "$.pipelines[0].tasks[0].env_vars", "schema/type", "expected a mapping, got a list"),
    "executor_wrong_type": (
        15,
        19,
        "$.pipelines[0].tasks[0].executor",
        "executor-task-type",
        "executor 'airflow_executor' (airflow) cannot run python tasks; it runs: create_cloudformation_stack, delete_cloudformation_stack, job_end, job_start",
    ),
    "image_missing_type": (3, 5, "$.images[0]", "schema/required", "missing required key 'type' in image"),
    "k8s_collision": (
        8,
        5,
        "$.services[1]",
        "name-collision",
        "service 'my-server' becomes the Kubernetes name 'my-server', as does 'my_server' of 'bad'",
    ),
    "malformed": (
        3,
        1,
        "$",
        "yaml-syntax",
        "invalid YAML: did not find expected node content while parsing a flow node",
    ),
    "missing_start_date": (
        3,
        5,
        "$.pipelines[0]",
        "required",
        "pipeline has no start_date (set it on the pipeline or in pipeline_defaults)",
    ),
    "missing_super": (2, 8, "$.super", "super-missing", "super 'infra' not found among the files given"),
    "mount_missing_volume": (
        16,
        13,
        "$.pipelines[0].tasks[0].mounts[0]",
        "schema/required",
        "missing required key 'volume' in mount",
    ),
    "name_not_string": (1, 7, "$.name", "schema/type", "expected a string, got a list"),
    "non_utf8": (2, 8, "$", "encoding", "file is not valid UTF-8 (byte 0xff at offset 17)"),
    "partitions_string": (
        15,
        20,
        "$.pipelines[0].tasks[0].executors",
        "schema/type",
        "expected an integer, got the string 'two'",
    ),
    "partitions_zero": (15, 20, "$.pipelines[0].tasks[0].executors", "schema/range", "must be >= 1, got 0"),
    "python_tag": (
        1,
        7,
        "$.name",
        "yaml-tag",
        "unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
    "python_without_cmd": (11, 9, "$.pipelines[0].tasks[0]", "required", "python task 't' has no cmd"),
    "python_without_image": (
        11,
        9,
        "$.pipelines[0].tasks[0]",
        "required",
        "python task 't' has no image (set `image`, or task_defaults.python.image)",
    ),
    "relative_mount_path": (
        17,
        19,
        "$.pipelines[0].tasks[0].mounts[0].path",
        "mount-path",
        "mount path 'mnt' must be absolute",
    ),
    "root_is_list": (1, 1, "$", "schema/type", "the top level must be a mapping (name: ..., pipelines: ...)"),
    "root_is_scalar": (1, 1, "$", "schema/type", "the top level must be a mapping (name: ..., pipelines: ...)"),
    "service_image_not_server": (
        7,
        12,
        "$.services[0].image",
        "service-image-type",
        "service image 'app' is a python image; a service needs a python_server image",
    ),
    "source_escape": (
        5,
        13,
        "$.images[0].source",
        "source-escape",
        "source '../outside' must be a relative path inside the repository (no '..', not absolute)",
    ),
    "source_missing": (
        5,
        13,
        "$.images[0].source",
        "source-missing",
        "source 'missing_dir' does not exist (looked for repo/missing_dir/ in the repository)",
    ),
    "sub_before_tasks": (
        3,
        3,
        "$.pipeline_defaults.before_tasks",
        "ineffective-key",
        "before_tasks only take effect in a `type: super` file (Liminal ignores them here); move them to a super file",
    ),
    "tab_indent": (
        3,
        1,
        "$",
        "yaml-syntax",
        "invalid YAML: found character that cannot start any token while scanning for the next token (a tab: YAML does not allow tabs for indentation; use spaces)",
    ),
    "task_missing_name": (11, 9, "$.pipelines[0].tasks[0]", "schema/required", "missing required key 'task' in task"),
    "task_missing_type": (11, 9, "$.pipelines[0].tasks[0]", "schema/required", "missing required key 'type' in task"),
    "timeout_not_int": (
        5,
        22,
        "$.pipelines[0].timeout_minutes",
        "schema/type",
        "expected an integer, got the string 'soon'",
    ),
    "timeout_zero": (5, 22, "$.pipelines[0].timeout_minutes", "schema/range", "must be >= 1, got 0"),
    "two_docs": (2, 1, "$", "yaml-multi", "expected a single YAML document, found another '---'"),
    "undeclared_executor": (
        15,
        19,
        "$.pipelines[0].tasks[0].executor",
        "unknown-executor",
        "executor 'default_k9s' is not declared (declared: airflow_executor, default_k8s); did you mean 'default_k8s'?",
    ),
    "undeclared_image": (
        13,
        16,
        "$.pipelines[0].tasks[0].image",
        "unknown-image",
        "image 'ap' is not declared in images; declare it, or give a full reference with a tag (e.g. python:3.11-slim); did you mean 'app'?",
    ),
    "undeclared_secret": (
        16,
        21,
        "$.pipelines[0].tasks[0].secrets[0].secret",
        "unknown-secret",
        "secret 'aws' is not declared in secrets",
    ),
    "undeclared_volume": (
        17,
        21,
        "$.pipelines[0].tasks[0].mounts[0].volume",
        "unknown-volume",
        "mount names volume 'data', which is not declared in volumes (declared: none)",
    ),
    "unknown_alias": (1, 7, "$.name", "yaml-alias", "unknown alias '*who'"),
    "unknown_endpoint_key": (
        9,
        9,
        "$.images[0].endpoints[0].methd",
        "schema/unknown-key",
        "unknown key 'methd' in endpoint",
    ),
    "unknown_executor_type": (
        4,
        11,
        "$.executors[0].type",
        "schema/enum",
        "unknown executor type 'kubernete'; expected one of: kubernetes, airflow, emr, docker; did you mean 'kubernetes'?",
    ),
    "unknown_image_type": (
        4,
        11,
        "$.images[0].type",
        "schema/enum",
        "unknown image type 'pythn'; expected one of: python, python_server, spark; did you mean 'python'?",
    ),
    "unknown_root_key": (
        2,
        1,
        "$.pipelnes",
        "schema/unknown-key",
        "unknown key 'pipelnes' in liminal.yml; did you mean 'pipelines'?",
    ),
    "unknown_task_key": (
        13,
        9,
        "$.pipelines[0].tasks[0].imgae",
        "schema/unknown-key",
        "unknown key 'imgae' in python task; did you mean 'image'?",
    ),
    "unknown_task_type": (
        12,
        15,
        "$.pipelines[0].tasks[0].type",
        "schema/enum",
        "unknown task type 'pyhton'; expected one of: python, spark, sql, job_start, job_end, create_cloudformation_stack, delete_cloudformation_stack, pipeline; did you mean 'python'?",
    ),
    "unknown_volume_key": (
        4,
        5,
        "$.volumes[0].clam_name",
        "schema/unknown-key",
        "unknown key 'clam_name' in volume; did you mean 'claim_name'?",
    ),
    "variables_not_map": (2, 12, "$.variables", "schema/type", "expected a mapping, got a list"),
}


def test_corpus_is_large_enough_and_fully_asserted() -> None:
    stems = {p.stem for p in BAD.glob("*.yml")}
    assert len(stems) >= 40
    assert stems == set(EXPECTED)


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_bad_file_gives_one_located_problem(tmp_path: Path, stem: str) -> None:
    (tmp_path / ".git").mkdir()
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copyfile(BAD / f"{stem}.yml", repo / "liminal.yml")
    with pytest.raises(InputError) as caught:
        load_paths([repo])
    got = [(p.line, p.col, p.path, p.rule, p.message) for p in caught.value.problems]
    assert got == [EXPECTED[stem]]
    assert caught.value.problems[0].file == str(repo / "liminal.yml")
