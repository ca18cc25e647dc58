"""Serving: a python_server service as a Kubernetes Deployment + Service, or a local Docker container.

Both are pure data. The content hash is taken before the origin stamp (repo, commit, hash
annotations/labels) is added, so a commit that does not change a service does not touch it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from controller.model import Origin, Service, k8s_name
from controller.render.dags import cpu_count, memory_bytes
from controller.render.images import SERVE_PORT
from controller.render.settings import RenderSettings, ServingTarget

__all__ = [
    "ANNOTATION_COMMIT",
    "ANNOTATION_HASH",
    "ANNOTATION_REPO",
    "HEALTHCHECK_SCRIPT",
    "LABEL_REPO",
    "MANAGED_BY",
    "ORIGIN_MARKS",
    "container_name",
    "label_value",
    "service_body",
    "stamp_service",
]

MANAGED_BY = "liminal-controller"
"""Value of `app.kubernetes.io/managed-by` on everything we create: we only ever prune what carries it."""

LABEL_REPO = "liminal-gitops/repo"
ANNOTATION_REPO = "liminal-gitops/repo"
ANNOTATION_COMMIT = "liminal-gitops/commit"
ANNOTATION_HASH = "liminal-gitops/content-hash"
ORIGIN_MARKS = frozenset({ANNOTATION_REPO, ANNOTATION_COMMIT, ANNOTATION_HASH})
"""The stamp keys that change with every commit, not with the content (left out of plans people read)."""

HEALTHCHECK_SCRIPT = (  # exits 0 when the server in this container answers /healthcheck
    "import sys, urllib.request\n"
    f"sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{SERVE_PORT}/healthcheck', timeout=2).status == 200 "
    "else 1)"
)


def label_value(text: str) -> str:
    """`text` made into a valid Kubernetes label value (63 characters, alphanumeric at both ends)."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


def container_name(repo: str, service: str) -> str:
    """The local Docker container name of a service: unique per repo, safe as a Docker name."""
    return f"liminal-{label_value(repo).lower() or 'repo'}-{k8s_name(service)}"


def service_body(service: Service, repo: str, image_tag: str, settings: RenderSettings) -> dict[str, Any]:
    """The unstamped body of a service for the configured serving target. Pure."""
    if settings.serving is ServingTarget.KUBERNETES:
        return {"target": "kubernetes", "manifests": _kubernetes(service, repo, image_tag, settings)}
    return {"target": "docker", "container": _docker(service, repo, image_tag)}


def stamp_service(body: Mapping[str, Any], origin: Origin, content_hash: str) -> dict[str, Any]:
    """Add repo, commit and content hash as annotations (Kubernetes) or labels (Docker)."""
    marks = {ANNOTATION_REPO: origin.repo, ANNOTATION_COMMIT: origin.commit, ANNOTATION_HASH: content_hash}
    if body["target"] == "kubernetes":
        manifests = []
        for manifest in body["manifests"]:
            metadata = dict(manifest["metadata"])
            metadata["annotations"] = {**metadata.get("annotations", {}), **marks}
            manifests.append({**manifest, "metadata": metadata})
        return {**body, "manifests": manifests}
    container = dict(body["container"])
    container["labels"] = {**container["labels"], **marks}
    return {**body, "container": container}


def _env(service: Service) -> dict[str, str]:
    raw = service.options.get("env_vars")
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): "" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for k, v in raw.items()}


def _resources(service: Service) -> dict[str, dict[str, str]]:
    o = service.options
    requests = {"cpu": str(o.get("request_cpu", "100m")), "memory": str(o.get("request_memory", "128Mi"))}
    limits = {k: str(o[f"limit_{k}"]) for k in ("cpu", "memory") if o.get(f"limit_{k}") is not None}
    return {"requests": requests, "limits": limits} if limits else {"requests": requests}


def _labels(service: Service, repo: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": k8s_name(service.name),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_REPO: label_value(repo),
    }


def _kubernetes(service: Service, repo: str, image_tag: str, settings: RenderSettings) -> list[dict[str, Any]]:
    name = k8s_name(service.name)
    labels = _labels(service, repo)
    selector = {"app.kubernetes.io/name": name, LABEL_REPO: labels[LABEL_REPO]}
    replicas = service.options.get("replicas", 1)
    port = service.options.get("port", 80)
    probe = {"httpGet": {"path": "/healthcheck", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 2}
    container: dict[str, Any] = {
        "name": "server",
        "image": image_tag,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": SERVE_PORT, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in sorted(_env(service).items())],
        "readinessProbe": {**probe, "initialDelaySeconds": 2, "failureThreshold": 3},
        "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 6},
        "resources": _resources(service),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    metadata: dict[str, Any] = {"name": name, "namespace": settings.namespace, "labels": labels}
    if service.description:
        metadata["annotations"] = {"kubernetes.io/description": service.description}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }
    # a Service name must start with a letter (RFC 1035); a Deployment's may start with a digit
    svc_name = name if name[:1].isalpha() else f"svc-{name}"[:63]
    kube_service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {**metadata, "name": svc_name},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [deployment, kube_service]


def _docker(service: Service, repo: str, image_tag: str) -> dict[str, Any]:
    resources = _resources(service)
    limits = resources.get("limits", {})
    container: dict[str, Any] = {
        "name": container_name(repo, service.name),
        "image": image_tag,
        "environment": _env(service),
        "labels": _labels(service, repo),
        # loopback only: a local model server is not published to the network by default
        "ports": {f"{SERVE_PORT}/tcp": ["127.0.0.1", service.options.get("port")]},
        "healthcheck": {
            "test": ["CMD", "python3", "-c", HEALTHCHECK_SCRIPT],
            "interval": 5_000_000_000,
            "timeout": 3_000_000_000,
            "retries": 3,
            "start_period": 2_000_000_000,
        },
        "restart_policy": {"Name": "unless-stopped"},
    }
    if "memory" in limits:
        container["mem_limit"] = memory_bytes(limits["memory"])
    if "cpu" in limits:
        container["nano_cpus"] = int(cpu_count(limits["cpu"]) * 1e9)
    return container
