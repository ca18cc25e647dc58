"""Local Docker serving target: python_server services as containers on the local engine.

Each service has a stable endpoint, a small proxy container (`<name>`, running
controller/targets/serving_proxy.py in the service's own image) that publishes the port, and one
app container per version (`<name>-<hash>`, no published port). A change starts the new version,
waits until it answers /healthcheck, switches the proxy to it, and once the proxy counts no
request in flight on the old version, stops that one (SIGTERM, then its own shutdown) and removes
it: no request fails or waits on a version that is gone. Removal stops and removes both.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from typing import Any

import docker
import docker.errors
import structlog

from controller.errors import TargetError
from controller.model import (
    Deployed,
    Health,
    Resource,
    ResourceKey,
    ResourceKind,
    ResultCode,
    ServiceDeployment,
    ServiceEndpoint,
    Snapshot,
    TargetResult,
)
from controller.render.images import SERVE_PORT
from controller.render.services import ANNOTATION_HASH, HEALTHCHECK_SCRIPT, LABEL_REPO, MANAGED_BY, label_value
from controller.targets import each
from controller.targets.engine import Engine, unreachable

__all__ = ["DockerServingTarget"]

log = structlog.get_logger("liminal.serving")

ROLE = "liminal-gitops/role"
SERVICE = "liminal-gitops/service"
STOP_TIMEOUT = 10
"""Seconds a retired version has between SIGTERM and SIGKILL (nothing is in flight on it by then)."""


class DockerServingTarget:
    """Observe, roll out and remove services on the Docker engine at DOCKER_HOST (or `client`)."""

    watches_drift = True  # a container can be stopped or removed by hand

    def __init__(
        self, client: docker.DockerClient | None = None, *, health_timeout: float = 60.0, host: str | None = None
    ) -> None:
        self._engine = Engine(client, host)
        self.health_timeout = health_timeout

    @property
    def client(self) -> docker.DockerClient:
        """The engine's client, connected on first use."""
        return self._engine.client

    # ---- observe ----------------------------------------------------------------------------------

    def observe(self, resources: Sequence[Resource]) -> Mapping[ResourceKey, str | None]:
        """A service is live when its proxy runs and an app container of the desired hash runs."""
        out: dict[ResourceKey, str | None] = {}
        for r in resources:
            spec = _spec(r)
            proxy = self._get(spec["name"])
            apps = self._apps(r.key.repo, r.key.name)
            running = [a for a in apps if a.status == "running" and a.labels.get(ANNOTATION_HASH) == r.content_hash]
            out[r.key] = r.content_hash if proxy is not None and proxy.status == "running" and running else None
        return out

    def endpoints(self, deployed: Sequence[Deployed]) -> dict[ResourceKey, ServiceEndpoint]:
        """Each deployed service's URL and the health of the version the ledger has live."""
        out: dict[ResourceKey, ServiceEndpoint] = {}
        for d in deployed:
            served = ServiceDeployment.of(d.body)
            name = served.container.get("name") if served is not None else None
            proxy = self._get(str(name)) if name else None
            app = next(
                (a for a in self._apps(d.key.repo, d.key.name) if a.labels.get(ANNOTATION_HASH) == d.content_hash),
                None,
            )
            if app is None or proxy is None:
                out[d.key] = ServiceEndpoint(_url(proxy), Health.ABSENT)
            elif app.status != "running":
                out[d.key] = ServiceEndpoint(_url(proxy), Health.STOPPED)
            else:
                state = str(app.attrs.get("State", {}).get("Health", {}).get("Status", "healthy"))
                if state == "starting":  # the engine's first check is still to come: ask the app itself
                    state = "healthy" if self._answers(app) else "starting"
                out[d.key] = ServiceEndpoint(_url(proxy), Health.of(state))
        return out

    # ---- apply ------------------------------------------------------------------------------------

    def apply(self, resources: Sequence[Resource], source: Snapshot) -> Iterator[TargetResult]:
        """Roll each service out to its desired version."""
        return each(resources, self._apply_one)

    def _apply_one(self, resource: Resource) -> TargetResult:
        spec = _spec(resource)
        bound = log.bind(repo=resource.key.repo, service=resource.key.name, image=spec["image"])
        try:
            proxy = self._proxy(resource, spec)
            old = self._apps(resource.key.repo, resource.key.name)
            current = next(
                (a for a in old if a.labels.get(ANNOTATION_HASH) == resource.content_hash and a.status == "running"),
                None,
            )
            stale = [] if current else [a for a in old if a.name == _app_name(resource)]
            app = current or self._start_app(resource, spec, stale)
            self._wait_healthy(resource, app)
            app.reload()
            address = app.attrs["NetworkSettings"]["IPAddress"]
            left = self._switch(resource, proxy, f"{address}:{SERVE_PORT}")
            bound.info("serving.switched", container=app.name, backend=address, still_in_flight=left)
            for container in [a for a in old if a.id != app.id and a not in stale]:
                container.stop(timeout=STOP_TIMEOUT)  # SIGTERM: the runtime shuts down by itself
                container.remove(force=True)
            proxy.reload()
        except docker.errors.APIError as exc:
            raise TargetError(str(resource.key), f"Docker refused it: {exc.explanation or exc}") from exc
        except docker.errors.DockerException as exc:
            raise unreachable(exc) from exc
        message = f"serving at {_url(proxy)}"
        return TargetResult(resource.key, ResultCode.APPLIED, message)

    def _switch(self, resource: Resource, proxy: Any, backend: str) -> int:
        """Point the proxy at `backend`; returns when no request is in flight on the old version
        (the proxy counts them), with how many still were when its drain timeout ended."""
        result = proxy.exec_run(["python3", "-c", _PROXY_SOURCE, "switch", backend], user="65532:65532")
        answer = result.output.decode(errors="replace").strip()
        if result.exit_code != 0 or not answer.startswith("left "):
            raise TargetError(str(resource.key), f"the serving proxy did not switch: {answer[-300:]}")
        return int(answer.split()[1])

    def _proxy(self, resource: Resource, spec: Mapping[str, Any]) -> Any:
        host, port = spec["ports"][f"{SERVE_PORT}/tcp"]
        # no port in liminal.yml: the engine picks a free one, kept while the proxy lives
        ports: dict[str, tuple[str] | tuple[str, int]] = {"8080/tcp": (host, int(port)) if port else (host,)}
        proxy = self._get(spec["name"])
        if proxy is not None and (
            proxy.status != "running"
            or proxy.labels.get("liminal-gitops/ports") != repr(ports)
            or proxy.labels.get(PROXY_VERSION) != _PROXY_HASH
        ):
            proxy.remove(force=True)  # stopped by hand, its port changed, or an older proxy: made again
            proxy = None
        if proxy is None:
            proxy = self.client.containers.run(
                spec["image"],
                ["python3", "-c", _PROXY_SOURCE],
                name=spec["name"],
                detach=True,
                ports=ports,
                labels={
                    **_owner(resource),
                    ROLE: "proxy",
                    "liminal-gitops/ports": repr(ports),
                    PROXY_VERSION: _PROXY_HASH,
                },
                restart_policy={"Name": "unless-stopped"},
                user="65532:65532",
            )
        return proxy

    def _start_app(self, resource: Resource, spec: Mapping[str, Any], stale: list[Any]) -> Any:
        for container in stale:  # the same version, stopped by hand: made again
            container.remove(force=True)
        kwargs: dict[str, Any] = {}
        if "mem_limit" in spec:
            kwargs["mem_limit"] = spec["mem_limit"]
        if "nano_cpus" in spec:
            kwargs["nano_cpus"] = spec["nano_cpus"]
        return self.client.containers.run(
            spec["image"],
            name=_app_name(resource),
            detach=True,
            environment=dict(spec.get("environment", {})),
            labels={**spec.get("labels", {}), **_owner(resource), ROLE: "app"},
            healthcheck=spec.get("healthcheck"),
            restart_policy=spec.get("restart_policy"),
            **kwargs,
        )

    def _answers(self, app: Any) -> bool:
        """True when the app answers /healthcheck (asked from inside it: works wherever the controller runs)."""
        return bool(app.exec_run(["python3", "-c", HEALTHCHECK_SCRIPT]).exit_code == 0)

    def _wait_healthy(self, resource: Resource, app: Any) -> None:
        deadline = time.monotonic() + self.health_timeout
        while True:
            app.reload()
            if app.status == "running" and self._answers(app):
                return
            if app.status in ("exited", "dead") or time.monotonic() > deadline:
                logs = app.logs(tail=20).decode(errors="replace").strip()
                app.remove(force=True)  # the old version keeps serving
                why = "exited" if app.status in ("exited", "dead") else f"not healthy after {self.health_timeout:g} s"
                raise TargetError(str(resource.key), f"the new version {why}; still serving the previous one. {logs}")
            time.sleep(0.2)

    # ---- delete -----------------------------------------------------------------------------------

    def delete(self, deployed: Deployed) -> TargetResult:
        """Stop and remove the service's proxy and app containers."""
        try:
            for container in self.client.containers.list(all=True, filters={"label": _selector(deployed.key)}):
                container.remove(force=True)
        except docker.errors.DockerException as exc:
            raise unreachable(exc) from exc
        return TargetResult(deployed.key, ResultCode.DELETED, "containers removed")

    # ---- engine -----------------------------------------------------------------------------------

    def _get(self, name: str) -> Any:
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as exc:
            raise unreachable(exc) from exc

    def _apps(self, repo: str, service: str) -> list[Any]:
        key = ResourceKey(repo, ResourceKind.SERVICE, service)
        filters = {"label": [*_selector(key), f"{ROLE}=app"]}
        try:
            return list(self.client.containers.list(all=True, filters=filters))
        except docker.errors.DockerException as exc:
            raise unreachable(exc) from exc


def _spec(resource: Resource) -> Mapping[str, Any]:
    served = resource.artifact
    if not isinstance(served, ServiceDeployment) or served.target != "docker":
        raise TargetError(str(resource.key), "not a local Docker service (LIMINAL_SERVING=docker renders those)")
    return dict(served.container)


def _owner(resource: Resource) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_REPO: label_value(resource.key.repo),
        SERVICE: label_value(resource.key.name),
    }


def _selector(key: ResourceKey) -> list[str]:
    return [
        f"app.kubernetes.io/managed-by={MANAGED_BY}",
        f"{LABEL_REPO}={label_value(key.repo)}",
        f"{SERVICE}={label_value(key.name)}",
    ]


def _app_name(resource: Resource) -> str:
    return f"{_spec(resource)['name']}-{resource.content_hash[:12]}"


def _url(proxy: Any) -> str | None:
    if proxy is None:
        return None
    bindings = (proxy.attrs.get("NetworkSettings", {}).get("Ports") or {}).get("8080/tcp") or []
    for binding in bindings:
        return f"http://{binding.get('HostIp') or '127.0.0.1'}:{binding['HostPort']}"
    return None


_PROXY_SOURCE = resources.files("controller.targets").joinpath("serving_proxy.py").read_text(encoding="utf-8")
_PROXY_HASH = hashlib.sha256(_PROXY_SOURCE.encode()).hexdigest()[:12]
PROXY_VERSION = "liminal-gitops/proxy"
"""Label holding the proxy code's hash: a proxy of older code is replaced."""
