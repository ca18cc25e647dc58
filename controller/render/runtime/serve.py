"""Liminal serving runtime: the HTTP server inside every python_server image.

It is copied into the image as a standalone file and uses the standard library only. Each
endpoint from the image's `endpoints` maps to `module.function` of the user's code. As in
Liminal, the function receives the request body (bytes, usually JSON) and its return value is
the response: a str or bytes is sent as it is, anything else is encoded as JSON.

`GET /healthcheck` answers `{"status": "ok"}` unless the user maps that path themselves.
A failing function gives status 500 and `{"error": ...}`; the traceback goes to the server log,
and into the response only when LIMINAL_SERVE_DEBUG=1.

Usage: `python serve.py ENDPOINTS.json` with LIMINAL_SERVE_PORT (default 8080) and
LIMINAL_SERVE_HOST (default 0.0.0.0). The working directory holds the user's code.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Larger requests get 413: a model server should not buffer unbounded bodies."""

Endpoint = Callable[[bytes], Any]


def load_endpoints(config: Mapping[str, Any]) -> dict[str, Endpoint]:
    """Import every `module.function` named in `config["endpoints"]`, keyed by path."""
    out: dict[str, Endpoint] = {}
    for item in config.get("endpoints", []):
        module = importlib.import_module(str(item["module"]))
        function = getattr(module, str(item["function"]))
        if not callable(function):
            raise TypeError(f"{item['module']}.{item['function']} is not callable")
        out["/" + str(item["endpoint"]).lstrip("/")] = function
    return out


def make_handler(endpoints: Mapping[str, Endpoint], *, debug: bool) -> type[BaseHTTPRequestHandler]:
    """A request handler class dispatching to `endpoints`."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "liminal-serve/1"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def _dispatch(self) -> None:
            path = urlsplit(self.path).path
            if path == "/favicon.ico":
                self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")
                return
            function = endpoints.get(path)
            if function is None:
                if path == "/healthcheck":
                    self._json(HTTPStatus.OK, {"status": "ok"})
                else:
                    self._json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {path}"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self._json(HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"})
                return
            if length < 0 or length > MAX_BODY_BYTES:
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY_BYTES} bytes"})
                return
            body = self.rfile.read(length) if length else b""
            try:
                result = function(body)
            except Exception as exc:  # the user's code may raise anything; report, never crash
                trace = traceback.format_exc()
                sys.stderr.write(f"endpoint {path} failed:\n{trace}")
                error: dict[str, Any] = {"error": f"{type(exc).__name__} in endpoint {path}"}
                if debug:
                    error["traceback"] = trace
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, error)
                return
            if isinstance(result, bytes):
                self._send(HTTPStatus.OK, result, "application/json")
            elif isinstance(result, str):
                self._send(HTTPStatus.OK, result.encode(), "application/json")
            else:
                try:
                    self._json(HTTPStatus.OK, result)
                except (TypeError, ValueError) as exc:
                    self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"result is not JSON: {exc}"})

        def _json(self, status: HTTPStatus, value: Any) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def _send(self, status: HTTPStatus, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(json.dumps({"event": "request", "client": self.client_address[0], "line": format % args}))
            sys.stderr.write("\n")

    return Handler


def main(argv: list[str]) -> int:
    """Serve the endpoints of the config file named in `argv[1]` until SIGTERM or SIGINT."""
    if len(argv) != 2:
        sys.stderr.write("usage: serve.py ENDPOINTS.json\n")
        return 2
    with open(argv[1], encoding="utf-8") as stream:
        config = json.load(stream)
    sys.path.insert(0, os.getcwd())
    try:
        endpoints = load_endpoints(config)
    except Exception as exc:  # an import error in user code must say what failed, then exit
        sys.stderr.write(f"cannot load endpoints: {type(exc).__name__}: {exc}\n")
        return 1
    host = os.environ.get("LIMINAL_SERVE_HOST", "0.0.0.0")
    port = int(os.environ.get("LIMINAL_SERVE_PORT", "8080"))
    debug = os.environ.get("LIMINAL_SERVE_DEBUG") == "1"
    server = ThreadingHTTPServer((host, port), make_handler(endpoints, debug=debug))

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(json.dumps({"event": "listening", "host": host, "port": server.server_address[1]}) + "\n")
    sys.stderr.flush()
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
