"""DAG-folder target: writes rendered DAG files atomically into an Airflow dags folder.

Airflow parses every `.py` file there; a file is written beside its final name under a name
Airflow ignores, flushed, then renamed, so the DAG processor never reads half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from controller.errors import TargetError
from controller.model import Action, DagFile, Deployed, Resource, ResourceKey, ResourceOutcome, ResultCode, Snapshot
from controller.render.dags import PAYLOAD_PREFIX, dag_filename

__all__ = ["DagFolderTarget", "stamped_hash"]

_TMP_PREFIX = ".liminal-"


class DagFolderTarget:
    """Observe, write and remove DAG files in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: ResourceKey) -> Path:
        return self.folder / dag_filename(key.repo, key.name)

    def observe(self, resources: Sequence[Resource]) -> Mapping[ResourceKey, str | None]:
        """The content hash stamped in each DAG file present (None when absent or unreadable)."""
        return {r.key: stamped_hash(self._path(r.key)) for r in resources}

    def apply(self, resource: Resource, source: Snapshot) -> ResourceOutcome:
        """Write the DAG file (atomic rename)."""
        artifact = resource.artifact
        if not isinstance(artifact, DagFile):
            raise TargetError(str(resource.key), "not a DAG file")
        path = self._path(resource.key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            _sweep(self.folder)
            # the pid in the name tells a later process whether the writer is still alive
            fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", suffix=".tmp", dir=self.folder)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as stream:
                    stream.write(artifact.text)
                    stream.flush()
                    os.fsync(stream.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as exc:
            raise TargetError(str(resource.key), f"cannot write {path}: {exc.strerror}") from exc
        # the engine sets the action (create or update) from the plan
        return ResourceOutcome(resource.key, Action.UPDATE, ResultCode.APPLIED, resource.content_hash, str(path))

    def delete(self, deployed: Deployed) -> ResourceOutcome:
        """Remove the DAG file (absent already counts as removed)."""
        path = self._path(deployed.key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise TargetError(str(deployed.key), f"cannot remove {path}: {exc.strerror}") from exc
        return ResourceOutcome(deployed.key, Action.DELETE, ResultCode.DELETED, None, str(path))


def _sweep(folder: Path) -> None:
    """Remove the temporary files of writers that died (kill -9) before their rename."""
    for tmp in folder.glob(f"{_TMP_PREFIX}*.tmp"):
        pid = tmp.name[len(_TMP_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stamped_hash(path: Path) -> str | None:
    """The content hash stamped in the DAG file at `path` (None when absent or unreadable)."""
    try:
        with path.open(encoding="utf-8") as stream:
            for line in stream:
                if line.startswith(PAYLOAD_PREFIX):
                    payload = json.loads(json.loads(line[len(PAYLOAD_PREFIX) :]))
                    found = payload.get("origin", {}).get("hash")
                    return str(found) if found else None
    except (OSError, ValueError):
        return None
    return None
