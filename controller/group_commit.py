"""Items handled in groups by one thread, for callers on an event loop.

A webhook delivery must be in the ledger before its 202. One transaction per delivery makes the
disk sync (and SQLAlchemy's per-statement work) the cost of every delivery; a group commit pays
it once for all the deliveries that arrived while the previous group was being written: the
busier the endpoint, the larger the groups. Callers await their own item's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")

_Waiting = tuple[T, "asyncio.Future[R]", asyncio.AbstractEventLoop]


class GroupCommit(Generic[T, R]):
    """Hands items to `handle` in groups of at most `most`, on one thread of its own (started at
    the first item). `handle` returns one result per item, in order: a value, or the exception
    that item's caller gets; an exception raised by `handle` itself goes to every caller of the
    group."""

    def __init__(
        self, handle: Callable[[list[T]], Sequence[R | BaseException]], most: int = 256, name: str = "group-commit"
    ) -> None:
        self.handle = handle
        self.most = most
        self.name = name
        self._queue: queue.SimpleQueue[_Waiting[T, R] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def submit(self, item: T) -> R:
        """`item`'s result, once the group it joined has been handled."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._start()
        self._queue.put((item, future, loop))
        return await future

    def close(self, timeout: float = 30.0) -> None:
        """Handle what was submitted already, then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < self.most:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True  # handle this group, then stop
                    break
                group.append(more)
            self._settle(group)

    def _settle(self, group: list[_Waiting[T, R]]) -> None:
        results: Sequence[R | BaseException]
        try:
            results = self.handle([item for item, _, _ in group])
            if len(results) != len(group):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(group)} items")
        except Exception as exc:  # every caller of the group gets it; the thread goes on
            results = [exc] * len(group)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[R], R | BaseException]]] = {}
        for (_, future, loop), result in zip(group, results, strict=True):
            by_loop.setdefault(loop, []).append((future, result))
        for loop, settled in by_loop.items():
            # one wake-up of each event loop per group, not one per caller
            with contextlib.suppress(RuntimeError):  # that event loop is closed: no one waits
                loop.call_soon_threadsafe(_resolve, settled)


def _resolve(settled: list[tuple[asyncio.Future[R], R | BaseException]]) -> None:
    for future, result in settled:
        if future.done():
            continue  # the caller gave up (its client went away); the item was handled all the same
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
