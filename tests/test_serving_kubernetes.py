"""The Kubernetes serving target, against the in-process FAKE API server of tests/kubernetes_fake.py
(no Kubernetes API server can run here); every manifest sent is validated against the real
Kubernetes schemas with kubernetes-validate."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes import client as k8s

from controller.ledger import Ledger
from controller.model import Policies, RepoPolicy, RepoRef, ResourceKind, ResultCode, RunStatus, Trigger
from controller.render import RenderSettings, ServingTarget
from controller.sync.deps import Deps
from controller.sync.reconcile import reconcile
from controller.sync.source import GitSource
from controller.targets.dag_folder import DagFolderTarget
from controller.targets.kubernetes import FIELD_MANAGER, KubernetesTarget, api_client_from_config
from controller.targets.kubernetes_needs import KubernetesNeeds
from tests.conftest import TEST_REMOTES, cli_env, commit_all, example_remote, git, liminal
from tests.kubernetes_fake import FakeKubernetes, Recorded, serve

NS = "ml-serving"
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NS}/deployments/hello-server"
SERVICE = f"/api/v1/namespaces/{NS}/services/hello-server"


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    with serve(FakeKubernetes()) as running:
        yield running


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return example_remote(tmp_path)


def _target(fake: FakeKubernetes, rollout_timeout: float = 300.0) -> KubernetesTarget:
    return KubernetesTarget(k8s.ApiClient(k8s.Configuration(host=fake.url)), poll=0.05, rollout_timeout=rollout_timeout)


def _deps(tmp_path: Path, ledger: Ledger, target: KubernetesTarget) -> Deps:
    return Deps(
        source=GitSource(tmp_path / "cache", policy=TEST_REMOTES),
        ledger=ledger,
        targets={ResourceKind.SERVICE: target},
        settings=RenderSettings(registry="registry.example:5000", namespace=NS, serving=ServingTarget.KUBERNETES),
    )


def _applies(fake: FakeKubernetes) -> list[Recorded]:
    return [r for r in fake.requests if r.method == "PATCH"]


def test_server_side_apply_rollout_update_and_prune(
    tmp_path: Path, remote: Path, ledger: Ledger, fake: FakeKubernetes
) -> None:
    # someone else's Deployment in the same namespace, with our app name but not our labels
    fake.put(
        "deployments",
        NS,
        {"metadata": {"name": "theirs", "labels": {"app.kubernetes.io/name": "hello-server"}}, "spec": {"replicas": 1}},
    )
    ledger.add_repo(RepoRef("hello", str(remote)))
    target = _target(fake)
    deps = _deps(tmp_path, ledger, target)
    first = reconcile("hello", deps)
    assert first.status is RunStatus.SUCCEEDED, first.error

    applies = _applies(fake)
    assert [r.path for r in applies] == [DEPLOYMENT, SERVICE]
    for request in applies:
        # server-side apply as the Kubernetes API documents it
        assert request.content_type == "application/apply-patch+yaml"
        assert request.query == {"fieldManager": [FIELD_MANAGER], "force": ["true"]}
        kubernetes_validate.validate(request.body, "1.37.0", strict=True)
        labels = request.body["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "liminal-controller"
        assert labels["liminal-gitops/repo"] == "hello"
        assert request.body["metadata"]["annotations"]["liminal-gitops/commit"] == first.commit
    image = applies[0].body["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("registry.example:5000/hello/server:")
    # the rollout was waited for: the Deployment was read until the (fake) controller reported it
    reads = [r for r in fake.requests if r.method == "GET" and r.path == DEPLOYMENT]
    assert len(reads) >= fake.rollout_reads + 1
    live = fake.objects[("deployments", NS, "hello-server")]
    assert live["metadata"]["managedFields"][0]["manager"] == FIELD_MANAGER

    deployed = [d for d in ledger.deployed_state("hello").resources.values() if d.key.kind is ResourceKind.SERVICE]
    endpoint = target.endpoints(deployed)[deployed[0].key]
    assert (endpoint.url, endpoint.health) == (f"http://hello-server.{NS}.svc.cluster.local:80", "healthy")

    assert reconcile("hello", deps).status is RunStatus.NOOP  # observed live as desired: nothing sent
    assert len(_applies(fake)) == 2

    # new serving code: a new image tag, applied to the same objects (the generation moves on)
    model = remote / "serving" / "model.py"
    model.write_text(model.read_text() + "\n# retrained\n")
    commit_all(remote, "retrained")
    second = reconcile("hello", deps)
    assert second.status is RunStatus.SUCCEEDED, second.error
    new_image = _applies(fake)[-2].body["spec"]["template"]["spec"]["containers"][0]["image"]
    assert new_image != image and live is not fake.objects[("deployments", NS, "hello-server")]
    assert fake.objects[("deployments", NS, "hello-server")]["metadata"]["generation"] == 2

    # removed from git: deleted by label (ours only); someone else's Deployment stays
    yml = remote / "liminal.yml"
    yml.write_text(yml.read_text()[: yml.read_text().index("services:")])
    commit_all(remote, "no more serving")
    third = reconcile("hello", deps)
    assert third.status is RunStatus.SUCCEEDED, third.error
    lists = [r for r in fake.requests if r.method == "GET" and r.path.endswith(("/deployments", "/services"))]
    assert lists and all(
        r.query["labelSelector"]
        == [
            "app.kubernetes.io/managed-by=liminal-controller,liminal-gitops/repo=hello,app.kubernetes.io/name=hello-server"
        ]
        for r in lists
    )
    assert [r.path for r in fake.requests if r.method == "DELETE"] == [DEPLOYMENT, SERVICE]
    assert list(fake.objects) == [("deployments", NS, "theirs")]


def test_a_rollout_that_does_not_complete_fails_the_change(
    tmp_path: Path, remote: Path, ledger: Ledger, fake: FakeKubernetes
) -> None:
    fake.stuck = True  # pods never become available
    ledger.add_repo(RepoRef("hello", str(remote)))
    run = reconcile("hello", _deps(tmp_path, ledger, _target(fake, rollout_timeout=0.5)))
    assert run.status is RunStatus.FAILED
    assert run.error is not None and "rollout not complete after 0.5 s: 0 of 1 updated replicas available" in run.error
    assert ledger.deployed_state("hello").resources == {}  # not recorded as deployed
    assert ledger.status("hello").state == "degraded"


def test_a_deployment_deleted_with_kubectl_is_restored(
    tmp_path: Path, remote: Path, ledger: Ledger, fake: FakeKubernetes
) -> None:
    ledger.add_repo(RepoRef("hello", str(remote)))
    deps = _deps(tmp_path, ledger, _target(fake))
    assert reconcile("hello", deps).status is RunStatus.SUCCEEDED
    del fake.objects[("deployments", NS, "hello-server")]
    run = reconcile("hello", deps)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.summary["drift"] == ["service/hello_server"]
    assert ("deployments", NS, "hello-server") in fake.objects


def test_an_unreachable_api_server_is_retried(tmp_path: Path, remote: Path, ledger: Ledger) -> None:
    with serve(FakeKubernetes()) as stopped:
        url = stopped.url
    ledger.add_repo(RepoRef("hello", str(remote)))
    target = KubernetesTarget(k8s.ApiClient(k8s.Configuration(host=url)))
    run = reconcile("hello", _deps(tmp_path, ledger, target), trigger=Trigger.POLL)
    assert run.status is RunStatus.FAILED
    assert run.error is not None and "cannot reach the Kubernetes API" in run.error and "(retry in 30 s)" in run.error


def test_kubeconfig_credentials_reach_the_api(tmp_path: Path, fake: FakeKubernetes) -> None:
    token = uuid.uuid4().hex
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters:\n- name: fake\n  cluster:\n    server: {fake.url}\n"
        "users:\n- name: ci\n  user:\n    token: " + token + "\n"
        "contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: ci\n"
    )
    api = api_client_from_config(str(kubeconfig))
    assert k8s.AppsV1Api(api).list_namespaced_deployment(NS).items == []
    assert fake.requests[-1].authorization == f"Bearer {token}"


def test_the_cli_serves_on_kubernetes_and_status_shows_the_endpoint(
    tmp_path: Path, remote: Path, ledger: Ledger, fake: FakeKubernetes
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters:\n- name: fake\n  cluster:\n    server: {fake.url}\n"
        "users:\n- name: ci\n  user:\n    token: t\n"
        "contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: ci\n"
    )
    env = cli_env(
        tmp_path,
        ledger,
        LIMINAL_IMAGES="off",
        LIMINAL_SERVING="kubernetes",
        LIMINAL_NAMESPACE=NS,
        KUBECONFIG=str(kubeconfig),
    )
    assert liminal("repo", "add", str(remote), "--name", "hello", env=env).returncode == 0
    # the example's pods mount the claim `data-pvc`, which must exist: without it nothing of the DAG goes live
    missing = liminal("sync", env=env)
    assert missing.returncode == 1
    assert f"PersistentVolumeClaim 'data-pvc' in namespace '{NS}' does not exist" in missing.stdout + missing.stderr
    fake.put("persistentvolumeclaims", NS, {"metadata": {"name": "data-pvc"}, "spec": {}})
    synced = liminal("sync", env=env)
    assert synced.returncode == 0, synced.stderr
    assert ("deployments", NS, "hello-server") in fake.objects
    status = liminal("status", "--format", "json", env=env)
    assert json.loads(status.stdout)[0]["services"] == [
        {
            "name": "hello_server",
            "url": f"http://hello-server.{NS}.svc.cluster.local:80",
            "health": "healthy",
            "detail": "1 of 1 replicas available",
        }
    ]
    text = liminal("status", env=env).stdout
    assert f"service hello_server: http://hello-server.{NS}.svc.cluster.local:80 healthy" in text


NEEDS_YML = """\
name: needs
executors:
  - executor: pods
    type: kubernetes
    namespace: jobs
volumes:
  - volume: scratch
    local:
      path: /srv/scratch
  - volume: shared
    claim_name: shared-claim
secrets:
  - secret: creds
pipelines:
  - pipeline: needs_pipeline
    start_date: 2024-01-01
    timeout_minutes: 5
    tasks:
      - task: train
        type: python
        image: python:3.11-slim
        executor: pods
        cmd: echo
        mounts:
          - volume: scratch
            path: /scratch
          - volume: shared
            path: /shared
        secrets:
          - secret: creds
            remote_path: /secret
"""


def test_claims_are_made_and_missing_secrets_and_claims_fail_the_change(
    tmp_path: Path, ledger: Ledger, fake: FakeKubernetes
) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "liminal.yml").write_text(NEEDS_YML)
    git(remote, "init", "-q", "-b", "main")
    commit_all(remote, "pods with a local volume, an existing claim and a secret")
    ledger.add_repo(RepoRef("needs", str(remote)))
    needs = KubernetesNeeds(k8s.ApiClient(k8s.Configuration(host=fake.url)))
    dags = DagFolderTarget(tmp_path / "dags")
    deps = Deps(
        source=GitSource(tmp_path / "cache", policy=TEST_REMOTES),
        ledger=ledger,
        targets={ResourceKind.DAG: dags, ResourceKind.CLAIM: needs, ResourceKind.SECRET: needs},
        settings=RenderSettings(namespace=NS),
        # the operator lets this repository use host paths and the `jobs` namespace
        policies=Policies(default=RepoPolicy(namespaces=("jobs",), host_mounts=True)),
    )
    first = reconcile("needs", deps)
    assert first.status is RunStatus.FAILED
    outcomes = {f"{o.key.kind}:{o.key.name}": o for o in first.outcomes}
    secret = outcomes["secret:jobs/creds"]
    assert secret.code is ResultCode.FAILED
    assert "Secret 'creds' in namespace 'jobs' does not exist" in secret.message
    assert "never takes secrets from git" in secret.message
    assert outcomes["claim:jobs/shared-claim"].code is ResultCode.FAILED
    # the DAG whose pods need them does not go live
    assert outcomes["dag:needs_pipeline"].code is ResultCode.SKIPPED
    assert not list((tmp_path / "dags").rglob("*.json"))
    # the local volume became Liminal's hostPath volume and its claim, in the pods' namespace
    volume = fake.objects[("persistentvolumes", "", "scratch")]
    assert volume["spec"]["hostPath"]["path"] == "/srv/scratch"
    assert volume["spec"]["storageClassName"] == "local-storage"
    claim = fake.objects[("persistentvolumeclaims", "jobs", "scratch-pvc")]
    assert claim["spec"]["volumeName"] == "scratch"
    assert claim["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "liminal-controller"
    for request in [r for r in fake.requests if r.method == "PATCH"]:
        assert request.query == {"fieldManager": [FIELD_MANAGER], "force": ["true"]}
        kubernetes_validate.validate(request.body, "1.37.0", strict=True)

    fake.put("secrets", "jobs", {"metadata": {"name": "creds"}, "data": {"token": "c2VjcmV0"}})
    fake.put("persistentvolumeclaims", "jobs", {"metadata": {"name": "shared-claim"}, "spec": {}})
    second = reconcile("needs", deps)
    assert second.status is RunStatus.SUCCEEDED, second.error
    assert list((tmp_path / "dags").rglob("needs_pipeline.json"))
    # someone else's claim is used as it is, never taken over
    assert fake.objects[("persistentvolumeclaims", "jobs", "shared-claim")]["spec"] == {}
    assert "c2VjcmV0" not in json.dumps([o.message for o in second.outcomes])

    # a secret deleted with kubectl is drift: the next sync says so and fails the change
    del fake.objects[("secrets", "jobs", "creds")]
    third = reconcile("needs", deps)
    assert third.status is RunStatus.FAILED
    assert "Secret 'creds' in namespace 'jobs' does not exist" in (third.error or "") + json.dumps(
        [o.message for o in third.outcomes]
    )
