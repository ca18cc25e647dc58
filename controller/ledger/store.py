"""Ledger store: the only code that talks SQL. SQLite (WAL) by default, Postgres by URL.

Each stage transition is one transaction: a run begins, each resource outcome is recorded with
the deployed row it changes, a run finishes. A crash between two of them loses at most the
outcome in flight, and the next reconcile finds it again by observing the target.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from controller.errors import ConfigError, TransientError
from controller.ledger import tables as t
from controller.model import (
    EMPTY,
    Action,
    BuildRecord,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Deployed,
    DeployedState,
    Pruned,
    RepoRef,
    Resource,
    ResourceKey,
    ResourceKind,
    ResourceOutcome,
    ResultCode,
    RunStatus,
    SyncRun,
    Trigger,
)
from controller.render.hashing import plain

__all__ = ["HEAD_REVISION", "Ledger", "RepoStatus"]

HEAD_REVISION = "0008"
"""The newest migration (tests check it is the migrations' head): a ledger already there is
opened without loading Alembic, which costs a CLI command a quarter of a second."""


_KINDS = {k.value: k for k in ResourceKind}
"""Resource kinds by stored value: a dict lookup, not an Enum call, for every deployed row."""


def _drift_values(conn: Connection, repo: str, drift: Sequence[str], now: dt.datetime | None = None) -> dict[str, Any]:
    """The repository's drift columns for the finding `drift`: none when it is the one recorded."""
    recorded = conn.execute(sa.select(t.repositories.c.drift).where(t.repositories.c.name == repo)).scalar()
    found = sorted(drift)
    if list(recorded or []) == found:
        return {}
    return {"drift": found, "drift_observed_at": now or _now()}


def _delivery(row: Any) -> Delivery:
    return Delivery(
        provider=row["provider"],
        delivery_id=row["delivery_id"],
        event=row["event"] or "",
        kind=DeliveryKind(row["kind"] or "other"),
        repo=row["repo"],
        ref=row["ref"],
        commit=row["commit"],
        pull_request=row["pull_request"],
        status=DeliveryStatus(row["status"]),
        reason=row["reason"],
        id=row["id"],
        project=row["project"],
        web_url=row["web_url"],
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class RepoStatus:
    """A repository's sync state, as `liminal status` shows it."""

    repo: RepoRef
    last_attempted_commit: str | None
    last_applied_commit: str | None
    last_run: SyncRun | None
    last_error: str | None
    resources: int
    drift: tuple[str, ...] = ()
    """Resources ("kind/name") whose live state was last seen to differ from git, not restored."""
    drift_observed_at: dt.datetime | None = None
    last_checked_at: dt.datetime | None = None
    """The newest check of the branch: a run, or a poll that found nothing to do (kept as no run)."""
    last_checked_commit: str | None = None

    @property
    def state(self) -> str:
        """`synced` (the last run applied its commit), `drifted` (synced, but live state was since
        changed by hand and not restored: self-heal is off, or restoring failed), `invalid` (the
        newest commit does not validate; the last good one stays live), `degraded` (changes did
        not apply; retried), or `syncing` or `unknown` (never synced)."""
        if self.last_run is None:
            return "unknown"
        if self.last_run.status is RunStatus.RUNNING:
            return "syncing"
        if self.last_run.status is RunStatus.INVALID:
            return "invalid"
        if self.last_run.status in (RunStatus.SUCCEEDED, RunStatus.NOOP):
            return "drifted" if self.drift else "synced"
        return "degraded"


class Ledger:
    """The ledger at `url` (`sqlite:///path` or `postgresql+psycopg://...`), migrated on open."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._server_fd: int | None = None
        if self.is_sqlite:
            path = sa.engine.make_url(url).database
            if not path or path == ":memory:":
                raise ConfigError("the SQLite ledger must be a file (sqlite:///path/ledger.db)")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._lock_dir = Path(path).parent / "locks"
            self.engine: Engine = sa.create_engine(url, connect_args={"timeout": 30})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self._lock_dir = Path()
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        self.migrate()

    def migrate(self) -> None:
        """Bring the schema to the newest migration (Alembic), unless it is there already."""
        try:
            with self.engine.connect() as conn:
                current = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        except sa.exc.SQLAlchemyError:  # a new ledger (no version table), or one that does not answer
            current = None
        if current == HEAD_REVISION:
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(resources.files("controller.ledger") / "migrations"))
        try:
            with self.engine.begin() as conn:
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        except sa.exc.OperationalError as exc:
            raise ConfigError(f"cannot open the ledger at {_safe_url(self.url)}: {exc.orig}") from exc

    def close(self) -> None:
        """Release every connection."""
        self.engine.dispose()

    def problem(self) -> str | None:
        """Why the ledger cannot answer now (None when it can): what `/readyz` reports."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            return f"ledger unreachable: {type(exc).__name__}"
        return None

    def claim_server(self) -> None:
        """Note that this process serves the ledger. A SQLite ledger is served by one process:
        a second `liminal serve` on the same file gets a ConfigError saying so (PostgreSQL takes
        any number of replicas). The claim is an flock, so it ends with the process."""
        if not self.is_sqlite or self._server_fd is not None:
            return
        path = self._lock_dir.parent / (Path(sa.engine.make_url(self.url).database or "ledger.db").name + ".serve")
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 40, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"the SQLite ledger {path.with_suffix('')} is served already (by {holder}); SQLite is single-replica:"
                " stop that `liminal serve`, or run several on a PostgreSQL ledger (LIMINAL_LEDGER_URL)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        self._server_fd = fd

    # ---- repositories ------------------------------------------------------------------------

    def add_repo(self, ref: RepoRef) -> None:
        """Track a repository; its name must be new."""
        with self.engine.begin() as conn:
            if conn.execute(sa.select(t.repositories.c.id).where(t.repositories.c.name == ref.name)).first():
                raise ConfigError(f"a repository named '{ref.name}' is already tracked")
            conn.execute(
                t.repositories.insert().values(
                    name=ref.name,
                    url=ref.url,
                    branch=ref.branch,
                    prune=ref.prune,
                    self_heal=ref.self_heal,
                    created_at=_now(),
                )
            )

    def set_options(self, name: str, *, prune: bool | None = None, self_heal: bool | None = None) -> RepoRef:
        """Change a tracked repository's prune or self-heal switch; returns it as now stored."""
        values = {k: v for k, v in (("prune", prune), ("self_heal", self_heal)) if v is not None}
        with self.engine.begin() as conn:
            repo_id = self._repo_id(conn, name)
            if values:
                conn.execute(t.repositories.update().where(t.repositories.c.id == repo_id).values(**values))
        return self.repo(name)

    def set_drift(self, repo: str, drift: Sequence[str]) -> bool:
        """Record what a drift observation found ("kind/name" of each resource whose live state
        differs from the ledger; empty when everything is as deployed). Written only when it
        differs from what is recorded (a drift check every minute of every repository writes
        nothing while nothing changes), so `drift_observed_at` is when this finding was first
        made. True when it was written."""
        with self.engine.begin() as conn:
            values = _drift_values(conn, repo, drift)
            if values:
                conn.execute(t.repositories.update().where(t.repositories.c.name == repo).values(**values))
            return bool(values)

    def drift_counts(self) -> list[tuple[str, bool, int]]:
        """Each repository's name, self-heal switch and count of resources last seen drifted (one query)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.repositories.c.name, t.repositories.c.self_heal, t.repositories.c.drift).order_by(
                    t.repositories.c.name
                )
            ).all()
        return [(str(name), bool(heal), len(drift or ())) for name, heal, drift in rows]

    def repos(self) -> list[RepoRef]:
        """Every tracked repository, by name."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.repositories).order_by(t.repositories.c.name)).mappings()
            return [_ref(r) for r in rows]

    def repo(self, name: str) -> RepoRef:
        """The tracked repository `name` (ConfigError when unknown)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.repositories).where(t.repositories.c.name == name)).mappings().first()
        if row is None:
            raise ConfigError(f"no tracked repository named '{name}' (see `liminal repo list`)")
        return _ref(row)

    def _repo_id(self, conn: Connection, name: str) -> int:
        found = conn.execute(sa.select(t.repositories.c.id).where(t.repositories.c.name == name)).scalar()
        if found is None:
            raise ConfigError(f"no tracked repository named '{name}'")
        return int(found)

    # ---- locking -----------------------------------------------------------------------------

    @contextmanager
    def lock(self, repo: str, *, wait: bool = True) -> Iterator[None]:
        """Hold the repository's apply lock: one controller process applies a repository at a time.

        Postgres: a session advisory lock; SQLite: an flock on a file beside the database. Both
        are released by the OS or server when the process dies, so a crash never leaves it held.
        """
        key = int.from_bytes(hashlib.sha256(f"liminal:{repo}".encode()).digest()[:8], "big", signed=True)
        if not self.is_sqlite:
            with self.engine.connect() as conn:
                if wait:
                    conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                elif not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                    raise TransientError(f"repository '{repo}' is being synced by another process", retry_after=5)
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
            return
        self._lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_dir / f"{key & 0xFFFFFFFFFFFF:012x}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise TransientError(f"repository '{repo}' is being synced by another process", retry_after=5) from exc
            yield
        finally:
            os.close(fd)

    # ---- runs --------------------------------------------------------------------------------

    def begin_run(self, repo: str, trigger: Trigger) -> int:
        """Start a run (under the repository lock); a run left RUNNING by a crash is closed as failed."""
        with self.engine.begin() as conn:
            repo_id = self._repo_id(conn, repo)
            conn.execute(
                t.runs.update()
                .where(t.runs.c.repo_id == repo_id, t.runs.c.status == RunStatus.RUNNING.value)
                .values(status=RunStatus.FAILED.value, finished_at=_now(), error="interrupted (process ended)")
            )
            run_id = conn.execute(
                t.runs.insert().values(
                    repo_id=repo_id, trigger=trigger.value, status=RunStatus.RUNNING.value, started_at=_now()
                )
            ).inserted_primary_key
            assert run_id is not None
            conn.execute(t.repositories.update().where(t.repositories.c.id == repo_id).values(last_run_id=run_id[0]))
            return int(run_id[0])

    def set_attempted(self, run_id: int, repo: str, commit: str) -> None:
        """Record the commit this run is trying (Flux's lastAttemptedRevision)."""
        with self.engine.begin() as conn:
            conn.execute(t.runs.update().where(t.runs.c.id == run_id).values(commit=commit))
            conn.execute(
                t.repositories.update().where(t.repositories.c.name == repo).values(last_attempted_commit=commit)
            )

    def record(self, run_id: int, outcome: ResourceOutcome, resource: Resource | None, commit: str) -> None:
        """Record one outcome and, in the same transaction, what is now deployed for its resource."""
        key = outcome.key
        with self.engine.begin() as conn:
            repo_id = self._repo_id(conn, key.repo)
            conn.execute(
                t.outcomes.insert().values(
                    run_id=run_id,
                    kind=key.kind.value,
                    name=key.name,
                    action=outcome.action.value,
                    code=outcome.code.value,
                    content_hash=outcome.content_hash,
                    message=outcome.message,
                    at=_now(),
                )
            )
            where = sa.and_(
                t.deployed.c.repo_id == repo_id, t.deployed.c.kind == key.kind.value, t.deployed.c.name == key.name
            )
            if outcome.code is ResultCode.DELETED:
                conn.execute(t.deployed.delete().where(where))
            elif outcome.code.ok and resource is not None:
                conn.execute(t.deployed.delete().where(where))
                conn.execute(
                    t.deployed.insert().values(
                        repo_id=repo_id,
                        kind=key.kind.value,
                        name=key.name,
                        content_hash=resource.content_hash,
                        commit=commit,
                        body=plain(resource.body),
                        updated_at=_now(),
                    )
                )

    def finish_run(
        self,
        run_id: int,
        repo: str,
        status: RunStatus,
        *,
        error: str | None = None,
        summary: Mapping[str, Any] | None = None,
        applied_commit: str | None = None,
        drift: Sequence[str] | None = None,
        forget_if_unchanged: bool = False,
    ) -> bool:
        """Close a run; `applied_commit` moves last_applied only when every change succeeded;
        `drift` (when the run observed the targets) is what it left drifted. With
        `forget_if_unchanged`, a run whose previous run ended ok at the same commit is deleted
        instead (a poll that found nothing to do): only the repository's last check moves.
        True when the run is kept."""
        now = _now()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(t.runs.c.repo_id, t.runs.c.commit).where(t.runs.c.id == run_id)).one()
            values: dict[str, Any] = {"last_error": error, "last_checked_at": now, "last_checked_commit": row.commit}
            if drift is not None:
                values |= _drift_values(conn, repo, drift, now)
            previous = None
            if forget_if_unchanged:
                previous = conn.execute(
                    sa.select(t.runs.c.id, t.runs.c.status, t.runs.c.commit)
                    .where(t.runs.c.repo_id == row.repo_id, t.runs.c.id < run_id)
                    .order_by(t.runs.c.id.desc())
                    .limit(1)
                ).first()
            unchanged = (
                previous is not None
                and previous.commit == row.commit
                and previous.status in (RunStatus.SUCCEEDED.value, RunStatus.NOOP.value)
            )
            if unchanged:
                assert previous is not None
                conn.execute(t.runs.delete().where(t.runs.c.id == run_id))
                values["last_run_id"] = previous.id
            else:
                conn.execute(
                    t.runs.update()
                    .where(t.runs.c.id == run_id)
                    .values(status=status.value, finished_at=now, error=error, summary=dict(summary or {}))
                )
                if applied_commit is not None:
                    values["last_applied_commit"] = applied_commit
            conn.execute(t.repositories.update().where(t.repositories.c.name == repo).values(**values))
            return not unchanged

    def record_build(self, record: BuildRecord) -> None:
        """Record one image build or push (`built`, `pushed` or `failed`) with the registry digest."""
        finished = _now()
        with self.engine.begin() as conn:
            conn.execute(
                t.image_builds.insert().values(
                    repo_id=self._repo_id(conn, record.repo),
                    image=record.image,
                    tag=record.tag,
                    content_hash=record.content_hash,
                    status=record.status,
                    started_at=finished - dt.timedelta(seconds=record.seconds),
                    finished_at=finished,
                    message=record.message,
                    digest=record.digest,
                    seconds=record.seconds,
                )
            )

    def builds(self, repo: str) -> list[dict[str, Any]]:
        """The repository's image builds, oldest first."""
        with self.engine.connect() as conn:
            repo_id = self._repo_id(conn, repo)
            rows = conn.execute(
                sa.select(t.image_builds).where(t.image_builds.c.repo_id == repo_id).order_by(t.image_builds.c.id)
            ).mappings()
            return [dict(r) for r in rows]

    def applied_commit(self, repo: str) -> str | None:
        """The commit whose state is live for `repo` (None before the first applied sync)."""
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(t.repositories.c.last_applied_commit).where(t.repositories.c.name == repo)
            ).scalar()
        return str(found) if found else None

    # ---- webhook deliveries ------------------------------------------------------------------

    def record_delivery(self, delivery: Delivery, claimed_by: str | None = None) -> int | None:
        """Record a delivery before it is acknowledged (claimed by the replica `claimed_by`, which
        processes it): its row id, or None when its id was seen before (a replay)."""
        return self.record_deliveries([delivery], claimed_by)[0]

    def record_deliveries(self, deliveries: Sequence[Delivery], claimed_by: str | None = None) -> list[int | None]:
        """Record deliveries in one transaction (a group commit: one disk sync for many), each
        claimed by `claimed_by`: per delivery its row id, or None when its (provider, id) was seen
        before, in the ledger or earlier in `deliveries` (a replay)."""
        if not deliveries:
            return []
        keys = [(d.provider, d.delivery_id) for d in deliveries]
        try:
            with self.engine.begin() as conn:
                return self._insert_new(conn, deliveries, keys, claimed_by)
        except sa.exc.IntegrityError:
            # another replica recorded one of them between the read and the insert: one by one,
            # so the others are still recorded and only the replay gets None
            if len(deliveries) == 1:
                return [None]
            return [self.record_deliveries([d], claimed_by)[0] for d in deliveries]

    def _insert_new(
        self, conn: Connection, deliveries: Sequence[Delivery], keys: list[tuple[str, str]], claimed_by: str | None
    ) -> list[int | None]:
        c = t.deliveries.c
        fresh = self._unseen(conn, keys)
        out: list[int | None] = [None] * len(deliveries)
        if not fresh:
            return out
        now = _now()
        rows = [
            {
                "provider": d.provider,
                "delivery_id": d.delivery_id,
                "event": d.event,
                "kind": d.kind,
                "repo": d.repo,
                "ref": d.ref,
                "commit": d.commit,
                "pull_request": d.pull_request,
                "project": d.project,
                "web_url": d.web_url,
                "status": d.status,
                "reason": d.reason,
                "received_at": now,
                "processed_at": None if d.status == "queued" else now,
                "claimed_by": claimed_by,
            }
            for d in (deliveries[i] for i in fresh)
        ]
        inserted = conn.execute(t.deliveries.insert().returning(c.id, sort_by_parameter_order=True), rows)
        for i, (row_id,) in zip(fresh, inserted, strict=True):
            out[i] = int(row_id)
        return out

    @staticmethod
    def _unseen(conn: Connection, keys: list[tuple[str, str]]) -> list[int]:
        """Positions in `keys` of (provider, delivery id) pairs neither in the ledger nor earlier in `keys`."""
        c = t.deliveries.c
        seen = {
            (row.provider, row.delivery_id)
            for row in conn.execute(
                sa.select(c.provider, c.delivery_id).where(sa.tuple_(c.provider, c.delivery_id).in_(set(keys)))
            )
        }
        fresh: list[int] = []
        for i, key in enumerate(keys):
            if key not in seen:
                seen.add(key)
                fresh.append(i)
        return fresh

    def claim_orphans(self, replica: str, stale_after: float) -> list[Delivery]:
        """Claim, for `replica`, the queued deliveries no live replica holds: never claimed, or
        claimed by one whose heartbeat is older than `stale_after` seconds (it died; a crash
        left them). Oldest first. Two replicas claiming at once get disjoint sets (PostgreSQL:
        `FOR UPDATE SKIP LOCKED`; SQLite serves one replica)."""
        beating = t.replicas.c.heartbeat_at >= _now() - dt.timedelta(seconds=stale_after)
        alive = sa.select(t.replicas.c.id).where(beating)
        holder = t.deliveries.c.claimed_by
        with self.engine.begin() as conn:
            rows = list(
                conn.execute(
                    sa.select(t.deliveries)
                    .where(
                        t.deliveries.c.status == DeliveryStatus.QUEUED.value,
                        sa.or_(holder.is_(None), sa.and_(holder != replica, holder.not_in(alive))),
                    )
                    .order_by(t.deliveries.c.id)
                    .limit(500)
                    .with_for_update(skip_locked=True)
                ).mappings()
            )
            if rows:
                conn.execute(
                    t.deliveries.update()
                    .where(t.deliveries.c.id.in_([r["id"] for r in rows]))
                    .values(claimed_by=replica)
                )
        return [_delivery(r) for r in rows]

    # ---- replicas ----------------------------------------------------------------------------

    def join(self, replica: str, host: str, pid: int) -> None:
        """Register a serving replica (its heartbeat starts now)."""
        now = _now()
        with self.engine.begin() as conn:
            if self._server_fd is not None:  # SQLite, served by this process alone: any other is dead
                conn.execute(t.replicas.delete())
            conn.execute(t.replicas.delete().where(t.replicas.c.id == replica))
            conn.execute(t.replicas.insert().values(id=replica, host=host, pid=pid, started_at=now, heartbeat_at=now))

    def beat(self, replica: str) -> None:
        """Say that `replica` is alive (its claims stay its own while it beats). On SQLite one
        server holds the ledger (`claim_server`): no other replica reads the beat, none is written."""
        if self.is_sqlite:
            return
        with self.engine.begin() as conn:
            conn.execute(t.replicas.update().where(t.replicas.c.id == replica).values(heartbeat_at=_now()))

    def leave(self, replica: str) -> None:
        """Unregister a replica that stops cleanly; what it claimed and did not finish is free at once."""
        with self.engine.begin() as conn:
            conn.execute(
                t.deliveries.update()
                .where(t.deliveries.c.claimed_by == replica, t.deliveries.c.status == DeliveryStatus.QUEUED.value)
                .values(claimed_by=None)
            )
            conn.execute(t.replicas.delete().where(t.replicas.c.id == replica))

    def replicas(self, stale_after: float) -> list[dict[str, Any]]:
        """The replicas whose heartbeat is newer than `stale_after` seconds."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.replicas)
                .where(t.replicas.c.heartbeat_at >= _now() - dt.timedelta(seconds=stale_after))
                .order_by(t.replicas.c.started_at)
            ).mappings()
            return [dict(r) for r in rows]

    def claim_duty(self, repo: str, duty: str, every: float) -> bool:
        """Take `repo`'s `duty` (`poll` or `drift`) unless a replica took it within the last
        `every` seconds: one conditional update, so of replicas asking at once one gets it."""
        if self.is_sqlite:
            return True  # one replica serves a SQLite ledger (claim_server): nobody to share with
        column = {"poll": t.repositories.c.poll_claimed_at, "drift": t.repositories.c.drift_claimed_at}[duty]
        now = _now()
        with self.engine.begin() as conn:
            done = conn.execute(
                t.repositories.update()
                .where(
                    t.repositories.c.name == repo,
                    sa.or_(column.is_(None), column <= now - dt.timedelta(seconds=every)),
                )
                .values({column.key: now})
            )
            return bool(done.rowcount)

    # ---- retention ---------------------------------------------------------------------------

    def prune_history(self, older_than: dt.timedelta, keep_runs: int) -> Pruned:
        """Delete runs (with their outcomes), processed deliveries and image build records older
        than `older_than`, keeping each repository's newest `keep_runs` runs and its last run,
        every queued delivery, and the newest build of each image. What is deployed (the live
        state) is never touched."""
        cutoff = _now() - older_than
        keep_runs = max(1, keep_runs)
        runs = outcomes = 0
        with self.engine.begin() as conn:
            for repo_id, last_run in conn.execute(sa.select(t.repositories.c.id, t.repositories.c.last_run_id)).all():
                newest_kept = conn.execute(
                    sa.select(t.runs.c.id)
                    .where(t.runs.c.repo_id == repo_id)
                    .order_by(t.runs.c.id.desc())
                    .offset(keep_runs - 1)
                    .limit(1)
                ).scalar()
                if newest_kept is None:
                    continue
                old = sa.and_(
                    t.runs.c.repo_id == repo_id,
                    t.runs.c.id < newest_kept,
                    t.runs.c.started_at < cutoff,
                    t.runs.c.status != RunStatus.RUNNING.value,
                    t.runs.c.id != (last_run or -1),
                )
                ids = sa.select(t.runs.c.id).where(old).scalar_subquery()
                outcomes += conn.execute(t.outcomes.delete().where(t.outcomes.c.run_id.in_(ids))).rowcount
                runs += conn.execute(t.runs.delete().where(old)).rowcount
            deliveries = conn.execute(
                t.deliveries.delete().where(
                    t.deliveries.c.received_at < cutoff, t.deliveries.c.status != DeliveryStatus.QUEUED.value
                )
            ).rowcount
            newest_builds = (
                sa.select(sa.func.max(t.image_builds.c.id))
                .group_by(t.image_builds.c.repo_id, t.image_builds.c.image)
                .scalar_subquery()
            )
            builds = conn.execute(
                t.image_builds.delete().where(
                    t.image_builds.c.started_at < cutoff, t.image_builds.c.id.not_in(newest_builds)
                )
            ).rowcount
        return Pruned(runs=runs, outcomes=outcomes, deliveries=deliveries, builds=builds)

    def size(self) -> dict[str, int]:
        """Rows per table (for `liminal status` and the soak benchmark)."""
        tables = {
            "runs": t.runs,
            "outcomes": t.outcomes,
            "deliveries": t.deliveries,
            "builds": t.image_builds,
            "deployed": t.deployed,
        }
        with self.engine.connect() as conn:
            return {
                name: int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)
                for name, table in tables.items()
            }

    def finish_deliveries(
        self, ids: list[int], status: DeliveryStatus, reason: str | None = None, result: dict[str, Any] | None = None
    ) -> None:
        """Mark deliveries processed (or ignored), with why (and a pull-request check's result)."""
        if not ids:
            return
        values: dict[str, Any] = {"status": status.value, "reason": reason, "processed_at": _now()}
        if result is not None:
            values["result"] = plain(result)
        with self.engine.begin() as conn:
            conn.execute(t.deliveries.update().where(t.deliveries.c.id.in_(ids)).values(**values))

    def delivery(self, provider: str, delivery_id: str) -> tuple[Delivery, dict[str, Any] | None] | None:
        """One delivery and its check result, by the provider's delivery id."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    sa.select(t.deliveries).where(
                        t.deliveries.c.provider == provider, t.deliveries.c.delivery_id == delivery_id
                    )
                )
                .mappings()
                .first()
            )
        return None if row is None else (_delivery(row), row["result"])

    def newer_head(self, delivery: Delivery) -> str | None:
        """The head of the newest delivery after `delivery` for the same pull request, when it
        names another commit (the check of `delivery`'s head is then superseded)."""
        d = t.deliveries.c
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(d.commit)
                .where(
                    d.provider == delivery.provider,
                    d.repo == delivery.repo,
                    d.pull_request == delivery.pull_request,
                    d.kind == DeliveryKind.PULL_REQUEST.value,
                    d.id > (delivery.id or 0),
                )
                .order_by(d.id.desc())
                .limit(1)
            ).scalar()
        return found if found and found != delivery.commit else None

    def deliveries(self, limit: int = 50) -> list[Delivery]:
        """The newest deliveries first."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.deliveries).order_by(t.deliveries.c.id.desc()).limit(limit)).mappings()
            return [_delivery(r) for r in rows]

    # ---- reads -------------------------------------------------------------------------------

    def deployed_state(self, repo: str, *, bodies: bool | Set[ResourceKey] = True) -> DeployedState:
        """What the ledger says is deployed for `repo`: hashes and commits, and the bodies
        (stored JSON, the bulk of the rows) of all resources, of none, or of the keys given."""
        d = t.deployed.c
        with self.engine.connect() as conn:
            repo_id = self._repo_id(conn, repo)
            columns = [d.kind, d.name, d.content_hash, d.commit] + ([d.body] if bodies is True else [])
            out = {}
            for row in conn.execute(sa.select(*columns).where(d.repo_id == repo_id)):
                key = ResourceKey(repo, _KINDS[row[0]], row[1])
                out[key] = Deployed(key, row[2], row[3], row[4] if bodies is True else EMPTY)
            if bodies is not True and bodies:
                names = sorted({k.name for k in bodies if k in out})
                for chunk in (names[i : i + 500] for i in range(0, len(names), 500)):
                    query = sa.select(d.kind, d.name, d.body).where(d.repo_id == repo_id, d.name.in_(chunk))
                    for r in conn.execute(query).mappings():
                        key = ResourceKey(repo, ResourceKind(r["kind"]), r["name"])
                        if key in bodies:
                            out[key] = dataclasses.replace(out[key], body=r["body"])
        return DeployedState(out)

    def history(self, repo: str | None = None, limit: int = 20) -> list[SyncRun]:
        """The newest runs first, with their outcomes."""
        with self.engine.connect() as conn:
            query = (
                sa.select(t.runs, t.repositories.c.name)
                .join(t.repositories, t.repositories.c.id == t.runs.c.repo_id)
                .order_by(t.runs.c.id.desc())
                .limit(limit)
            )
            if repo is not None:
                query = query.where(t.repositories.c.name == repo)
            rows = list(conn.execute(query).mappings())
            ids = [r["id"] for r in rows]
            names = {r["id"]: r["name"] for r in rows}
            found: dict[int, list[ResourceOutcome]] = {i: [] for i in ids}
            if ids:
                for o in conn.execute(
                    sa.select(t.outcomes).where(t.outcomes.c.run_id.in_(ids)).order_by(t.outcomes.c.id)
                ).mappings():
                    found[o["run_id"]].append(_outcome(names[o["run_id"]], o))
        return [_run(r, tuple(found[r["id"]])) for r in rows]

    def synced_commit(self, repo: str) -> str | None:
        """The commit live for `repo` when its last run applied it; None otherwise."""
        found = self.status(repo)
        ok = found.last_run is not None and found.last_run.status in (RunStatus.SUCCEEDED, RunStatus.NOOP)
        same = found.last_applied_commit is not None and found.last_applied_commit == found.last_attempted_commit
        return found.last_applied_commit if ok and same else None

    def status(self, repo: str) -> RepoStatus:
        """The repository's attempted/applied commits, last run and resource count."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.repositories).where(t.repositories.c.name == repo)).mappings().first()
            if row is None:
                raise ConfigError(f"no tracked repository named '{repo}' (see `liminal repo list`)")
            count = conn.execute(
                sa.select(sa.func.count()).select_from(t.deployed).where(t.deployed.c.repo_id == row["id"])
            ).scalar()
        runs = self.history(repo, limit=1)
        return RepoStatus(
            repo=_ref(row),
            last_attempted_commit=row["last_attempted_commit"],
            last_applied_commit=row["last_applied_commit"],
            last_run=runs[0] if runs else None,
            last_error=row["last_error"],
            resources=int(count or 0),
            drift=tuple(row["drift"] or ()),
            drift_observed_at=row["drift_observed_at"],
            last_checked_at=row["last_checked_at"],
            last_checked_commit=row["last_checked_commit"],
        )


def _sqlite_pragmas(dbapi_connection: Any, record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _safe_url(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _ref(row: sa.RowMapping) -> RepoRef:
    return RepoRef(
        name=row["name"],
        url=row["url"],
        branch=row["branch"],
        prune=bool(row["prune"]),
        self_heal=bool(row["self_heal"]),
    )


def _outcome(repo: str, row: sa.RowMapping) -> ResourceOutcome:
    return ResourceOutcome(
        key=ResourceKey(repo, ResourceKind(row["kind"]), row["name"]),
        action=Action(row["action"]),
        code=ResultCode(row["code"]),
        content_hash=row["content_hash"],
        message=row["message"],
    )


def _run(row: sa.RowMapping, outcomes: tuple[ResourceOutcome, ...]) -> SyncRun:
    return SyncRun(
        id=row["id"],
        repo=row["name"],
        trigger=Trigger(row["trigger"]),
        commit=row["commit"],
        status=RunStatus(row["status"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        outcomes=outcomes,
        summary=row["summary"] or {},
    )
