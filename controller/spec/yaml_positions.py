"""Safe YAML parsing that keeps the file, line, column and path of every node.

Built on libyaml's event stream (no recursion, so deep nesting cannot overflow a stack) with
our own composer, which enforces the limits that make untrusted input safe: file size, nesting
depth, total expanded size (alias bombs), duplicate keys, and the safe tag set only.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from controller.errors import InputError
from controller.model import Problem

__all__ = ["DEFAULT_LIMITS", "Limits", "Node", "json_path", "parse_yaml", "to_plain"]

PathPart = str | int


class Node(NamedTuple):
    """A YAML value with where it came from.

    `value` is a `dict[str, Node]`, a `list[Node]` or a scalar. `line`/`col` (1-based) locate the
    value; `key_line`/`key_col` locate the mapping key that names it (equal to the value's
    position for list items and the root). `path` is the value's path inside its file.
    """

    value: Any
    file: str
    line: int
    col: int
    path: tuple[PathPart, ...]
    key_line: int
    key_col: int

    def problem(self, message: str, rule: str, *, at_key: bool = False) -> Problem:
        """A Problem located at this node (or at the key naming it)."""
        line, col = (self.key_line, self.key_col) if at_key else (self.line, self.col)
        return Problem(self.file, line, col, json_path(self.path), message, rule)

    def get(self, key: str) -> Node | None:
        """The child node under `key` when this node is a mapping."""
        if isinstance(self.value, dict):
            child: Node | None = self.value.get(key)
            return child
        return None

    def with_value(self, value: Any) -> Node:
        """The same location holding another value."""
        return self._replace(value=value)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that keep hostile input from exhausting the controller."""

    max_bytes: int = 4 * 1024 * 1024
    """Largest accepted file (bytes). Real liminal.yml files are a few KiB; 4 MiB leaves room for
    generated ones with thousands of tasks."""
    max_depth: int = 64
    """Deepest accepted nesting. Liminal files nest about 6 levels."""
    max_nodes: int = 1_000_000
    """Most values a document may expand to, counting every alias use (stops billion laughs)."""


DEFAULT_LIMITS = Limits()

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_RESOLVER = Resolver()
_CONSTRUCTOR = SafeConstructor()
_SCALAR_CONSTRUCTORS = {
    tag: fn
    for tag, fn in SafeConstructor.yaml_constructors.items()
    if tag is not None
    and tag not in (_MAP, _SEQ, "tag:yaml.org,2002:omap", "tag:yaml.org,2002:pairs")
    and tag != "tag:yaml.org,2002:set"
}


_MERGE_KEY = Node("<<", "", 0, 0, (), 0, 0)
"""Marks a pending YAML merge key (`<<:`) in a mapping frame."""


def json_path(path: tuple[PathPart, ...]) -> str:
    """Render a path as JSONPath: `$.pipelines[0].tasks[1]['odd key']`."""
    out = ["$"]
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif part.isidentifier():
            out.append(f".{part}")
        else:
            escaped = part.replace("\\", "\\\\").replace("'", "\\'")
            out.append(f"['{escaped}']")
    return "".join(out)


def to_plain(node: Node) -> Any:
    """Strip positions: the node as plain dicts, lists and scalars."""
    value = node.value
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    return value


def _decode(data: bytes, file: str) -> str:
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        col = len(before) - (before.rfind(b"\n") + 1) + 1
        raise InputError(
            [
                Problem(
                    file,
                    line,
                    col,
                    "$",
                    f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                    "encoding",
                )
            ]
        ) from None


class _Frame:
    """An open mapping or sequence while composing."""

    __slots__ = ("anchor", "explicit", "is_map", "items", "key", "merges", "node_start", "path", "size")

    def __init__(self, is_map: bool, path: tuple[PathPart, ...], anchor: str | None, start: tuple[int, int, int, int]):
        self.is_map = is_map
        self.path = path
        self.anchor = anchor
        self.node_start = start  # line, col, key_line, key_col
        self.items: Any = {} if is_map else []
        self.key: Node | None = None
        self.merges: list[Node] = []
        self.explicit: set[str] = set()
        self.size = 1


def parse_yaml(data: bytes, file: str, limits: Limits = DEFAULT_LIMITS) -> Node:
    """Parse one YAML document from `data` into a Node tree.

    Pure: reads only `data`. Raises InputError with a located Problem for anything that is not a
    single, safe, well-formed document within `limits`. An empty document yields a Node whose
    value is None.
    """
    if len(data) > limits.max_bytes:
        raise InputError(
            [
                Problem(
                    file,
                    1,
                    1,
                    "$",
                    f"file is {len(data)} bytes; the limit is {limits.max_bytes}",
                    "too-large",
                )
            ]
        )
    text = _decode(data, file)
    try:
        return _compose(yaml.parse(text, Loader=yaml.CSafeLoader), file, limits)
    except yaml.MarkedYAMLError as exc:
        raise InputError([_syntax_problem(exc, file, text)]) from None
    except yaml.YAMLError as exc:  # unmarked libyaml errors (rare)
        raise InputError([Problem(file, 1, 1, "$", f"invalid YAML: {exc}", "yaml-syntax")]) from None


def _syntax_problem(exc: yaml.MarkedYAMLError, file: str, text: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = exc.problem or "syntax error"
    context = f" {exc.context}" if exc.context else ""
    message = f"invalid YAML: {problem}{context}"
    lines = text.splitlines()
    if 0 < line <= len(lines) and lines[line - 1][col - 1 : col] == "\t":
        message += " (a tab: YAML does not allow tabs for indentation; use spaces)"
    return Problem(file, line, col, "$", message, "yaml-syntax")


def _fail(file: str, mark: Any, path: tuple[PathPart, ...], message: str, rule: str) -> InputError:
    return InputError([Problem(file, mark.line + 1, mark.column + 1, json_path(path), message, rule)])


def _compose(events: Iterator[Any], file: str, limits: Limits) -> Node:
    stack: list[_Frame] = []
    anchors: dict[str, tuple[Node, int]] = {}
    total = 0
    root: Node | None = None
    documents = 0

    def child_path(ev_mark: Any) -> tuple[tuple[PathPart, ...], int, int]:
        """Path and key position for the value about to start."""
        if not stack:
            return (), ev_mark.line + 1, ev_mark.column + 1
        top = stack[-1]
        if top.is_map:
            assert top.key is not None
            return (*top.path, top.key.value), top.key.line, top.key.col
        return (*top.path, len(top.items)), ev_mark.line + 1, ev_mark.column + 1

    def attach(node: Node, mark: Any, size: int, added: int, path: tuple[PathPart, ...] | None = None) -> None:
        """Add a finished value to its parent; `size` is its expanded size, `added` the new values."""
        nonlocal root, total
        total += added
        if total > limits.max_nodes:
            raise _fail(
                file,
                mark,
                node.path if path is None else path,
                f"document expands to more than {limits.max_nodes} values (alias bomb?)",
                "alias-bomb",
            )
        if not stack:
            root = node
            return
        top = stack[-1]
        top.size += size
        if not top.is_map:
            top.items.append(node)
            return
        key = top.key
        assert key is not None
        top.key = None
        if key is _MERGE_KEY:
            sources = node.value if isinstance(node.value, list) else [node]
            for src in sources:
                if not isinstance(src.value, dict):
                    raise _fail(
                        file,
                        mark,
                        node.path,
                        "a merge key (<<) needs a mapping or a list of mappings",
                        "yaml-merge",
                    )
                top.merges.append(src)
            return
        top.items[key.value] = node

    for event in events:
        kind = type(event)
        mark = event.start_mark
        if kind is yaml.ScalarEvent or kind is yaml.AliasEvent:
            if stack and stack[-1].is_map and stack[-1].key is None:
                if kind is yaml.AliasEvent:
                    raise _fail(file, mark, stack[-1].path, "an alias cannot be used as a mapping key", "yaml-key")
                top = stack[-1]
                key_text = event.value
                is_merge = event.tag == _MERGE or (event.tag is None and event.implicit[0] and key_text == "<<")
                if is_merge:
                    top.key = _MERGE_KEY
                    continue
                if key_text in top.explicit:
                    first = top.items[key_text]
                    raise _fail(
                        file,
                        mark,
                        (*top.path, key_text),
                        f"duplicate key '{key_text}' (first defined at line {first.key_line}, column {first.key_col})",
                        "duplicate-key",
                    )
                top.explicit.add(key_text)
                top.key = Node(key_text, file, mark.line + 1, mark.column + 1, (*top.path, key_text), 0, 0)
                continue
            path, key_line, key_col = child_path(mark)
            if kind is yaml.AliasEvent:
                if event.anchor not in anchors:
                    raise _fail(file, mark, path, f"unknown alias '*{event.anchor}'", "yaml-alias")
                target, size = anchors[event.anchor]
                attach(target, mark, size, size, path)
                continue
            node = Node(_scalar(event, file, path), file, mark.line + 1, mark.column + 1, path, key_line, key_col)
            if event.anchor:
                anchors[event.anchor] = (node, 1)
            attach(node, mark, 1, 1)
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            is_map = kind is yaml.MappingStartEvent
            path, key_line, key_col = child_path(mark)
            if stack and stack[-1].is_map and stack[-1].key is None:
                raise _fail(file, mark, stack[-1].path, "mapping keys must be plain strings", "yaml-key")
            if len(stack) >= limits.max_depth:
                raise _fail(file, mark, path, f"nesting deeper than {limits.max_depth} levels", "too-deep")
            tag = event.tag
            if tag not in (None, "!", _MAP if is_map else _SEQ):
                raise _fail(file, mark, path, f"unsupported YAML tag '{tag}'", "yaml-tag")
            stack.append(_Frame(is_map, path, event.anchor, (mark.line + 1, mark.column + 1, key_line, key_col)))
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            frame = stack.pop()
            items = frame.items
            if frame.merges:
                merged: dict[str, Node] = {}
                for src in frame.merges:
                    for k, v in src.value.items():
                        merged.setdefault(k, v)
                merged.update(items)
                items = merged
            line, col, key_line, key_col = frame.node_start
            node = Node(items, file, line, col, frame.path, key_line, key_col)
            if frame.anchor:
                anchors[frame.anchor] = (node, frame.size)
            # its children were counted as they arrived: only the collection itself is new
            attach(node, mark, frame.size, 1)
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise _fail(file, mark, (), "expected a single YAML document, found another '---'", "yaml-multi")
    if root is None:
        return Node(None, file, 1, 1, (), 1, 1)
    return root


def _scalar(event: Any, file: str, path: tuple[PathPart, ...]) -> Any:
    tag = event.tag
    if tag is None or tag == "!":
        tag = _RESOLVER.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
    if tag == _STR:
        return event.value
    ctor = _SCALAR_CONSTRUCTORS.get(tag)
    if ctor is None:
        raise _fail(file, event.start_mark, path, f"unsupported YAML tag '{tag}'", "yaml-tag")
    node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
    try:
        return ctor(_CONSTRUCTOR, node)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        raise _fail(
            file, event.start_mark, path, f"invalid {tag.rsplit(':', 1)[-1]} value: {exc}", "yaml-value"
        ) from None
