"""A FAKE Kubernetes API server, in process, for the Kubernetes target's tests.

No Kubernetes API server can run on this machine, so this serves exactly the paths the target
uses, as the Kubernetes API documents them: apps/v1 Deployments, v1 Services, PersistentVolumeClaims
and Secrets in a namespace and cluster-wide v1 PersistentVolumes,
`GET` one, `GET` a list by equality `labelSelector`, `PATCH` with `application/apply-patch+yaml`
(server-side apply: `fieldManager` required, `force`), and `DELETE`. It keeps objects in memory,
bumps `metadata.generation` when a spec changes, records managed fields, and plays a Deployment
controller: a rollout completes after `rollout_reads` reads of the Deployment (or never, when
`stuck`). Every request is recorded for the tests to check.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

_PATHS = {
    "deployments": re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments(?:/([^/]+))?$"),
    "services": re.compile(r"^/api/v1/namespaces/([^/]+)/services(?:/([^/]+))?$"),
    "persistentvolumeclaims": re.compile(r"^/api/v1/namespaces/([^/]+)/persistentvolumeclaims(?:/([^/]+))?$"),
    "secrets": re.compile(r"^/api/v1/namespaces/([^/]+)/secrets(?:/([^/]+))?$"),
    # cluster-scoped: the namespace group matches nothing and stays empty
    "persistentvolumes": re.compile(r"^/api/v1/()persistentvolumes(?:/([^/]+))?$"),
}
_KINDS = {
    "deployments": ("apps/v1", "Deployment"),
    "services": ("v1", "Service"),
    "persistentvolumeclaims": ("v1", "PersistentVolumeClaim"),
    "secrets": ("v1", "Secret"),
    "persistentvolumes": ("v1", "PersistentVolume"),
}


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    authorization: str
    body: Any


@dataclass
class FakeKubernetes:
    """The fake's state; `url` once started."""

    rollout_reads: int = 2
    stuck: bool = False
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    _pending: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, plural: str, namespace: str, obj: dict[str, Any]) -> None:
        """Create an object directly, as someone else (kubectl, another controller) would have."""
        api_version, kind = _KINDS[plural]
        meta = {"namespace": namespace, "generation": 1, "uid": str(uuid.uuid4()), **obj.get("metadata", {})}
        self.objects[(plural, namespace, meta["name"])] = {
            **obj,
            "apiVersion": api_version,
            "kind": kind,
            "metadata": meta,
        }

    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        url = urlsplit(raw_path)
        query = parse_qs(url.query)
        content_type = headers.get("Content-Type", "")
        parsed: Any = None
        if body:
            parsed = yaml.safe_load(body) if "yaml" in content_type else json.loads(body)
        with self._lock:
            self.requests.append(
                Recorded(method, url.path, query, content_type, headers.get("Authorization", ""), parsed)
            )
            for plural, pattern in _PATHS.items():
                match = pattern.match(url.path)
                if match:
                    return self._route(method, plural, match.group(1), match.group(2), query, content_type, parsed)
        return 404, _status(404, "NotFound", f"the fake serves no {url.path}")

    def _route(  # noqa: PLR0917 - one request's parts
        self, method: str, plural: str, ns: str, name: str | None, query: dict[str, list[str]], ctype: str, body: Any
    ) -> tuple[int, Any]:
        api_version, kind = _KINDS[plural]
        key = (plural, ns, name or "")
        if name is None and method == "GET":
            wanted = dict(p.split("=", 1) for p in (query.get("labelSelector", [""])[0].split(",")) if p)
            items = [
                o
                for (p, n, _), o in sorted(self.objects.items())
                if p == plural and n == ns and wanted.items() <= o["metadata"].get("labels", {}).items()
            ]
            return 200, {"apiVersion": api_version, "kind": f"{kind}List", "metadata": {}, "items": items}
        if name is None:
            return 405, _status(405, "MethodNotAllowed", method)
        if method == "GET":
            obj = self.objects.get(key)
            if obj is None:
                return 404, _status(404, "NotFound", f'{plural}.{api_version} "{name}" not found')
            if plural == "deployments":
                self._play_controller(key, obj)
            return 200, obj
        if method == "DELETE":
            gone = self.objects.pop(key, None)
            if gone is None:
                return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
            # as the API answers: a Service's delete returns the object, a Deployment's a Status
            return 200, gone if plural == "services" else {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if method == "PATCH":
            if ctype != "application/apply-patch+yaml":
                return 415, _status(415, "UnsupportedMediaType", f"the fake takes only server-side apply, not {ctype}")
            manager = query.get("fieldManager", [""])[0]
            if not manager:
                return 422, _status(422, "Invalid", "fieldManager is required for apply patch")
            if body.get("kind") != kind or body.get("metadata", {}).get("name") != name:
                return 400, _status(400, "BadRequest", "the body's kind or name does not match the path")
            current = self.objects.get(key)
            generation = 1 if current is None else current["metadata"]["generation"]
            if current is not None and current.get("spec") != body.get("spec"):
                generation += 1
            meta = {
                **body["metadata"],
                **({"namespace": ns} if ns else {}),
                "generation": generation,
                "uid": current["metadata"]["uid"] if current else str(uuid.uuid4()),
                "managedFields": [{"manager": manager, "operation": "Apply", "apiVersion": api_version}],
            }
            obj = {**body, "metadata": meta, "status": (current or {}).get("status", {})}
            self.objects[key] = obj
            if plural == "deployments":
                self._pending[key] = self.rollout_reads
            return (200 if current else 201), obj
        return 405, _status(405, "MethodNotAllowed", method)

    def _play_controller(self, key: tuple[str, str, str], obj: dict[str, Any]) -> None:
        left = self._pending.get(key, 0)
        if left > 0:
            self._pending[key] = left - 1
            return
        replicas = int(obj.get("spec", {}).get("replicas", 1))
        available = 0 if self.stuck else replicas
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": available,
            "availableReplicas": available,
        }


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


@contextmanager
def serve(fake: FakeKubernetes) -> Iterator[FakeKubernetes]:
    """Run the fake on a free 127.0.0.1 port for the `with` block."""

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, payload = fake.handle(self.command, self.path, self.headers, self.rfile.read(length))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = do_DELETE = do_POST = do_PUT = _any  # noqa: N815 - the base class's names

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
