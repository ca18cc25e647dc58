"""RenderCache: what a long-lived controller process remembers between reconciles.

Everything is keyed by content (file bytes, git tree ids, settings), never by time, so a stale
entry can only be unused, never wrong. Entries are dropped least-recently-used first past a
fixed count, which bounds memory whatever the number of commits seen.

The loop's worker threads share one cache: every read and write of the table holds a lock, and
a value is made outside it (making one can take seconds and asks the cache for its parts). Two
threads missing the same key at once both make it; the values are equal, so either may stay.
"""

from __future__ import annotations

import copyreg
import dataclasses
import enum
import hashlib
import json
import os
import pickle
import tempfile
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import structlog

__all__ = ["DesiredStore", "RenderCache", "stable_key"]

_T = TypeVar("_T")

log = structlog.get_logger("liminal.cache")


def _read_only(wrapped: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(wrapped)


# the model's read-only mappings pickle as what they wrap
copyreg.pickle(MappingProxyType, lambda m: (_read_only, (dict(m),)))


def stable_key(value: Any) -> str:
    """A digest of `value` that is the same in every process (sets sorted, dataclasses by field,
    no per-process string hashing), for keys kept on disk."""

    def stable(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: stable(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Mapping):
            return sorted([str(k), stable(x)] for k, x in v.items())
        if isinstance(v, set | frozenset):
            return sorted((stable(x) for x in v), key=repr)
        if isinstance(v, list | tuple):
            return [stable(x) for x in v]
        if isinstance(v, enum.Enum):
            return v.value
        if v is None or isinstance(v, str | int | float | bool):
            return v
        return repr(v)

    return hashlib.sha256(json.dumps(stable(value), sort_keys=True).encode()).hexdigest()


class DesiredStore:
    """Whole desired states on disk (the controller's own folder, mode 0700), so that another
    process (a CLI `plan` or `sync`, a restarted serve) finds a commit it rendered before under
    the same settings and code without loading and rendering it again. At most `keep` states
    are kept, the least recently used removed first."""

    def __init__(self, folder: Path, keep: int = 200) -> None:
        self.folder = folder
        self.keep = keep
        self._code = _code_digest()

    def get(self, key: str) -> object | None:
        """The state under `key`, or None (absent, or unreadable: it is made again)."""
        path = self.folder / f"{self._code[:16]}-{key}.pickle"
        try:
            # our own 0700 folder, written by this code only
            value: object = pickle.loads(zlib.decompress(path.read_bytes()))
            os.utime(path)  # recently used
            return value
        except FileNotFoundError:
            return None
        except Exception as exc:
            log.warning("cache.unreadable", file=path.name, error=f"{type(exc).__name__}: {exc}")
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, value: object) -> None:
        """Store `value` under `key` (atomically: a reader sees the whole state or none)."""
        tmp: str | None = None
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".desired-")
            with os.fdopen(fd, "wb") as f:  # DAG files repeat their loader: level 1 shrinks them ~8x
                f.write(zlib.compress(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), 1))
            os.replace(tmp, self.folder / f"{self._code[:16]}-{key}.pickle")
            tmp = None
            kept = sorted(self.folder.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in kept[self.keep :]:
                old.unlink(missing_ok=True)
        except Exception as exc:  # a full disk costs a render next time, nothing else
            log.warning("cache.not_stored", error=f"{type(exc).__name__}: {exc}")
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)


def _code_digest() -> str:
    """A digest of the code that loads and renders: a state made by other code is never used."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted([*root.glob("spec/*.py"), *root.glob("render/*.py"), *root.glob("render/runtime/*.py")]):
        digest.update(path.read_bytes())
    digest.update((root / "model.py").read_bytes())
    return digest.hexdigest()


class RenderCache:
    """An LRU memo of parsed files, validated systems, image build specs, DAG payloads and whole
    desired states. One per process; shared by every repository (equal content is equal work)."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, Hashable], object] = OrderedDict()
        self._stats: dict[str, int] = {}
        self._lock = threading.Lock()

    def view(self, trees: Mapping[str, str]) -> CheckoutMemo:
        """The Memo for one checkout whose directory tree ids are `trees` ('' is the root)."""
        return CheckoutMemo(self, trees)

    def get_or_make(self, space: str, key: Hashable, make: Callable[[], _T]) -> _T:
        """The value under (`space`, `key`), made and stored on a miss."""
        full = (space, key)
        with self._lock:
            if full in self._entries:
                self._entries.move_to_end(full)
                self._count(f"{space}_reused")
                return self._entries[full]  # type: ignore[return-value]
        value = make()
        with self._lock:
            self._count(f"{space}_made")
            self._entries[full] = value
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def stats(self) -> dict[str, int]:
        """Counters `<space>_made` and `<space>_reused`, for spaces file, system, image, dags, desired."""
        with self._lock:
            return dict(self._stats)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _count(self, name: str) -> None:
        self._stats[name] = self._stats.get(name, 0) + 1


class CheckoutMemo:
    """A RenderCache seen from one checkout (implements controller.model.Memo)."""

    def __init__(self, cache: RenderCache, trees: Mapping[str, str]) -> None:
        self._cache = cache
        self._trees = trees

    def tree_id(self, path: str) -> str | None:
        """Git's id of the directory `path` in this checkout; None if unknown or holding a symlink."""
        normal = path.strip("/")
        return self._trees.get("" if normal == "." else normal.removeprefix("./"))

    def get_or_make(self, space: str, key: Hashable, make: Callable[[], _T]) -> _T:
        """See RenderCache.get_or_make."""
        return self._cache.get_or_make(space, key, make)
