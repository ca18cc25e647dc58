"""The HTTP face of `liminal serve` (FastAPI): webhooks, health, metrics and the REST API.

Every webhook delivery is verified, then written to the ledger, and only then acknowledged
with 202; a replayed delivery id is acknowledged and ignored. Errors become responses here.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from controller.errors import InputError, LiminalError
from controller.ledger import Ledger
from controller.model import Delivery
from controller.sync.loop import ReconcileLoop
from controller.sync.plan import plan
from controller.sync.reconcile import desired_for
from controller.views import run_json
from webhooks import github, gitlab
from webhooks.events import WebhookError, WebhookEvent, same_repository

__all__ = ["MAX_BODY", "ServeSettings", "make_app"]

log = structlog.get_logger("liminal.api")

MAX_BODY = 25 * 1024 * 1024
"""GitHub caps payloads at 25 MB; anything larger is refused unread."""


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """What the HTTP service needs to know (secrets never leave it)."""

    github_secret: str | None = None
    gitlab_token: str | None = None
    api_token: str | None = None
    allow_unsigned: bool = False

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
    app = FastAPI(title="Liminal GitOps controller", version="0.1.0")
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

    async def github_webhook(request: Request) -> JSONResponse:
        body = await _body(request)
        event, delivery_id = _headers(request, "X-GitHub-Event", "X-GitHub-Delivery")
        if settings.github_secret:
            github.verify(settings.github_secret.encode(), body, request.headers.get("X-Hub-Signature-256"))
        return _accept(github.parse(delivery_id, event, body))

    async def gitlab_webhook(request: Request) -> JSONResponse:
        body = await _body(request)
        uuid_header = "X-Gitlab-Event-UUID" if "X-Gitlab-Event-UUID" in request.headers else "Idempotency-Key"
        event, delivery_id = _headers(request, "X-Gitlab-Event", uuid_header)
        if settings.gitlab_token:
            gitlab.verify(settings.gitlab_token.encode(), request.headers.get("X-Gitlab-Token"))
        return _accept(gitlab.parse(delivery_id, event, body))

    if serve_github:
        app.add_api_route("/webhooks/github", github_webhook, methods=["POST"], status_code=202)
    if serve_gitlab:
        app.add_api_route("/webhooks/gitlab", gitlab_webhook, methods=["POST"], status_code=202)

    def _accept(event: WebhookEvent) -> JSONResponse:
        targets = _targets(ledger, event)
        status, reason = "queued", None
        if event.kind == "ping":
            status, reason = "ignored", "ping"
        elif event.kind == "pull_request" and not targets:
            status, reason = "ignored", f"no tracked repository is {', '.join(event.urls[:1])}"
        elif event.kind == "pull_request":
            status, reason = "queued", None
        elif event.kind != "push":
            status, reason = "ignored", event.reason
        elif not targets:
            status, reason = "ignored", f"no tracked repository follows {event.ref} of {', '.join(event.urls[:1])}"
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
        )
        row = ledger.record_delivery(record)  # before the 202: a crash after it loses nothing
        log.info(
            "webhook.received",
            provider=event.provider,
            delivery=event.delivery_id,
            webhook_event=event.event,
            repo=record.repo,
            commit=(event.commit or "")[:12],
            status="duplicate" if row is None else status,
            reason=reason,
        )
        if row is None:
            deliveries.labels(event.provider, "duplicate").inc()
            return JSONResponse({"status": "duplicate", "delivery": event.delivery_id}, status_code=202)
        if status == "queued" and event.kind == "pull_request":
            loop.request_check(dataclasses.replace(record, id=row))
        elif status == "queued":
            for repo in targets:
                loop.request(repo, "webhook", [row] if repo == targets[0] else [], commit=event.commit)
        deliveries.labels(event.provider, status).inc()
        return JSONResponse(
            {"status": status, "delivery": event.delivery_id, "repositories": targets, "reason": reason},
            status_code=202,
        )

    # ---- health and metrics ----------------------------------------------------------------------

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        problems = []
        try:
            with ledger.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            problems.append(f"ledger unreachable: {type(exc).__name__}")
        if not loop.alive:
            problems.append("reconcile loop not running")
        return JSONResponse({"ready": not problems, "problems": problems}, status_code=503 if problems else 200)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- REST API --------------------------------------------------------------------------------

    @app.get("/api/v1/repositories")
    def repositories() -> list[dict[str, Any]]:
        return [_status_json(ledger, r.name) for r in ledger.repos()]

    @app.get("/api/v1/repositories/{name}")
    def repository(name: str) -> dict[str, Any]:
        return _status_json(ledger, _known(ledger, name))

    @app.get("/api/v1/repositories/{name}/resources")
    def resources(name: str) -> list[dict[str, Any]]:
        state = ledger.deployed_state(_known(ledger, name))
        return [
            {"kind": str(k.kind), "name": k.name, "content_hash": d.content_hash, "commit": d.commit}
            for k, d in sorted(state.resources.items(), key=lambda item: str(item[0]))
        ]

    @app.get("/api/v1/repositories/{name}/plan")
    def repository_plan(name: str) -> dict[str, Any]:
        """What a sync would change now: fetch, render and diff against the ledger (applies nothing)."""
        ref = ledger.repo(_known(ledger, name))
        try:
            snapshot = loop.deps.source.fetch(ref)
            desired = desired_for(snapshot, loop.deps)
        except InputError as exc:
            return {"repository": name, "valid": False, "problems": [p.as_json() for p in exc.problems[:100]]}
        except LiminalError as exc:
            raise HTTPException(502, str(exc)) from None
        the_plan = plan(desired, ledger.deployed_state(name), prune=ref.prune)
        return {
            "repository": name,
            "commit": snapshot.commit,
            "valid": True,
            "counts": the_plan.counts(),
            "changes": [
                {"kind": str(c.key.kind), "name": c.key.name, "action": str(c.action), "diff": c.diff}
                for c in the_plan.changes
                if c.action.changes_something
            ],
        }

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
            "result": result,
        }

    @app.post("/api/v1/repositories/{name}/sync", status_code=202)
    def sync(name: str, request: Request) -> dict[str, str]:
        _authorize(request, settings.api_token)
        loop.request(_known(ledger, name), "api")
        return {"status": "queued", "repository": name}

    return app


async def _body(request: Request) -> bytes:
    if request.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
        raise WebhookError(415, "the body must be application/json")
    declared = request.headers.get("Content-Length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise WebhookError(413, f"the body is over {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise WebhookError(413, f"the body is over {MAX_BODY} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if declared is not None and len(body) != int(declared):
        raise WebhookError(400, "the body is shorter than its Content-Length")
    return body


def _headers(request: Request, event_header: str, id_header: str) -> tuple[str, str]:
    event, delivery = request.headers.get(event_header), request.headers.get(id_header)
    if not event or not delivery:
        raise WebhookError(400, f"missing {event_header} or {id_header}")
    return event, delivery


def _targets(ledger: Ledger, event: WebhookEvent) -> list[str]:
    """Tracked repositories the event is about (for a push: those following the pushed branch;
    for a pull request: the repository it targets)."""
    out = []
    for ref in ledger.repos():
        if not same_repository(ref.url, event.urls):
            continue
        if event.kind == "push" and event.ref != f"refs/heads/{ref.branch}":
            continue
        out.append(ref.name)
    return out


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


def _status_json(ledger: Ledger, name: str) -> dict[str, Any]:
    s = ledger.status(name)
    return {
        "name": s.repo.name,
        "url": s.repo.url,
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
        "last_run": run_json(s.last_run) if s.last_run else None,
    }


class _LoopCollector(Collector):
    """Sync runs, durations, queue depth and last success, read from the loop when scraped."""

    def __init__(self, loop: ReconcileLoop, ledger: Ledger) -> None:
        self.loop = loop
        self.ledger = ledger

    def collect(self) -> Iterator[Any]:
        stats = self.loop.stats
        runs = GaugeMetricFamily(
            "liminal_sync_runs_total", "Sync runs by repository and result", labels=["repo", "result"]
        )
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
        buckets = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 300]
        durations = [d for _, d in stats.durations]
        histogram = HistogramMetricFamily("liminal_sync_duration_seconds", "Reconcile durations (last 1000)")
        histogram.add_metric(
            [],
            [(str(b), sum(1 for d in durations if d <= b)) for b in buckets] + [("+Inf", len(durations))],
            sum(durations),
        )
        yield histogram
        healed = CounterMetricFamily(
            "liminal_drift_healed", "Resources restored after their live state drifted", labels=["repo"]
        )
        for repo, count in sorted(stats.healed.items()):
            healed.add_metric([repo], count)
        yield healed
        drifted = GaugeMetricFamily(
            "liminal_drifted_resources",
            "Resources whose live state was last seen to differ from git and is not restored",
            labels=["repo", "self_heal"],
        )
        try:
            for ref in self.ledger.repos():
                drifted.add_metric([ref.name, str(ref.self_heal).lower()], len(self.ledger.status(ref.name).drift))
        except (sa.exc.SQLAlchemyError, LiminalError):
            pass  # a scrape never fails because the ledger is away: /readyz says so
        yield drifted
        builds = GaugeMetricFamily("liminal_image_builds_total", "Image builds recorded, by result", labels=["result"])
        try:
            with self.ledger.engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT status, COUNT(*) FROM image_builds GROUP BY status")).all()
        except sa.exc.SQLAlchemyError:
            rows = []
        for status, count in rows:
            builds.add_metric([str(status)], int(count))
        yield builds
