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
import time
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
        # path -> (the file's identity, what it was seen to hold: a desired content hash, or the
        # loader): a file with the same identity is not read again at the next drift check
        self._seen: dict[Path, tuple[tuple[int, ...], str]] = {}

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
        the repository's loader file is missing or edited.

        A file seen to be as desired is read again only when its identity changed (inode, size,
        modification and change times, as git's index tells a changed file): any write, rename
        or `touch` changes its change time, which no one can set back."""
        loaders: dict[str, bool] = {}
        out: dict[ResourceKey, str | None] = {}
        for r in resources:
            if r.key.repo not in loaders:
                loaders[r.key.repo] = self._loader_intact(r.key.repo)
            out[r.key] = self._observed(r) if loaders[r.key.repo] else None
        if len(self._seen) > _SEEN_AT_MOST:
            self._seen.clear()
        return out

    def _observed(self, r: Resource) -> str | None:
        path = self.payload_path(r.key)
        identity = _identity(path)
        if self._seen_as(path, identity, r.content_hash):
            return r.content_hash
        text = _read(path)
        if text is None:
            return None
        on_disk = _parsed(text)  # once per file: this runs for every DAG every drift round
        stamp = _stamp_of(on_disk)
        if stamp != r.content_hash:
            return stamp
        if _unstamped(on_disk) != _unstamped(_parsed(_dag_of(r).payload)):
            return "edited"
        self._remember(path, identity, r.content_hash)
        return r.content_hash

    def _loader_intact(self, repo: str) -> bool:
        path = self.loader_path(repo)
        identity = _identity(path)
        if self._seen_as(path, identity, _LOADER):
            return True
        if _read(path) != repo_loader(repo)[1]:
            return False
        self._remember(path, identity, _LOADER)
        return True

    def _seen_as(self, path: Path, identity: tuple[int, ...] | None, what: str) -> bool:
        """True when `path`, with this identity, was seen to hold `what` before."""
        return identity is not None and self._seen.get(path) == (identity, what)

    def _remember(self, path: Path, identity: tuple[int, ...] | None, what: str) -> None:
        # racy files (changed within the last 2 s, as git's index treats them) are not
        # remembered: a write in the same clock tick as the read could keep the same times
        if identity is not None and time.time_ns() - identity[-1] > 2_000_000_000:
            self._seen[path] = (identity, what)

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


_LOADER = "loader"
_SEEN_AT_MOST = 500_000
"""Files remembered as seen (about 200 bytes each); past it the memory starts again."""


def _identity(path: Path) -> tuple[int, ...] | None:
    """What changes whenever the file's content may have: device, inode, size, modification and
    change times (ns; the change time last). None when it cannot be looked at."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


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
