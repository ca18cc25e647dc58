"""The HTTP face of `liminal serve` (FastAPI): webhooks, health, metrics, the REST API and the web UI.

Every webhook delivery is verified, then written to the ledger, and only then acknowledged
with 202; a replayed delivery id is acknowledged and ignored. Errors become responses here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import tempfile
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import structlog
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from controller.errors import LiminalError, SourceError, sanitize
from controller.group_commit import GroupCommit
from controller.ledger import Ledger
from controller.model import Delivery, DeliveryKind, DeliveryStatus, RepoRef, ResourceKind, Trigger
from controller.sync.loop import DURATION_BUCKETS, ReconcileLoop
from controller.sync.preview import preview
from controller.ui import STATIC, page
from controller.views import run_json, service_endpoints
from webhooks import github, gitlab
from webhooks.events import WebhookError, WebhookEvent, check_header, normal_url

__all__ = ["MAX_BODIES_IN_FLIGHT", "MAX_BODY", "ServeSettings", "make_app"]

log = structlog.get_logger("liminal.api")

MAX_BODY = 25 * 1024 * 1024
"""GitHub caps payloads at 25 MB; anything larger is refused unread."""

MAX_BODIES_IN_FLIGHT = 4
"""Webhook bodies read at once; more wait for a turn (SLOT_WAIT), then get 503 (GitHub and
GitLab show it for redelivery)."""

MAX_DELIVERIES_WAITING = 64
"""Read and verified deliveries waiting to be recorded (the next group); more wait for a place."""

SLOT_WAIT = 5.0
"""Seconds a delivery waits for one of the MAX_BODIES_IN_FLIGHT turns."""

MAX_WAITING_BODIES = 64
"""Deliveries that may wait for a turn; beyond that, 503 at once (a wait holds only a connection)."""

BODY_CHUNK_TIMEOUT = 10.0
"""Seconds a client may pause while sending a body (a slow-loris connection gets 408)."""

BODY_TIMEOUT = 60.0
"""Seconds a whole body may take to arrive."""

API_THREADS = 4
"""Worker threads for the API's blocking reads (ledger queries)."""

READY_TIMEOUT = 2.0
"""Seconds /readyz waits for the ledger before it answers "not ready"."""

PLANS_AT_ONCE = 2
"""On-demand plans (a fetch and a render each) computed at once for the API."""

SPOOL_IN_MEMORY = 1 << 20
"""Bytes of a body kept in memory while it is read and verified; the rest waits in a temporary file."""


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """What the HTTP service needs to know (secrets never leave it)."""

    github_secret: str | None = None
    gitlab_token: str | None = None
    api_token: str | None = None
    allow_unsigned: bool = False
    airflow_url: str | None = None
    """Airflow's web UI: the repository page links each DAG there."""
    reads_need_token: bool = False
    """The API's reads and the web UI need the API token (LIMINAL_API_READS=token)."""

    def __repr__(self) -> str:
        return f"ServeSettings(allow_unsigned={self.allow_unsigned})"


def make_app(ledger: Ledger, loop: ReconcileLoop, settings: ServeSettings) -> FastAPI:
    """The application. A webhook endpoint without its secret is not served (404) unless unsigned
    webhooks are explicitly allowed."""
    serve_github = bool(settings.github_secret) or settings.allow_unsigned
    serve_gitlab = bool(settings.gitlab_token) or settings.allow_unsigned
    for name, served, setting in (
        ("github", serve_github, "LIMINAL_GITHUB_WEBHOOK_SECRET"),
        ("gitlab", serve_gitlab, "LIMINAL_GITLAB_WEBHOOK_TOKEN"),
    ):
        if not served:
            log.warning("webhooks.endpoint_off", endpoint=f"/webhooks/{name}", reason=f"{setting} is not set")
        elif settings.allow_unsigned and not (settings.github_secret if name == "github" else settings.gitlab_token):
            log.warning("webhooks.unsigned", endpoint=f"/webhooks/{name}")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # few worker threads: with 40 (anyio's default) busy on reads, the event loop waits for
        # the GIL behind all of them and /healthz answers in hundreds of milliseconds
        anyio.to_thread.current_default_thread_limiter().total_tokens = API_THREADS
        yield
        await anyio.to_thread.run_sync(recorder.close)  # what was verified is recorded before the ledger closes

    # /docs and /redoc serve their own copies of Swagger UI and ReDoc (fastapi-offline): FastAPI's
    # default pages load them from a public CDN, which an air-gapped cluster cannot reach
    app = FastAPIOffline(
        title="Liminal GitOps controller",
        version="0.1.0",
        lifespan=lifespan,
        static_url="/ui/docs",
        favicon_url="/ui/static/favicon.svg",
    )
    app.mount("/ui/static", StaticFiles(directory=str(STATIC)), name="ui-static")

    if settings.reads_need_token:
        assert settings.api_token
        session = _read_session(settings.api_token)

        @app.middleware("http")
        async def reads_need_the_token(request: Request, call_next: Callable[[Request], Any]) -> Response:
            path = request.url.path
            guarded = request.method == "GET" and (path == "/" or path.startswith(_READ_GUARDED))
            if guarded and not _may_read(request, settings.api_token or "", session):
                if path.startswith(("/api/", "/openapi.json")):
                    return JSONResponse(
                        {"detail": "a valid bearer token is required (LIMINAL_API_READS=token)"},
                        status_code=401,
                        headers={"WWW-Authenticate": "Bearer"},
                    )
                return HTMLResponse(page("login.html", next=path), status_code=401)
            response: Response = await call_next(request)
            return response

        @app.post("/ui/login", include_in_schema=False)
        async def login(request: Request) -> Response:
            """Sign a browser in for reading: a form post of the API token sets a session cookie
            (HttpOnly, SameSite=Strict) that grants reads only; writes still need the header."""
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > 4096:  # a token and a path; anything bigger is not a sign-in
                    return Response(status_code=413)
            fields = urllib.parse.parse_qs(body.decode(errors="replace"))
            given = (fields.get("token") or [""])[0]
            target = (fields.get("next") or ["/"])[0]
            if not target.startswith("/") or target.startswith("//"):
                target = "/"  # only a page of this controller: never an open redirect
            if not hmac.compare_digest(given.encode(), (settings.api_token or "").encode()):
                return HTMLResponse(page("login.html", next=target, failed=True), status_code=401)
            response = Response(status_code=303, headers={"Location": target})
            response.set_cookie(_SESSION_COOKIE, session, httponly=True, samesite="strict", path="/")
            return response

    registry = CollectorRegistry()
    deliveries = Counter(
        "liminal_webhook_deliveries",
        "Webhook deliveries by provider and result",
        ["provider", "result"],
        registry=registry,
    )
    registry.register(_LoopCollector(loop, ledger))

    @app.exception_handler(WebhookError)
    async def _refused(request: Request, exc: WebhookError) -> JSONResponse:
        provider = request.url.path.rsplit("/", 1)[-1]
        deliveries.labels(provider, str(exc.status)).inc()
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    # ---- webhooks --------------------------------------------------------------------------------

    bodies = _BodyLimit(MAX_BODIES_IN_FLIGHT)
    # deliveries are looked up and recorded on the recorder's own thread, never on the event
    # loop, in groups (one transaction each); at most MAX_DELIVERIES_WAITING wait for it
    intake = anyio.CapacityLimiter(MAX_DELIVERIES_WAITING)
    tracked = TrackedIndex(ledger)

    async def github_webhook(request: Request) -> JSONResponse:
        _content_headers(request)
        event = check_header("X-GitHub-Event", request.headers.get("X-GitHub-Event"))
        delivery_id = check_header("X-GitHub-Delivery", request.headers.get("X-GitHub-Delivery"))
        mac, check = None, None
        if settings.github_secret:
            # refused before a byte of the body is read when the header cannot be a signature
            signature = github.signature_header(request.headers.get("X-Hub-Signature-256"))
            mac = hmac.new(settings.github_secret.encode(), digestmod="sha256")
            check = partial(github.check_digest, mac, signature)
        body = await bodies.read(request, mac, check)
        parsed = github.parse(delivery_id, event, body)
        async with intake:
            return await recorder.submit(parsed)

    async def gitlab_webhook(request: Request) -> JSONResponse:
        _content_headers(request)
        uuid_header = "X-Gitlab-Event-UUID" if "X-Gitlab-Event-UUID" in request.headers else "Idempotency-Key"
        event = check_header("X-Gitlab-Event", request.headers.get("X-Gitlab-Event"))
        delivery_id = check_header(uuid_header, request.headers.get(uuid_header))
        if settings.gitlab_token:
            # the token is a header: a wrong one costs no body read
            gitlab.verify(settings.gitlab_token.encode(), request.headers.get("X-Gitlab-Token"))
        body = await bodies.read(request)
        parsed = gitlab.parse(delivery_id, event, body)
        async with intake:
            return await recorder.submit(parsed)

    if serve_github:
        app.add_api_route("/webhooks/github", github_webhook, methods=["POST"], status_code=202)
    if serve_gitlab:
        app.add_api_route("/webhooks/gitlab", gitlab_webhook, methods=["POST"], status_code=202)

    def _accept_all(events: list[WebhookEvent]) -> list[JSONResponse | BaseException]:
        """The answers to a group of deliveries, recorded in one transaction before any 202 (a
        crash after it loses nothing)."""
        found = [_record(e) for e in events]
        rows = ledger.record_deliveries([record for record, _ in found], loop.replica)
        answers: list[JSONResponse | BaseException] = []
        for event, (record, targets), row in zip(events, found, rows, strict=True):
            try:
                answers.append(_answer(event, record, targets, row))
            except Exception as exc:  # that delivery's 500; the group's others are answered
                answers.append(exc)
        return answers

    recorder = GroupCommit(_accept_all, most=MAX_DELIVERIES_WAITING, name="webhook-intake")

    def _record(event: WebhookEvent) -> tuple[Delivery, list[str]]:
        """The delivery's ledger record, and the tracked repositories it is about."""
        targets = _targets(tracked, event)
        status, reason = DeliveryStatus.QUEUED, None
        if event.kind is DeliveryKind.PING:
            status, reason = DeliveryStatus.IGNORED, "ping"
        elif event.kind is DeliveryKind.PULL_REQUEST and not targets:
            status = DeliveryStatus.IGNORED
            reason = f"no tracked repository follows {event.base or 'the target branch'} of {', '.join(event.urls[:1])}"
        elif event.kind is DeliveryKind.PULL_REQUEST:
            status, reason = DeliveryStatus.QUEUED, None
        elif event.kind is not DeliveryKind.PUSH:
            status, reason = DeliveryStatus.IGNORED, event.reason
        elif not targets:
            status = DeliveryStatus.IGNORED
            reason = f"no tracked repository follows {event.ref} of {', '.join(event.urls[:1])}"
        record = Delivery(
            provider=event.provider,
            delivery_id=event.delivery_id,
            event=event.event,
            kind=event.kind,
            repo=targets[0] if targets else None,
            ref=event.ref,
            commit=event.commit,
            pull_request=event.pull_request,
            status=status,
            reason=reason,
            project=event.project,
            web_url=event.web_url,
        )
        return record, targets

    def _answer(event: WebhookEvent, record: Delivery, targets: list[str], row: int | None) -> JSONResponse:
        status, reason = record.status, record.reason
        log.info(
            "webhook.received",
            provider=event.provider,
            delivery=event.delivery_id,
            webhook_event=event.event,
            repo=record.repo,
            commit=(event.commit or "")[:12],
            status=DeliveryStatus.DUPLICATE.value if row is None else status.value,
            reason=reason,
        )
        if row is None:
            deliveries.labels(event.provider, "duplicate").inc()
            return JSONResponse({"status": "duplicate", "delivery": event.delivery_id}, status_code=202)
        if status is DeliveryStatus.QUEUED and event.kind is DeliveryKind.PULL_REQUEST:
            if not loop.request_check(dataclasses.replace(record, id=row)):
                ledger.finish_deliveries([row], DeliveryStatus.IGNORED, "too many pull-request checks are waiting")
                deliveries.labels(event.provider, "503").inc()
                return JSONResponse(
                    {"status": "refused", "delivery": event.delivery_id, "reason": "too many checks are waiting"},
                    status_code=503,
                    headers={"Retry-After": "60"},
                )
        elif status is DeliveryStatus.QUEUED:
            for repo in targets:
                loop.request(repo, Trigger.WEBHOOK, [row] if repo == targets[0] else [], commit=event.commit)
        deliveries.labels(event.provider, status).inc()
        return JSONResponse(
            {"status": status, "delivery": event.delivery_id, "repositories": targets, "reason": reason},
            status_code=202,
        )

    # ---- health and metrics ----------------------------------------------------------------------

    # health answers on the event loop itself: no worker pool it could wait for
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    ready_limiter = anyio.CapacityLimiter(1)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        problems = []
        try:
            with anyio.fail_after(READY_TIMEOUT):
                found = await anyio.to_thread.run_sync(ledger.problem, limiter=ready_limiter, abandon_on_cancel=True)
        except TimeoutError:
            found = f"ledger did not answer within {READY_TIMEOUT:g} s"
        if found:
            problems.append(found)
        if not loop.alive:
            problems.append("reconcile loop not running")
        return JSONResponse({"ready": not problems, "problems": problems}, status_code=503 if problems else 200)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- REST API --------------------------------------------------------------------------------

    @app.get("/api/v1/repositories")
    def repositories() -> list[dict[str, Any]]:
        return [_status_json(ledger, r.name, loop.checked) for r in ledger.repos()]

    @app.get("/api/v1/repositories/{name}")
    def repository(name: str) -> dict[str, Any]:
        return _status_json(ledger, _known(ledger, name), loop.checked)

    @app.get("/api/v1/repositories/{name}/resources")
    def resources(name: str) -> list[dict[str, Any]]:
        """What is deployed and from which commit; services with their URL and health, DAGs with
        their page in Airflow (when LIMINAL_AIRFLOW_URL is set)."""
        return _resources_view(ledger, loop, _known(ledger, name), settings.airflow_url)

    planners = anyio.CapacityLimiter(PLANS_AT_ONCE)
    planning = [0]  # plans running now (the event loop is one thread)

    @app.get("/api/v1/repositories/{name}/plan")
    async def repository_plan(name: str, request: Request) -> dict[str, Any]:
        """What a sync would change now: fetch, render and diff against the ledger (applies nothing).

        It fetches from git and renders, so it needs the API token, and at most PLANS_AT_ONCE run
        at a time (429 beyond)."""
        return await planned_now(name, request)

    async def planned_now(name: str, request: Request) -> dict[str, Any]:
        _authorize(request, settings.api_token)
        # counted before the first await: requests arriving together cannot all pass the check
        if planning[0] >= PLANS_AT_ONCE:
            raise HTTPException(429, f"{PLANS_AT_ONCE} plans are being computed already; retry later")
        planning[0] += 1
        try:
            return await anyio.to_thread.run_sync(compute_plan, name, limiter=planners)
        finally:
            planning[0] -= 1

    def compute_plan(name: str) -> dict[str, Any]:
        try:
            return preview(_known(ledger, name), loop.deps).as_json()
        except LiminalError as exc:  # the git server did not answer
            raise HTTPException(502, str(exc)) from None

    @app.get("/api/v1/runs")
    def runs(repo: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        if repo is not None:
            _known(ledger, repo)
        return [run_json(r) for r in ledger.history(repo, min(max(limit, 1), 500))]

    @app.get("/api/v1/deliveries")
    def webhook_deliveries(limit: int = 50) -> list[dict[str, Any]]:
        return [dataclasses.asdict(d) for d in ledger.deliveries(min(max(limit, 1), 500))]

    @app.get("/api/v1/checks/{provider}/{delivery_id}")
    def check(provider: str, delivery_id: str) -> dict[str, Any]:
        found = ledger.delivery(provider, delivery_id)
        if found is None:
            raise HTTPException(404, f"no {provider} delivery {delivery_id}")
        delivery, result = found
        return {
            "repository": delivery.repo,
            "pull_request": delivery.pull_request,
            "commit": delivery.commit,
            "status": delivery.status,
            "summary": delivery.reason,
            "superseded_by": ledger.newer_head(delivery) if delivery.pull_request else None,
            "result": result,
        }

    @app.post("/api/v1/repositories/{name}/sync", status_code=202)
    def sync(name: str, request: Request) -> dict[str, str]:
        _authorize(request, settings.api_token)
        loop.request(_known(ledger, name), Trigger.API)
        return {"status": "queued", "repository": name}

    @app.post("/api/v1/repositories/{name}/rollback", status_code=202)
    def rollback(name: str, request: Request, body: RollbackRequest) -> dict[str, Any]:
        """Revert the branch's newest commit (or every commit after `to`) with one new commit,
        push it, and queue the sync that deploys it (`liminal rollback`, from the API)."""
        _authorize(request, settings.api_token)
        ref = ledger.repo(_known(ledger, name))
        try:
            head, reverted = loop.deps.source.revert(ref, body.to)
        except LiminalError as exc:
            raise HTTPException(409 if isinstance(exc, SourceError) else 502, str(exc)) from None
        loop.request(ref.name, Trigger.API)
        return {"status": "queued", "repository": name, "commit": head, "reverted": reverted}

    # ---- web UI (for people; the JSON above is for programs) ---------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        return page("index.html", repos=repositories())

    @app.get("/repos/{name}", response_class=HTMLResponse)
    def repository_page(name: str) -> str:
        repo = repository(name)
        return page(
            "repo.html",
            repo=repo,
            resources=resources(name),
            runs=runs(name, 20),
            builds=list(reversed(ledger.builds(name)[-20:])),
        )

    @app.get("/repos/{name}/plan", response_class=HTMLResponse)
    def plan_page(name: str) -> str:
        return page("plan.html", name=_known(ledger, name))

    @app.get("/repos/{name}/plan/body", response_class=HTMLResponse)
    async def plan_body(name: str, request: Request) -> str:
        found = await planned_now(name, request)
        return page("plan_body.html", plan=found, url=ledger.repo(name).url)

    @app.get("/checks/{provider}/{delivery_id}", response_class=HTMLResponse)
    def check_page(provider: str, delivery_id: str) -> str:
        found = check(provider, delivery_id)
        url = ledger.repo(found["repository"]).url if found["repository"] else ""
        return page("check.html", check=found, url=url)

    return app


class RollbackRequest(BaseModel):
    """`to`: the commit whose files come back (None: undo the newest commit)."""

    to: str | None = None


def _resources_view(ledger: Ledger, loop: ReconcileLoop, name: str, airflow_url: str | None) -> list[dict[str, Any]]:
    """What is deployed, with each service's URL and health and each DAG's page in Airflow."""
    state = ledger.deployed_state(name)
    served = dict(service_endpoints(loop.deps, list(state.resources.values())))
    out = []
    for key, d in sorted(state.resources.items(), key=lambda item: str(item[0])):
        row: dict[str, Any] = {"kind": str(key.kind), "name": key.name}
        row |= {"content_hash": d.content_hash, "commit": d.commit}
        if key.kind is ResourceKind.SERVICE and key.name in served:
            row |= {"url": served[key.name].url, "health": str(served[key.name].health)}
        if key.kind is ResourceKind.DAG and airflow_url:
            row["airflow"] = f"{airflow_url.rstrip('/')}/dags/{key.name}"
        out.append(row)
    return out


def _content_headers(request: Request) -> None:
    """Refuse, before reading the body, what is not JSON or declares more than MAX_BODY bytes."""
    if request.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
        raise WebhookError(415, "the body must be application/json")
    declared = request.headers.get("Content-Length")
    if declared is not None and (not declared.isdigit() or len(declared) > 12 or int(declared) > MAX_BODY):
        raise WebhookError(413, f"the body is over {MAX_BODY} bytes")


class _BodyLimit:
    """Reads webhook bodies: at most `limit` at a time; a delivery waits up to SLOT_WAIT seconds
    for its turn (small bodies take milliseconds), and with MAX_WAITING_BODIES waiting already, or
    after that wait, it gets 503. Each chunk must come within BODY_CHUNK_TIMEOUT and the whole
    within BODY_TIMEOUT (else 408). The body is fed to the signature's HMAC as it arrives and kept
    in memory only up to SPOOL_IN_MEMORY bytes (the rest in a temporary file): bad-signature
    bodies cost neither memory nor a worker."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.slots = anyio.Semaphore(limit)
        self.waiting = 0

    async def read(self, request: Request, mac: Any = None, check: Callable[[], None] | None = None) -> bytes:
        if self.waiting >= MAX_WAITING_BODIES:
            raise WebhookError(503, f"{self.waiting} webhook deliveries are waiting already; retry later")
        acquired = False
        self.waiting += 1  # the event loop is one thread: no lock needed
        try:
            with anyio.move_on_after(SLOT_WAIT):
                await self.slots.acquire()
                acquired = True
        finally:
            self.waiting -= 1
        if not acquired:
            raise WebhookError(503, f"{self.limit} webhook bodies were being read for {SLOT_WAIT:g} s; retry later")
        try:
            declared = request.headers.get("Content-Length")
            with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
                size = 0
                try:
                    with anyio.fail_after(BODY_TIMEOUT):
                        stream = request.stream().__aiter__()
                        while True:
                            with anyio.fail_after(BODY_CHUNK_TIMEOUT):
                                try:
                                    chunk = await stream.__anext__()
                                except StopAsyncIteration:
                                    break
                            size += len(chunk)
                            if size > MAX_BODY:
                                raise WebhookError(413, f"the body is over {MAX_BODY} bytes")
                            if mac is not None:
                                mac.update(chunk)
                            spool.write(chunk)
                except TimeoutError:
                    raise WebhookError(408, "the body was not received in time") from None
                except ClientDisconnect:
                    raise WebhookError(400, "the client went away before sending the body") from None
                if declared is not None and size != int(declared):
                    raise WebhookError(400, "the body is shorter than its Content-Length")
                if check is not None:
                    check()  # a bad signature is refused before the body is loaded into memory
                spool.seek(0)
                return spool.read()
        finally:
            self.slots.release()


class TrackedIndex:
    """Tracked repositories by normalized remote URL, so that a webhook finds its repositories
    without reading the whole table: rebuilt from the ledger when older than `ttl` seconds, or
    (at most once a second) when a delivery names a remote it does not know, so a repository
    just added by another process is found at once."""

    def __init__(self, ledger: Ledger, ttl: float = 5.0) -> None:
        self.ledger = ledger
        self.ttl = ttl
        self._by_url: dict[str, list[RepoRef]] = {}
        self._built = float("-inf")
        self._lock = threading.Lock()

    def find(self, urls: tuple[str, ...]) -> list[RepoRef]:
        """The tracked repositories whose remote is one of `urls` (scheme, user, port and `.git`
        aside), in the order they were added."""
        keys = {normal_url(u) for u in urls if u}
        with self._lock:
            now = time.monotonic()
            if now - self._built > self.ttl:
                self._rebuild(now)
            found = [r for k in keys for r in self._by_url.get(k, [])]
            if not found and now - self._built > 1.0:
                self._rebuild(now)
                found = [r for k in keys for r in self._by_url.get(k, [])]
        return list({r.name: r for r in found}.values())

    def _rebuild(self, now: float) -> None:
        by_url: dict[str, list[RepoRef]] = {}
        for ref in self.ledger.repos():
            by_url.setdefault(normal_url(ref.url), []).append(ref)
        self._by_url, self._built = by_url, now


def _targets(index: TrackedIndex, event: WebhookEvent) -> list[str]:
    """Tracked repositories the event is about (for a push: those following the pushed branch;
    for a pull request: those following the branch it targets)."""
    out = []
    for ref in index.find(event.urls):
        if event.kind is DeliveryKind.PUSH and event.ref != f"refs/heads/{ref.branch}":
            continue
        if event.kind is DeliveryKind.PULL_REQUEST and event.base and event.base != ref.branch:
            continue  # the plan is against what this branch deployed: only a pull request into it
        out.append(ref.name)
    return out


_READ_GUARDED = ("/api/", "/repos", "/checks", "/docs", "/redoc", "/openapi.json")
"""What LIMINAL_API_READS=token guards (and "/"); health, metrics, webhooks and static assets stay open."""

_SESSION_COOKIE = "liminal_read"


def _read_session(token: str) -> str:
    """The read-only session cookie's value: derived from the token, so it changes with it."""
    return hmac.new(token.encode(), b"liminal-gitops read session", "sha256").hexdigest()


def _may_read(request: Request, token: str, session: str) -> bool:
    given = request.headers.get("Authorization", "")
    if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    return hmac.compare_digest(request.cookies.get(_SESSION_COOKIE, "").encode(), session.encode())


def _authorize(request: Request, token: str | None) -> None:
    if not token:
        raise HTTPException(403, "the API's write endpoints are off: set LIMINAL_API_TOKEN")
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})


def _known(ledger: Ledger, name: str) -> str:
    try:
        return ledger.repo(name).name
    except LiminalError as exc:
        raise HTTPException(404, str(exc)) from None


def _status_json(ledger: Ledger, name: str, checked: Mapping[str, tuple[float, str]]) -> dict[str, Any]:
    """A repository's state; its last check is the newer of the ledger's (a poll that ran) and
    `checked` (the loop's memory of polls that found the head unchanged and wrote nothing)."""
    s = ledger.status(name)
    checked_at, checked_commit = s.last_checked_at, s.last_checked_commit
    seen = checked.get(name)
    if seen is not None and (checked_at is None or seen[0] > checked_at.timestamp()):
        checked_at, checked_commit = dt.datetime.fromtimestamp(seen[0], dt.UTC), seen[1]
    return {
        "name": s.repo.name,
        "url": sanitize(s.repo.url),  # a URL tracked before credentials were refused keeps them to itself
        "branch": s.repo.branch,
        "state": s.state,
        "last_applied_commit": s.last_applied_commit,
        "last_attempted_commit": s.last_attempted_commit,
        "last_error": s.last_error,
        "resources": s.resources,
        "prune": s.repo.prune,
        "self_heal": s.repo.self_heal,
        "drift": list(s.drift),
        "drift_observed_at": s.drift_observed_at.isoformat() if s.drift_observed_at else None,
        "last_checked_at": checked_at.isoformat() if checked_at else None,
        "last_checked_commit": checked_commit,
        "last_run": run_json(s.last_run) if s.last_run else None,
    }


def _counted(name: str, documentation: str, label: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    """A counter family with one sample per `label` value."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


class _LoopCollector(Collector):
    """What the loop counted (runs, durations, heals, images), queue depth, last success, and the
    drift the ledger holds (one query), read when scraped."""

    def __init__(self, loop: ReconcileLoop, ledger: Ledger) -> None:
        self.loop = loop
        self.ledger = ledger

    def collect(self) -> Iterator[Any]:
        stats = self.loop.counted()
        runs = CounterMetricFamily("liminal_sync_runs", "Sync runs by repository and result", labels=["repo", "result"])
        for (repo, result), count in sorted(stats.runs.items()):
            runs.add_metric([repo, result], count)
        yield runs
        depth = GaugeMetricFamily("liminal_queue_depth", "Repositories waiting for a reconcile")
        depth.add_metric([], self.loop.depth)
        yield depth
        last = GaugeMetricFamily(
            "liminal_last_successful_sync_timestamp_seconds", "When each repository last synced", labels=["repo"]
        )
        for repo, when in sorted(stats.last_success.items()):
            last.add_metric([repo], when)
        yield last
        histogram = HistogramMetricFamily("liminal_sync_duration_seconds", "How long each sync run took")
        histogram.add_metric(
            [],
            [(f"{b:g}", n) for b, n in zip(DURATION_BUCKETS, stats.duration_buckets, strict=True)]
            + [("+Inf", stats.duration_count)],
            stats.duration_sum,
        )
        yield histogram
        healed = "Resources restored after their live state drifted"
        yield _counted("liminal_drift_healed", healed, "repo", stats.healed)
        drifted = GaugeMetricFamily(
            "liminal_drifted_resources",
            "Resources whose live state was last seen to differ from git and is not restored",
            labels=["repo", "self_heal"],
        )
        try:
            for name, self_heal, count in self.ledger.drift_counts():
                drifted.add_metric([name, str(self_heal).lower()], count)
        except Exception:  # a scrape never fails because the ledger is away: /readyz says so
            log.debug("metrics.ledger_unreachable")
        yield drifted
        builds = "Image changes carried out by sync runs (built or pushed), by result"
        yield _counted("liminal_image_builds", builds, "result", stats.images)
        yield _counted(
            "liminal_pruned", "Ledger rows deleted by retention, and checkouts tidied away", "what", stats.pruned
        )
        adopted = CounterMetricFamily(
            "liminal_deliveries_adopted", "Queued deliveries taken over from a replica that stopped beating"
        )
        adopted.add_metric([], stats.taken_over)
        yield adopted
        unchanged = CounterMetricFamily(
            "liminal_polls_unchanged", "Polls that found the branch head unchanged without a fetch (nothing ran)"
        )
        unchanged.add_metric([], stats.unchanged_polls)
        yield unchanged
        memo = self.loop.deps.cache
        if memo is not None:
            entries = GaugeMetricFamily(
                "liminal_render_cache_entries", "Parsed files, rendered pipelines and desired states kept in memory"
            )
            entries.add_metric([], len(memo))
            yield entries
        if stats.cache_bytes is not None:
            cache = GaugeMetricFamily("liminal_git_cache_bytes", "Disk used by the git cache at the last upkeep pass")
            cache.add_metric([], stats.cache_bytes)
            yield cache
