"""Kubernetes serving target: a service's Deployment and Service by server-side apply.

Every object is applied with `PATCH` + `application/apply-patch+yaml`, field manager
`liminal-gitops` and `force=true` (git is the source of truth for the fields we own; fields other
managers own, such as an autoscaler's replicas, stay theirs when we do not set them). Everything
carries `app.kubernetes.io/managed-by: liminal-controller` and the repository label, and pruning
deletes only objects that carry both: never something this controller did not make.
After an apply, the rollout is watched (observedGeneration, updated and available replicas) up to
a timeout, as `kubectl rollout status` does.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import structlog
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from controller.errors import TargetError, TransientError, short_reason
from controller.model import (
    Deployed,
    Health,
    Resource,
    ResourceKey,
    ResultCode,
    ServiceDeployment,
    ServiceEndpoint,
    Snapshot,
    TargetResult,
)
from controller.render.services import ANNOTATION_HASH, LABEL_REPO, MANAGED_BY, label_value
from controller.targets import each

__all__ = ["APPLY", "FIELD_MANAGER", "ClusterApi", "KubernetesTarget", "api_client_from_config"]

log = structlog.get_logger("liminal.kubernetes")

FIELD_MANAGER = "liminal-gitops"
APPLY = "application/apply-patch+yaml"
_POLL = 1.0
T = TypeVar("T")


def api_client_from_config(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """An API client from the kubeconfig file (default ~/.kube/config), else the in-cluster service account."""
    load_kube_config: Callable[..., None] = k8s_config.load_kube_config
    load_incluster_config: Callable[[], None] = k8s_config.load_incluster_config
    try:
        load_kube_config(config_file=kubeconfig, context=context)
    except (k8s_config.ConfigException, FileNotFoundError, TypeError):
        try:
            load_incluster_config()
        except k8s_config.ConfigException as exc:
            raise TargetError("kubernetes", f"no kubeconfig and not in a cluster: {exc}") from exc
    return k8s.ApiClient()


class ClusterApi:
    """A Kubernetes target's API client: the one given, else one made from configuration on first use."""

    def __init__(self, api: k8s.ApiClient | None = None, *, kubeconfig: str | None = None) -> None:
        self._api = api
        self.kubeconfig = kubeconfig

    @property
    def api(self) -> k8s.ApiClient:
        """The API client, made from configuration on first use."""
        if self._api is None:
            self._api = api_client_from_config(self.kubeconfig)
        return self._api


class KubernetesTarget(ClusterApi):
    """Observe, apply and prune services' Deployments and Services."""

    watches_drift = True  # objects can be edited or deleted with kubectl

    def __init__(
        self,
        api: k8s.ApiClient | None = None,
        *,
        kubeconfig: str | None = None,
        rollout_timeout: float = 300.0,
        poll: float = _POLL,
    ) -> None:
        super().__init__(api, kubeconfig=kubeconfig)
        self.rollout_timeout = rollout_timeout
        self.poll = poll

    # ---- observe ----------------------------------------------------------------------------------

    def observe(self, resources: Sequence[Resource]) -> Mapping[ResourceKey, str | None]:
        """The content hash annotated on the live objects (None when one is missing or not ours)."""
        out: dict[ResourceKey, str | None] = {}
        for r in resources:
            hashes = set()
            for manifest in _manifests(r.key, r.artifact):
                live = self._get(manifest)
                ours = live is not None and _labels(live).get("app.kubernetes.io/managed-by") == MANAGED_BY
                hashes.add(_annotations(live).get(ANNOTATION_HASH) if ours else None)
            out[r.key] = hashes.pop() if len(hashes) == 1 else None
        return out

    def endpoints(self, deployed: Sequence[Deployed]) -> dict[ResourceKey, ServiceEndpoint]:
        """The in-cluster URL of each service and its Deployment's rollout health."""
        out: dict[ResourceKey, ServiceEndpoint] = {}
        for d in deployed:
            manifests = _manifests(d.key, ServiceDeployment.of(d.body))
            service = next((m for m in manifests if m["kind"] == "Service"), None)
            deployment = next((m for m in manifests if m["kind"] == "Deployment"), None)
            url = None
            if service is not None:
                meta, port = service["metadata"], service["spec"]["ports"][0]["port"]
                url = f"http://{meta['name']}.{meta['namespace']}.svc.cluster.local:{port}"
            live = self._get(deployment) if deployment is not None else None
            if live is None:
                out[d.key] = ServiceEndpoint(url, Health.ABSENT)
                continue
            health, detail = _rollout(live)
            out[d.key] = ServiceEndpoint(url, health, detail)
        return out

    # ---- apply ------------------------------------------------------------------------------------

    def apply(self, resources: Sequence[Resource], source: Snapshot) -> Iterator[TargetResult]:
        """Server-side apply each service's objects, then wait for its rollout."""
        return each(resources, self._apply_one)

    def _apply_one(self, resource: Resource) -> TargetResult:
        manifests = _manifests(resource.key, resource.artifact)
        for manifest in manifests:
            self._call(resource.key, functools.partial(self._server_side_apply, manifest))
        deployment = next((m for m in manifests if m["kind"] == "Deployment"), None)
        if deployment is not None:
            self._wait_rollout(resource.key, deployment)
        meta = manifests[0]["metadata"]
        message = f"applied to namespace {meta['namespace']} (field manager {FIELD_MANAGER}); rollout complete"
        return TargetResult(resource.key, ResultCode.APPLIED, message)

    def _server_side_apply(self, manifest: Mapping[str, Any]) -> Any:
        meta = manifest["metadata"]
        body = json.loads(json.dumps(manifest))  # JSON is YAML: sent as the apply patch
        if manifest["kind"] == "Deployment":
            return k8s.AppsV1Api(self.api).patch_namespaced_deployment(
                meta["name"], meta["namespace"], body, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY
            )
        if manifest["kind"] == "Service":
            return k8s.CoreV1Api(self.api).patch_namespaced_service(
                meta["name"], meta["namespace"], body, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY
            )
        raise TargetError(meta["name"], f"cannot apply a {manifest['kind']}")

    def _wait_rollout(self, key: ResourceKey, deployment: Mapping[str, Any]) -> None:
        deadline = time.monotonic() + self.rollout_timeout
        while True:
            live = self._call(key, lambda: self._get(deployment))
            health, detail = _rollout(live) if live is not None else ("absent", "the Deployment is gone")
            if health is Health.HEALTHY:
                return
            if time.monotonic() > deadline:
                raise TargetError(str(key), f"rollout not complete after {self.rollout_timeout:g} s: {detail}")
            time.sleep(self.poll)

    # ---- delete -----------------------------------------------------------------------------------

    def delete(self, deployed: Deployed) -> TargetResult:
        """Delete the service's objects that carry our labels (found by label: only what we made)."""
        manifests = _manifests(deployed.key, ServiceDeployment.of(deployed.body))
        namespace = manifests[0]["metadata"]["namespace"] if manifests else "default"
        selector = ",".join(
            [
                f"app.kubernetes.io/managed-by={MANAGED_BY}",
                f"{LABEL_REPO}={label_value(deployed.key.repo)}",
                f"app.kubernetes.io/name={_k8s_name(manifests)}",
            ]
        )
        apps, core = k8s.AppsV1Api(self.api), k8s.CoreV1Api(self.api)
        removed: list[str] = []
        kinds: list[tuple[str, Callable[..., Any], Callable[..., Any]]] = [
            ("deployment", apps.list_namespaced_deployment, apps.delete_namespaced_deployment),
            ("service", core.list_namespaced_service, core.delete_namespaced_service),
        ]
        for kind, listing, delete in kinds:
            found: Any = self._call(deployed.key, functools.partial(listing, namespace, label_selector=selector))
            for item in found.items:
                self._call(deployed.key, functools.partial(_gone_ok, delete, item.metadata.name, namespace))
                removed.append(f"{kind}/{item.metadata.name}")
        message = f"deleted {', '.join(removed)}" if removed else "nothing of ours was left"
        return TargetResult(deployed.key, ResultCode.DELETED, message)

    # ---- API --------------------------------------------------------------------------------------

    def _get(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        meta = manifest["metadata"]
        found: Any
        try:
            if manifest["kind"] == "Deployment":
                found = k8s.AppsV1Api(self.api).read_namespaced_deployment(meta["name"], meta["namespace"])
            else:
                found = k8s.CoreV1Api(self.api).read_namespaced_service(meta["name"], meta["namespace"])
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _error(meta["name"], exc) from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise TransientError(f"cannot reach the Kubernetes API: {short_reason(exc)}", retry_after=30) from None
        serialize: Callable[[Any], Any] = self.api.sanitize_for_serialization
        return dict(serialize(found))

    def _call(self, key: ResourceKey, call: Callable[[], T]) -> T:
        try:
            return call()
        except ApiException as exc:
            raise _error(str(key), exc) from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise TransientError(f"cannot reach the Kubernetes API: {short_reason(exc)}", retry_after=30) from None


def _manifests(key: ResourceKey, served: object) -> list[dict[str, Any]]:
    if not isinstance(served, ServiceDeployment) or served.target != "kubernetes":
        raise TargetError(str(key), "not a Kubernetes service (LIMINAL_SERVING=kubernetes renders those)")
    return [dict(m) for m in served.manifests]


def _k8s_name(manifests: list[dict[str, Any]]) -> str:
    return str(manifests[0]["metadata"]["labels"]["app.kubernetes.io/name"]) if manifests else ""


def _labels(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


def _annotations(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def _rollout(live: Mapping[str, Any]) -> tuple[Health, str]:
    """(health, detail) of a Deployment, by the rules `kubectl rollout status` uses."""
    meta, spec, status = live.get("metadata", {}), live.get("spec", {}), live.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    generation, observed = int(meta.get("generation", 0)), int(status.get("observedGeneration", 0))
    updated, available = int(status.get("updatedReplicas", 0)), int(status.get("availableReplicas", 0))
    total = int(status.get("replicas", 0))
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return Health.DEGRADED, f"progress deadline exceeded: {condition.get('message', '')}"
    if observed < generation:
        return Health.PROGRESSING, "waiting for the Deployment's new generation to be observed"
    if updated < wanted:
        return Health.PROGRESSING, f"{updated} of {wanted} replicas updated"
    if total > updated:
        return Health.PROGRESSING, f"{total - updated} old replica(s) pending termination"
    if available < updated:
        return Health.PROGRESSING, f"{available} of {updated} updated replicas available"
    return Health.HEALTHY, f"{available} of {wanted} replicas available"


def _gone_ok(delete: Callable[..., Any], name: str, namespace: str) -> None:
    try:
        # the answer (a Status, or the deleted object) is not needed
        delete(name, namespace, propagation_policy="Foreground", _preload_content=False)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _error(name: str, exc: ApiException) -> Exception:
    status = exc.status or 0
    reason = exc.reason
    with contextlib.suppress(ValueError, AttributeError):
        reason = json.loads(exc.body or "{}").get("message") or reason
    if status >= 500 or status in (0, 429):
        return TransientError(f"the Kubernetes API answered {status}: {reason}", retry_after=30)
    return TargetError(name, f"the Kubernetes API refused it ({status}): {reason}")
