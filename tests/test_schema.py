"""The published JSON Schema: generated, valid 2020-12, described, and agreeing with the fast validator."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import pytest

from controller.spec.load import _fast_schema
from controller.spec.schema import check_schema, jsonable, load_schema
from controller.spec.yaml_positions import parse_yaml
from scripts.generate_schema import render
from tests.conftest import CORPUS, REPO

SCHEMA_FILE = REPO / "schemas" / "liminal.schema.json"


def test_committed_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_text() == render(), "run: python scripts/generate_schema.py"


def test_schema_is_valid_2020_12() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def _properties(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            yield f"{where}.{name}", sub
            yield from _properties(sub, f"{where}.{name}")
        for key, value in node.items():
            # `if` clauses select a branch; they are not keys a user writes
            if key not in ("properties", "if"):
                yield from _properties(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _properties(value, f"{where}[{i}]")


def test_every_property_has_a_description() -> None:
    schema = load_schema()
    missing = []
    for where, prop in _properties(schema, "#"):
        target = prop
        if "$ref" in prop and "description" not in prop:
            target = schema["$defs"][prop["$ref"].split("/")[-1]]
        if "description" not in target:
            missing.append(where)
    assert missing == []


def _all_documents() -> Iterator[tuple[str, bytes]]:
    for f in sorted(CORPUS.glob("*.y*ml")):
        yield f.name, f.read_bytes()
    for f in sorted((REPO / "tests" / "bad").glob("*.yml")):
        yield f.name, f.read_bytes()


@pytest.mark.parametrize(("name", "data"), list(_all_documents()), ids=lambda v: v if isinstance(v, str) else "")
def test_fast_validator_agrees_with_jsonschema(name: str, data: bytes) -> None:
    from controller.errors import InputError

    try:
        root = parse_yaml(data, name)
    except InputError:
        return  # not YAML: never reaches the schema
    instance = jsonable(root)
    reference_valid = jsonschema.Draft202012Validator(load_schema()).is_valid(instance)
    try:
        _fast_schema()(instance)
        fast_valid = True
    except fastjsonschema.JsonSchemaException:
        fast_valid = False
    assert fast_valid == reference_valid


@pytest.mark.parametrize(("name", "data"), list(_all_documents()), ids=lambda v: v if isinstance(v, str) else "")
def test_small_and_big_inputs_get_the_same_problems(name: str, data: bytes) -> None:
    from controller.errors import InputError
    from controller.spec.load import COMPILE_AFTER, schema_problems

    try:
        root = parse_yaml(data, name)
    except InputError:
        return
    # a file past the budget goes through the compiled validator, then jsonschema locates problems
    assert schema_problems(root, COMPILE_AFTER + 1) == check_schema(root)


def test_schema_is_packaged_with_the_wheel(tmp_path: Path) -> None:
    # hatch copies schemas/liminal.schema.json into the package; the loader must find it there
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"schemas/liminal.schema.json" = "controller/spec/liminal.schema.json"' in pyproject
    shutil.copyfile(SCHEMA_FILE, tmp_path / "copy.json")
    assert json.loads((tmp_path / "copy.json").read_text()) == load_schema()
