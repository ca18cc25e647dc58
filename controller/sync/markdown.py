"""Markdown for GitHub and GitLab made from text a pull request's author controls.

Names, messages and diffs come from the pull request: escaped so that they cannot add a link, an
image, HTML, a mention that notifies someone, or end the block they sit in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

__all__ = ["code", "details", "fenced", "fit", "text"]

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def text(value: str) -> str:
    """Plain text: Markdown and HTML characters escaped, one line, and `@`/`#` references broken
    (a zero-width space after them), so no one is notified and nothing is linked."""
    line = " ".join(value.split())
    line = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    line = _SPECIAL.sub(r"\\\1", line)
    return line.replace("@", "@\u200b")


def code(value: str, *, in_table: bool = False) -> str:
    """An inline code span holding `value` on one line (fenced by more backticks than it holds)."""
    line = " ".join(value.split()) or " "
    longest = max((len(run) for run in re.findall(r"`+", line)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if line.startswith("`") or line.endswith("`") else ""
    span = f"{fence}{pad}{line}{pad}{fence}"
    return span.replace("|", "\\|") if in_table else span


def fenced(body: str, language: str = "") -> str:
    """A fenced code block; the fence is longer than any run of backticks in `body`."""
    longest = max((len(run) for run in re.findall(r"`{3,}", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{body.rstrip()}\n{fence}"


def details(summary: str, body: str) -> str:
    """A folded section: `summary` (already Markdown-safe) shown, `body` on a click."""
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


def fit(pieces: Sequence[str], limit: int, tail: Callable[[int], str]) -> str:
    """`pieces` (each starting with its own separator) joined while they fit in `limit`
    characters, then `tail(n)`: what ends the text, saying that n pieces were left out (n may be
    0). A piece is whole or absent, so no fence, table row or folded section is cut in half."""
    room = limit - len(tail(len(pieces)))
    size = 0
    for index, piece in enumerate(pieces):
        if size + len(piece) > room:
            return "".join(pieces[:index]) + tail(len(pieces) - index)
        size += len(piece)
    return "".join(pieces) + tail(0)
