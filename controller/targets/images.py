"""Image target: builds content-addressed images on a Docker engine and pushes them to a registry.

The tag carries the content hash, so a tag that exists is the image wanted: it is never built
again (a revert rebuilds nothing). Build contexts are made from the rendered build spec, file by
file from the checkout, each checked against the hash render computed and refused if it leads
out of the repository.
"""

from __future__ import annotations

import functools
import hashlib
import io
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import structlog

from controller.errors import TargetError, TransientError, sanitize
from controller.model import (
    BuildRecord,
    BuildStatus,
    ContextFile,
    Deployed,
    ImageBuild,
    Resource,
    ResourceKey,
    ResultCode,
    Snapshot,
    TargetResult,
)
from controller.targets import each
from controller.targets.engine import Engine, unreachable

__all__ = ["BuildProgress", "BuildRecord", "ImageTarget", "RegistryAuth", "context_tar"]

log = structlog.get_logger("liminal.images")

HASH_LABEL = "io.liminal-gitops.content-hash"


@dataclass(frozen=True, slots=True)
class BuildProgress:
    """One step of an image build, for a progress display (builds run in parallel: each carries its image).

    `phase` is `build` (started), `log` (one line of the engine's output), `push`, `done` or `failed`.
    """

    image: str
    tag: str
    phase: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RegistryAuth:
    """Credentials for the registry (from config; never logged)."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"RegistryAuth(username={self.username!r}, password=***)"


class ImageTarget:
    """Observe, build and push images through the Docker engine at DOCKER_HOST (or `client`)."""

    parallelism: int
    watches_drift = False  # a content tag names one image for good; observed only when applying

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        *,
        auth: RegistryAuth | None = None,
        parallelism: int = 2,
        on_build: Callable[[BuildRecord], None] | None = None,
        on_progress: Callable[[BuildProgress], None] | None = None,
        host: str | None = None,
    ) -> None:
        self._engine = Engine(client, host)
        self.auth = auth
        self.parallelism = max(1, parallelism)
        self.on_build = on_build or (lambda record: None)
        self.on_progress = on_progress or (lambda progress: None)

    @property
    def client(self) -> docker.DockerClient:
        """The engine's client, connected on first use."""
        return self._engine.client

    def observe(self, resources: Sequence[Resource]) -> Mapping[ResourceKey, str | None]:
        """An image is live when its content tag is in the registry (or, with no registry, the engine)."""
        out: dict[ResourceKey, str | None] = {}
        for resource in resources:
            build = _build_of(resource)
            found = self._in_registry(build) if _registry_of(build) else self._local(build.tag)
            out[resource.key] = resource.content_hash if found else None
        return out

    def apply(self, resources: Sequence[Resource], source: Snapshot) -> Iterator[TargetResult]:
        """Build and push up to `parallelism` images at a time; outcomes as each completes."""
        one = functools.partial(self._apply_one, source=source)
        if self.parallelism <= 1 or len(resources) <= 1:
            yield from each(resources, one)
            return
        with ThreadPoolExecutor(max_workers=min(self.parallelism, len(resources))) as pool:
            futures = [pool.submit(lambda r: next(each([r], one)), r) for r in resources]
            for future in as_completed(futures):
                yield future.result()

    def _apply_one(self, resource: Resource, source: Snapshot) -> TargetResult:
        """Build (unless the engine has the tag already), then push when the tag names a registry."""
        build = _build_of(resource)
        bound = log.bind(repo=resource.key.repo, commit=source.commit[:12], image=build.name, tag=build.tag)
        started = time.perf_counter()
        built = False
        try:
            if not self._local(build.tag):
                self._build(build, source, bound)
                built = True
            digest = self._push(build, bound) if _registry_of(build) else None
        except (TargetError, TransientError) as exc:
            self._progress(build, "failed", str(exc))
            self._record(resource, build, status=BuildStatus.FAILED, digest=None, started=started, message=str(exc))
            raise
        if built or digest:
            self._record(
                resource,
                build,
                status=BuildStatus.PUSHED if digest else BuildStatus.BUILT,
                digest=digest,
                started=started,
                message=None,
            )
        message = f"{'built' if built else 'found'} {build.tag}" + (f", pushed {digest}" if digest else "")
        self._progress(build, "done", f"{message} in {time.perf_counter() - started:.1f} s")
        return TargetResult(resource.key, ResultCode.APPLIED, message)

    def delete(self, deployed: Deployed) -> TargetResult:
        """Images are immutable and may serve a rollback: removing one from git keeps it (as
        Argo CD and Flux leave registries alone); only the ledger forgets it."""
        return TargetResult(deployed.key, ResultCode.DELETED, "kept in the registry")

    # ---- engine and registry -------------------------------------------------------------

    def _local(self, tag: str) -> bool:
        try:
            self.client.images.get(tag)
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.DockerException as exc:
            raise unreachable(exc) from exc
        return True

    def _in_registry(self, build: ImageBuild) -> bool:
        try:
            self.client.api.inspect_distribution(build.tag, auth_config=self._auth_config())
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            if "manifest unknown" in str(exc) or "not found" in str(exc).lower():
                return False
            raise TransientError(
                f"cannot reach the registry {_registry_of(build)}: {self._clean(exc)}", retry_after=30
            ) from exc
        return True

    def _build(self, build: ImageBuild, source: Snapshot, bound: Any) -> None:
        context = context_tar(build, source.root)
        labels = {
            "org.opencontainers.image.source": sanitize(source.repo.url),
            "org.opencontainers.image.revision": source.commit,
            HASH_LABEL: build.content_hash,
        }
        bound.info("image.build.start", files=len(build.files), no_cache=build.no_cache)
        self._progress(build, "build", "without layer cache" if build.no_cache else "")
        try:
            stream = self.client.api.build(
                fileobj=context,
                custom_context=True,
                tag=build.tag,
                labels=labels,
                nocache=build.no_cache,
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
            )
            for event in stream:
                if "error" in event:
                    raise TargetError(build.name, f"build failed: {str(event['error']).strip()}")
                line = str(event.get("stream", "")).rstrip()
                if line:
                    # every line of the engine's output; at debug level, the progress display shows the steps
                    bound.debug("image.build.log", line=line)
                    self._progress(build, "log", line)
        except docker.errors.APIError as exc:
            raise TargetError(build.name, f"build failed: {exc.explanation or exc}") from exc
        except docker.errors.DockerException as exc:
            raise unreachable(exc) from exc
        bound.info("image.build.done")

    def _push(self, build: ImageBuild, bound: Any) -> str:
        repository, tag = build.tag.rsplit(":", 1)
        digest = None
        self._progress(build, "push", _registry_of(build) or "")
        try:
            for event in self.client.api.push(
                repository, tag=tag, stream=True, decode=True, auth_config=self._auth_config()
            ):
                if "error" in event:
                    raise TransientError(
                        f"cannot push {build.tag} to {_registry_of(build)}: {self._clean(event['error'])}",
                        retry_after=30,
                    )
                aux = event.get("aux") or {}
                digest = aux.get("Digest") or digest
        except docker.errors.DockerException as exc:
            raise TransientError(f"cannot push {build.tag}: {self._clean(exc)}", retry_after=30) from exc
        if not digest:
            raise TransientError(f"the registry gave no digest for {build.tag}", retry_after=30)
        bound.info("image.pushed", digest=digest)
        return str(digest)

    def _progress(self, build: ImageBuild, phase: str, detail: str) -> None:
        self.on_progress(BuildProgress(build.name, build.tag, phase, detail))

    def _auth_config(self) -> dict[str, str] | None:
        return {"username": self.auth.username, "password": self.auth.password} if self.auth else None

    def _clean(self, error: object) -> str:
        return sanitize(str(error).strip(), (self.auth.password,) if self.auth else ())

    def _record(
        self,
        resource: Resource,
        build: ImageBuild,
        *,
        status: BuildStatus,
        digest: str | None,
        started: float,
        message: str | None,
    ) -> None:
        self.on_build(
            BuildRecord(
                repo=resource.key.repo,
                image=build.name,
                tag=build.tag,
                content_hash=build.content_hash,
                status=status,
                digest=digest,
                seconds=round(time.perf_counter() - started, 3),
                message=message,
            )
        )


def _build_of(resource: Resource) -> ImageBuild:
    if not isinstance(resource.artifact, ImageBuild):
        raise TargetError(str(resource.key), "not an image build")
    return resource.artifact


def _registry_of(build: ImageBuild) -> str | None:
    first = build.repository.split("/", 1)[0]
    # as Docker decides: a first part with a dot, a colon or `localhost` is a registry host
    return first if "/" in build.repository and ("." in first or ":" in first or first == "localhost") else None


def context_tar(build: ImageBuild, root: Path) -> io.BytesIO:
    """The build context as a tar: fixed owners, modes and times, so equal specs give equal bytes."""
    buffer = io.BytesIO()
    real_root = root.resolve()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in build.files:
            info = tarfile.TarInfo(entry.path)
            info.mtime = 0
            info.uid = info.gid = 0
            if entry.link is not None:
                _check_link(build, entry, root, real_root)
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link
                info.mode = 0o777
                archive.addfile(info)
                continue
            data = entry.data if entry.data is not None else _read(build, entry, root, real_root)
            info.size = len(data)
            info.mode = entry.mode & 0o777
            archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def _check_link(build: ImageBuild, entry: ContextFile, root: Path, real_root: Path) -> None:
    where = (root / str(entry.origin)).parent
    target = (where / str(entry.link)).resolve()
    if not target.is_relative_to(real_root):
        raise TargetError(
            build.name, f"symlink {entry.origin} -> {entry.link} leads out of the repository; refusing to build"
        )


def _read(build: ImageBuild, entry: ContextFile, root: Path, real_root: Path) -> bytes:
    path = root / str(entry.origin)
    if not path.resolve().is_relative_to(real_root):
        raise TargetError(build.name, f"{entry.origin} leads out of the repository; refusing to build")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TargetError(build.name, f"cannot read {entry.origin}: {exc.strerror}") from exc
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise TargetError(build.name, f"{entry.origin} changed after render; refusing to build")
    return data
