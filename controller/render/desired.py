"""render: Spec -> DesiredState. Pure apart from reading image build contexts inside the repository."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from controller.errors import InputError
from controller.model import (
    DesiredState,
    ImageBuild,
    Memo,
    Origin,
    Problem,
    Resource,
    ResourceKey,
    ResourceKind,
    ServiceDeployment,
    Spec,
    System,
    memoized,
)
from controller.render.claims import cluster_needs
from controller.render.dags import dag_file, loader_source, pipeline_payload, stamp_payload
from controller.render.hashing import digest, plain
from controller.render.images import build_image
from controller.render.services import service_body, stamp_service
from controller.render.settings import RenderSettings

__all__ = ["render"]


class _Same:
    """A memo key part equal only to the very same object (for values that are not hashable).

    It holds the object, so its id cannot be reused while the memo entry lives.
    """

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj


@dataclass(frozen=True, slots=True)
class _DagPart:
    """A pipeline's rendered payload, before the origin stamp."""

    name: str
    payload: dict[str, Any]
    content_hash: str
    images: tuple[str, ...]


def _dag_parts(system: System, builds: Mapping[str, ImageBuild], settings: RenderSettings) -> tuple[_DagPart, ...]:
    loader = _loader_sha256()
    out = []
    for pipeline in system.pipelines:
        payload = plain(pipeline_payload(pipeline, system, builds, settings))
        used = sorted({t.image for t in pipeline.tasks if t.image and not t.external_image and t.image in builds})
        out.append(_DagPart(pipeline.name, payload, digest({"loader": loader, "payload": payload}), tuple(used)))
    return tuple(out)


@lru_cache(maxsize=1)
def _loader_sha256() -> str:
    return hashlib.sha256(loader_source().encode()).hexdigest()


def render(spec: Spec, root: Path, settings: RenderSettings, origin: Origin, memo: Memo | None = None) -> DesiredState:
    """The resources `spec` wants deployed, each with its content hash and dependencies.

    Deterministic: the same files and settings give the same hashes on any machine. `root` is the
    repository checkout that image `source` paths are relative to; nothing outside it is read.
    Raises InputError when two liminal.yml files declare one image name with different content.
    With a `memo`, an image whose source tree is unchanged is not hashed again, and the DAGs of a
    System object met before are not rendered again (only stamped with the new origin).
    """
    builds: dict[str, ImageBuild] = {}
    declared_in: dict[str, str] = {}
    problems: list[Problem] = []
    for system in spec.systems:
        for image in system.images:
            tree = memo.tree_id(image.source) if memo is not None else None
            key = (image, settings, tree) if tree is not None else None
            build = memoized(memo, "image", key, partial(build_image, image, root, settings))
            earlier = builds.get(image.name)
            if earlier is not None and earlier.content_hash != build.content_hash:
                problems.append(
                    Problem(
                        system.file,
                        1,
                        1,
                        "$.images",
                        f"image '{image.name}' is also declared by {declared_in[image.name]} with a different "
                        "source or settings; image names must be unique in a repository",
                        "unique-name",
                    )
                )
                continue
            builds[image.name] = build
            declared_in.setdefault(image.name, system.file)
    if problems:
        raise InputError(tuple(problems))

    def image_key(name: str) -> ResourceKey:
        return ResourceKey(origin.repo, ResourceKind.IMAGE, name)

    resources = [
        Resource(
            key=image_key(b.name),
            content_hash=b.content_hash,
            body={
                "repository": b.repository,
                "tag": b.tag,
                "dockerfile": b.dockerfile,
                "files": [[f.path, f.mode, f.sha256] for f in b.files],
                "no_cache": b.no_cache,
            },
            artifact=b,
        )
        for b in builds.values()
    ]
    loader = _loader_sha256()
    cluster: dict[ResourceKey, Resource] = {}
    for system in spec.systems:
        used = {t.image for p in system.pipelines for t in p.tasks}
        tags = tuple(sorted((i, builds[i].tag) for i in used if i in builds))
        parts = memoized(memo, "dags", (_Same(system), tags, settings), partial(_dag_parts, system, builds, settings))
        for part, pipeline in zip(parts, system.pipelines, strict=True):
            needs: list[ResourceKey] = []
            for need in cluster_needs(pipeline, system, settings, origin.repo):
                need_key = ResourceKey(origin.repo, ResourceKind(need.kind), need.name)
                needs.append(need_key)
                if need_key not in cluster:
                    cluster[need_key] = Resource(key=need_key, content_hash=digest(need.body), body=need.body)
            artifact = dag_file(origin.repo, stamp_payload(part.payload, origin, part.content_hash))
            resources.append(
                Resource(
                    key=ResourceKey(origin.repo, ResourceKind.DAG, part.name),
                    content_hash=part.content_hash,
                    body={"filename": artifact.filename, "loader_sha256": loader, "payload": part.payload},
                    depends_on=(*(image_key(n) for n in part.images), *needs),
                    artifact=artifact,
                )
            )
        for service in system.services:
            served = builds.get(service.image)
            tag = served.tag if served is not None else service.image
            body = service_body(service, origin.repo, tag, settings)
            content_hash = digest(body)
            resources.append(
                Resource(
                    key=ResourceKey(origin.repo, ResourceKind.SERVICE, service.name),
                    content_hash=content_hash,
                    body=(stamped := stamp_service(body, origin, content_hash)),
                    depends_on=(image_key(service.image),) if served is not None else (),
                    artifact=ServiceDeployment.of(stamped),
                )
            )
    resources.extend(cluster.values())
    resources.sort(key=lambda r: (r.wave, r.key.name))
    return DesiredState(origin=origin, resources=tuple(resources), warnings=spec.warnings)
