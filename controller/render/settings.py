"""Settings that shape rendered content. Built by `controller.config` from file and environment."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["RenderSettings", "ServingTarget"]


class ServingTarget(enum.StrEnum):
    """Where python_server services run."""

    DOCKER = "docker"
    KUBERNETES = "kubernetes"


@dataclass(frozen=True, slots=True)
class RenderSettings:
    """What the operator decides about rendered images, DAGs and services.

    Every field changes content hashes, so changing one rebuilds or reapplies what it affects.
    """

    registry: str = ""
    """Image name prefix, e.g. `127.0.0.1:5000` (LIMINAL_REGISTRY). Empty: local engine only."""

    base_image: str = "python:3.11-slim"
    """FROM of python and python_server images (LIMINAL_BASE_IMAGE)."""

    python_base_images: tuple[tuple[str, str], ...] = ()
    """Base images by Python version, for images that set Liminal's `python_version`
    (LIMINAL_PYTHON_BASE_IMAGES, `3.11=python:3.11-slim,...`). `base_image` counts for the version
    its tag names (`python:3.12-slim` is 3.12)."""

    def python_base(self, version: str) -> str | None:
        """The base image for Python `version`, or None when the operator configured none."""
        found = dict(self.python_base_images).get(version)
        if found is not None:
            return found
        name = self.base_image.rsplit("/", 1)[-1]
        if name.startswith(f"python:{version}-") or name == f"python:{version}":
            return self.base_image
        return None

    spark_base_image: str = "apache/spark:3.5.3-python3"
    """FROM of spark images (LIMINAL_SPARK_BASE_IMAGE): needs spark-submit, python3 and pip."""

    namespace: str = "default"
    """Kubernetes namespace of pods and services (LIMINAL_NAMESPACE)."""

    serving: ServingTarget = ServingTarget.DOCKER
    """Where services run (LIMINAL_SERVING): the local Docker engine is the embedded default."""

    docker_url: str = "unix://var/run/docker.sock"
    """Engine that Airflow's DockerOperator talks to for `docker` executors (LIMINAL_TASK_DOCKER_URL)."""
