"""Resolve `super` chains, defaults and `{{variables}}` the way Apache Liminal does, keeping positions.

Pure functions over Node trees. The merge rules follow Liminal's `ConfigUtil` and
`default_configs` (see docs/liminal-compatibility.md for the few places we differ and why):

- a file without `super` inherits Liminal's base; `type: super` files chain upward;
- `executors` and `images` are merged by name across the chain;
- super files merge recursively (the lower file wins); `before_tasks` of outer supers run first,
  their `after_tasks` run last;
- a pipeline gets `pipeline_defaults` (the pipeline wins), then its tasks are
  before_tasks + tasks + after_tasks, each merged with `task_defaults[<task type>]` (the task wins);
- services get `service_defaults`; top-level sections of the file replace the super's;
- `{{name}}` is filled from the merged `variables`, then from the environment; Airflow's run-time
  names (`{{ds}}`, `{{dag_run.conf...}}`, ...) are never taken from the environment, and anything
  unknown is left for Airflow to render at run time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.errors import InputError
from controller.names import RUN_TIME_VALUES
from controller.spec.yaml_positions import Node, to_plain

__all__ = [
    "AIRFLOW_RUNTIME_NAMES",
    "RUNTIME_FIELDS",
    "Document",
    "merge",
    "placeholders",
    "resolve_system",
    "task_variables",
]

PLACEHOLDER = re.compile(r"{{\s*([a-zA-Z0-9._-]+)\s*}}")

AIRFLOW_RUNTIME_NAMES = RUN_TIME_VALUES | frozenset(
    {
        "prev_ds",
        "prev_ds_nodash",
        "next_ds",
        "next_ds_nodash",
        "dag",
        "task",
        "task_instance",
        "ti",
        "var",
        "conn",
        "macros",
        "conf",
        "test_mode",
        "inlets",
        "outlets",
        "triggering_dataset_events",
        "triggering_asset_events",
        "expanded_ti_count",
        "map_index_template",
        "outlet_events",
        "inlet_events",
    }
)
"""Names Airflow puts in a task's template context (those a liminal.yml may name, and the objects and
accessors it may not); `{{name}}` or `{{name.x}}` is never taken from the environment."""

RUNTIME_FIELDS = frozenset(
    {"cmd", "env_vars", "application_source", "application_arguments", "conf", "master", "class"}
)
"""Task keys whose `{{name}}` placeholders are filled when the task runs, as Liminal does: from the DAG
run's conf first, then the task's variables, then Airflow's run-time values. At load time only the
operator's listed environment variables are filled in them (names no variable defines)."""


def placeholders(text: str) -> list[str]:
    """What stands inside each `{{ ... }}` of `text` (stripped), in order. Linear in the text."""
    found: list[str] = []
    at = 0
    while (start := text.find("{{", at)) >= 0:
        end = text.find("}}", start + 2)
        if end < 0:
            break
        found.append(text[start + 2 : end].strip())
        at = end + 2
    return found


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed liminal.yml: its `name`, whether it is `type: super`, and its root node."""

    name: str
    root: Node
    is_super: bool

    @property
    def super_name(self) -> str | None:
        node = self.root.get("super")
        return node.value if node is not None and isinstance(node.value, str) and node.value else None


def _map(parent: Node, key: str) -> Node:
    """The mapping under `key`, or an empty mapping located at the parent."""
    node = parent.get(key)
    if node is not None and isinstance(node.value, dict):
        return node
    return parent.with_value({})


def _list(parent: Node, key: str) -> list[Node]:
    node = parent.get(key)
    return list(node.value) if node is not None and isinstance(node.value, list) else []


def merge(first: Node, second: Node) -> Node:
    """`first` enriched by `second`, recursively through mappings; `first` wins on conflicts."""
    if not isinstance(first.value, dict) or not isinstance(second.value, dict):
        return first
    out = dict(first.value)
    for key, value in second.value.items():
        mine = out.get(key)
        if mine is None:
            out[key] = value
        elif isinstance(mine.value, dict) and isinstance(value.value, dict):
            out[key] = merge(mine, value)
    return first.with_value(out)


def _merge_named(key: str, sub: Node, supr: Node, section: str) -> Node | None:
    """Merge the lists `section` of sub and super by item name; the lower file's item wins."""
    sub_items, super_items = _list(sub, section), _list(supr, section)
    if not sub_items and not super_items:
        return sub.get(section)
    merged: dict[Any, Node] = {}
    for item in super_items:
        merged[_item_name(item, key)] = item
    for item in sub_items:
        name = _item_name(item, key)
        merged[name] = merge(item, merged[name]) if name in merged else item
    holder = sub.get(section) or supr.get(section) or sub
    return holder.with_value(list(merged.values()))


def _item_name(item: Node, key: str) -> Any:
    name = item.get(key)
    return name.value if name is not None else id(item)


class _Resolver:
    def __init__(self, documents: Mapping[str, Document], base: Document) -> None:
        self.documents = documents
        self.base = base

    def superliminal(self, doc: Document, chain: tuple[str, ...]) -> Document | None:
        if doc.root is self.base.root:
            return None
        wanted = doc.super_name
        if wanted is None:
            # a repository's own `type: super` file named `base` (as Liminal's source tree holds)
            # replaces the built-in base: it is the root of every chain, so it has no super itself
            own = self.documents.get("base")
            if own is None or not own.is_super:
                return self.base
            return None if doc is own else own
        found = self.documents.get(wanted)
        where = doc.root.get("super") or doc.root
        if found is None:
            known = sorted(d.name for d in self.documents.values() if d.is_super)
            hint = f"; super files given: {', '.join(known)}" if known else ""
            raise InputError(
                [where.problem(f"super '{wanted}' not found among the files given{hint}", "super-missing")]
            )
        if not found.is_super:
            raise InputError([where.problem(f"super '{wanted}' is not a `type: super` file", "super-not-super")])
        if wanted in chain:
            cycle = " -> ".join((*chain, wanted))
            raise InputError([where.problem(f"super chain loops: {cycle}", "super-cycle")])
        return found

    def merged(self, doc: Document, chain: tuple[str, ...]) -> tuple[Node, tuple[str, ...]]:
        """The document with its whole super chain applied, and the chain's names."""
        supr = self.superliminal(doc, chain)
        if supr is None:
            return doc.root, ()
        super_root, super_chain = self.merged(supr, (*chain, doc.name))
        sub = dict(doc.root.value)
        for key, section in (("executor", "executors"), ("image", "images")):
            merged_section = _merge_named(key, doc.root, super_root, section)
            if merged_section is not None:
                sub[section] = merged_section
        sub_node = doc.root.with_value(sub)
        names = (supr.name, *super_chain)
        if doc.is_super:
            return _merge_supers(sub_node, super_root), names
        return _merge_sub_and_super(sub_node, super_root), names


def _merge_supers(lower: Node, upper: Node) -> Node:
    lower_pd, upper_pd = _map(lower, "pipeline_defaults"), _map(upper, "pipeline_defaults")
    before = _list(upper_pd, "before_tasks") + _list(lower_pd, "before_tasks")
    after = _list(lower_pd, "after_tasks") + _list(upper_pd, "after_tasks")
    pd = dict(lower_pd.value)
    pd["before_tasks"] = (lower_pd.get("before_tasks") or upper_pd.get("before_tasks") or lower_pd).with_value(before)
    pd["after_tasks"] = (lower_pd.get("after_tasks") or upper_pd.get("after_tasks") or lower_pd).with_value(after)
    upper_rest = {k: v for k, v in upper_pd.value.items() if k not in ("before_tasks", "after_tasks")}
    lower_value = dict(lower.value)
    lower_value["pipeline_defaults"] = lower_pd.with_value(pd)
    upper_value = dict(upper.value)
    upper_value["pipeline_defaults"] = upper_pd.with_value(upper_rest)
    return merge(lower.with_value(lower_value), upper.with_value(upper_value))


def _merge_sub_and_super(sub: Node, supr: Node) -> Node:
    super_pd = _map(supr, "pipeline_defaults")
    before = _list(super_pd, "before_tasks")
    after = _list(super_pd, "after_tasks")
    super_pd = super_pd.with_value(
        {k: v for k, v in super_pd.value.items() if k not in ("before_tasks", "after_tasks")}
    )
    pipeline_defaults = merge(_map(sub, "pipeline_defaults"), super_pd)
    task_defaults = merge(_map(sub, "task_defaults"), _map(supr, "task_defaults"))
    out = dict(sub.value)
    pipelines = []
    for pipeline in _list(sub, "pipelines"):
        merged = merge(pipeline, pipeline_defaults)
        tasks = before + _list(merged, "tasks") + after
        resolved_tasks = [_apply_task_defaults(task, task_defaults) for task in tasks]
        value = dict(merged.value)
        value["tasks"] = (merged.get("tasks") or merged).with_value(resolved_tasks)
        pipelines.append(merged.with_value(value))
    out["pipelines"] = (sub.get("pipelines") or sub).with_value(pipelines)
    service_defaults = merge(_map(sub, "service_defaults"), _map(supr, "service_defaults"))
    out["services"] = (sub.get("services") or sub).with_value(
        [merge(service, service_defaults) for service in _list(sub, "services")]
    )
    combined = dict(supr.value)
    combined.update(out)
    combined["variables"] = merge(_map(sub, "variables"), _map(supr, "variables"))
    return sub.with_value(combined)


def _apply_task_defaults(task: Node, task_defaults: Node) -> Node:
    kind = task.get("type")
    if kind is None or not isinstance(kind.value, str):
        return task
    defaults = task_defaults.get(kind.value)
    return merge(task, defaults) if defaults is not None and isinstance(defaults.value, dict) else task


# ---- variables -------------------------------------------------------------------------------


def _render_variables(variables: Node, environ: Mapping[str, str]) -> dict[str, Any]:
    """Fill placeholders inside the variables themselves; a cycle is an error."""
    raw: dict[str, Node] = dict(variables.value)
    done: dict[str, Any] = {}
    visiting: list[str] = []

    def value_of(name: str) -> Any:
        if name in done:
            return done[name]
        node = raw[name]
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise InputError([node.problem(f"variables refer to each other in a loop: {cycle}", "variable-cycle")])
        visiting.append(name)
        result = _plain_substituted(node, lookup)
        visiting.pop()
        done[name] = result
        return result

    def lookup(name: str) -> str | None:
        if name in raw:
            return _as_text(value_of(name))
        return _from_environ(name, environ)

    for name in raw:
        value_of(name)
    return done


def _as_text(value: Any) -> str:
    # Liminal inserts str(value): 1 -> "1", True -> "True"
    return value if isinstance(value, str) else str(value)


def _from_environ(name: str, environ: Mapping[str, str]) -> str | None:
    if name.split(".", 1)[0] in AIRFLOW_RUNTIME_NAMES:
        return None
    return environ.get(name)


MAX_FILLED = 64 * 1024
"""Characters a value may grow to once its placeholders are filled: variables that refer to each
other twice per level would otherwise double at every level (a "billion laughs")."""


class _TooLongError(Exception):
    pass


def _fill(text: str, lookup: Any) -> str:
    if "{{" not in text:
        return text
    grown = len(text)

    def replace(match: re.Match[str]) -> str:
        nonlocal grown
        found = lookup(match.group(1))
        if found is None:
            return match.group(0)
        filled = str(found)
        grown += len(filled) - len(match.group(0))
        if grown > MAX_FILLED:
            raise _TooLongError
        return filled

    return PLACEHOLDER.sub(replace, text)


def _filled(node: Node, text: str, lookup: Any) -> str:
    try:
        return _fill(text, lookup)
    except _TooLongError:
        raise InputError(
            [node.problem(f"with its placeholders filled this value is over {MAX_FILLED} characters", "variable-size")]
        ) from None


def _plain_substituted(node: Node, lookup: Any) -> Any:
    value = node.value
    if isinstance(value, str):
        return _filled(node, value, lookup)
    if isinstance(value, dict):
        return {k: _plain_substituted(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_substituted(v, lookup) for v in value]
    return value


def _substitute(node: Node, lookup: Any) -> Node:
    value = node.value
    if isinstance(value, str):
        filled = _filled(node, value, lookup)
        return node if filled is value else node.with_value(filled)
    if isinstance(value, dict):
        return node.with_value({k: _substitute(v, lookup) for k, v in value.items()})
    if isinstance(value, list):
        return node.with_value([_substitute(v, lookup) for v in value])
    return node


def resolve_system(
    doc: Document, documents: Mapping[str, Document], base: Document, environ: Mapping[str, str]
) -> tuple[Node, tuple[str, ...], dict[str, Any]]:
    """Resolve one deployable (`type: sub`) document.

    Returns the resolved root node (positions point into the files each value came from), the
    names of its super chain, and its rendered variables. Raises InputError for a missing or
    looping super or looping variables.
    """
    merged, chain = _Resolver(documents, base).merged(doc, (doc.name,))
    variables_node = _map(merged, "variables")
    variables = _render_variables(variables_node, environ)

    def lookup(name: str) -> str | None:
        if name in variables:
            return _as_text(variables[name])
        return _from_environ(name, environ)

    def environ_only(own: frozenset[str]) -> Any:
        def fill(name: str) -> str | None:
            return None if name in variables or name in own else _from_environ(name, environ)

        return fill

    body: dict[str, Any] = {}
    for key, value in merged.value.items():
        if key == "variables":
            body[key] = value
        elif key == "pipelines" and isinstance(value.value, list):
            body[key] = value.with_value(
                [_substitute_pipeline(p, lookup, variables, environ_only) for p in value.value]
            )
        else:
            body[key] = _substitute(value, lookup)
    return merged.with_value(body), chain, variables


def _substitute_pipeline(pipeline: Node, lookup: Any, variables: Mapping[str, Any], environ_only: Any) -> Node:
    """A pipeline with its placeholders filled, except in its tasks' run-time fields (RUNTIME_FIELDS)."""
    if not isinstance(pipeline.value, dict):
        return _substitute(pipeline, lookup)
    out: dict[str, Node] = {}
    for key, value in pipeline.value.items():
        if key != "tasks" or not isinstance(value.value, list):
            out[key] = _substitute(value, lookup)
            continue
        tasks = []
        for task in value.value:
            if not isinstance(task.value, dict):
                tasks.append(_substitute(task, lookup))
                continue
            own = environ_only(frozenset(task_variables(task, variables)))
            tasks.append(
                task.with_value(
                    {k: _substitute(v, own if k in RUNTIME_FIELDS else lookup) for k, v in task.value.items()}
                )
            )
        out[key] = value.with_value(tasks)
    return pipeline.with_value(out)


def task_variables(task: Node, variables: Mapping[str, Any]) -> Mapping[str, Any]:
    """A task's own `variables`: its map, or the root map it names (empty when neither)."""
    node = task.get("variables")
    if node is None:
        return {}
    if isinstance(node.value, dict):
        return {k: to_plain(v) for k, v in node.value.items()}
    named = variables.get(node.value) if isinstance(node.value, str) else None
    return named if isinstance(named, dict) else {}
