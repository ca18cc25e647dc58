"""docs/liminal-compatibility.md is a table of every liminal.yml key, each row naming the tests that
prove what happens to it; this keeps the table and the schema, and the table and the tests, in step."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from controller.spec.airflow_args import DAG_OPTIONS, DEFAULT_ARGS, DOCKER_OPTIONS, KUBERNETES_OPTIONS
from tests.conftest import REPO

DOC = REPO / "docs" / "liminal-compatibility.md"
VERDICTS = ("**honoured**", "**refused**", "**warning**", "**differs**")


def _schema_keys() -> set[str]:
    schema = json.loads((REPO / "schemas" / "liminal.schema.json").read_text(encoding="utf-8"))
    defs = schema["$defs"]
    found: set[str] = set()

    def walk(node: dict[str, Any], prefix: str, seen: tuple[str, ...]) -> None:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[1]
            if name not in seen:
                walk(defs[name], prefix, (*seen, name))
            return
        if "allOf" in node and prefix.endswith("tasks[]"):
            for kind in defs["taskType"]["enum"]:
                walk(defs[f"{kind}Task"], prefix, seen)
            return
        if node.get("type") == "array" and "items" in node:
            walk(node["items"], prefix + "[]", seen)
            return
        for key, child in node.get("properties", {}).items():
            path = f"{prefix}.{key}" if prefix else key
            found.add(path)
            if not prefix.endswith(("pipeline_defaults", "task_defaults")):
                walk(child, path, seen)

    walk(schema, "", ())
    # the defaults sections repeat the task shapes; their keys are the tasks' rows
    found = {k for k in found if not k.startswith(("task_defaults.", "pipeline_defaults.before_tasks[]"))}
    found = {k for k in found if not k.startswith(("pipeline_defaults.after_tasks[]", "pipeline_defaults.tasks[]"))}
    found |= {f"pipelines[].{k}" for k in (*DEFAULT_ARGS, *DAG_OPTIONS)}
    found |= {f"executors[].{k}" for k in (*KUBERNETES_OPTIONS, *DOCKER_OPTIONS)}
    return found


def _rows() -> list[list[str]]:
    rows = []
    text = DOC.read_text(encoding="utf-8").split("## Where a corpus file fails")[0]
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith(("| key ", "| ---", "| file ")):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows.append(cells)
    return rows


def _test_names() -> set[str]:
    names: set[str] = set()
    for path in Path(REPO / "tests").glob("test_*.py"):
        names |= set(re.findall(r"^def (test_\w+)\(", path.read_text(encoding="utf-8"), re.MULTILINE))
    return names


def test_every_schema_key_has_exactly_one_row() -> None:
    keys = [m.group(1) for cells in _rows() if (m := re.fullmatch(r"`([^`]+)`", cells[0]))]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    schema = _schema_keys()
    assert schema - set(keys) == set(), "keys without a row"
    assert set(keys) - schema == set(), "rows for keys the schema does not have"


def test_every_row_says_what_happens_and_names_tests_that_exist() -> None:
    tests = _test_names()
    rows = _rows()
    assert len(rows) > 150
    for cells in rows:
        assert len(cells) == 3, cells
        assert any(v in cells[1] for v in VERDICTS), cells
        named = re.findall(r"`(test_\w+)`", cells[2])
        assert named, cells
        assert set(named) <= tests, (cells[0], set(named) - tests)
