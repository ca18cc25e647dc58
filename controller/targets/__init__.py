"""The targets: one module per place resources go (a DAG folder, Airflow's API, an image registry,
the Docker engine, Kubernetes), each implementing controller.ports.Target."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from controller.errors import LiminalError, retry_after_of
from controller.model import Resource, ResultCode, TargetResult

__all__ = ["each"]


def each(resources: Sequence[Resource], one: Callable[[Resource], TargetResult]) -> Iterator[TargetResult]:
    """Apply resources one at a time, a failure (LiminalError) becoming that resource's FAILED result."""
    for resource in resources:
        try:
            yield one(resource)
        except LiminalError as exc:
            yield TargetResult(resource.key, ResultCode.FAILED, str(exc), retry_after_of(exc))
