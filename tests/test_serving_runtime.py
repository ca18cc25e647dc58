"""The serving runtime (controller/render/runtime/serve.py) as a real process, without Docker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import answers, free_port

SERVE = Path(__file__).resolve().parent.parent / "controller" / "render" / "runtime" / "serve.py"

USER_CODE = """
import json

def predict(body):
    x = json.loads(body or b"{}").get("x", 0)
    return {"y": 2 * x + 1}

def liminal_style(body):
    return json.dumps({"got": json.loads(body)})

def broken(body):
    raise ValueError("secret detail in the exception")
"""


def _start(app: Path, debug: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "LIMINAL_SERVE_PORT": str(port), "LIMINAL_SERVE_HOST": "127.0.0.1"}
    if debug:
        env["LIMINAL_SERVE_DEBUG"] = "1"
    proc = subprocess.Popen(
        [sys.executable, str(SERVE), str(app / "endpoints.json")],
        cwd=app,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    if answers(base + "/healthcheck", 10):
        return proc, base
    proc.kill()
    raise AssertionError(f"server did not start: {proc.communicate()[1].decode()}")


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "model.py").write_text(USER_CODE, encoding="utf-8")
    endpoints = [
        {"endpoint": "/predict", "module": "model", "function": "predict"},
        {"endpoint": "/liminal", "module": "model", "function": "liminal_style"},
        {"endpoint": "/broken", "module": "model", "function": "broken"},
    ]
    (tmp_path / "endpoints.json").write_text(json.dumps({"endpoints": endpoints}), encoding="utf-8")
    return tmp_path


@pytest.fixture
def server(app: Path) -> Iterator[str]:
    proc, base = _start(app, debug=False)
    yield base
    proc.terminate()
    assert proc.wait(timeout=10) == 0  # SIGTERM shuts down cleanly


def call(url: str, body: bytes | None = None, method: str = "POST") -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_endpoint_gets_the_body_and_answers_json(server: str) -> None:
    assert call(server + "/predict", b'{"x": 3}') == (200, {"y": 7})
    assert call(server + "/predict", None, "GET") == (200, {"y": 1})


def test_liminal_style_function_returning_a_json_string(server: str) -> None:
    assert call(server + "/liminal", b'{"a": [1, 2]}') == (200, {"got": {"a": [1, 2]}})


def test_healthcheck_and_unknown_path(server: str) -> None:
    assert call(server + "/healthcheck", None, "GET") == (200, {"status": "ok"})
    assert call(server + "/nope", None, "GET") == (404, {"error": "no endpoint /nope"})


def test_error_is_500_json_without_traceback(server: str) -> None:
    status, body = call(server + "/broken", b"{}")
    assert status == 500
    assert body == {"error": "ValueError in endpoint /broken"}


def test_error_carries_the_traceback_in_debug(app: Path) -> None:
    proc, base = _start(app, debug=True)
    try:
        status, body = call(base + "/broken", b"{}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert status == 500
    assert "secret detail in the exception" in str(body["traceback"])


def test_bad_content_length_and_oversized_bodies(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n")
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413")


def test_a_missing_module_fails_at_start_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "endpoints.json").write_text(
        json.dumps({"endpoints": [{"endpoint": "/x", "module": "not_there", "function": "f"}]}), encoding="utf-8"
    )
    result = subprocess.run(
        [sys.executable, str(SERVE), str(tmp_path / "endpoints.json")],
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert b"cannot load endpoints: ModuleNotFoundError: No module named 'not_there'" in result.stderr


def test_the_example_server_image_content_serves_its_endpoints(tmp_path: Path) -> None:
    """The files render puts in the hello/server image, run as the image's CMD runs them."""
    from controller.model import ImageBuild, Origin
    from controller.render import RenderSettings, render
    from controller.spec import discover, load

    repo = Path(__file__).resolve().parent.parent
    example = repo / "examples" / "hello-liminal"
    state = render(load(discover([example]), {}), repo, RenderSettings(), Origin("hello", ""))
    build = next(r.artifact for r in state.resources if r.key.name == "hello/server")
    assert isinstance(build, ImageBuild)
    app = tmp_path / "app"
    for f in build.files:
        target = app / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.data if f.data is not None else (repo / str(f.origin)).read_bytes())
    port = free_port()
    env = {**os.environ, "LIMINAL_SERVE_PORT": str(port), "LIMINAL_SERVE_HOST": "127.0.0.1"}
    proc = subprocess.Popen(
        [sys.executable, "__liminal__/serve.py", "__liminal__/endpoints.json"], cwd=app, env=env, stderr=subprocess.PIPE
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert answers(base + "/healthcheck", 10), "the example server did not start"
        assert call(base + "/predict", b'{"x": 2}') == (200, {"y": 5.0})
        assert call(base + "/version", None, "GET") == (200, {"version": "1"})
    finally:
        proc.terminate()
        proc.wait(timeout=10)
