"""The few Airflow 3 REST API v2 calls the Airflow target makes (apache-airflow-client).

Authenticates with a JWT from `POST /auth/token` (username and password), or a given token; a
401 fetches a new one once. An unreachable or failing server is a TransientError (the loop
retries after its retry_after, see controller.sync.requeue); refused credentials are a
TargetError. No credential is ever put in an error message.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from airflow_client import client as af
from airflow_client.client.api import dag_api, dag_parsing_api, import_error_api
from airflow_client.client.exceptions import ApiException

from controller.errors import TargetError, TransientError, short_reason

__all__ = ["AirflowApi", "DagInfo", "ImportErrorInfo"]

T = TypeVar("T")
_PAGE = 100
_BACKOFF = (0.5, 1.5)


@dataclass(frozen=True, slots=True)
class DagInfo:
    """What Airflow says of one DAG."""

    dag_id: str
    relative_fileloc: str | None
    file_token: str
    is_stale: bool
    is_paused: bool
    last_parsed_time: dt.datetime | None
    tags: frozenset[str]


@dataclass(frozen=True, slots=True)
class ImportErrorInfo:
    """An import error Airflow recorded for one file."""

    filename: str
    timestamp: dt.datetime | None
    stack_trace: str


class AirflowApi:
    """A thread-safe client for the REST API at `url` (e.g. http://127.0.0.1:8080)."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._username = username
        self._password = password
        self._static_token = token
        self._timeout = timeout
        self._lock = threading.Lock()
        self._api: af.ApiClient | None = None

    # ---- calls ----------------------------------------------------------------------------------

    def dags_tagged(self, tag: str) -> dict[str, DagInfo]:
        """Every DAG (stale ones included) carrying `tag`, by dag_id."""

        def page_at(api: af.ApiClient, offset: int) -> Any:
            return dag_api.DAGApi(api).get_dags(
                tags=[tag], exclude_stale=False, limit=_PAGE, offset=offset, _request_timeout=self._timeout
            )

        out: dict[str, DagInfo] = {}
        offset = 0
        while True:
            page = self._call(functools.partial(page_at, offset=offset))
            for dag in page.dags:
                out[dag.dag_id] = _dag_info(dag)
            offset += len(page.dags)
            if not page.dags or offset >= page.total_entries:
                return out

    def dag(self, dag_id: str) -> DagInfo | None:
        """One DAG, or None when Airflow has none of that id."""
        try:
            found = self._call(lambda api: dag_api.DAGApi(api).get_dag(dag_id, _request_timeout=self._timeout))
        except _NotFoundError:
            return None
        return _dag_info(found)

    def dag_doc(self, dag_id: str) -> str | None:
        """The doc_md of the DAG's latest serialized version: what the scheduler and workers run
        (the DAG list shows the DAG table, which a parse updates even when the serialized DAG
        is not rewritten, for example within [core] min_serialized_dag_update_interval)."""
        try:
            found = self._call(lambda api: dag_api.DAGApi(api).get_dag_details(dag_id, _request_timeout=self._timeout))
        except _NotFoundError:
            return None
        return str(found.doc_md) if found.doc_md else None

    def import_error(self, filename: str) -> ImportErrorInfo | None:
        """The import error recorded for `filename` (relative to its bundle), if any."""
        found = self._call(
            lambda api: import_error_api.ImportErrorApi(api).get_import_errors(
                filename=filename, limit=1, _request_timeout=self._timeout
            )
        )
        for error in found.import_errors:
            return ImportErrorInfo(str(error.filename), error.timestamp, str(error.stack_trace or ""))
        return None

    def reparse(self, file_token: str) -> None:
        """Ask the DAG processor to parse the file now (ahead of its own schedule)."""
        self._call(
            lambda api: dag_parsing_api.DAGParsingApi(api).reparse_dag_file(file_token, _request_timeout=self._timeout)
        )

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause a DAG."""
        body = af.DAGPatchBody(is_paused=paused)
        self._call(
            lambda api: dag_api.DAGApi(api).patch_dag(
                dag_id, body, update_mask=["is_paused"], _request_timeout=self._timeout
            )
        )

    def delete_dag(self, dag_id: str) -> None:
        """Delete a DAG and its history from Airflow's database (absent counts as deleted)."""
        try:
            self._call(lambda api: dag_api.DAGApi(api).delete_dag(dag_id, _request_timeout=self._timeout))
        except _NotFoundError:
            return

    # ---- plumbing -------------------------------------------------------------------------------

    def _call(self, call: Callable[[af.ApiClient], T]) -> T:
        # every call made is idempotent (reads, reparse, pause, delete): a 5xx (Airflow's database
        # busy or deadlocked) is retried twice after a short pause before it fails the change
        refreshed = False
        for pause in (*_BACKOFF, None):
            api = self._client()
            try:
                return call(api)
            except ApiException as exc:
                status = exc.status or 0
                if status == 401 and not refreshed and self._static_token is None:
                    refreshed = True
                    with self._lock:
                        self._api = None  # the token expired: fetch a new one once
                    continue
                if (status >= 500 or status == 429) and pause is not None:
                    time.sleep(pause)
                    continue
                raise self._error(exc) from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise self._unreachable(exc) from None
        raise AssertionError("unreachable")

    def _client(self) -> af.ApiClient:
        with self._lock:
            if self._api is None:
                config = af.Configuration(host=self.url, access_token=self._static_token or self._fetch_token())
                config.retries = 0  # the reconcile loop retries (controller.sync.requeue)
                self._api = af.ApiClient(config)
            return self._api

    def _fetch_token(self) -> str:
        if not (self._username and self._password):
            raise TargetError("airflow", "no Airflow credentials: set LIMINAL_AIRFLOW_USERNAME and _PASSWORD or _TOKEN")
        request = urllib.request.Request(
            f"{self.url}/auth/token",
            data=json.dumps({"username": self._username, "password": self._password}).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return str(json.loads(response.read())["access_token"])
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise TargetError(
                    "airflow", f"Airflow at {self.url} refused the credentials of user {self._username!r}"
                ) from None
            raise TransientError(f"Airflow at {self.url} answered {exc.code} to /auth/token", retry_after=15) from None
        except (OSError, ValueError, KeyError) as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: BaseException) -> TransientError:
        return TransientError(f"cannot reach Airflow at {self.url}: {short_reason(exc)}", retry_after=15)

    def _error(self, exc: ApiException) -> Exception:
        status = exc.status or 0
        if status == 404:
            return _NotFoundError()
        if status in (401, 403):
            return TargetError("airflow", f"Airflow at {self.url} refused the request ({status} {exc.reason})")
        if status >= 500 or status in (0, 429):
            return TransientError(f"Airflow at {self.url} answered {status} {exc.reason}", retry_after=15)
        detail = _detail(exc.body)
        return TargetError("airflow", f"Airflow at {self.url} answered {status} {exc.reason}{detail}")


class _NotFoundError(Exception):
    """A 404, turned into None or 'already gone' by the calls that expect it."""


def _dag_info(dag: Any) -> DagInfo:
    return DagInfo(
        dag_id=str(dag.dag_id),
        relative_fileloc=dag.relative_fileloc,
        file_token=str(dag.file_token),
        is_stale=bool(dag.is_stale),
        is_paused=bool(dag.is_paused),
        last_parsed_time=dag.last_parsed_time,
        tags=frozenset(t.name for t in dag.tags or ()),
    )


def _detail(body: object) -> str:
    try:
        found = json.loads(str(body)).get("detail")
    except (ValueError, AttributeError):
        return ""
    return f": {found}" if found else ""
