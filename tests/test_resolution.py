"""Resolution agrees with Apache Liminal's ConfigUtil on the corpus and on its own test scenarios."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from controller.config import placeholder_environ
from controller.errors import InputError
from controller.model import Pipeline, System, Task
from controller.render.dag_loader import runtime_filler
from tests.conftest import load_paths

Write = Callable[[dict[str, str]], Path]


def one_system(path: Path, environ: dict[str, str] | None = None) -> System:
    spec = load_paths([path], environ)
    assert len(spec.systems) == 1
    return spec.systems[0]


def run_time(task: Task, text: str) -> str:
    """`text` as the task sees it when it runs without a DAG-run conf."""
    return runtime_filler({}, task.variables)(text)


def one_pipeline(system: System) -> Pipeline:
    assert len(system.pipelines) == 1
    return system.pipelines[0]


def test_spark_demo_resolves_as_liminal(corpus: Path) -> None:
    system = one_system(corpus / "examples/spark-app-demo/k8s")
    assert system.supers == ("InfraSpark", "base")
    assert {e.name: e.type.value for e in system.executors} == {
        "default_k8s": "kubernetes",
        "airflow_executor": "airflow",
        "k8s": "kubernetes",
    }
    pipeline = one_pipeline(system)
    assert [(t.name, t.type, t.executor) for t in pipeline.tasks] == [
        ("start", "job_start", "airflow_executor"),
        ("data_preprocessing", "spark", "k8s"),
        ("train", "python", "default_k8s"),
        ("validate", "python", "default_k8s"),
        ("end", "job_end", "airflow_executor"),
    ]
    spark = pipeline.tasks[1]
    assert spark.image == "my_spark_image"
    # `executors: 2` on a spark task: two Spark executors of one application, not two applications
    assert spark.partitions == 1
    assert dict(spark.options["conf"]) == {"spark.executor.instances": "2"}
    # run-time fields keep their placeholders; the variables they name travel with the task and are
    # filled when it runs (after the DAG run's conf, as in Liminal)
    assert run_time(spark, spark.options["application_source"]) == "data_cleanup.py"  # the sub's variable
    assert [run_time(spark, a) for a in spark.options["application_arguments"]] == [
        "--input_uri",
        "data/iris.csv",  # '{{input_root_dir}}' is '' in the super
        "--output_uri",
        "/mnt/gettingstartedvol/iris/",  # variable built from another variable
    ]
    train = pipeline.tasks[2]
    assert [(m.volume, m.path) for m in train.mounts] == [("gettingstartedvol", "/mnt/gettingstartedvol")]
    assert train.cmd == "python -u training.py --action train --input_uri '{{training_data_path}}'"
    assert dict(train.variables) == {"training_data_path": "/mnt/gettingstartedvol/iris/"}
    assert (
        run_time(train, train.cmd) == "python -u training.py --action train --input_uri '/mnt/gettingstartedvol/iris/'"
    )
    conf = {"dag_run": SimpleNamespace(conf={"training_data_path": "/other/"})}
    assert runtime_filler(conf, train.variables)(train.cmd).endswith("'/other/'")  # a run's conf wins
    assert pipeline.timeout_minutes == 45
    assert pipeline.schedule == "0 * 1 * *"
    assert pipeline.owner == "Bosco Albert Baracus"


def test_sagemaker_archetype_defaults_reach_every_python_task(corpus: Path) -> None:
    system = one_system(corpus / "examples/sagemaker_example")
    pipeline = one_pipeline(system)
    assert [t.name for t in pipeline.tasks] == ["start", "data_preprocessing", "train", "deploy", "validate", "end"]
    for task in pipeline.tasks[1:-1]:
        assert task.executor == "k8s"
        assert task.image == "my_sm_image"
        env = {k: run_time(task, v) for k, v in task.env_vars.items()}
        assert env == {"AWS_CONFIG_FILE": "/secret/credentials", "COMM_PATH": "/mnt/smvolume"}
        assert [(s.secret, s.remote_path) for s in task.secrets] == [("aws", "/secret")]
        assert [m.volume for m in task.mounts] == ["smvolume"]
        # no variable `application` anywhere: left for Airflow to render at run time
        assert task.options["application_source"] == "{{application}}"
    # images are built relative to the deployable file, as Liminal's builder does
    assert [(i.name, i.source) for i in system.images] == [("my_sm_image", "examples/sagemaker_example")]


def test_three_level_super_chain(corpus: Path) -> None:
    system = one_system(corpus / "tests/runners/apps/test_app")
    assert system.supers == ("extra_liminal", "default_liminal", "base")
    pipeline = one_pipeline(system)
    # the pipeline's own tasks win over extra_liminal's pipeline_defaults.tasks (Liminal merges, pipeline wins)
    assert [t.name for t in pipeline.tasks] == ["start", "my_parallelized_static_input_task", "end"]
    assert pipeline.tasks[1].partitions == 2
    assert pipeline.unused["one"] == "one"
    assert pipeline.unused["two"] == "twoww"
    assert pipeline.unused["default_arg_loaded"] == "check"
    service = system.services[0]
    assert service.description == "my python server"
    assert service.options["one"] == "two"  # from default_liminal's service_defaults
    assert [i.name for i in system.images] == [
        "my_static_input_task_image",
        "my_task_output_input_task_image",
        "my_server_image",
    ]


def test_getting_started_variables_and_partitions(corpus: Path) -> None:
    pipeline = one_pipeline(one_system(corpus / "examples/liminal-getting-started"))
    first = pipeline.tasks[1]
    assert dict(first.env_vars) == {"env1": "{{myvar}}", "env2": "foo"}  # filled when the task runs
    assert run_time(first, first.env_vars["env1"]) == "myval"
    assert first.partitions == 2
    assert pipeline.unused["default_object_loaded"] == {"key1": "val1", "key2": "val2"}


SUPER_SUPER = """
name: super_superliminal
type: super
variables:
  default_image: def_default_image_value
pipeline_defaults:
  global_conf: '{{var3}}'
  param2: param2super_value
  param4: param4hyper_value
  after_tasks:
    - task: before_last_task
      type: job_end
"""
SUPER = """
name: my_superliminal_test
type: super
super: super_superliminal
variables:
  var-2: override
  var3: super_var
pipeline_defaults:
  param2: '{{pipe-var}}'
  param3: param3super_value
  before_tasks:
    - task: second_task
      type: job_start
task_defaults:
  job_start:
    description: from the super
"""
SUB = """
name: my_subliminal_test
super: my_superliminal_test
variables:
  var: simple case
  var-2: -case
  a: '{{env}}1'
  b: '{{a}}2'
  c: '{{a}}{{b}}2'
pipeline_defaults:
  param1: '{{var-2}}'
pipelines:
  - pipeline: mypipe1
    start_date: 2024-01-01
    timeout_minutes: 5
    param: '{{var}}'
    joined: '{{c}}'
    spaced: '{{var-2   }}'
    tasks: []
"""


def test_liminal_variable_and_before_after_semantics(write: Write) -> None:
    root = write({"s/liminal.yml": SUPER_SUPER, "m/liminal.yml": SUPER, "liminal.yml": SUB})
    pipeline = one_pipeline(one_system(root, {"env": "myenv"}))
    # base's start first, then the nearer super's before task; the outer super's after task before base's end
    assert [t.name for t in pipeline.tasks] == ["start", "second_task", "before_last_task", "end"]
    assert pipeline.tasks[1].description == "from the super"
    args = pipeline.unused
    assert args["param"] == "simple case"
    assert args["param1"] == "-case"  # the sub's variable wins over the super's
    assert args["spaced"] == "-case"
    assert args["joined"] == "myenv1myenv122"
    assert args["global_conf"] == "super_var"
    assert args["param2"] == "{{pipe-var}}"  # unknown: left for run time
    assert args["param3"] == "param3super_value"
    assert args["param4"] == "param4hyper_value"


def test_airflow_runtime_names_are_never_taken_from_the_environment(write: Write) -> None:
    root = write(
        {
            "liminal.yml": SUB.replace("param: '{{var}}'", "param: '{{ds}} {{dag_run.conf.x}} {{HOME_DIR}}'"),
            "m/liminal.yml": SUPER,
            "s/liminal.yml": SUPER_SUPER,
        }
    )
    environ = {"ds": "2000-01-01", "dag_run.conf.x": "no", "HOME_DIR": "/home/x", "env": "e"}
    pipeline = one_pipeline(one_system(root, environ))
    assert pipeline.unused["param"] == "{{ds}} {{dag_run.conf.x}} /home/x"


def test_only_listed_environment_fills_placeholders() -> None:
    environ = {"GITHUB_TOKEN": "t", "DB_PASSWORD": "p", "AWS_SECRET_ACCESS_KEY": "k", "LIMINAL_HOME": "h", "ENV": "ok"}
    assert placeholder_environ(environ) == {}
    assert placeholder_environ({**environ, "LIMINAL_PLACEHOLDER_ENV": "ENV"}) == {"ENV": "ok"}


def test_variables_that_loop_are_an_error(write: Write) -> None:
    root = write(
        {
            "liminal.yml": "name: loop\nvariables:\n  a: '{{b}}'\n  b: '{{a}}'\n",
        }
    )
    with pytest.raises(InputError) as caught:
        load_paths([root])
    (problem,) = caught.value.problems
    assert (problem.line, problem.col, problem.path, problem.rule) == (3, 6, "$.variables.a", "variable-cycle")
    assert problem.message == "variables refer to each other in a loop: a -> b -> a"


def test_same_named_image_in_sub_wins_over_super(write: Write) -> None:
    # Liminal lets the super's copy win here; every other section lets the lower file win, so we do too.
    root = write(
        {
            "base/liminal.yml": "name: infra\ntype: super\nimages:\n  - image: app\n    type: python\n"
            "    source: .\n    no_cache: false\n",
            "liminal.yml": "name: app\nsuper: infra\nimages:\n  - image: app\n    type: python\n    no_cache: true\n",
        }
    )
    (image,) = one_system(root).images
    assert image.no_cache is True


def test_variables_cannot_grow_without_bound(write: Write) -> None:
    # each level doubles: 40 levels would be 2**40 characters
    levels = "".join(f"  v{i}: '{{{{v{i + 1}}}}}{{{{v{i + 1}}}}}'\n" for i in range(40))
    root = write({"liminal.yml": f"name: laughs\nvariables:\n{levels}  v40: 'ha'\n"})
    with pytest.raises(InputError) as caught:
        load_paths([root])
    assert caught.value.problems[0].rule == "variable-size"
    assert "over 65536 characters" in caught.value.problems[0].message
