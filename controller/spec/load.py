"""The load stage: liminal.yml files -> typed Spec, or InputError with every problem located.

parse (yaml_positions) -> schema -> per-file rules -> resolve (super, defaults, variables)
-> semantic rules (validate) -> cross-file rules. Reads only the given files and the trees under
their repository roots.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import fastjsonschema

from controller.errors import InputError
from controller.files import FileRefusedError, read_repository_file
from controller.model import UNRESTRICTED, Memo, Problem, RepoPolicy, Spec, System, memoized
from controller.spec.policy import policy_problems
from controller.spec.resolve import Document, resolve_system
from controller.spec.schema import check_schema, jsonable, load_schema
from controller.spec.validate import SourceFile, check_unique, k8s_name, service_name, validate_system
from controller.spec.yaml_positions import DEFAULT_LIMITS, Limits, Node, parse_yaml

__all__ = ["CONFIG_NAMES", "discover", "load"]

CONFIG_NAMES = ("liminal.yml", "liminal.yaml")
BASE_DISPLAY = "<liminal base>"


@lru_cache(maxsize=1)
def _base_document() -> Document:
    data = resources.files("controller.spec").joinpath("base.liminal.yml").read_bytes()
    return Document("base", parse_yaml(data, BASE_DISPLAY), is_super=True)


@lru_cache(maxsize=1)
def _fast_schema() -> Any:
    # fastjsonschema compiles the schema to Python: ~10x faster than jsonschema on valid files.
    # It only says valid/invalid; invalid files are re-checked by jsonschema for located problems.
    schema = dict(load_schema())
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    # formats are annotations for editors here; dates are checked (and located) by the semantic rules
    return fastjsonschema.compile(schema, use_formats=False)


COMPILE_AFTER = 64 * 1024
"""Bytes of YAML a process checks with jsonschema before it compiles the fast validator: compiling
costs about what jsonschema takes for 50 KiB, so one small file (a CLI run, a pre-commit hook)
never pays for it, and a big repository pays once."""

_checked = [0]  # bytes checked by jsonschema in this process (a race only moves the switch a little)


def schema_problems(root: Node, size: int) -> list[Problem]:
    """Schema problems of one file of `size` bytes: jsonschema (the authority) while a process has
    checked at most COMPILE_AFTER bytes, then the compiled fast path when the file is valid."""
    if _checked[0] + size <= COMPILE_AFTER:
        _checked[0] += size
        return check_schema(root)
    try:
        _fast_schema()(jsonable(root))
        return []
    except fastjsonschema.JsonSchemaException:
        # jsonschema is the authority; tests/test_schema.py checks the two agree
        return check_schema(root)


def _repo_root(start: Path) -> Path:
    for candidate in (start, *start.parents):
        if (candidate / ".git").exists():
            return candidate
    return start


def discover(paths: Sequence[Path]) -> list[SourceFile]:
    """The liminal.yml / liminal.yaml files named by `paths` (files as given, directories walked).

    A file's repository root is the nearest ancestor holding `.git`, else the directory given.
    """
    found: dict[Path, SourceFile] = {}
    for given in paths:
        absolute = given.resolve()
        if absolute.is_file():
            found.setdefault(absolute, SourceFile(absolute, str(given), _repo_root(absolute.parent)))
            continue
        root = _repo_root(absolute)
        for current, dirs, files in os.walk(absolute):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("node_modules", "__pycache__"))
            for name in sorted(files):
                if name in CONFIG_NAMES:
                    path = Path(current) / name
                    display = str(given / path.relative_to(absolute))
                    found.setdefault(path, SourceFile(path, display, root))
    return list(found.values())


@dataclass(frozen=True, slots=True)
class _Parsed:
    """One file after the per-file stages: parse, schema, per-file rules."""

    doc: Document | None
    """None when the file did not parse or has no `name`."""
    problems: tuple[Problem, ...]
    schema_ok: bool
    sha256: str


def _read(source: SourceFile, limits: Limits) -> tuple[bytes | None, list[Problem]]:
    # a liminal.yml is repository content: a symlink to /dev/zero or /proc/self/environ is refused
    try:
        return read_repository_file(source.path, source.root, limits.max_bytes), []
    except FileRefusedError as exc:
        return None, [Problem(source.display, 1, 1, "$", str(exc), exc.rule)]


def _parse(data: bytes, display: str, limits: Limits) -> tuple[Node | None, list[Problem]]:
    try:
        root = parse_yaml(data, display, limits)
    except InputError as exc:
        return None, list(exc.problems)
    if root.value is None:
        return None, [Problem(display, 1, 1, "$", "file is empty; a liminal.yml needs at least `name`", "empty")]
    if not isinstance(root.value, dict):
        return None, [root.problem("the top level must be a mapping (name: ..., pipelines: ...)", "schema/type")]
    return root, []


def _per_file(data: bytes, display: str, limits: Limits, sha: str) -> _Parsed:
    root, problems = _parse(data, display, limits)
    if root is None:
        return _Parsed(None, tuple(problems), False, sha)
    schema_found = schema_problems(root, len(data))
    problems += schema_found
    name = _str(root.get("name"))
    if name is None:
        return _Parsed(None, tuple(problems), not schema_found, sha)
    doc = Document(name, root, is_super=_str(root.get("type")) == "super")
    if not schema_found:
        problems += _file_rules(doc)
    return _Parsed(doc, tuple(problems), not schema_found, sha)


def _parsed(source: SourceFile, limits: Limits, memo: Memo | None) -> _Parsed:
    data, problems = _read(source, limits)
    if data is None:
        return _Parsed(None, tuple(problems), False, "")
    sha = hashlib.sha256(data).hexdigest()
    return memoized(memo, "file", (source.display, sha, limits), lambda: _per_file(data, source.display, limits, sha))


def _file_rules(doc: Document) -> list[Problem]:
    """Rules about one file as written (before merging hides duplicates)."""
    problems: list[Problem] = []
    root = doc.root
    for section, key in (
        ("images", "image"),
        ("executors", "executor"),
        ("pipelines", "pipeline"),
        ("volumes", "volume"),
        ("secrets", "secret"),
    ):
        node = root.get(section)
        items = node.value if node is not None and isinstance(node.value, list) else []
        check_unique(problems, items, _named(key), key, "unique-name")
    services = root.get("services")
    check_unique(problems, _list(services), service_name, "service", "unique-name")
    pd = root.get("pipeline_defaults")
    if not doc.is_super and pd is not None:
        for key in ("before_tasks", "after_tasks"):
            node = pd.get(key)
            if node is not None:
                problems.append(
                    node.problem(
                        f"{key} only take effect in a `type: super` file (Liminal ignores them here); move them to "
                        "a super file",
                        "ineffective-key",
                        at_key=True,
                    )
                )
    return problems


def _named(key: str) -> Callable[[Node], str | None]:
    def name(node: Node) -> str | None:
        return _str(node.get(key))

    return name


def _str(node: Node | None) -> str | None:
    return node.value if node is not None and isinstance(node.value, str) else None


def load(
    files: Sequence[SourceFile],
    environ: Mapping[str, str],
    limits: Limits = DEFAULT_LIMITS,
    memo: Memo | None = None,
    policy: RepoPolicy = UNRESTRICTED,
) -> Spec:
    """Load, resolve and validate a set of liminal.yml files as one repository.

    `super` names are resolved across all `files` (Liminal's base is built in). `environ` is
    what `{{placeholders}}` may read after `variables`. Returns the Spec of every deployable
    system, or raises InputError carrying every problem found, sorted by file and position.
    With a `memo`, a file whose bytes are unchanged is not parsed again, and a system whose
    files, environment and directory tree are unchanged is not resolved or validated again.
    `policy` says what the repository may ask for (executors, namespaces, host paths, ...).
    """
    problems: list[Problem] = []
    documents: dict[str, Document] = {}
    digests: dict[str, str] = {}
    bad_names: set[str] = set()
    by_file = {f.display: f for f in files}
    for source in files:
        parsed = _parsed(source, limits, memo)
        problems += parsed.problems
        doc = parsed.doc
        if doc is None:
            continue
        name = doc.name
        if not parsed.schema_ok:
            bad_names.add(name)
        if name in documents:
            first = documents[name].root
            name_node = doc.root.get("name")
            assert name_node is not None
            problems.append(
                name_node.problem(
                    f"two files are named '{name}' (the other is {first.file}); `super` finds files by name",
                    "duplicate-liminal-name",
                )
            )
            continue
        documents[name] = doc
        digests[name] = parsed.sha256

    systems: list[System] = []
    base = _base_document()
    environ_key = tuple(sorted(environ.items())) if memo is not None else ()
    for doc in documents.values():
        if doc.name in bad_names or _chain_is_bad(doc, documents, bad_names):
            continue
        if doc.is_super:
            continue

        def make(doc: Document = doc) -> tuple[System | None, list[Problem]]:
            try:
                resolved, supers, variables = resolve_system(doc, documents, base, environ)
            except InputError as exc:
                return None, list(exc.problems)
            system, found = validate_system(resolved, supers, variables, by_file)
            return system, [*found, *policy_problems(resolved, policy)]

        tree = memo.tree_id(posixpath.dirname(doc.root.file)) if memo is not None else None
        key = (_chain_key(doc, documents, digests), environ_key, policy, tree) if tree is not None else None
        system, found = memoized(memo, "system", key, make)
        problems += found
        if system is not None:
            systems.append(system)
    _cross_system_rules(systems, documents, problems)
    found = _dedupe(problems)
    errors = [p for p in found if p.is_error]
    warnings = sorted((p for p in found if not p.is_error), key=Problem.sort_key)
    if errors:
        raise InputError(errors, warnings)
    return Spec(systems=tuple(systems), files=tuple(f.display for f in files), warnings=tuple(warnings))


def _chain_key(doc: Document, documents: Mapping[str, Document], digests: Mapping[str, str]) -> tuple[Any, ...]:
    """What a system's resolution reads: each file of its super chain, by name, path and content."""
    out: list[tuple[str, str, str]] = []
    current: Document | None = doc
    seen: set[str] = set()
    while current is not None and current.name not in seen:
        seen.add(current.name)
        out.append((current.name, current.root.file, digests[current.name]))
        wanted = current.super_name
        current = documents.get(wanted) if wanted else None
        if wanted and current is None:
            out.append((wanted, "", "missing"))
            break
    return tuple(out)


def _chain_is_bad(doc: Document, documents: Mapping[str, Document], bad: set[str]) -> bool:
    seen: set[str] = set()
    current: Document | None = doc
    while current is not None and current.name not in seen:
        seen.add(current.name)
        if current.name in bad:
            return True
        wanted = current.super_name
        current = documents.get(wanted) if wanted else None
    return False


def _cross_system_rules(systems: list[System], documents: Mapping[str, Document], problems: list[Problem]) -> None:
    """Pipelines (Airflow dag_ids) and services (Kubernetes names) are global to the controller."""
    seen_pipelines: dict[str, str] = {}
    seen_services: dict[str, tuple[str, str]] = {}
    for system in systems:
        root = documents[system.name].root
        for pipeline_node in _list(root.get("pipelines")):
            name = _str(pipeline_node.get("pipeline"))
            if name is None:
                continue
            if name in seen_pipelines and seen_pipelines[name] != system.name:
                problems.append(
                    pipeline_node.problem(
                        f"pipeline '{name}' is also defined by '{seen_pipelines[name]}'; pipeline names become "
                        "Airflow dag_ids and must be unique",
                        "unique-name",
                    )
                )
            seen_pipelines.setdefault(name, system.name)
        for service_node in _list(root.get("services")):
            name = service_name(service_node)
            if name is None:
                continue
            mapped = k8s_name(name)
            if mapped in seen_services and seen_services[mapped] != (name, system.name):
                other, owner = seen_services[mapped]
                problems.append(
                    service_node.problem(
                        f"service '{name}' becomes the Kubernetes name '{mapped}', as does '{other}' of '{owner}'",
                        "name-collision",
                    )
                )
            seen_services.setdefault(mapped, (name, system.name))


def _list(node: Node | None) -> list[Node]:
    return list(node.value) if node is not None and isinstance(node.value, list) else []


def _dedupe(problems: list[Problem]) -> list[Problem]:
    # a super file's problem can surface once per system inheriting it
    return list(dict.fromkeys(problems))
