"""Branch heads of remotes without a fetch: one ref advertisement per remote URL, shared by every
tracked repository (and branch) on it.

Over http(s) the advertisement is one GET of `info/refs?service=git-upload-pack` (git's smart
HTTP, protocol v0), read in the process: no git subprocess, no objects. Other remotes (ssh,
local paths) are asked with `git ls-remote --heads`. Requests to one host are spaced by a rate
limit, so a thousand repositories on one forge never burst at it.
"""

from __future__ import annotations

import base64
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import git
import httpx
import structlog

from controller.errors import sanitize
from controller.model import RepoRef

__all__ = ["RemoteHeads", "parse_advertisement"]

log = structlog.get_logger("liminal.source")

_MAX_ADVERTISEMENT = 64 * 1024 * 1024
"""Bytes of a ref advertisement read at most (a remote answering more is not polled this way)."""


def parse_advertisement(data: bytes) -> dict[str, str]:
    """Branch name -> commit from a smart-HTTP `git-upload-pack` ref advertisement (pkt-lines);
    ValueError when it is not one."""
    heads: dict[str, str] = {}
    at = 0
    while at + 4 <= len(data):
        size = int(data[at : at + 4], 16)
        if size == 0:  # flush
            at += 4
            continue
        if size < 4 or at + size > len(data):
            raise ValueError("a pkt-line runs past the end")
        line = data[at + 4 : at + size].rstrip(b"\n").split(b"\0", 1)[0].decode("utf-8", "replace")
        at += size
        if line.startswith("#"):
            continue
        commit, _, ref = line.partition(" ")
        if ref.startswith("refs/heads/") and len(commit) in (40, 64):
            heads[ref.removeprefix("refs/heads/")] = commit
    if at != len(data):
        raise ValueError("trailing bytes after the last pkt-line")
    return heads


class RemoteHeads:
    """Asks remotes for their branch heads, at most `per_host` requests a second to one host."""

    def __init__(
        self,
        env: Callable[[str], dict[str, str]],
        auth: Callable[[str], tuple[str, str] | None],
        *,
        timeout: float = 10.0,
        per_host: float = 10.0,
        threads: int = 4,
    ) -> None:
        self._env = env
        self._auth = auth
        self.timeout = timeout
        self.per_host = per_host
        self.threads = threads
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None

    def heads(self, repos: Sequence[RepoRef]) -> Mapping[str, str | None]:
        """Each repository's branch head on its remote; None where the remote could not say
        (unreachable, refused, no such branch): the caller fetches to find out."""
        by_url: dict[str, list[RepoRef]] = {}
        for repo in repos:
            by_url.setdefault(repo.url, []).append(repo)
        out: dict[str, str | None] = {r.name: None for r in repos}
        if not by_url:
            return out
        with ThreadPoolExecutor(max_workers=min(self.threads, len(by_url)), thread_name_prefix="heads") as pool:
            for url, found in zip(by_url, pool.map(self._advertised, by_url), strict=True):
                for repo in by_url[url]:
                    out[repo.name] = None if found is None else found.get(repo.branch)
        return out

    def _advertised(self, url: str) -> dict[str, str] | None:
        self._wait_turn(url)
        try:
            if url.lower().startswith(("https://", "http://")):
                return self._over_http(url)
            return self._over_git(url)
        except Exception as exc:  # any failure: the caller fetches, as it did before
            log.debug("source.heads_unknown", url=sanitize(url), error=sanitize(f"{type(exc).__name__}: {exc}"))
            return None

    def _over_http(self, url: str) -> dict[str, str] | None:
        headers = {"User-Agent": "git/2 (liminal-gitops)", "Accept": "application/x-git-upload-pack-advertisement"}
        credentials = self._auth(url)
        if credentials is not None:
            token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout, follow_redirects=False)
            client = self._client
        with client.stream(
            "GET", f"{url.rstrip('/')}/info/refs", params={"service": "git-upload-pack"}, headers=headers
        ) as response:
            if response.status_code != 200 or "git-upload-pack-advertisement" not in response.headers.get(
                "content-type", ""
            ):
                return None  # a dumb server, a login page, a refusal: fetch instead
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > _MAX_ADVERTISEMENT:
                    return None
        return parse_advertisement(bytes(data))

    def _over_git(self, url: str) -> dict[str, str] | None:
        command = git.cmd.Git()
        with command.custom_environment(**self._env(url)):
            listed = str(command.ls_remote("--heads", "--", url, kill_after_timeout=self.timeout))
        heads = {}
        for line in listed.splitlines():
            commit, _, ref = line.partition("\t")
            if ref.startswith("refs/heads/"):
                heads[ref.removeprefix("refs/heads/")] = commit.strip()
        return heads

    def _wait_turn(self, url: str) -> None:
        """Space requests to one host by 1/per_host seconds."""
        host = urllib.parse.urlsplit(url if "://" in url else f"ssh://{url.replace(':', '/', 1)}").hostname or url
        with self._lock:
            now = time.monotonic()
            turn = max(now, self._next.get(host, now))
            self._next[host] = turn + 1.0 / self.per_host
        if turn > now:
            time.sleep(turn - now)
