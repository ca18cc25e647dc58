"""Every real liminal.yml from Apache Liminal loads, or fails for the reason asserted here."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.errors import InputError
from tests.conftest import CORPUS, load_paths

# Each directory as Liminal itself would load it (its super files beside it).
LOADS = {
    "examples/aws-ml-app-demo": (1, ["my_datascience_pipeline"], ["my_datascience_server"]),
    "examples/liminal-getting-started": (1, ["getting_started_pipeline"], ["liminal_getting_started_python_server"]),
    "examples/sagemaker_example": (1, ["sagemaker_diamonds_train_and_inference"], []),
    "examples/spark-app-demo/k8s": (1, ["my_first_spark_pipeline"], ["my_datascience_server"]),
    "tests/runners/airflow/liminal": (1, ["my_pipeline"], ["my_python_server"]),
    "tests/runners/apps/test_app": (1, ["my_pipeline"], ["my_python_server"]),
    "tests/runners/apps/test_spark_app": (1, ["my_pipeline"], []),
    "liminal/core/config/defaults/base": (0, [], []),
}

# Where we fail, and why Liminal fails (or would run plugin code) too.
FAILS = {
    # Liminal's extensibility example needs plugin classes loaded from the repository; the
    # controller never executes repository code, so custom types are unknown types here.
    "examples/extensibility": [
        ("liminal.yml", 22, 11, "$.images[0].type", "schema/enum"),
        ("liminal.yml", 25, 11, "$.executors[0].type", "schema/enum"),
        ("liminal.yml", 34, 15, "$.pipelines[0].tasks[0].type", "schema/enum"),
    ],
    # A licence header and nothing else: Liminal crashes on it (None['name']).
    "tests/runners/apps/test": [("liminal.yml", 1, 1, "$", "empty")],
}


def test_every_corpus_file_is_covered() -> None:
    files = {f.name.replace("__", "/").rsplit("/", 1)[0] for f in CORPUS.iterdir() if f.suffix in (".yml", ".yaml")}
    covered = set(LOADS) | set(FAILS)
    uncovered = {f for f in files if not any(f == d or f.startswith(d + "/") for d in covered)}
    assert not uncovered


@pytest.mark.parametrize("directory", sorted(LOADS))
def test_corpus_directory_loads(corpus: Path, directory: str) -> None:
    systems, pipelines, services = LOADS[directory]
    spec = load_paths([corpus / directory])
    assert len(spec.systems) == systems
    assert [p.name for s in spec.systems for p in s.pipelines] == pipelines
    assert [v.name for s in spec.systems for v in s.services] == services


@pytest.mark.parametrize("directory", sorted(FAILS))
def test_corpus_directory_fails_for_the_written_reason(corpus: Path, directory: str) -> None:
    with pytest.raises(InputError) as caught:
        load_paths([corpus / directory])
    got = [(Path(p.file).name, p.line, p.col, p.path, p.rule) for p in caught.value.problems]
    assert got == FAILS[directory]


def test_extensibility_messages_name_the_custom_types(corpus: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_paths([corpus / "examples/extensibility"])
    messages = [p.message for p in caught.value.problems]
    assert messages[2] == (
        "unknown task type 'custom_task'; expected one of: python, spark, sql, job_start, job_end, "
        "create_cloudformation_stack, delete_cloudformation_stack, pipeline"
    )


def test_whole_apps_tree_reports_liminal_name_clash(corpus: Path) -> None:
    # test_app and test_spark_app are both named MyPipeline: Liminal silently keeps one of them.
    with pytest.raises(InputError) as caught:
        load_paths([corpus / "tests/runners/apps/test_app", corpus / "tests/runners/apps/test_spark_app"])
    rules = [p.rule for p in caught.value.problems]
    assert rules == ["duplicate-liminal-name"]
    assert "two files are named 'MyPipeline'" in caught.value.problems[0].message
