"""Liminal serving proxy: the stable endpoint of a locally served python_server service.

Runs as its own container (`python3 -c <this file>`, standard library only) publishing the
service's port. The controller switches it to a new version with `switch HOST:PORT` on the
control port (127.0.0.1:8079 inside the container, reached by `docker exec`): from then on every
request goes to the new backend, and the answer comes once no request is left in flight on the
old one (counted: a request takes its backend and counts itself in one step). Only then is the
old version stopped. The backend is also kept in BACKEND_FILE, so a restarted proxy resumes.

A backend that cannot be connected to within CONNECT_TIMEOUT is asked once more after re-reading
the current backend; a request already sent is never sent twice.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BACKEND_FILE = "/tmp/liminal-backend"
LISTEN_PORT = 8080
CONTROL_PORT = 8079
CONNECT_TIMEOUT = 2.0
"""Seconds to connect to a backend: a container that is gone never holds a request long."""
READ_TIMEOUT = 60.0
"""Seconds a backend may take to answer once the request is sent."""
DRAIN_TIMEOUT = 60.0
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"})


class Backends:
    """The current backend and the requests in flight on each backend."""

    def __init__(self) -> None:
        self.current = ""
        self.inflight: dict[str, int] = {}
        self.changed = threading.Condition()
        try:
            with open(BACKEND_FILE, encoding="ascii") as stream:
                self.current = stream.read().strip()
        except OSError:
            pass

    def take(self) -> str:
        """The backend for a new request, counted in flight on it (release with `done`)."""
        with self.changed:
            if self.current:
                self.inflight[self.current] = self.inflight.get(self.current, 0) + 1
            return self.current

    def done(self, backend: str) -> None:
        with self.changed:
            self.inflight[backend] -= 1
            if not self.inflight[backend]:
                del self.inflight[backend]
            self.changed.notify_all()

    def switch(self, backend: str) -> int:
        """Send new requests to `backend`; return once no request is in flight elsewhere (or after
        DRAIN_TIMEOUT): the number still in flight on the others (0 when drained)."""
        staging = f"{BACKEND_FILE}.{os.getpid()}"
        with open(staging, "w", encoding="ascii") as stream:
            stream.write(backend + "\n")
        os.replace(staging, BACKEND_FILE)
        with self.changed:
            self.current = backend

            def others() -> int:
                return sum(n for b, n in self.inflight.items() if b != backend)

            self.changed.wait_for(lambda: others() == 0, DRAIN_TIMEOUT)
            return others()


BACKENDS = Backends()


class Proxy(BaseHTTPRequestHandler):
    """Forwards every request to the current backend."""

    protocol_version = "HTTP/1.0"

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        for attempt in (1, 2):
            target = BACKENDS.take()
            if not target:
                break
            try:
                host, _, port = target.rpartition(":")
                try:
                    connection = http.client.HTTPConnection(host, int(port), timeout=CONNECT_TIMEOUT)
                    connection.connect()
                except OSError:
                    if attempt == 1:
                        continue  # the backend may have just been switched: take the current one again
                    break
                assert connection.sock is not None
                connection.sock.settimeout(READ_TIMEOUT)
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                except OSError:
                    self.send_error(502, "the serving backend did not answer")
                    return
                finally:
                    connection.close()
            finally:
                BACKENDS.done(target)
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


def control() -> None:
    """Answer `switch HOST:PORT` lines on the control port (inside the container only)."""
    listener = socket.create_server(("127.0.0.1", CONTROL_PORT))
    while True:
        conn, _ = listener.accept()
        with conn, conn.makefile("rw", encoding="ascii") as stream:
            command, _, backend = stream.readline().strip().partition(" ")
            if command == "switch" and backend:
                stream.write(f"left {BACKENDS.switch(backend)}\n")
            else:
                stream.write("error unknown command\n")


def ask(line: str) -> None:
    """`python3 -c <this file> switch HOST:PORT` (run by `docker exec`): tell the proxy; print its answer."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", CONTROL_PORT), timeout=DRAIN_TIMEOUT + 10) as conn:
                conn.sendall(line.encode() + b"\n")
                print(conn.makefile(encoding="ascii").readline().strip())
                return
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # the proxy is starting


if __name__ == "__main__":
    if len(sys.argv) > 1:
        ask(" ".join(sys.argv[1:]))
    else:
        threading.Thread(target=control, daemon=True).start()
        Server(("0.0.0.0", LISTEN_PORT), Proxy).serve_forever()  # inside its own container
