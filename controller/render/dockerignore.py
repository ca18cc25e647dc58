"""`.dockerignore` matching with Docker's rules (moby/patternmatcher), as a pure function.

Rules followed: blank lines and `#` comments are skipped; a leading `/` and `./` are dropped and
the pattern is cleaned; `*` and `?` never match `/`; `**` matches any number of directories
(`(.*/)?`, or anything at the end of a pattern);
`!` re-includes; the last matching pattern wins; a pattern matching a parent directory matches
everything under it.

The file is repository content, so nobody's text becomes a regular expression (a backtracking
`re` on `*a*a*a*a*b` takes exponential time and holds the GIL). Each pattern is compiled into a
small automaton run as a bit set (Shift-And): matching costs a few integer operations per
character of the path, whatever the pattern, and every step is counted against a budget.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

__all__ = [
    "MATCH_BUDGET",
    "MAX_PATTERNS",
    "IgnoreBudgetError",
    "IgnoreRules",
    "IgnoreSyntaxError",
    "parse_dockerignore",
]

MAX_PATTERNS = 10_000
"""Lines a `.dockerignore` may hold; Docker has no limit, but no real file comes near it."""

MAX_PATTERN_LENGTH = 4096
"""Characters in one pattern (PATH_MAX): a longer one cannot match any file."""

MATCH_BUDGET = 20_000_000
"""Character steps one image's context may spend on `.dockerignore` matching (about 10 s of CPU
at worst; a 10,000-file repository with 20 patterns uses under 5 million)."""


class IgnoreBudgetError(Exception):
    """Matching spent its whole budget: the `.dockerignore` is too large for the context."""


# token kinds
_CHAR, _ANY, _CLASS, _STAR, _DSTAR, _ENTRY = range(6)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: int
    char: str = ""
    ranges: tuple[tuple[str, str], ...] = ()
    negate: bool = False

    def matches(self, c: str) -> bool:
        if self.kind == _CHAR:
            return c == self.char
        if self.kind == _ANY:
            return c != "/"
        inside = any(low <= c <= high for low, high in self.ranges)
        return inside != self.negate


@dataclass(slots=True)
class _Pattern:
    """One pattern as an automaton: bit i set means "tokens before i matched"; bit len(tokens) accepts."""

    text: str
    exclusion: bool
    line: int
    tokens: tuple[_Token, ...]
    skip1: int
    """Bits whose token may match nothing (a star): the state also holds at the next bit."""
    skip3: int
    """Bits opening an optional `**/` (three tokens: an entry that takes no character, any run, then `/`):
    the state also holds three bits on, past the whole group."""
    accept: int
    masks: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per character: (bits whose one-character token takes it, bits whose star loops on it)."""

    def _masks(self, c: str) -> tuple[int, int]:
        found = self.masks.get(c)
        if found is None:
            step = loop = 0
            for i, token in enumerate(self.tokens):
                if token.kind == _STAR:
                    loop |= (c != "/") << i
                elif token.kind == _DSTAR:
                    loop |= 1 << i
                elif token.kind != _ENTRY and token.matches(c):
                    step |= 1 << i
            found = self.masks[c] = (step, loop)
        return found

    def _close(self, state: int) -> int:
        while True:
            grown = state | ((state & self.skip1) << 1) | ((state & self.skip3) << 3)
            if grown == state:
                return state
            state = grown

    def match(self, path: str) -> tuple[bool, int]:
        """Whether the pattern matches `path` or one of its parent directories, and the steps spent."""
        state = self._close(1)
        steps = 0
        for c in path:
            if c == "/" and state & self.accept:
                return True, steps  # a parent directory matches
            step, loop = self._masks(c)
            state = self._close(((state & step) << 1) | (state & loop))
            steps += 1
            if not state:
                return False, steps
        return bool(state & self.accept), steps


@dataclass(slots=True)
class IgnoreRules:
    """Parsed `.dockerignore` patterns, in file order, with the matching budget left."""

    patterns: tuple[_Pattern, ...] = ()
    budget: int = MATCH_BUDGET
    limit: int = MATCH_BUDGET

    @property
    def has_exclusions(self) -> bool:
        """True when a `!` pattern re-includes something (then an ignored folder is still walked)."""
        return any(p.exclusion for p in self.patterns)

    def ignores(self, path: str) -> bool:
        """True when the POSIX relative `path` is left out of the build context.

        Raises IgnoreBudgetError when matching has spent this rule set's whole budget."""
        ignored = False
        for pattern in self.patterns:
            if ignored == (not pattern.exclusion):
                continue  # whatever it matches, the outcome stays
            matched, steps = pattern.match(path)
            self.budget -= max(steps, 1)
            if self.budget < 0:
                raise IgnoreBudgetError(
                    f"matching .dockerignore patterns took more than {self.limit} steps; "
                    "use fewer patterns or fewer files in the image's source"
                )
            if matched:
                ignored = not pattern.exclusion
        return ignored


class IgnoreSyntaxError(ValueError):
    """A pattern Docker refuses (`filepath.ErrBadPattern`), with its 1-based line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def parse_dockerignore(text: str, budget: int = MATCH_BUDGET) -> IgnoreRules:
    """Parse the text of a `.dockerignore` file.

    Raises IgnoreSyntaxError for a pattern Docker would refuse (an unclosed or empty `[`, a
    reversed range, a trailing `\\`) or for too many or too long patterns."""
    patterns: list[_Pattern] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        if len(line) > MAX_PATTERN_LENGTH:
            raise IgnoreSyntaxError(number, f"pattern is over {MAX_PATTERN_LENGTH} characters")
        line = posixpath.normpath(line).lstrip("/")
        if line in ("", "."):
            continue
        if len(patterns) == MAX_PATTERNS:
            raise IgnoreSyntaxError(number, f"more than {MAX_PATTERNS} patterns")
        patterns.append(_compile(line, exclusion, number))
    return IgnoreRules(tuple(patterns), budget, budget)


def _compile(text: str, exclusion: bool, line: int) -> _Pattern:
    tokens: list[_Token] = []
    skip1 = skip3 = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "*":
            if text.startswith("**", i):
                # as moby's patternmatcher: a `/` right after `**` is eaten; `**` at the end is any
                # run (everything under), elsewhere zero or more directories, `(.*/)?`
                i += 2
                if text.startswith("/", i):
                    i += 1
                if i == n:
                    skip1 |= 1 << len(tokens)
                    tokens.append(_Token(_DSTAR))
                else:
                    skip3 |= 1 << len(tokens)
                    skip1 |= 0b11 << len(tokens)
                    tokens += [_Token(_ENTRY), _Token(_DSTAR), _Token(_CHAR, "/")]
                continue
            if not (tokens and tokens[-1].kind == _STAR):  # `*` after `*` adds nothing
                skip1 |= 1 << len(tokens)
                tokens.append(_Token(_STAR))
        elif c == "?":
            tokens.append(_Token(_ANY))
        elif c == "[":
            token, i = _char_class(text, i, line)
            tokens.append(token)
        elif c == "\\":
            if i + 1 >= n:
                raise IgnoreSyntaxError(line, f"pattern {text!r} ends with an escape character")
            i += 1
            tokens.append(_Token(_CHAR, text[i]))
        else:
            tokens.append(_Token(_CHAR, c))
        i += 1
    return _Pattern(text, exclusion, line, tuple(tokens), skip1, skip3, 1 << len(tokens))


def _char_class(text: str, start: int, line: int) -> tuple[_Token, int]:
    """The class opening at `text[start] == '['` and the index of its `]` (Go's filepath.Match rules)."""
    i = start + 1
    negate = i < len(text) and text[i] in "^!"
    if negate:
        i += 1
    ranges: list[tuple[str, str]] = []
    while True:
        if i >= len(text):
            raise IgnoreSyntaxError(line, f"pattern {text!r} has an unclosed '['")
        if text[i] == "]" and ranges:
            return _Token(_CLASS, ranges=tuple(ranges), negate=negate), i
        low, i = _class_char(text, i, line)
        high = low
        if i + 1 < len(text) and text[i] == "-" and text[i + 1] != "]":
            high, i = _class_char(text, i + 1, line)
            if high < low:
                raise IgnoreSyntaxError(line, f"pattern {text!r} has a reversed range {low}-{high}")
        ranges.append((low, high))


def _class_char(text: str, i: int, line: int) -> tuple[str, int]:
    if text[i] in "-]":
        raise IgnoreSyntaxError(line, f"pattern {text!r} has a '{text[i]}' where a character class needs a character")
    if text[i] == "\\":
        i += 1
        if i >= len(text):
            raise IgnoreSyntaxError(line, f"pattern {text!r} ends with an escape character")
    return text[i], i + 1
