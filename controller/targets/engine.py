"""The Docker engine at DOCKER_HOST, as the image and local serving targets reach it."""

from __future__ import annotations

import docker
import docker.errors

from controller.errors import TransientError

__all__ = ["Engine", "unreachable"]


def unreachable(exc: Exception) -> TransientError:
    """The engine did not answer: retried by the next reconcile."""
    return TransientError(f"cannot reach the Docker engine: {exc}", retry_after=30)


class Engine:
    """A client of the engine, connected on first use (a controller that needs none never connects)."""

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> docker.DockerClient:
        """The client (DOCKER_HOST, as the docker SDK reads it, unless one was given)."""
        if self._client is None:
            try:
                self._client = docker.from_env()
            except docker.errors.DockerException as exc:
                raise unreachable(exc) from exc
        return self._client
