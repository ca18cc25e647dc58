"""Liminal serving proxy: the stable endpoint of a locally served python_server service.

Runs as its own container (`python3 -c <this file>`, standard library only) publishing the
service's port. Each request goes to the backend named in BACKEND_FILE (`host:port`), read anew
per request, so the controller switches to a new version by rewriting that file once the new
container answers /healthcheck; requests already in flight finish on the old one. A backend that
refuses a connection is re-read once: the file may have just changed.
"""

from __future__ import annotations

import http.client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BACKEND_FILE = "/tmp/liminal-backend"
LISTEN_PORT = 8080
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"})
_last = [""]


def backend() -> str:
    """The current backend, or the last good one while the file is being rewritten."""
    try:
        with open(BACKEND_FILE, encoding="ascii") as stream:
            found = stream.read().strip()
    except OSError:
        found = ""
    if found:
        _last[0] = found
    return _last[0]


class Proxy(BaseHTTPRequestHandler):
    """Forwards every request to the backend."""

    protocol_version = "HTTP/1.0"

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        for attempt in (1, 2):
            target = backend()
            if not target:
                break
            host, _, port = target.rpartition(":")
            connection = http.client.HTTPConnection(host, int(port), timeout=60)
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except (ConnectionRefusedError, ConnectionResetError, OSError):
                connection.close()
                if attempt == 1:
                    continue
                break
            connection.close()
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in _HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_error(502, "no serving backend answers")

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def do_PUT(self) -> None:
        self._forward()

    def do_DELETE(self) -> None:
        self._forward()

    def do_PATCH(self) -> None:
        self._forward()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the backend logs requests."""


class Server(ThreadingHTTPServer):
    """A thread per request; a deep accept queue, so that bursts wait instead of retrying SYNs."""

    daemon_threads = True
    request_queue_size = 128


if __name__ == "__main__":
    Server(("0.0.0.0", LISTEN_PORT), Proxy).serve_forever()  # inside its own container
