"""RenderCache: what a long-lived controller process remembers between reconciles.

Everything is keyed by content (file bytes, git tree ids, settings), never by time, so a stale
entry can only be unused, never wrong. Entries are dropped least-recently-used first past a
fixed count, which bounds memory whatever the number of commits seen.

The loop's worker threads share one cache: every read and write of the table holds a lock, and
a value is made outside it (making one can take seconds and asks the cache for its parts). Two
threads missing the same key at once both make it; the values are equal, so either may stay.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

__all__ = ["RenderCache"]

_T = TypeVar("_T")


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
