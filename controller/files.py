"""Reading a file of a repository checkout, which is untrusted content.

A checkout may hold symlinks to anywhere (`/dev/zero`, `/proc/self/environ`, the controller's
config file), FIFOs that block an `open`, and files of any size. Only a regular file whose real
path stays inside the checkout is read, and the size cap is enforced while reading, not from a
`stat` taken before it (a device reports size 0).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["FileRefusedError", "read_repository_file"]

_CHUNK = 1 << 16


class FileRefusedError(Exception):
    """A repository file that is not read: `rule` says why (`too-large`, `not-regular`, `outside`, `io`)."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


def read_repository_file(path: Path, root: Path, max_bytes: int) -> bytes:
    """The bytes of `path`, a file of the checkout at `root`, at most `max_bytes` of them.

    Raises FileRefusedError when the path (after following symlinks) leads out of `root`, is not a
    regular file, cannot be read, or holds more than `max_bytes` bytes."""
    try:
        real = path.resolve(strict=True)
        inside = real.is_relative_to(root.resolve())
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise FileRefusedError(f"cannot read file: {getattr(exc, 'strerror', None) or 'symlink loop'}", "io") from None
    if not inside:
        raise FileRefusedError("is a symlink leading outside the repository; it is not read", "outside")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: `real` is final
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FileRefusedError(f"cannot read file: {exc.strerror}", "io") from None
    with os.fdopen(fd, "rb", buffering=0) as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileRefusedError("is not a regular file (a device, FIFO or socket); it is not read", "not-regular")
        chunks: list[bytes] = []
        size = 0
        while chunk := stream.read(min(_CHUNK, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise FileRefusedError(f"file is over {max_bytes} bytes; the limit is {max_bytes}", "too-large")
    return b"".join(chunks)
