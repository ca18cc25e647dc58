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


# ---- .dockerignore matcher: the automaton agrees with moby's regex translation ---------------


def _moby_regex(pattern: str) -> str:
    """moby/patternmatcher's translation, for short patterns only (a regex backtracks)."""
    import re

    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            out += ".*" if i == len(pattern) else "(?:.*/)?"
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return out


@settings(max_examples=2000, deadline=None)
@given(
    pattern=st.text(alphabet="ab/*?.", min_size=1, max_size=8),
    path=st.lists(st.text(alphabet="ab.", min_size=1, max_size=4), min_size=1, max_size=4).map("/".join),
)
def test_dockerignore_matcher_agrees_with_moby(pattern: str, path: str) -> None:
    import posixpath
    import re

    from controller.render.dockerignore import parse_dockerignore

    cleaned = posixpath.normpath(pattern).lstrip("/")
    if cleaned in ("", "."):
        return
    regex = re.compile(_moby_regex(cleaned))
    parts = path.split("/")
    expected = any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1))
    assert parse_dockerignore(pattern).ignores(path) is expected


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200), path=st.text(max_size=100))
def test_dockerignore_never_crashes(text: str, path: str) -> None:
    from controller.render.dockerignore import IgnoreSyntaxError, parse_dockerignore

    try:
        rules = parse_dockerignore(text)
    except IgnoreSyntaxError as exc:
        assert exc.line >= 1
        return
    rules.ignores(path)
    assert rules.budget >= rules.limit - len(rules.patterns) * max(len(path), 1)


# ---- webhook parsers: any body a sender signs is an event or a 400, never a crash ---------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=10,
)
_FIELDS = st.sampled_from(
    [
        "ref",
        "after",
        "deleted",
        "repository",
        "action",
        "number",
        "pull_request",
        "head",
        "sha",
        "clone_url",
        "full_name",
        "project",
        "checkout_sha",
        "object_attributes",
        "iid",
        "last_commit",
        "id",
        "git_http_url",
    ]
)
_PAYLOAD = st.dictionaries(_FIELDS, _JSON | st.dictionaries(_FIELDS, _JSON, max_size=6), max_size=8)


@settings(max_examples=400, deadline=None)
@given(
    payload=_PAYLOAD,
    event=st.sampled_from(["push", "pull_request", "ping", "Push Hook", "Merge Request Hook", "other"]),
    provider=st.sampled_from(["github", "gitlab"]),
)
def test_webhook_parsers_answer_any_payload_with_an_event_or_a_400(
    payload: dict[str, Any], event: str, provider: str
) -> None:
    import json

    from webhooks import github, gitlab
    from webhooks.events import WebhookError, WebhookEvent

    parse = github.parse if provider == "github" else gitlab.parse
    try:
        found = parse("d-1", event, json.dumps(payload).encode())
    except WebhookError as exc:
        assert exc.status == 400 and str(exc)
        return
    assert isinstance(found, WebhookEvent)
    for text in (found.ref, found.commit, found.project, *found.urls):
        assert text is None or (isinstance(text, str) and len(text) <= 1024 and text.isprintable())
    assert found.pull_request is None or isinstance(found.pull_request, int)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300))
def test_webhook_parsers_answer_any_bytes_with_an_event_or_a_400(body: bytes) -> None:
    from webhooks import github, gitlab
    from webhooks.events import WebhookError

    for parse in (github.parse, gitlab.parse):
        try:
            parse("d-1", "push", body)
        except WebhookError as exc:
            assert exc.status == 400
