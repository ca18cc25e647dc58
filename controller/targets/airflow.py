"""Airflow target: DAG payloads into the dags folder, made live through Airflow 3's REST API.

A repository's pipelines are defined by its one loader file (see controller.targets.dag_folder),
so a new or changed pipeline of a known repository goes live by asking Airflow to reparse that
file (`PUT /parseDagFile/{file_token}`), in about half a second, instead of waiting for the DAG
processor's own schedule. Only a repository's first pipeline waits for Airflow to list the folder.

Never half-deployed: a loader file fails as a whole when one payload does not build (the loader
names each failing payload). The failing payloads are put back as they were, their changes
marked FAILED with Airflow's error text, and the file is parsed again, so the other pipelines'
changes stay applied and the previous version of the failing one is live again.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import structlog

from controller.errors import LiminalError, TargetError, TransientError
from controller.model import DagFile, Deployed, Resource, ResourceKey, ResultCode, Snapshot, TargetResult
from controller.render.dag_loader import PIPELINE_ERROR_MARK
from controller.render.dags import repo_loader
from controller.targets.airflow_api import AirflowApi, DagInfo, ImportErrorInfo
from controller.targets.dag_folder import DagFolderTarget

__all__ = ["AirflowTarget"]

log = structlog.get_logger("liminal.airflow")

_FAILURE_LINE = re.compile("^" + re.escape(PIPELINE_ERROR_MARK) + r"(.+?)\.json: (.*)$", re.MULTILINE)
_POLL = 0.1


@dataclass(frozen=True, slots=True)
class _Parse:
    """How one parse of a loader file ended: failures by dag_id, or a whole-file error."""

    failures: Mapping[str, str]
    file_error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the file parsed cleanly."""
        return not self.failures and self.file_error is None


class AirflowTarget:
    """Observe, apply and delete DAGs in a running Airflow 3 (dags folder + REST API v2)."""

    watches_drift = True

    def __init__(self, folder: DagFolderTarget, api: AirflowApi, *, parse_timeout: float = 60.0) -> None:
        self.folder = folder
        self.api = api
        self.parse_timeout = parse_timeout

    # ---- observe --------------------------------------------------------------------------------

    def observe(self, resources: Sequence[Resource]) -> Mapping[ResourceKey, str | None]:
        """A DAG is live when its payload file holds the hash and Airflow shows that version active."""
        on_disk = self.folder.observe(resources)
        out: dict[ResourceKey, str | None] = {}
        live: dict[str, dict[str, DagInfo]] = {}
        for r in resources:
            found = on_disk.get(r.key)
            if found is None:
                out[r.key] = None
                continue
            if r.key.repo not in live:
                live[r.key.repo] = self.api.dags_tagged(_repo_tag(r.key.repo))
            dag = live[r.key.repo].get(r.key.name)
            out[r.key] = found if _is_live(dag, _commit_tag(self.folder.read(r.key))) else None
        return out

    # ---- apply ----------------------------------------------------------------------------------

    def apply(self, resources: Sequence[Resource], source: Snapshot) -> Iterator[TargetResult]:
        """Write the payloads, have Airflow parse the repository's loader file, and report per DAG."""
        by_repo: dict[str, list[Resource]] = {}
        for r in resources:
            by_repo.setdefault(r.key.repo, []).append(r)
        for repo, group in by_repo.items():
            yield from self._apply_repo(repo, group)

    def _apply_repo(self, repo: str, resources: list[Resource]) -> Iterator[TargetResult]:
        loader = repo_loader(repo)[0]
        bound = log.bind(repo=repo, file=loader)
        before = self._dags_of_file(repo, loader)
        pending: dict[str, Resource] = {}
        previous: dict[str, str | None] = {}
        for r in resources:
            clash = None if r.key.name in before else self._clash(r.key.name, loader)
            if clash:
                yield _failed(r, clash)
                continue
            previous[r.key.name] = self.folder.read(r.key)
            try:
                self.folder.write(r.key, _dag_of(r).payload)
            except LiminalError as exc:
                yield _failed(r, str(exc))
                continue
            pending[r.key.name] = r
        if not pending:
            return
        started = time.monotonic()
        parse = self._parse(repo, loader, before, pending)
        for _ in range(len(pending) + 1):
            if parse.ok:
                break
            # put back what was live before each failing payload (a new one is removed), then parse
            # again: the other changes stay applied and the previous version of the failing one is live
            failing = {n: m for n, m in parse.failures.items() if n in pending}
            if not failing:  # the file fails for a reason no payload of ours explains: put all back
                failing = dict.fromkeys(pending, parse.file_error or "the loader file does not import")
            for name, message in failing.items():
                r = pending.pop(name)
                self.folder.write(r.key, previous[name])
                bound.warning("airflow.import_failed", dag_id=name, error=message)
                yield _failed(r, f"Airflow could not import it: {message}")
            parse = self._parse(repo, loader, before, pending)
        if not parse.ok:  # still failing with every change of ours put back: not ours to fix here
            for r in pending.values():
                yield _failed(r, f"Airflow could not import {loader}: {parse.file_error or parse.failures}")
            pending.clear()
        for r in pending.values():
            self._set_pause(r)
            message = f"live in Airflow ({loader})"
            yield TargetResult(r.key, ResultCode.APPLIED, message)
        bound.info("airflow.parsed", dags=len(pending), ok=parse.ok, seconds=round(time.monotonic() - started, 3))

    def _clash(self, dag_id: str, loader: str) -> str | None:
        other = self.api.dag(dag_id)
        if other is None or other.is_stale or other.relative_fileloc in (None, loader):
            return None
        return f"dag_id {dag_id!r} is already defined in Airflow by {other.relative_fileloc}"

    def _parse(self, repo: str, loader: str, before: Mapping[str, DagInfo], wanted: Mapping[str, Resource]) -> _Parse:
        """Ask Airflow to parse `loader` now; wait until it parses cleanly with every wanted DAG
        showing its new commit, or fails (a new import error)."""
        old_error = self.api.import_error(loader)
        token = next((d.file_token for d in before.values()), None)
        if token is not None:
            self.api.reparse(token)
        tags = {name: _commit_tag(_dag_of(r).payload) for name, r in wanted.items()}
        serialized: set[str] = set()  # DAGs whose serialized version was seen new: not asked again
        deadline = time.monotonic() + self.parse_timeout
        while True:
            error = self.api.import_error(loader)
            if error is not None and (old_error is None or error.timestamp != old_error.timestamp):
                return _failures_of(error)
            now = self._dags_of_file(repo, loader)
            waiting = sorted(n for n, tag in tags.items() if not _is_live(now.get(n), tag))
            if error is None and not waiting:
                # the DAG table is updated; wait for each serialized DAG (what runs) to be the new one
                for name in set(wanted) - serialized:
                    if wanted[name].content_hash in (self.api.dag_doc(name) or ""):
                        serialized.add(name)
                waiting = sorted(set(wanted) - serialized)
                if not waiting:
                    return _Parse({})
            if time.monotonic() > deadline:
                raise TransientError(
                    f"Airflow did not show {', '.join(waiting) or 'a clean parse'} of {loader} within "
                    f"{self.parse_timeout:g} s (is its dag-processor running? is [core] "
                    "min_serialized_dag_update_interval longer than that?)",
                    retry_after=30,
                )
            time.sleep(_POLL)

    def _dags_of_file(self, repo: str, loader: str) -> dict[str, DagInfo]:
        return {k: v for k, v in self.api.dags_tagged(_repo_tag(repo)).items() if v.relative_fileloc == loader}

    def _set_pause(self, r: Resource) -> None:
        wanted = json.loads(_dag_of(r).payload).get("paused")
        if wanted is None:
            return  # as Liminal: Airflow's default at creation, then the users' choice
        current = self.api.dag(r.key.name)
        if current is not None and current.is_paused != wanted:
            self.api.set_paused(r.key.name, bool(wanted))

    # ---- delete ---------------------------------------------------------------------------------

    def delete(self, deployed: Deployed) -> TargetResult:
        """Pause the DAG, remove its payload, let Airflow parse the file without it, then delete the DAG."""
        dag_id, repo = deployed.key.name, deployed.key.repo
        loader = repo_loader(repo)[0]
        before = self._dags_of_file(repo, loader)
        current = before.get(dag_id)
        if current is not None and not current.is_paused:
            self.api.set_paused(dag_id, True)
        self.folder.write(deployed.key, None)
        others = {k: v for k, v in before.items() if k != dag_id and not v.is_stale}
        if current is None:
            # not ours in Airflow (absent, or another file's DAG of that id): only our payload goes
            return TargetResult(deployed.key, ResultCode.DELETED, "payload removed")
        if others and self.folder.loader_path(repo).exists():
            # the file must be parsed without it first, or the next parse would define it again
            mark = max((d.last_parsed_time for d in others.values() if d.last_parsed_time), default=None)
            self.api.reparse(current.file_token)
            deadline = time.monotonic() + self.parse_timeout
            while not _parsed_since(self._dags_of_file(repo, loader), others, mark):
                if time.monotonic() > deadline:
                    raise TransientError(f"Airflow did not parse {loader} within {self.parse_timeout:g} s", 30)
                time.sleep(_POLL)
        self.api.delete_dag(dag_id)
        return TargetResult(deployed.key, ResultCode.DELETED, "paused and deleted in Airflow")


def _parsed_since(now: Mapping[str, DagInfo], others: Mapping[str, DagInfo], mark: dt.datetime | None) -> bool:
    times = [now[k].last_parsed_time for k in others if k in now and now[k].last_parsed_time]
    return bool(times) and (mark is None or max(t for t in times if t) > mark)


def _repo_tag(repo: str) -> str:
    return f"repo:{repo}"[:100]  # as stamp_payload writes it


def _commit_tag(payload: str | None) -> str:
    """The `commit:` tag the loader gives a DAG built from `payload` ("" when it has none)."""
    try:
        commit = json.loads(payload or "{}").get("origin", {}).get("commit") or ""
    except (ValueError, AttributeError):
        return ""
    return f"commit:{commit[:12]}" if commit else ""


def _is_live(dag: DagInfo | None, commit_tag: str) -> bool:
    return dag is not None and not dag.is_stale and (not commit_tag or commit_tag in dag.tags)


def _failures_of(error: ImportErrorInfo) -> _Parse:
    failures = {m.group(1): m.group(2).strip() for m in _FAILURE_LINE.finditer(error.stack_trace)}
    if failures:
        return _Parse(failures)
    lines = [line for line in error.stack_trace.strip().splitlines() if line.strip()]
    return _Parse({}, file_error=lines[-1].strip() if lines else "the loader file does not import")


def _dag_of(resource: Resource) -> DagFile:
    if not isinstance(resource.artifact, DagFile):
        raise TargetError(str(resource.key), "not a DAG")
    return resource.artifact


def _failed(r: Resource, message: str) -> TargetResult:
    return TargetResult(r.key, ResultCode.FAILED, message)
