"""Check one parsed liminal.yml against the published JSON Schema, with located, readable problems.

Pure: the schema is read once from the package; checking touches nothing else.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError as SchemaViolation

from controller.model import Problem
from controller.spec.yaml_positions import Node

__all__ = ["check_schema", "jsonable", "load_schema", "suggest"]

_REPO_SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "liminal.schema.json"


@lru_cache(maxsize=1)
def _schema_text() -> str:
    if _REPO_SCHEMA.is_file():
        return _REPO_SCHEMA.read_text("utf-8")
    return resources.files("controller.spec").joinpath("liminal.schema.json").read_text("utf-8")


def load_schema() -> dict[str, Any]:
    """The liminal.yml JSON Schema (the repository's in a checkout, else the wheel's), as a fresh dict.

    Fresh because validator compilers may annotate the dict they are given.
    """
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def suggest(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when a choice is close to `word`, else an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def jsonable(node: Node) -> Any:
    """Plain data as JSON Schema sees it: YAML dates become ISO strings."""
    value = node.value
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _find(root: Node, path: Iterable[Any]) -> Node:
    node = root
    for part in path:
        child = node.value[part] if isinstance(node.value, dict | list) else None
        if not isinstance(child, Node):
            break
        node = child
    return node


_JSON_TYPES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "nothing",
}


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string '{shown}'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _quoted(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else _describe(value)


def _problems(err: SchemaViolation, root: Node) -> Iterator[Problem]:
    node = _find(root, err.absolute_path)
    schema: dict[str, Any] = err.schema if isinstance(err.schema, dict) else {}
    expected: Any = err.validator_value
    title = schema.get("title")
    kind = err.validator
    if kind == "additionalProperties" and isinstance(err.instance, dict):
        allowed = list(schema.get("properties", {}))
        for key in err.instance:
            if key in allowed:
                continue
            child = node.get(key)
            where = child if child is not None else node
            what = f" in {title}" if title else ""
            yield where.problem(
                f"unknown key '{key}'{what}{suggest(key, allowed)}",
                "schema/unknown-key",
                at_key=child is not None,
            )
        return
    if kind == "required":
        missing = [k for k in expected if isinstance(err.instance, dict) and k not in err.instance]
        what = f" {title}" if title else ""
        for key in missing:
            yield node.problem(f"missing required key '{key}' in{what or ' this mapping'}", "schema/required")
        return
    if kind == "enum":
        choices = [str(c) for c in expected]
        label = title or "value"
        yield node.problem(
            f"unknown {label} {_quoted(err.instance)}; expected one of: {', '.join(choices)}"
            f"{suggest(str(err.instance), choices)}",
            "schema/enum",
        )
        return
    if kind == "type":
        expected = expected if isinstance(expected, list) else [expected]
        names = [_JSON_TYPES.get(str(t), str(t)) for t in expected]
        words = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        yield node.problem(f"expected {words}, got {_describe(err.instance)}", "schema/type")
        return
    if kind in ("minimum", "maximum"):
        op = ">=" if kind == "minimum" else "<="
        yield node.problem(f"must be {op} {expected}, got {err.instance}", "schema/range")
        return
    if kind == "minLength":
        yield node.problem("must not be empty", "schema/empty")
        return
    if kind == "pattern":
        yield node.problem(f"{_describe(err.instance)} must match {expected}", "schema/pattern")
        return
    yield node.problem(err.message, f"schema/{kind}")


def check_schema(root: Node) -> list[Problem]:
    """All schema problems of one parsed file, each at the line and column of the offending text."""
    errors = _validator().iter_errors(jsonable(root))
    found: list[Problem] = []
    for err in errors:
        found.extend(_problems(err, root))
    return found
