"""`.dockerignore` matching with Docker's rules (moby/patternmatcher), as a pure function.

Rules followed: blank lines and `#` comments are skipped; a leading `/` and `./` are dropped and
the pattern is cleaned; `*` and `?` never match `/`; `**` matches any number of directories;
`!` re-includes; the last matching pattern wins; a pattern matching a parent directory matches
everything under it.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

__all__ = ["IgnoreRules", "parse_dockerignore"]


@dataclass(frozen=True, slots=True)
class _Pattern:
    regex: re.Pattern[str]
    exclusion: bool


@dataclass(frozen=True, slots=True)
class IgnoreRules:
    """Parsed `.dockerignore` patterns, in file order."""

    patterns: tuple[_Pattern, ...] = ()

    def ignores(self, path: str) -> bool:
        """True when the POSIX relative `path` is left out of the build context."""
        parents = _parents(path)
        ignored = False
        for pattern in self.patterns:
            if pattern.regex.fullmatch(path) or any(pattern.regex.fullmatch(p) for p in parents):
                ignored = not pattern.exclusion
        return ignored


def parse_dockerignore(text: str) -> IgnoreRules:
    """Parse the text of a `.dockerignore` file."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        line = posixpath.normpath(line).lstrip("/")
        if line in ("", "."):
            continue
        patterns.append(_Pattern(re.compile(_translate(line)), exclusion))
    return IgnoreRules(tuple(patterns))


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _translate(pattern: str) -> str:
    """Translate a Docker glob into a regular expression (Go's filepath.Match plus `**`)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    i += 1
                    out.append("(?:.*/)?")  # `**/` is zero or more directories
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                negate = body.startswith("^") or body.startswith("!")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\")
                out.append(f"[{'^' if negate else ''}{body}]")
                i = end
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)
