"""DAG-folder target: delivers DAGs into an Airflow dags folder, one loader file per repository.

Layout: `liminal__<repo>_<h>.py` (the fixed loader, the same for every commit) and beside it the
folder `liminal__<repo>_<h>/` with one `<dag_id>.json` payload per pipeline. Every file is written
beside its final name under a name Airflow ignores, flushed, then renamed, so the DAG processor
never reads half a file. The Airflow target adds the REST API on top of this one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from controller.errors import TargetError
from controller.model import DagFile, Deployed, Resource, ResourceKey, ResultCode, Snapshot, TargetResult
from controller.names import is_dag_id
from controller.render.dags import repo_loader, repo_payload_folder
from controller.targets import each

__all__ = ["DagFolderTarget", "stamped_hash", "write_atomic"]

_TMP_PREFIX = ".liminal-"


class DagFolderTarget:
    """Observe, write and remove DAG payloads (and each repository's loader file) in `folder`."""

    watches_drift = True  # files can be edited or removed behind our back

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def payload_path(self, key: ResourceKey) -> Path:
        """Where the pipeline's JSON payload lives (TargetError for a name validation would refuse)."""
        if not is_dag_id(key.name):
            raise TargetError(str(key), f"{key.name!r} is not a pipeline name Airflow can load")
        return self.folder / repo_payload_folder(key.repo) / f"{key.name}.json"

    def loader_path(self, repo: str) -> Path:
        """The repository's loader file (the one Airflow parses)."""
        return self.folder / repo_loader(repo)[0]

    def observe(self, resources: Sequence[Resource]) -> Mapping[ResourceKey, str | None]:
        """The desired hash where the payload on disk is the desired one (its origin stamp, which
        names the commit it was delivered from, aside); otherwise the hash stamped in it, `edited`
        when that stamp is the desired one but the content differs, or None when it is absent or
        the repository's loader file is missing or edited."""
        loaders: dict[str, bool] = {}
        out: dict[ResourceKey, str | None] = {}
        for r in resources:
            if r.key.repo not in loaders:
                loaders[r.key.repo] = _read(self.loader_path(r.key.repo)) == repo_loader(r.key.repo)[1]
            text = _read(self.payload_path(r.key)) if loaders[r.key.repo] else None
            if text is None:
                out[r.key] = None
                continue
            on_disk = _parsed(text)  # once per file: this runs for every DAG every drift round
            stamp = _stamp_of(on_disk)
            if stamp == r.content_hash:
                same = _unstamped(on_disk) == _unstamped(_parsed(_dag_of(r).payload))
                out[r.key] = r.content_hash if same else "edited"
            else:
                out[r.key] = stamp
        return out

    def apply(self, resources: Sequence[Resource], source: Snapshot) -> Iterator[TargetResult]:
        """Write each payload (and the loader file when missing or changed)."""
        return each(resources, self._apply_one)

    def _apply_one(self, resource: Resource) -> TargetResult:
        self.write(resource.key, _dag_of(resource).payload)
        # the engine sets the action (create or update) from the plan
        path = str(self.payload_path(resource.key))
        return TargetResult(resource.key, ResultCode.APPLIED, path)

    def delete(self, deployed: Deployed) -> TargetResult:
        """Remove the payload (absent already counts as removed); the loader file goes with the last one."""
        self.write(deployed.key, None)
        path = str(self.payload_path(deployed.key))
        return TargetResult(deployed.key, ResultCode.DELETED, path)

    # ---- used by the Airflow target ---------------------------------------------------------

    def read(self, key: ResourceKey) -> str | None:
        """The payload text on disk now (None when absent)."""
        return _read(self.payload_path(key))

    def write(self, key: ResourceKey, payload: str | None) -> None:
        """Put `payload` in place (None removes it, and the loader file when no payload is left)."""
        path = self.payload_path(key)
        loader_path = self.loader_path(key.repo)
        try:
            if payload is None:
                path.unlink(missing_ok=True)
                if path.parent.is_dir() and not any(p.suffix == ".json" for p in path.parent.iterdir()):
                    loader_path.unlink(missing_ok=True)
                    _sweep(path.parent)
                    path.parent.rmdir()
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, payload + "\n")
            loader_text = repo_loader(key.repo)[1]
            if _read(loader_path) != loader_text:
                write_atomic(loader_path, loader_text)
        except OSError as exc:
            raise TargetError(str(key), f"cannot write {exc.filename or path}: {exc.strerror}") from exc


def _dag_of(resource: Resource) -> DagFile:
    if not isinstance(resource.artifact, DagFile):
        raise TargetError(str(resource.key), "not a DAG")
    return resource.artifact


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` by a flushed temporary file and a rename (readers see old or new, never half)."""
    _sweep(path.parent)
    # the pid in the name tells a later process whether the writer is still alive
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


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
    """The content hash stamped in the payload at `path` (None when absent or unreadable)."""
    text = _read(path)
    return None if text is None else _stamp_of(_parsed(text))


def _parsed(text: str) -> dict[str, object] | None:
    """A payload file's JSON object, or None when it is not one."""
    try:
        payload = json.loads(text)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _unstamped(payload: dict[str, object] | None) -> object:
    """The payload without what says where it came from (origin, tags): the content."""
    return None if payload is None else {k: v for k, v in payload.items() if k not in ("origin", "tags")}


def _stamp_of(payload: dict[str, object] | None) -> str | None:
    origin = payload.get("origin") if payload is not None else None
    found = origin.get("hash") if isinstance(origin, dict) else None
    return str(found) if found else None
