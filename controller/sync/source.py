"""Git source: a bare mirror per repository, and one immutable checkout per commit. Git only.

Credentials never enter a URL, the git config, a log line or the ledger: an HTTPS token is
handed to git through GIT_ASKPASS in the child's environment, an SSH key through
GIT_SSH_COMMAND (host keys stay checked).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path, PurePosixPath

import git

from controller.errors import SourceError, TransientError, sanitize
from controller.model import RepoRef, Snapshot
from controller.sync.heads import RemoteHeads

__all__ = [
    "GIT_TIMEOUT",
    "GitCredentials",
    "GitSource",
    "RemotePolicy",
    "SourceError",
    "check_branch",
    "check_remote",
    "extract_tar",
    "sanitize",
]

RECENT = 30.0
"""Seconds after its last use a checkout is never removed: one just made by a plan or a check
that has not taken its hold yet stays."""

GIT_TIMEOUT = 300.0
"""Seconds one git command (fetch, ls-remote, archive, push) may take before it is killed: a
remote that hangs must not hold a worker forever."""

_LOW_SPEED = {"GIT_HTTP_LOW_SPEED_LIMIT": "1000", "GIT_HTTP_LOW_SPEED_TIME": "60"}
"""An HTTP transfer slower than 1,000 bytes/s for 60 s is abandoned by git itself."""

_SCP_LIKE = re.compile(r"(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+:(?!/)[^\s]+")

_ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$LIMINAL_GIT_ASKPASS_USERNAME" ;;
  *) printf '%s\\n' "$LIMINAL_GIT_ASKPASS_PASSWORD" ;;
esac
"""


@dataclass(frozen=True, slots=True)
class RemotePolicy:
    """Which remotes the controller may talk to. https and ssh always; the rest only when the
    operator says so (a plain-http remote would see the token and the content in clear text; a
    local path lets whoever adds a repository read the controller's disk)."""

    allow_local: bool = False
    """Local paths and file:// remotes (LIMINAL_ALLOW_LOCAL_REMOTES): for the demo and tests."""

    allow_http: bool = False
    """Plain http:// remotes (LIMINAL_ALLOW_HTTP_REMOTES); only then is the token sent over http."""

    @property
    def protocols(self) -> str:
        """GIT_ALLOW_PROTOCOL: the transports git may use (never ext::, fd::, or git://)."""
        allowed = ["https", "ssh"] + (["http"] if self.allow_http else []) + (["file"] if self.allow_local else [])
        return ":".join(allowed)


def check_remote(url: str, policy: RemotePolicy) -> str:
    """`url` when it names a remote the policy allows: `https://`, `ssh://` or `[user@]host:path`,
    plus `http://` and local paths when allowed; no credentials, no transport helpers (`ext::`),
    no option-looking text. SourceError saying why otherwise."""
    text = url.strip()
    if text.startswith("-") or "::" in text:
        raise SourceError(f"{sanitize(text)[:200]!r} is not a repository URL (no options, no transport helpers)")
    if not text or len(text) > 2048 or not text.isprintable() or any(c.isspace() for c in text):
        raise SourceError("a repository URL is 1-2048 printable characters without spaces")
    if "://" in text:
        scheme, rest = text.split("://", 1)
        scheme = scheme.lower()
        authority = rest.split("/", 1)[0]
        allowed = (
            {"https", "ssh"} | ({"http"} if policy.allow_http else set()) | ({"file"} if policy.allow_local else set())
        )
        if scheme not in allowed:
            hint = {
                "http": " (LIMINAL_ALLOW_HTTP_REMOTES=true allows it)",
                "file": " (LIMINAL_ALLOW_LOCAL_REMOTES=true allows it)",
            }.get(scheme, "")
            raise SourceError(f"{scheme}:// remotes are not allowed{hint}; use https:// or ssh://")
        userinfo = authority.rpartition("@")[0] if "@" in authority else ""
        if userinfo and (scheme != "ssh" or ":" in userinfo):
            raise SourceError("put credentials in LIMINAL_GIT_TOKEN(_FILE), not in the URL")
        if scheme != "file" and not authority.rpartition("@")[2]:
            raise SourceError(f"{sanitize(text)!r} names no host")
        return text
    if text.startswith(("/", "./", "../", "~")) or ":" not in text or "/" in text.split(":", 1)[0]:
        if not policy.allow_local:
            raise SourceError("local repository paths are not allowed (LIMINAL_ALLOW_LOCAL_REMOTES=true allows them)")
        return text
    if not _SCP_LIKE.fullmatch(text):
        raise SourceError(f"{sanitize(text)!r} is not a repository URL (https://, ssh:// or user@host:path)")
    return text


def check_branch(branch: str) -> str:
    """`branch` when git accepts it as a branch name (`git check-ref-format --branch`); SourceError otherwise."""
    if not branch or branch.startswith("-") or len(branch) > 255 or not branch.isprintable():
        raise SourceError(f"{branch!r} is not a valid branch name")
    try:
        git.Git().execute(["git", "check-ref-format", "--branch", branch])
    except git.GitCommandError:
        raise SourceError(f"{branch!r} is not a valid branch name (git check-ref-format)") from None
    if branch != branch.strip() or branch.startswith("@") or branch == "HEAD":
        raise SourceError(f"{branch!r} is not a valid branch name")
    return branch


@dataclass(frozen=True, slots=True)
class GitCredentials:
    """How to authenticate to remotes: an HTTPS token (with its user name) or an SSH key file."""

    token: str | None = None
    username: str = "x-access-token"
    ssh_key_file: str | None = None

    def __repr__(self) -> str:
        return f"GitCredentials(token={'***' if self.token else None}, ssh_key_file={self.ssh_key_file!r})"


def extract_tar(data: bytes, dest: Path) -> None:
    """Extract a `git archive` tar into `dest` under the rules of tarfile's `tar` filter: a member
    leading out of `dest` is refused (SourceError), set-id and group/other write bits are cleared.
    Symlinks that lead out are kept, so that validation reports them with the file that holds them."""
    with tarfile.open(fileobj=BytesIO(data)) as archive:
        if hasattr(tarfile, "tar_filter"):
            try:
                archive.extractall(dest, filter="tar")
            except tarfile.FilterError as exc:
                raise SourceError(f"refusing archive member: {exc}") from exc
            return
        # Python before 3.11.4 (Debian 12's system 3.11.2) has no extraction filters: the same rules by hand
        safe = []
        for member in archive.getmembers():
            parts = PurePosixPath(member.name).parts
            if member.name.startswith("/") or ".." in parts or member.isdev():
                raise SourceError(f"refusing archive member {member.name!r}")
            if member.islnk() and (member.linkname.startswith("/") or ".." in PurePosixPath(member.linkname).parts):
                raise SourceError(f"refusing hard link {member.name!r} to {member.linkname!r}")
            member.mode &= 0o755  # no set-id, sticky, group or other write bits
            safe.append(member)
        archive.extractall(dest, members=safe)


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An flock on `path`: one fetch per mirror at a time, released by the OS if the process dies."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_stale_git_locks(git_dir: Path) -> None:
    """Remove the `*.lock` files a killed git left behind (else every later fetch fails).

    Only called under `_exclusive`: no other git process can be using the mirror then.
    """
    for lock in [*git_dir.glob("*.lock"), *(git_dir / "refs").rglob("*.lock")]:
        lock.unlink(missing_ok=True)


class GitSource:
    """Fetches tracked repositories into `cache` (one folder per repository, named by a hash)."""

    def __init__(
        self,
        cache: Path,
        credentials: GitCredentials | None = None,
        policy: RemotePolicy | None = None,
        timeout: float = GIT_TIMEOUT,
    ) -> None:
        self.cache = cache
        self.credentials = credentials or GitCredentials()
        self.policy = policy or RemotePolicy()
        self.timeout = timeout
        self._heads = RemoteHeads(self._env, self._http_auth, timeout=min(timeout, 10.0))

    def remote_heads(self, repos: Sequence[RepoRef]) -> Mapping[str, str | None]:
        """Each repository's branch head on its remote, without a fetch (one request per remote
        URL); None where the remote could not say."""
        return self._heads.heads(repos)

    def _http_auth(self, url: str) -> tuple[str, str] | None:
        scheme = url.split("://", 1)[0].lower()
        # as for git itself: the token only over https, or http when the operator allows http
        if self.credentials.token and (scheme == "https" or (scheme == "http" and self.policy.allow_http)):
            return self.credentials.username, self.credentials.token
        return None

    def _folder(self, repo: RepoRef) -> Path:
        slug = re.sub(r"[^a-z0-9]+", "-", repo.name.lower()).strip("-")[:40] or "repo"
        digest = hashlib.sha256(f"{repo.name}\0{repo.url}".encode()).hexdigest()[:12]
        return self.cache / f"{slug}-{digest}"

    def _env(self, url: str = "") -> dict[str, str]:
        env = {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_ALLOW_PROTOCOL": self.policy.protocols,
            **_LOW_SPEED,
        }
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        # the token goes only where it travels encrypted (https), or over http when the operator allows http
        if self.credentials.token and (scheme == "https" or (scheme == "http" and self.policy.allow_http)):
            askpass = self.cache / "askpass.sh"
            if not askpass.exists():
                self.cache.mkdir(parents=True, exist_ok=True)
                askpass.write_text(_ASKPASS, encoding="utf-8")
                askpass.chmod(stat.S_IRWXU)
            env |= {
                "GIT_ASKPASS": str(askpass),
                "LIMINAL_GIT_ASKPASS_USERNAME": self.credentials.username,
                "LIMINAL_GIT_ASKPASS_PASSWORD": self.credentials.token,
            }
        if self.credentials.ssh_key_file:
            env["GIT_SSH_COMMAND"] = f"ssh -i '{self.credentials.ssh_key_file}' -o IdentitiesOnly=yes -o BatchMode=yes"
        return env

    def resolve(self, repo: RepoRef, remote_ref: str | None = None) -> str:
        """Fetch the branch (or `remote_ref`, such as `refs/pull/7/head`) and return its newest commit."""
        mirror = self._mirror(repo)
        ref = remote_ref or f"refs/heads/{repo.branch}"
        try:
            with _exclusive(self._folder(repo) / "fetch.flock"), mirror.git.custom_environment(**self._env(repo.url)):
                _remove_stale_git_locks(Path(mirror.git_dir))
                # `+` accepts a force-push; --prune forgets branches deleted on the remote
                prune = ("--prune",) if remote_ref is None else ()
                mirror.git.fetch(*prune, "--no-tags", "--", repo.url, f"+{ref}:{ref}", kill_after_timeout=self.timeout)
        except git.GitCommandError as exc:
            message = sanitize(f"{exc.stderr or exc}".strip(), (self.credentials.token or "",))
            if "couldn't find remote ref" in message:
                what = remote_ref or f"branch '{repo.branch}'"
                raise SourceError(f"{what} does not exist on {sanitize(repo.url)}") from exc
            raise TransientError(f"cannot fetch {sanitize(repo.url)}: {message}", retry_after=30) from exc
        return str(mirror.git.rev_parse(ref))

    def checkout(self, repo: RepoRef, commit: str) -> Snapshot:
        """An immutable checkout of `commit` (made once, then reused). A commit the mirror does not
        have (a fresh cache: the controller restarted on a new volume) is fetched first."""
        if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit):
            raise SourceError(f"not a full commit id: {commit!r}")
        folder = self._folder(repo) / "commits" / commit
        if not folder.is_dir():
            mirror = self._mirror(repo)
            try:
                mirror.git.cat_file("-e", f"{commit}^{{commit}}")
            except git.GitCommandError:
                self.resolve(repo)
            try:
                data = mirror.git.archive(
                    "--format=tar", commit, stdout_as_string=False, kill_after_timeout=self.timeout
                )
            except git.GitCommandError as exc:
                raise SourceError(f"commit {commit} is not in {repo.name}: {sanitize(str(exc.stderr))}") from exc
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
            try:
                extract_tar(data, staging)
                (staging / ".git").mkdir()  # marks the repository root for discovery
                os.replace(staging, folder)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        else:
            os.utime(folder)  # its last use: tidy keeps the recently used ones
        return Snapshot(repo=repo, commit=commit, root=folder)

    @contextmanager
    def hold(self, snapshot: Snapshot) -> Iterator[Snapshot]:
        """Keep `snapshot`'s checkout from being tidied away while it is read (a shared flock
        that `tidy` must get exclusively; released by the OS if the process dies)."""
        marker = snapshot.root.parent / f"{snapshot.commit}.hold"
        fd = os.open(marker, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield snapshot
        finally:
            os.close(fd)

    def tidy(self, repo: RepoRef, keep: Set[str], window: int) -> int:
        """Remove `repo`'s checkouts except those in `keep` (the live commit), the `window` used
        last, those used in the last RECENT seconds, and any held (`hold`). The caller holds the
        repository's lock, so no reconcile of it reads one meanwhile. Each goes by an atomic
        rename first: a half-removed checkout is never taken for a whole one. Returns how many."""
        commits = self._folder(repo) / "commits"
        if not commits.is_dir():
            return 0
        now = time.time()
        found = sorted(
            ((entry.stat().st_mtime, entry) for entry in os.scandir(commits) if entry.is_dir(follow_symlinks=False)),
            key=lambda item: item[0],
            reverse=True,
        )
        removed = 0
        for rank, (used, entry) in enumerate(found):
            if entry.name.startswith((".tmp-", ".trash-")):
                if now - used > GIT_TIMEOUT * 2:  # a checkout a killed process left half made or half removed
                    shutil.rmtree(entry.path, ignore_errors=True)
                continue
            if entry.name in keep or rank < window or now - used < RECENT:
                continue
            marker = commits / f"{entry.name}.hold"
            fd = os.open(marker, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a plan or a check reads it now
                trash = commits / f".trash-{entry.name}"
                os.replace(entry.path, trash)
                marker.unlink(missing_ok=True)
            finally:
                os.close(fd)
            shutil.rmtree(trash, ignore_errors=True)
            removed += 1
        return removed

    def gc(self, repo: RepoRef, every: float) -> bool:
        """`git gc` the repository's mirror (repack, drop unreachable objects) when the last one
        is older than `every` seconds; under the fetch lock, so never during a fetch. True when it ran."""
        folder = self._folder(repo)
        stamp = folder / "gc.stamp"
        if not (folder / "mirror.git" / "HEAD").is_file():
            return False
        if stamp.exists() and time.time() - stamp.stat().st_mtime < every:
            return False
        mirror = self._mirror(repo)
        with _exclusive(folder / "fetch.flock"):
            _remove_stale_git_locks(Path(mirror.git_dir))
            try:
                mirror.git.gc("--quiet", "--prune=now", kill_after_timeout=self.timeout)
            except git.GitCommandError as exc:
                raise TransientError(f"git gc of {repo.name}'s mirror failed: {sanitize(str(exc.stderr))}") from exc
        stamp.touch()
        return True

    def disk_usage(self, repo: RepoRef | None = None) -> int:
        """Bytes the git cache takes on disk: `repo`'s mirror and checkouts, or every repository's."""
        total = 0
        stack = [str(self._folder(repo) if repo is not None else self.cache)]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
                except OSError:
                    continue  # removed meanwhile
        return total

    def fetch(self, repo: RepoRef, ref: str | None = None) -> Snapshot:
        """The snapshot of `ref` (a full commit id), or of the branch's newest commit."""
        commit = ref if ref else self.resolve(repo)
        if ref:
            self.resolve(repo)  # the commit must be reachable from what the remote has
        return self.checkout(repo, commit)

    def fetch_head(self, repo: RepoRef, remote_ref: str, commit: str) -> Snapshot:
        """The snapshot of a pull request's head: `remote_ref` is fetched, and `commit` (what the
        webhook named) is checked out when the mirror has it, else the ref's newest commit."""
        newest = self.resolve(repo, remote_ref)
        try:
            return self.checkout(repo, commit)
        except SourceError:
            return self.checkout(repo, newest)

    def revert(self, repo: RepoRef, to: str | None = None) -> tuple[str, list[str]]:
        """Undo the branch's newest commit, or every commit after `to`, as one new commit on the
        branch, and push it (the GitOps way: git keeps the whole story). Returns the new head and
        the undone commits (the branch's own, first-parent history), newest first.

        The new commit's tree is the tree of `to` (or of the newest commit's first parent), so a
        merge commit, as a merged pull request makes, is undone as GitHub's Revert button does,
        and a range never stops on a conflict halfway."""
        head = self.resolve(repo)
        work = Path(tempfile.mkdtemp(prefix="rollback-", dir=self._folder(repo)))
        try:
            clone = git.Repo.clone_from(str(self._folder(repo) / "mirror.git"), work, branch=repo.branch)
            run = clone.git
            target, reverted = self._rollback_target(repo, run, head, to)
            try:
                run.read_tree("-u", "--reset", target)
                if not run.diff("--cached", "--name-only", head):
                    raise SourceError(
                        f"{repo.name}: {repo.branch} at {head[:12]} holds the same files as {target[:12]} already:"
                        " nothing to roll back"
                    )
                identity = ("-c", "user.name=liminal-gitops", "-c", "user.email=liminal-gitops@localhost")
                subjects = [f"{c[:12]} {run.log('-1', '--format=%s', c)}" for c in reverted]
                title = f"Roll back {repo.branch} to {target[:12]}" if to else f"Revert {subjects[0]}"
                message = f"{title}\n\nliminal rollback reverted:\n" + "\n".join(f"- {s}" for s in subjects)
                run.execute(["git", *identity, "commit", "-q", "-m", message])
                new_head = str(run.rev_parse("HEAD"))
                with clone.git.custom_environment(**self._env(repo.url)):
                    run.push("--", repo.url, f"HEAD:refs/heads/{repo.branch}", kill_after_timeout=self.timeout)
            except git.GitCommandError as exc:
                message = sanitize(f"{exc.stderr or exc}".strip(), (self.credentials.token or "",))
                raise SourceError(f"cannot roll back {repo.name}: {message}") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return new_head, reverted

    @staticmethod
    def _rollback_target(repo: RepoRef, run: git.Git, head: str, to: str | None) -> tuple[str, list[str]]:
        """The commit whose files a rollback restores, and the branch's commits it undoes (newest first)."""
        if to is None:
            try:
                return str(run.rev_parse("--verify", f"{head}^1")), [head]
            except git.GitCommandError:
                raise SourceError(
                    f"{repo.name}: {head[:12]} is the first commit of {repo.branch}: there is nothing before it"
                ) from None
        try:
            target = str(run.rev_parse("--verify", "--end-of-options", f"{to}^{{commit}}"))
        except git.GitCommandError:
            raise SourceError(f"{repo.name}: {to!r} is not a commit of {repo.branch}") from None
        try:
            run.merge_base("--is-ancestor", target, head)
        except git.GitCommandError:
            raise SourceError(
                f"{repo.name}: {target[:12]} is not in the history of {repo.branch} (at {head[:12]}):"
                " a rollback goes back to one of the branch's own commits"
            ) from None
        reverted = [c for c in str(run.rev_list("--first-parent", f"{target}..{head}")).split() if c]
        if not reverted:
            raise SourceError(f"{repo.name}: {repo.branch} is at {head[:12]} already: nothing to roll back")
        return target, reverted

    def trees(self, snapshot: Snapshot) -> dict[str, str]:
        """Git's tree id of each directory of the snapshot ('' is the root), leaving out every
        directory that holds a symlink at any depth: a symlink's target is not fixed by the id."""
        mirror = self._mirror(snapshot.repo)
        out = {"": str(mirror.git.rev_parse(f"{snapshot.commit}^{{tree}}"))}
        tainted: set[str] = set()
        for entry in str(mirror.git.ls_tree("-r", "-t", "-z", snapshot.commit)).split("\0"):
            if not entry:
                continue
            meta, path = entry.split("\t", 1)
            mode, kind, oid = meta.split()
            if kind == "tree":
                out[path] = oid
            elif mode == "120000":
                parent = path
                while parent:
                    parent = posixpath.dirname(parent)
                    tainted.add(parent)
        return {path: oid for path, oid in out.items() if path not in tainted}

    def covers(self, repo: RepoRef, applied: str, commits: list[str]) -> bool:
        """True when pushes of `commits` need no fetch: each is `applied` or one of its ancestors
        in the mirror (deliveries may arrive out of order), and the branch on the remote still
        points at `applied` (its ref advertisement: one round trip, no objects). A force-push back to
        an older commit moves the branch, so it is not covered."""
        if not (self._folder(repo) / "mirror.git" / "HEAD").is_file():
            return False
        mirror = self._mirror(repo)
        for commit in set(commits):
            if commit == applied:
                continue
            try:
                mirror.git.merge_base("--is-ancestor", commit, applied)
            except git.GitCommandError:
                return False  # unknown here, or not behind what is live
        return self.remote_heads([repo]).get(repo.name) == applied

    def _mirror(self, repo: RepoRef) -> git.Repo:
        path = self._folder(repo) / "mirror.git"
        if (path / "HEAD").is_file():
            return git.Repo(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # two requests may meet here (a plan and a sync): one makes the mirror, whole, then renames it
        with _exclusive(path.parent / "init.flock"):
            if not (path / "HEAD").is_file():
                staging = Path(tempfile.mkdtemp(prefix=".mirror-", dir=path.parent))
                try:
                    git.Repo.init(staging, bare=True)
                    os.replace(staging, path)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        return git.Repo(path)
