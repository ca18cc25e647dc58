"""Repository content is untrusted: `.dockerignore` patterns and the files a checkout holds.

Regression tests for issue 16, findings 1 and 2: a pattern that made the old regex matcher take
exponential time, and liminal.yml / .dockerignore symlinks to devices and files outside.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from controller.errors import InputError
from controller.model import Image, ImageType
from controller.render import RenderSettings
from controller.render.dockerignore import MATCH_BUDGET, parse_dockerignore
from controller.render.images import build_image
from controller.spec import discover, load
from tests.conftest import LIMINAL
from tests.test_render import checkout, render_repo

CATASTROPHIC = "*a" * 12 + "*b"


def test_a_backtracking_pattern_costs_one_step_per_character() -> None:
    rules = parse_dockerignore(CATASTROPHIC)
    name = "a" * 60
    assert rules.ignores(name) is False
    assert MATCH_BUDGET - rules.budget == len(name)  # the old regex took over a minute here
    assert rules.ignores("a" * 30 + "b") is True


def test_matching_stops_at_its_budget() -> None:
    rules = parse_dockerignore("*x*y", budget=100)
    rules.ignores("a" * 90)
    with pytest.raises(Exception, match="more than"):
        rules.ignores("a" * 90)


def _pipeline_source(root: Path) -> Path:
    return root / "pipeline"


def test_a_context_too_costly_to_match_is_invalid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = checkout(tmp_path)
    from controller.render import images

    monkeypatch.setattr(images, "parse_dockerignore", lambda text: parse_dockerignore(text, budget=10))
    with pytest.raises(InputError) as caught:
        render_repo(root)
    problem = caught.value.problems[0]
    assert (problem.file, problem.rule) == ("pipeline/.dockerignore", "dockerignore")
    assert "more than" in problem.message


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("*.pyc\n[z-a]\n", 2, "reversed range"),
        ("# c\n\nok\nbad[\n", 4, "unclosed"),
        ("trailing\\", 1, "escape"),
    ],
)
def test_a_pattern_docker_refuses_is_located(tmp_path: Path, text: str, line: int, message: str) -> None:
    root = checkout(tmp_path)
    (_pipeline_source(root) / ".dockerignore").write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        render_repo(root)
    problem = caught.value.problems[0]
    assert (problem.file, problem.line) == ("pipeline/.dockerignore", line)
    assert message in problem.message


@pytest.mark.parametrize("target", ["/dev/zero", "/etc/passwd"])
def test_a_dockerignore_symlink_out_of_the_checkout_is_not_read(tmp_path: Path, target: str) -> None:
    root = checkout(tmp_path)
    ignore = _pipeline_source(root) / ".dockerignore"
    ignore.unlink()
    ignore.symlink_to(target)
    with pytest.raises(InputError) as caught:
        render_repo(root)  # validation refuses it; render would too (test below)
    assert "pipeline/.dockerignore" in caught.value.problems[0].render()
    spec_free = Image("x", ImageType.PYTHON, "pipeline", False, None, (), "liminal.yml")
    with pytest.raises(InputError) as direct:
        build_image(spec_free, root, RenderSettings())
    problem = direct.value.problems[0]
    assert (problem.file, problem.rule) == ("pipeline/.dockerignore", "outside")


@pytest.mark.parametrize("target", ["/dev/zero", "/etc/passwd", "/proc/self/environ"])
def test_a_liminal_yml_symlink_out_of_the_checkout_is_not_read(tmp_path: Path, target: str) -> None:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "liminal.yml").symlink_to(target)
    with pytest.raises(InputError) as caught:
        load(discover([root]), {})
    (problem,) = caught.value.problems
    assert problem.rule == "outside"
    assert "outside the repository" in problem.message
    assert "root:" not in problem.message


def test_a_symlink_inside_the_checkout_is_followed(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    os.replace(root / "liminal.yml", root / "liminal.real.yml")
    (root / "liminal.yml").symlink_to("liminal.real.yml")
    spec = load(discover([root]), {})
    assert [s.name for s in spec.systems] == ["HelloLiminal"]


def test_a_fifo_or_device_is_refused_without_blocking(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    os.mkfifo(root / "liminal.yml")  # an open() for reading would wait for a writer forever
    done = subprocess.run(
        [LIMINAL, "validate", str(root), "--format", "json"], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert '"rule": "not-regular"' in done.stdout


def test_a_file_over_the_cap_is_refused_while_reading(tmp_path: Path) -> None:
    from controller.files import FileRefusedError, read_repository_file

    (tmp_path / "big").write_bytes(b"x" * 101)
    with pytest.raises(FileRefusedError, match="over 100 bytes"):
        read_repository_file(tmp_path / "big", tmp_path, 100)
    assert read_repository_file(tmp_path / "big", tmp_path, 101) == b"x" * 101
