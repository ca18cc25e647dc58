"""The Docker engine at DOCKER_HOST, as the image and local serving targets reach it."""

from __future__ import annotations

import docker
import docker.errors

from controller.errors import TransientError

__all__ = ["Engine", "unreachable"]


def unreachable(exc: Exception, host: str | None = None) -> TransientError:
    """The engine (at `host`, when known) did not answer: retried by the next reconcile."""
    where = f" at {host}" if host else ""
    return TransientError(f"cannot reach the Docker engine{where}: {exc}", retry_after=30)


class Engine:
    """A client of the engine, connected on first use (a controller that needs none never connects)."""

    def __init__(self, client: docker.DockerClient | None = None, host: str | None = None) -> None:
        self._client = client
        self.host = host
        """The engine's address (LIMINAL_DOCKER_HOST); None: DOCKER_HOST, as the docker SDK reads it."""

    @property
    def client(self) -> docker.DockerClient:
        """The client (`host`, else DOCKER_HOST as the docker SDK reads it, unless one was given)."""
        if self._client is None:
            try:
                self._client = docker.DockerClient(base_url=self.host) if self.host else docker.from_env()
            except docker.errors.DockerException as exc:
                raise unreachable(exc, self.host or "DOCKER_HOST") from exc
        return self._client
