"""Kubernetes prerequisites of pod tasks: the claims they mount and the secrets they read.

A `local` volume's PersistentVolume and claim are applied by server-side apply (field manager
`liminal-gitops`), as the serving target applies Deployments; one that exists already and was
made by someone else is used as it is (Liminal's deploy also leaves an existing claim alone). A
claim without `local`, and every Secret, is only required: apply checks that it exists and fails
the change, naming it, when it does not, so the DAG whose pods need it does not go live.
Pruning never deletes a claim or a volume (they hold data) and never touches a Secret.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controller.errors import TargetError, TransientError, short_reason
from controller.model import Deployed, Resource, ResourceKey, ResultCode, Snapshot, TargetResult
from controller.render.services import ANNOTATION_HASH, LABEL_REPO, MANAGED_BY, label_value
from controller.targets import each
from controller.targets.kubernetes import APPLY, FIELD_MANAGER, ClusterApi

__all__ = ["KubernetesNeeds"]

_HOW = {
    "Secret": "create it in that namespace (for example `kubectl create secret generic NAME --from-file=...`); "
    "the controller never takes secrets from git",
    "PersistentVolumeClaim": "create it, or give the volume a `local` path (the repository policy must allow host "
    "mounts) for the controller to make one",
}


class KubernetesNeeds(ClusterApi):
    """Observe, apply (or require) and keep the claims and secrets pod tasks mount."""

    watches_drift = True  # a claim or a secret can be deleted with kubectl

    def observe(self, resources: Sequence[Resource]) -> Mapping[ResourceKey, str | None]:
        """The desired hash when every object is there as wanted (ours with that hash, or someone else's
        to use as it is), else None."""
        out: dict[ResourceKey, str | None] = {}
        for r in resources:
            fine = True
            for kind, name, namespace, made in _objects(r):
                live = self._call(r.key, functools.partial(self._get, kind, name, namespace))
                if live is None:
                    fine = False
                elif made is not None and _ours(live, r.key.repo):
                    fine = fine and _annotations(live).get(ANNOTATION_HASH) == r.content_hash
            out[r.key] = r.content_hash if fine else None
        return out

    def apply(self, resources: Sequence[Resource], source: Snapshot) -> Iterator[TargetResult]:
        """Apply what git makes; check what it only requires."""
        return each(resources, self._apply_one)

    def _apply_one(self, resource: Resource) -> TargetResult:
        done: list[str] = []
        for kind, name, namespace, made in _objects(resource):
            live = self._call(resource.key, functools.partial(self._get, kind, name, namespace))
            where = f"{kind} '{name}'" + (f" in namespace '{namespace}'" if namespace else "")
            if made is None:
                if live is None:
                    raise TargetError(str(resource.key), f"{where} does not exist: {_HOW[kind]}")
                done.append(f"{where} exists")
            elif live is not None and not _ours(live, resource.key.repo):
                done.append(f"{where} exists (not made by this controller): used as it is")
            else:
                body = _stamped(made, resource.content_hash)
                self._call(resource.key, functools.partial(self._apply, kind, name, namespace, body))
                done.append(f"{where} applied")
        return TargetResult(resource.key, ResultCode.APPLIED, "; ".join(done))

    def delete(self, deployed: Deployed) -> TargetResult:
        """Nothing is deleted: claims and volumes hold data, and secrets were never ours."""
        return TargetResult(
            deployed.key,
            ResultCode.DELETED,
            "no longer used; left in the cluster (claims hold data, secrets are not the controller's)",
        )

    # ---- API --------------------------------------------------------------------------------------

    def _get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        core = k8s.CoreV1Api(self.api)
        reads: dict[str, Callable[[], Any]] = {
            "Secret": lambda: core.read_namespaced_secret(name, namespace),
            "PersistentVolumeClaim": lambda: core.read_namespaced_persistent_volume_claim(name, namespace),
            "PersistentVolume": lambda: core.read_persistent_volume(name),
        }
        try:
            found = reads[kind]()
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        serialize: Callable[[Any], Any] = self.api.sanitize_for_serialization
        live = dict(serialize(found))
        live.pop("data", None)  # a Secret's values never leave this function
        return live

    def _apply(self, kind: str, name: str, namespace: str, body: Mapping[str, Any]) -> Any:
        core = k8s.CoreV1Api(self.api)
        patch = json.loads(json.dumps(body))
        if kind == "PersistentVolume":
            return core.patch_persistent_volume(
                name, patch, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY
            )
        if kind == "PersistentVolumeClaim":
            return core.patch_namespaced_persistent_volume_claim(
                name, namespace, patch, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY
            )
        raise TargetError(name, f"cannot apply a {kind}")

    def _call(self, key: ResourceKey, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ApiException as exc:
            hint = (
                " (the controller's account lacks the permission: see manifests/rbac.yaml)" if exc.status == 403 else ""
            )
            raise TargetError(str(key), f"Kubernetes API: {exc.status} {exc.reason}{hint}") from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise TransientError(f"cannot reach the Kubernetes API: {short_reason(exc)}", retry_after=30) from None


def _objects(resource: Resource) -> list[tuple[str, str, str, Mapping[str, Any] | None]]:
    """(kind, name, namespace, manifest to apply or None when only required) of one resource."""
    body = resource.body
    if not isinstance(body, Mapping) or body.get("target") != "kubernetes":
        raise TargetError(str(resource.key), "not a Kubernetes claim or secret")
    if "requires" in body:
        wanted = body["requires"]
        return [(wanted["kind"], wanted["name"], wanted["namespace"], None)]
    return [(m["kind"], m["metadata"]["name"], m["metadata"].get("namespace", ""), m) for m in body["manifests"]]


def _stamped(manifest: Mapping[str, Any], content_hash: str) -> dict[str, Any]:
    metadata = dict(manifest["metadata"])
    metadata["annotations"] = {**metadata.get("annotations", {}), ANNOTATION_HASH: content_hash}
    return {**manifest, "metadata": metadata}


def _ours(live: Mapping[str, Any], repo: str) -> bool:
    labels = (live.get("metadata") or {}).get("labels") or {}
    return labels.get("app.kubernetes.io/managed-by") == MANAGED_BY and labels.get(LABEL_REPO) == label_value(repo)


def _annotations(live: Mapping[str, Any]) -> dict[str, str]:
    return dict((live.get("metadata") or {}).get("annotations") or {})
