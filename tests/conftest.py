"""Shared fixtures: the Liminal compatibility corpus rebuilt in its original layout."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from controller.model import Spec
from controller.spec import discover, load

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "liminal-examples"

# Source directories the original Apache Liminal repository holds beside these files; the
# corpus copies only the liminal.yml files, so the tests recreate the directories.
ORIGINAL_SOURCE_DIRS = (
    "examples/liminal-getting-started/helloworld",
    "examples/liminal-getting-started/myserver",
    "tests/runners/airflow/liminal/write_inputs",
    "tests/runners/airflow/liminal/write_outputs",
    "tests/runners/airflow/liminal/myserver",
    "tests/runners/apps/test_app/helloworld",
    "tests/runners/apps/test_app/myserver",
    "tests/runners/apps/test_spark_app/wordcount",
)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus files at their original paths (`a__b__liminal.yml` -> `a/b/liminal.yml`), in a git repo."""
    assert CORPUS.is_dir(), f"the compatibility corpus is missing: {CORPUS} (shared/ must sit beside the checkout)"
    root = tmp_path_factory.mktemp("liminal-repo")
    (root / ".git").mkdir()
    for f in sorted(CORPUS.iterdir()):
        if f.suffix not in (".yml", ".yaml"):
            continue
        target = root / f.name.replace("__", "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    for d in ORIGINAL_SOURCE_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    return root


def load_paths(paths: Sequence[Path], environ: dict[str, str] | None = None) -> Spec:
    """Load the liminal.yml files under `paths` as the CLI does."""
    return load(discover(list(paths)), environ or {})


@pytest.fixture
def write(tmp_path: Path) -> object:
    """Write files into a fresh repository and return its root."""
    (tmp_path / ".git").mkdir()

    def _write(files: dict[str, str | bytes]) -> Path:
        for name, content in files.items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        return tmp_path

    return _write
