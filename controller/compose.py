"""The composition root: builds the controller's dependencies (ledger, git source, targets) from
settings. The only module that knows which adapter serves which resource kind; it imports each
adapter when it is needed, so commands that need none (`validate`, `--help`) stay fast."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from controller.config import ControllerSettings
from controller.model import ResourceKind
from controller.render import ServingTarget

if TYPE_CHECKING:
    from controller.ledger import Ledger
    from controller.ports import Target
    from controller.sync.deps import Deps
    from controller.sync.source import RemotePolicy
    from controller.targets.images import BuildProgress

__all__ = ["build_deps", "remote_policy"]


def remote_policy(settings: ControllerSettings) -> RemotePolicy:
    """Which git remotes the settings allow (local paths and http:// only when enabled)."""
    from controller.sync.source import RemotePolicy

    return RemotePolicy(allow_local=settings.allow_local_remotes, allow_http=settings.allow_http_remotes)


def build_deps(
    settings: ControllerSettings, on_progress: Callable[[BuildProgress], None] | None = None
) -> tuple[Deps, Ledger]:
    """The reconcile dependencies and the ledger they record into, as the settings configure them."""
    from controller.ledger import Ledger
    from controller.sync.cache import DesiredStore, RenderCache
    from controller.sync.deps import Deps
    from controller.sync.source import GitCredentials, GitSource
    from controller.targets.dag_folder import DagFolderTarget

    ledger = Ledger(settings.ledger_url)
    source = GitSource(
        settings.home / "git",
        GitCredentials(settings.git_token, settings.git_username, settings.git_ssh_key_file),
        remote_policy(settings),
        timeout=settings.git_timeout,
    )
    folder = DagFolderTarget(settings.dags_folder)
    targets: dict[ResourceKind, Target] = {ResourceKind.DAG: folder}
    if settings.airflow_url:
        from controller.targets.airflow import AirflowTarget
        from controller.targets.airflow_api import AirflowApi

        api = AirflowApi(
            settings.airflow_url,
            username=settings.airflow_username,
            password=settings.airflow_password,
            token=settings.airflow_token,
        )
        targets[ResourceKind.DAG] = AirflowTarget(folder, api, parse_timeout=settings.airflow_parse_timeout)
    if settings.images:
        from controller.targets.images import ImageTarget, RegistryAuth

        auth = (
            RegistryAuth(settings.registry_username, settings.registry_password)
            if settings.registry_username and settings.registry_password
            else None
        )
        targets[ResourceKind.IMAGE] = ImageTarget(
            auth=auth, on_build=ledger.record_build, on_progress=on_progress, host=settings.docker_host
        )
        # a python_server service runs its image: served only when images are built
        if settings.render.serving is ServingTarget.DOCKER:
            from controller.targets.docker_serving import DockerServingTarget

            targets[ResourceKind.SERVICE] = DockerServingTarget(host=settings.docker_host)
    if settings.render.serving is ServingTarget.KUBERNETES:
        from controller.targets.kubernetes import KubernetesTarget
        from controller.targets.kubernetes_needs import KubernetesNeeds

        # the cluster pulls the images from the registry; without one nothing could be pulled
        targets[ResourceKind.SERVICE] = KubernetesTarget(
            kubeconfig=settings.kubeconfig, rollout_timeout=settings.rollout_timeout
        )
        # with a cluster to talk to, the claims and secrets of pod tasks are made or checked before their DAG
        needs = KubernetesNeeds(kubeconfig=settings.kubeconfig)
        targets[ResourceKind.CLAIM] = targets[ResourceKind.SECRET] = needs
    deps = Deps(
        source=source,
        ledger=ledger,
        targets=targets,
        settings=settings.render,
        environ=settings.placeholders,
        policies=settings.policies,
        cache=RenderCache(settings.render_cache_entries),
        store=DesiredStore(settings.home / "cache" / "desired"),
    )
    return deps, ledger
