"""Local HTTP FAKES of GitHub's and GitLab's REST APIs (neither is reachable here) for the
pull-request checks.

Every request is validated before it is answered, and what is wrong is kept in `violations`
(answered 422), so a test asserts there is none:
- FakeGitHub against GitHub's published OpenAPI description (npm @octokit/openapi, installed by
  scripts/lib/node.sh): the operation must exist for the method and path, path and query
  parameters must match their schemas, and the JSON body its request schema (check runs'
  `maxItems: 50` annotations and 65,535-character summaries included).
- FakeGitLab against GitLab's REST API documentation (docs.gitlab.com: "Commits API, set the
  pipeline status of a commit" and "Notes API, merge request notes"), written down below.

Both keep what was created (check runs with their annotations, comments, notes, statuses) so
a test reads the pull request as a reviewer would see it.
"""

from __future__ import annotations

import datetime
import http.server
import json
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import jwt

from tests.conftest import need

__all__ = ["FakeGitHub", "FakeGitLab"]

_OPERATIONS = (
    ("POST", "/repos/{owner}/{repo}/check-runs"),
    ("PATCH", "/repos/{owner}/{repo}/check-runs/{check_run_id}"),
    ("GET", "/repos/{owner}/{repo}/commits/{ref}/check-runs"),
    ("GET", "/repos/{owner}/{repo}/issues/{issue_number}/comments"),
    ("POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments"),
    ("PATCH", "/repos/{owner}/{repo}/issues/comments/{comment_id}"),
    ("POST", "/repos/{owner}/{repo}/statuses/{sha}"),
    ("GET", "/repos/{owner}/{repo}/installation"),
    ("POST", "/app/installations/{installation_id}/access_tokens"),
)
"""What the controller may call; anything else is a violation."""


class _Server:
    """A threaded HTTP server handing each request to `handle(method, path, query, headers, body)`."""

    def __init__(self, handle: Callable[[str, str, dict[str, list[str]], dict[str, str], Any], tuple[int, Any]]):
        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                route, _, query = self.path.partition("?")
                status, answer = handle(
                    self.command,
                    route,
                    urllib.parse.parse_qs(query, keep_blank_values=True),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                data = json.dumps(answer).encode() if answer is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._any()

            def do_POST(self) -> None:
                self._any()

            def do_PATCH(self) -> None:
                self._any()

            def do_PUT(self) -> None:
                self._any()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeGitHub:
    """A FAKE of GitHub's REST API for check runs, issue comments and commit statuses, validating
    each request against @octokit/openapi. `refuse_checks` answers check-run writes 403 as GitHub
    does for a token that is not a GitHub App's; `hold(sha)` keeps the creation of a check run on
    `sha` waiting until `release()`.

    With `app` (the App's id and public key, PEM), it is GitHub for a GitHub App: the App's JWT
    (RS256, checked with the public key, `iss` the id, at most 10 minutes) finds installation
    `installation` and buys installation tokens living `token_ttl` seconds, and every other call
    must carry one that is live."""

    def __init__(
        self,
        token: str | None,
        *,
        refuse_checks: bool = False,
        app: tuple[str, str] | None = None,
        installation: int = 4242,
        token_ttl: float = 3600.0,
    ) -> None:
        spec_file = Path(need("LIMINAL_TEST_NODE_DIR")) / "node_modules/@octokit/openapi/generated/api.github.com.json"
        self.spec = json.loads(spec_file.read_text())
        self.token = token
        self.refuse_checks = refuse_checks
        self.requests: list[tuple[str, str, dict[str, list[str]], Any]] = []
        self.violations: list[str] = []
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, dict[str, Any]] = {}
        self.statuses: list[tuple[str, dict[str, Any]]] = []
        self._ids = iter(range(1000, 10**9))
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._release = threading.Event()
        self.holding = threading.Event()
        """Set once a held check run's creation is waiting."""
        self.app = app
        self.installation = installation
        self.token_ttl = token_ttl
        self.issued: dict[str, float] = {}
        """Installation tokens issued, and when each expires (time.time())."""
        self._routes = [(method, template, _route(template)) for method, template in _OPERATIONS]
        self._server = _Server(self._handle)
        self.url = self._server.url

    def hold(self, sha: str) -> None:
        self._held.add(sha)

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self._release.set()
        self._server.close()

    # ---- what a reviewer sees ------------------------------------------------------------------------

    def runs_on(self, sha: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.check_runs.values() if r["head_sha"] == sha]

    def comments_on(self, number: int) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self.comments.values() if c["issue"] == number]

    def calls(self, method: str, pattern: str) -> list[tuple[str, str, dict[str, list[str]], Any]]:
        with self._lock:
            return [r for r in self.requests if r[0] == method and re.fullmatch(pattern, r[1])]

    # ---- the API ---------------------------------------------------------------------------------------

    def _handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        with self._lock:
            self.requests.append((method, path, query, body))
        found = next(
            ((t, m.groupdict()) for verb, t, r in self._routes if verb == method and (m := r.fullmatch(path))), None
        )
        if found is None:
            return self._violation(f"{method} {path}: not an operation the controller may call")
        template, params = found
        problems = self._invalid(method, template, params=params, query=query, headers=headers, body=body)
        if problems:
            return self._violation(f"{method} {template}: {'; '.join(problems)}")
        return self._answer(method, template, params, query, body)

    def _violation(self, text: str) -> tuple[int, Any]:
        with self._lock:
            self.violations.append(text)
        return 422, {"message": text}

    def _invalid(
        self,
        method: str,
        template: str,
        *,
        params: dict[str, str],
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: Any,
    ) -> list[str]:
        operation = self.spec["paths"][template][method.lower()]
        problems = self._unauthorized(template, headers.get("authorization") or "")
        if headers.get("accept") != "application/vnd.github+json":
            problems.append("Accept is not application/vnd.github+json")
        declared = {}
        for given in operation.get("parameters", []):
            parameter = self._resolve(given)
            declared[(parameter["in"], parameter["name"])] = parameter
        for name, value in params.items():
            problems += self._value("path", name, urllib.parse.unquote(value), declared)
        for name, values in query.items():
            problems += self._value("query", name, values[-1], declared)
        request_body = operation.get("requestBody", {})
        content = request_body.get("content", {}).get("application/json")
        if content is not None and (body is not None or request_body.get("required")):
            schema = {**content["schema"], "components": self.spec["components"]}
            try:
                jsonschema.validate(body, schema)
            except jsonschema.ValidationError as exc:
                problems.append(f"body: {exc.message[:300]} at {list(exc.absolute_path)}")
        elif content is None and body is not None:
            problems.append("a body where the operation takes none")
        return problems

    def _unauthorized(self, template: str, authorization: str) -> list[str]:
        given = authorization.removeprefix("Bearer ")
        if template.startswith("/app/") or template.endswith("/installation"):
            if self.app is None:
                return ["an App's call to a GitHub that has no App"]
            try:
                claims = jwt.decode(
                    given, self.app[1], algorithms=["RS256"], options={"require": ["iat", "exp", "iss"]}
                )
            except jwt.PyJWTError as exc:
                return [f"not a valid JWT of the App: {exc}"]
            if claims["iss"] != self.app[0] or claims["exp"] - claims["iat"] > 600:
                return [f"JWT claims {claims}: iss must be the App's id and it may live 10 minutes at most"]
            return []
        if self.app is not None:
            expires = self.issued.get(given)
            return [] if expires is not None and expires > time.time() else ["no live installation token"]
        return [] if given == self.token else ["no valid Authorization header"]

    def _value(self, where: str, name: str, value: str, declared: dict[tuple[str, str], Any]) -> list[str]:
        parameter = declared.get((where, name))
        if parameter is None:
            return [f"{where} parameter {name!r} is not declared"]
        schema = parameter.get("schema", {})
        typed: Any = value
        if schema.get("type") == "integer":
            if not re.fullmatch(r"-?\d+", value):
                return [f"{where} parameter {name!r} is not an integer: {value!r}"]
            typed = int(value)
        try:
            jsonschema.validate(typed, {**schema, "components": self.spec["components"]})
        except jsonschema.ValidationError as exc:
            return [f"{where} parameter {name!r}: {exc.message[:200]}"]
        return []

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = self.spec
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node

    def _answer(
        self, method: str, template: str, params: dict[str, str], query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        writes_a_run = (template.endswith("/check-runs") and method == "POST") or template.endswith("{check_run_id}")
        if writes_a_run and self.refuse_checks:
            return 403, {
                "message": "You must authenticate via a GitHub App.",
                "documentation_url": "https://docs.github.com/rest/checks/runs#create-a-check-run",
                "status": "403",
            }
        if template.endswith("/installation"):
            return 200, {"id": self.installation, "app_id": int(self.app[0]) if self.app else 0, "target_type": "User"}
        if template.endswith("/access_tokens"):
            if int(params["installation_id"]) != self.installation:
                return 404, {"message": "Not Found"}
            token = "ghs_" + uuid.uuid4().hex
            expires = time.time() + self.token_ttl
            with self._lock:
                self.issued[token] = expires
            stamp = datetime.datetime.fromtimestamp(expires, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return 201, {"token": token, "expires_at": stamp, "permissions": {"checks": "write"}}
        if template == "/repos/{owner}/{repo}/check-runs":
            if body["head_sha"] in self._held:
                self.holding.set()
                self._release.wait(60)
            with self._lock:
                run = {"id": next(self._ids), "head_sha": body["head_sha"], "name": body["name"], "annotations": []}
                self.check_runs[run["id"]] = run
            return 201, self._update_run(run, body)
        if template.endswith("{check_run_id}"):
            known = self.check_runs.get(int(params["check_run_id"]))
            if known is None:
                return 404, {"message": "Not Found"}
            return 200, self._update_run(known, body)
        if template.endswith("/commits/{ref}/check-runs"):
            name = query.get("check_name", [None])[-1]
            with self._lock:
                runs = [r for r in self.check_runs.values() if r["head_sha"] == params["ref"] and r["name"] == name]
            latest = [_run_json(max(runs, key=lambda r: r["id"]))] if runs else []
            return 200, {"total_count": len(latest), "check_runs": latest}
        if template.endswith("/issues/{issue_number}/comments") and method == "GET":
            per_page = int(query.get("per_page", ["30"])[-1])
            page = int(query.get("page", ["1"])[-1])
            mine = sorted(self.comments_on(int(params["issue_number"])), key=lambda c: c["id"])
            return 200, mine[(page - 1) * per_page : page * per_page]
        if template.endswith("/issues/{issue_number}/comments"):
            with self._lock:
                comment = {
                    "id": next(self._ids),
                    "issue": int(params["issue_number"]),
                    "body": body["body"],
                    "edits": 0,
                    "user": {"login": "liminal-gitops[bot]", "type": "Bot"},
                }
                self.comments[comment["id"]] = comment
            return 201, comment
        if template.endswith("/issues/comments/{comment_id}"):
            with self._lock:
                edited = self.comments.get(int(params["comment_id"]))
                if edited is None:
                    return 404, {"message": "Not Found"}
                edited.update(body=body["body"], edits=edited["edits"] + 1)
            return 200, edited
        with self._lock:  # statuses
            self.statuses.append((params["sha"], body))
        return 201, {"id": next(self._ids), "state": body["state"], "context": body.get("context")}

    def _update_run(self, run: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            output = dict(body.get("output") or {})
            run["annotations"].extend(output.pop("annotations", []))
            run.setdefault("updates", []).append(body)
            for key in ("status", "conclusion", "details_url", "started_at", "completed_at"):
                if key in body:
                    run[key] = body[key]
            if "conclusion" in body:
                run["status"] = "completed"
            if output:
                run["output"] = output
            return _run_json(run)


def _run_json(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k not in ("annotations", "updates")}


def _route(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(pattern)


# GitLab's REST API v4 as documented at docs.gitlab.com (the parameters the controller may send):
_GITLAB_STATES = {"pending", "running", "success", "failed", "canceled", "skipped"}
_NOTE_BODY = 1_000_000
"""GitLab's limit on a note's body, in characters ("Notes API": `body` ... limited to 1,000,000)."""


class FakeGitLab:
    """A FAKE of GitLab's REST API v4 for commit statuses and merge-request notes, validating each
    request against GitLab's documentation (routes, `PRIVATE-TOKEN`, parameters, their values)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[tuple[str, str, dict[str, list[str]], Any]] = []
        self.violations: list[str] = []
        self.statuses: list[tuple[str, dict[str, str]]] = []
        self.notes: dict[int, dict[str, Any]] = {}
        self._ids = iter(range(500, 10**9))
        self._lock = threading.Lock()
        self._server = _Server(self._handle)
        self.url = self._server.url

    def close(self) -> None:
        self._server.close()

    def notes_on(self, project: str, iid: int) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(n) for n in self.notes.values() if (n["project"], n["iid"]) == (project, iid)]

    def _handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        with self._lock:
            self.requests.append((method, path, query, body))
        if headers.get("private-token") != self.token:
            return self._violation(f"{method} {path}: no valid PRIVATE-TOKEN header")
        params = {k: v[-1] for k, v in query.items()}
        if (match := re.fullmatch(r"/api/v4/projects/([^/]+)/statuses/([0-9a-f]{40})", path)) and method == "POST":
            # Commits API, "Set the pipeline status of a commit": id, sha, state required; name,
            # target_url, description optional
            wrong = set(params) - {"state", "name", "context", "target_url", "description", "ref", "coverage"}
            if params.get("state") not in _GITLAB_STATES or wrong:
                return self._violation(f"POST statuses: state {params.get('state')!r}, unknown {sorted(wrong)}")
            with self._lock:
                self.statuses.append((match.group(2), params))
            return 201, {"id": next(self._ids), "sha": match.group(2), "status": params["state"]}
        match = re.fullmatch(r"/api/v4/projects/([^/]+)/merge_requests/(\d+)/notes(?:/(\d+))?", path)
        if match is None:
            return self._violation(f"{method} {path}: not an endpoint the controller may call")
        project, iid, note_id = urllib.parse.unquote(match.group(1)), int(match.group(2)), match.group(3)
        if method == "GET" and note_id is None:
            # Notes API, "List all merge request notes": sort asc|desc, order_by created_at|updated_at
            if params.get("sort", "desc") not in ("asc", "desc") or params.get("order_by", "created_at") not in (
                "created_at",
                "updated_at",
            ):
                return self._violation(f"GET notes: sort/order_by {params}")
            per_page = int(params.get("per_page", 20))
            if set(params) - {"sort", "order_by", "per_page", "page"} or not 1 <= per_page <= 100:
                return self._violation(f"GET notes: parameters {params}")
            page = int(params.get("page", 1))
            mine = sorted(self.notes_on(project, iid), key=lambda n: n["id"], reverse=params.get("sort") != "asc")
            return 200, mine[(page - 1) * per_page : page * per_page]
        if method in ("POST", "PUT") and (method == "PUT") == (note_id is not None):
            # Notes API, "Create new merge request note" / "Modify existing merge request note":
            # `body` (string, required, at most 1,000,000 characters)
            text = (body or {}).get("body") if isinstance(body, dict) else None
            if not isinstance(text, str) or not text or len(text) > _NOTE_BODY:
                return self._violation(f"{method} notes: body missing, not text or over {_NOTE_BODY:,} characters")
            with self._lock:
                if note_id is None:
                    made: dict[str, Any] = {"id": next(self._ids), "project": project, "iid": iid, "body": text}
                    made["edits"] = 0
                    self.notes[made["id"]] = made
                    return 201, made
                note = self.notes.get(int(note_id))
                if note is None:
                    return 404, {"message": "404 Not found"}
                note.update(body=text, edits=note["edits"] + 1)
                return 200, note
        return self._violation(f"{method} {path}: not an operation the controller may call")

    def _violation(self, text: str) -> tuple[int, Any]:
        with self._lock:
            self.violations.append(text)
        return 422, {"message": text}
