"""manifests/ (the controller's own installation) against the real Kubernetes schemas, and the rules
a platform engineer checks: least privilege, non-root, probes, settings that exist."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import yaml

from controller.config import KNOWN_NAMES, SECRET_NAMES
from tests.conftest import REPO

MANIFESTS = REPO / "manifests"


def _objects() -> list[dict[str, Any]]:
    out = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        out += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


def test_every_manifest_is_valid_kubernetes() -> None:
    objects = _objects()
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Namespace",
        "PersistentVolumeClaim",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.37.0", strict=True)


def test_rbac_is_least_privilege() -> None:
    objects = _objects()
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = next(o for o in objects if o["kind"] == "Role")
    assert role["metadata"]["namespace"] == "liminal-serving"
    rules = {
        (g, r): sorted(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    # exactly what controller/targets/kubernetes.py calls: read, server-side apply (patch), prune;
    # and kubernetes_needs.py: claims read and applied, secrets only read (never listed, never written)
    assert rules == {
        ("apps", "deployments"): ["delete", "get", "list", "patch"],
        ("", "services"): ["delete", "get", "list", "patch"],
        ("", "persistentvolumeclaims"): ["get", "patch"],
        ("", "secrets"): ["get"],
    }


def test_the_deployment_runs_non_root_with_probes_and_known_settings() -> None:
    objects = _objects()
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for env in container["env"]:
        name = env["name"].removeprefix("LIMINAL_").lower()
        assert name in KNOWN_NAMES | {"config", "log_format"} or (
            name.endswith("_file") and name.removesuffix("_file") in SECRET_NAMES
        ), env["name"]
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    settings = yaml.safe_load(config["data"]["liminal-controller.yaml"])
    assert set(settings) <= KNOWN_NAMES and not set(settings) & SECRET_NAMES  # no credential in a ConfigMap
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "liminal-controller"


def test_the_dockerfile_runs_serve_as_a_non_root_user_with_a_health_check() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "USER 10001:10001" in text and 'CMD ["serve"]' in text and "HEALTHCHECK" in text and "/healthz" in text
    assert "pip install --no-cache-dir ." in text


def test_the_ha_variant_runs_two_replicas_on_postgresql_with_a_disruption_budget() -> None:
    objects = [
        doc for path in sorted((MANIFESTS / "ha").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.37.0", strict=True)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    # the ledger is PostgreSQL, its URL read from the mounted Secret, never a SQLite file on a volume
    assert env["LIMINAL_LEDGER_URL_FILE"] == "/run/secrets/liminal/ledger_url"
    secret = next(v for v in pod["volumes"] if v["name"] == "secrets")
    assert secret["secret"]["secretName"] == "liminal-controller"
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    shared = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert claims == {o["metadata"]["name"] for o in shared}
    assert all(o["spec"]["accessModes"] == ["ReadWriteMany"] for o in shared), "replicas on two nodes share it"
    pdb = next(o for o in objects if o["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
