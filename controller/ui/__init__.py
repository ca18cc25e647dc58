"""The web UI of `liminal serve`: server-rendered pages for people (the JSON API stays for programs).

Pure rendering: each page is a Jinja2 template (autoescaped) over the same dictionaries the JSON
API returns, so the browser and `curl` see one truth. The one script (`static/app.js`, ours, no
CDN) refreshes the page's live region every few seconds and sends Sync and Rollback with the API
token in an `Authorization` header: the token is typed, kept in the tab's sessionStorage, and
never put in a URL, a cookie or a log, so no other site can make a browser send it (no CSRF).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from controller.views import not_deployed_why

__all__ = ["STATIC", "page", "source_link"]

STATIC = resources.files("controller.ui") / "static"
"""The UI's own assets (served at /ui/static)."""


@cache
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("controller.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = lambda commit: (commit or "-")[:12]
    env.filters["when"] = _when
    env.globals["source_link"] = source_link
    env.globals["not_deployed_why"] = not_deployed_why
    return env


def _when(at: dt.datetime | str | None) -> str:
    """A time as people read it (the API's ISO text or a datetime)."""
    if not at:
        return "-"
    found = dt.datetime.fromisoformat(at) if isinstance(at, str) else at
    return found.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def page(template: str, **context: Any) -> str:
    """The HTML of `template` with `context`."""
    return str(_environment().get_template(template).render(**context))


_HOSTED = re.compile(
    r"^(?:https://|ssh://git@|git@)(github\.com|gitlab\.com)[:/](?P<path>[\w.-]+(?:/[\w.-]+)+?)(?:\.git)?/?$"
)


def source_link(url: str, commit: str | None, problem: Mapping[str, Any]) -> str | None:
    """Where a problem's `file:line` is shown on GitHub or GitLab at `commit`; None elsewhere."""
    found = _HOSTED.match(url)
    if not found or not commit or not problem.get("file"):
        return None
    host, path = found.group(1), found.group("path")
    blob = "blob" if host == "github.com" else "-/blob"
    return f"https://{host}/{path}/{blob}/{commit}/{problem['file']}#L{problem.get('line') or 1}"
