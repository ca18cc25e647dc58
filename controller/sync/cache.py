"""RenderCache: what a long-lived controller process remembers between reconciles.

Everything is keyed by content (file bytes, git tree ids, settings), never by time, so a stale
entry can only be unused, never wrong. Entries are dropped least-recently-used first past a
fixed count, which bounds memory whatever the number of commits seen.

The loop's worker threads share one cache: every read and write of the table holds a lock, and
a value is made outside it (making one can take seconds and asks the cache for its parts). Two
threads missing the same key at once both make it; the values are equal, so either may stay.
"""

from __future__ import annotations

import contextlib
import copyreg
import dataclasses
import enum
import gc
import hashlib
import io
import json
import os
import pickle
import tempfile
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
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


_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _rebuilt(cls: type, values: tuple[Any, ...]) -> object:
    """A frozen dataclass from its field values, as it was pickled (no __init__: it was checked then)."""
    obj: object = object.__new__(cls)
    for name, value in zip(_field_names(cls), values, strict=True):
        object.__setattr__(obj, name, value)
    return obj


class _StatePickler(pickle.Pickler):
    """Pickles frozen dataclasses as their field values. Dataclasses' own __getstate__ and
    __setstate__ look the fields up again for every object: storing a 10,000-pipeline state
    spent half its time there."""

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        params = getattr(cls, "__dataclass_params__", None)
        if params is not None and params.frozen:  # an instance: a dataclass's own type is `type`
            return _rebuilt, (cls, tuple(getattr(obj, n) for n in _field_names(cls)))
        return NotImplemented


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
    """Desired states, and the parts they were made of, on disk (the controller's own folder,
    mode 0700), for other processes (a CLI `plan` or `sync`, a restarted serve):

    - a commit rendered before under the same settings and code is read whole, not made again;
    - a new commit of a repository starts from the parts (parsed files, validated systems,
      image specs, DAG payloads) of that repository's last render, so only what its git trees
      changed is loaded and rendered. Parts are content-keyed units, one file each: a commit
      that changed one file writes that file's units, not the repository's.

    At most `keep` states (one per repository and commit; a 10-pipeline state is about 10 KB)
    and `keep_units` units are kept, the least recently used removed first (each folder is
    pruned after every tenth of its bound of writes, so it may pass the bound by that much)."""

    def __init__(self, folder: Path, keep: int = 5_000, keep_units: int = 20_000) -> None:
        self.folder = folder
        self.keep = keep
        self.keep_units = keep_units
        self._code = _code_digest()
        self._units = folder / "units"
        self._used: set[str] = set()
        self._lock = threading.Lock()
        self._written: dict[Path, int] = {}  # files written per folder since it was last pruned

    def first_use(self, key: str) -> bool:
        """True the first time this process asks about `key` (after that, what it stored is in
        the process's own memory)."""
        with self._lock:
            first = key not in self._used
            self._used.add(key)
            return first

    def get(self, key: str) -> object | None:
        """The state under `key`, or None (absent, or unreadable: it is made again)."""
        return self._read(self.folder / f"{self._code[:16]}-{key}.pickle")

    def put(self, key: str, value: object) -> None:
        """Store `value` under `key` (atomically: a reader sees the whole state or none)."""
        if self._write(self.folder, f"{self._code[:16]}-{key}.pickle", value):
            self._prune(self.folder, self.keep)

    def parts(self, lineage: str) -> list[tuple[str, Hashable, object]]:
        """The (space, key, value) entries of the last render stored under `lineage` (a
        repository under given settings): those of its units still on disk."""
        names = self._read(self.folder / f"{self._code[:16]}-{lineage}.parts")
        out: list[tuple[str, Hashable, object]] = []
        for name in names if isinstance(names, list) else []:
            unit = self._read(self._units / f"{self._code[:16]}-{name}.pickle")
            if isinstance(unit, list):
                out.extend(unit)
        return out

    def put_parts(self, lineage: str, entries: list[tuple[str, Hashable, object]]) -> None:
        """Store a render's entries (CheckoutMemo.used) under `lineage`: the units not on disk
        already, then the list of them all."""
        names = []
        wrote = False
        for name, unit in _units(entries).items():
            names.append(name)
            path = self._units / f"{self._code[:16]}-{name}.pickle"
            if path.exists():
                with contextlib.suppress(OSError):
                    os.utime(path)  # used again
            else:
                wrote = self._write(self._units, path.name, unit) or wrote
        if wrote:
            self._prune(self._units, self.keep_units)
        self._write(self.folder, f"{self._code[:16]}-{lineage}.parts", names)

    def _prune(self, folder: Path, keep: int) -> None:
        """Keep the `keep` most recently used files of `folder`: looked at after every tenth of
        `keep` writes (a listing of thousands of files per write would cost more than the write)."""
        with self._lock:
            written = self._written.get(folder, keep) + 1  # the first write of a process looks
            self._written[folder] = 0 if written > keep // 10 else written
        if written > keep // 10:
            _keep_newest(folder, keep)

    def _read(self, path: Path) -> object | None:
        try:
            # our own 0700 folder, written by this code only
            with _no_collection():
                value: object = pickle.loads(zlib.decompress(path.read_bytes()))
            os.utime(path)  # recently used
            return value
        except FileNotFoundError:
            return None
        except Exception as exc:
            log.warning("cache.unreadable", file=path.name, error=f"{type(exc).__name__}: {exc}")
            path.unlink(missing_ok=True)
            return None

    def _write(self, folder: Path, name: str, value: object) -> bool:
        tmp: str | None = None
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".desired-")
            data = io.BytesIO()
            _StatePickler(data, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
            with os.fdopen(fd, "wb") as f:
                f.write(zlib.compress(data.getbuffer(), 1))
            os.replace(tmp, folder / name)
            tmp = None
            return True
        except Exception as exc:  # a full disk costs a render next time, nothing else
            log.warning("cache.not_stored", error=f"{type(exc).__name__}: {exc}")
            return False
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)


def _keep_newest(folder: Path, keep: int) -> None:
    """Remove all but the `keep` most recently used files of `folder`."""
    found = []
    for path in folder.iterdir():
        with contextlib.suppress(OSError):
            if not path.name.startswith(".") and path.is_file():
                found.append((path.stat().st_mtime, path))
    if len(found) > keep:
        for _, old in sorted(found, reverse=True)[keep:]:
            old.unlink(missing_ok=True)


def _units(entries: list[tuple[str, Hashable, object]]) -> dict[str, list[tuple[str, Hashable, object]]]:
    """Entries grouped into units named by content: each entry alone, but the DAG payloads of a
    system with that system (their key is the system object itself, which a unit keeps whole)."""
    by_system: dict[int, str] = {}
    units: dict[str, list[tuple[str, Hashable, object]]] = {}
    for space, key, value in entries:
        if space != "dags":
            name = stable_key((space, key))
            units[name] = [(space, key, value)]
            if space == "system" and isinstance(value, tuple) and value and value[0] is not None:
                by_system[id(value[0])] = name
    for space, key, value in entries:
        if space == "dags":
            system = getattr(key[0], "obj", None) if isinstance(key, tuple) and key else None
            home = by_system.get(id(system))
            if home is not None:  # a payload without its system could never be found again
                units[home].append((space, key, value))
    return units


@contextmanager
def _no_collection() -> Iterator[None]:
    """No garbage collection while a state's tens of thousands of objects are made: the
    collector would walk every one of them again and again (75% of reading a 10,000-pipeline
    state). Process-wide and brief; left on if another thread turned it back on already."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _code_digest() -> str:
    """A digest of the code that loads, renders and stores: a state made by other code is never used."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted([*root.glob("spec/*.py"), *root.glob("render/*.py"), *root.glob("render/runtime/*.py")]):
        digest.update(path.read_bytes())
    digest.update((root / "model.py").read_bytes())
    digest.update(Path(__file__).read_bytes())  # how a state is pickled
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

    def preload(self, entries: Iterable[tuple[str, Hashable, object]]) -> None:
        """Add (space, key, value) entries another process made (CheckoutMemo.used), behind the
        ones this process made itself, which stay."""
        with self._lock:
            for space, key, value in entries:
                full = (space, key)
                if full not in self._entries:
                    self._entries[full] = value
                    self._entries.move_to_end(full, last=False)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

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
        self._used: dict[tuple[str, Hashable], object] = {}

    def tree_id(self, path: str) -> str | None:
        """Git's id of the directory `path` in this checkout; None if unknown or holding a symlink."""
        normal = path.strip("/")
        return self._trees.get("" if normal == "." else normal.removeprefix("./"))

    def get_or_make(self, space: str, key: Hashable, make: Callable[[], _T]) -> _T:
        """See RenderCache.get_or_make."""
        value = self._cache.get_or_make(space, key, make)
        self._used[(space, key)] = value
        return value

    def used(self) -> list[tuple[str, Hashable, object]]:
        """The (space, key, value) entries this checkout's load and render asked for: what
        another process needs to render a next commit of the same repository."""
        return [(space, key, value) for (space, key), value in self._used.items()]
