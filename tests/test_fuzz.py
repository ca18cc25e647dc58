"""Hypothesis: arbitrary bytes and arbitrary YAML give a Spec or located problems, never a traceback."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.errors import InputError
from controller.model import Spec
from controller.spec import SourceFile, load
from controller.spec.yaml_positions import Limits

SMALL = Limits(max_bytes=64 * 1024, max_depth=32, max_nodes=20_000)


def _load_bytes(tmp: Path, data: bytes) -> None:
    path = tmp / "liminal.yml"
    path.write_bytes(data)
    try:
        result = load([SourceFile(path, "liminal.yml", tmp)], {}, SMALL)
    except InputError as exc:
        assert exc.problems, "an InputError always carries at least one problem"
        for p in exc.problems:
            assert p.file == "liminal.yml"
            assert p.line >= 1
            assert p.col >= 1
            assert p.path.startswith("$")
            assert p.message
    else:
        assert isinstance(result, Spec)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes(tmp_path: Path, data: bytes) -> None:
    _load_bytes(tmp_path, data)


KEYS = st.sampled_from(
    [
        "name",
        "type",
        "super",
        "pipelines",
        "pipeline",
        "tasks",
        "task",
        "image",
        "images",
        "executor",
        "executors",
        "services",
        "service",
        "volumes",
        "volume",
        "mounts",
        "env_vars",
        "variables",
        "start_date",
        "schedule",
        "timeout_minutes",
        "source",
        "endpoints",
        "cmd",
        "task_defaults",
        "pipeline_defaults",
        "python",
        "x",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False),
    st.text(string.printable, max_size=12),
    st.sampled_from(["python", "super", "kubernetes", "0 * * * *", "2024-01-01", "{{a}}", "..", "/", "base"]),
)
DOCS: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=5)),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(DOCS, st.dictionaries(KEYS, DOCS, max_size=6).map(lambda d: {"name": "n", **d})))
def test_arbitrary_yaml(tmp_path: Path, doc: Any) -> None:
    _load_bytes(tmp_path, yaml.safe_dump(doc).encode())
