"""What a pipeline's Kubernetes tasks need in the cluster before they can run: claims and secrets. Pure.

As Liminal's deploy does, a volume with a `local` path becomes a hostPath PersistentVolume
(storage class `local-storage`, 100Gi, Retain) and the PersistentVolumeClaim bound to it, in the
namespace the task's pod runs in. A volume without `local` names a claim that must already exist,
and a task's secret a Secret that must already exist: Secrets never come from git. Both are
checked before the DAG goes live, so a missing one fails the change with its name instead of a pod
that never starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from controller.model import ExecutorType, Pipeline, System, Volume, k8s_name
from controller.render.services import LABEL_REPO, MANAGED_BY, label_value
from controller.render.settings import RenderSettings

__all__ = ["ClusterNeed", "cluster_needs"]

STORAGE_CLASS = "local-storage"
"""Liminal's storage class for local volumes."""

LOCAL_SIZE = "100Gi"
"""Liminal's size for local volumes (a hostPath volume does not enforce it)."""


@dataclass(frozen=True, slots=True)
class ClusterNeed:
    """One claim or secret a pipeline's pods use: `kind` is `claim` or `secret`, `name` is
    `namespace/object name`, `body` what the Kubernetes prerequisites target applies or checks."""

    kind: str
    name: str
    body: dict[str, Any]


def cluster_needs(pipeline: Pipeline, system: System, settings: RenderSettings, repo: str) -> Iterator[ClusterNeed]:
    """The claims and secrets the pipeline's kubernetes tasks mount, each once, in task order."""
    executors = {e.name: e for e in system.executors}
    volumes = {v.name: v for v in system.volumes}
    seen: set[tuple[str, str]] = set()
    for task in pipeline.tasks:
        if task.executor_type is not ExecutorType.KUBERNETES:
            continue
        executor = executors.get(task.executor)
        namespace = str(executor.options.get("namespace") or settings.namespace) if executor else settings.namespace
        for mount in task.mounts:
            volume = volumes.get(mount.volume)
            if volume is None or ("claim", f"{namespace}/{volume.claim_name}") in seen:
                continue
            seen.add(("claim", f"{namespace}/{volume.claim_name}"))
            yield ClusterNeed("claim", f"{namespace}/{volume.claim_name}", _claim(volume, namespace, repo))
        for secret in task.secrets:
            name = k8s_name(secret.secret)
            if ("secret", f"{namespace}/{name}") in seen:
                continue
            seen.add(("secret", f"{namespace}/{name}"))
            yield ClusterNeed("secret", f"{namespace}/{name}", _required("Secret", name, namespace))


def _required(kind: str, name: str, namespace: str) -> dict[str, Any]:
    return {"target": "kubernetes", "requires": {"kind": kind, "name": name, "namespace": namespace}}


def _claim(volume: Volume, namespace: str, repo: str) -> dict[str, Any]:
    if volume.local_path is None:
        return _required("PersistentVolumeClaim", volume.claim_name, namespace)
    labels = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/name": k8s_name(volume.name),
        LABEL_REPO: label_value(repo),
    }
    pv_name = k8s_name(volume.name)
    persistent_volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "labels": labels},
        "spec": {
            "capacity": {"storage": LOCAL_SIZE},
            "volumeMode": "Filesystem",
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": STORAGE_CLASS,
            "hostPath": {"path": volume.local_path, "type": "DirectoryOrCreate"},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": volume.claim_name, "namespace": namespace, "labels": labels},
        "spec": {
            "volumeName": pv_name,
            "volumeMode": "Filesystem",
            "storageClassName": STORAGE_CLASS,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": LOCAL_SIZE}},
        },
    }
    return {"target": "kubernetes", "manifests": [persistent_volume, claim]}
