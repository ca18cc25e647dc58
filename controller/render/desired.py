"""render: Spec -> DesiredState. Pure apart from reading image build contexts inside the repository."""

from __future__ import annotations

import hashlib
from pathlib import Path

from controller.errors import InputError
from controller.model import DesiredState, ImageBuild, Origin, Problem, Resource, ResourceKey, ResourceKind, Spec
from controller.render.dags import dag_file, loader_source, pipeline_payload, stamp_payload
from controller.render.hashing import digest
from controller.render.images import build_image
from controller.render.services import service_body, stamp_service
from controller.render.settings import RenderSettings

__all__ = ["render"]


def render(spec: Spec, root: Path, settings: RenderSettings, origin: Origin) -> DesiredState:
    """The resources `spec` wants deployed, each with its content hash and dependencies.

    Deterministic: the same files and settings give the same hashes on any machine. `root` is the
    repository checkout that image `source` paths are relative to; nothing outside it is read.
    Raises InputError when two liminal.yml files declare one image name with different content.
    """
    builds: dict[str, ImageBuild] = {}
    declared_in: dict[str, str] = {}
    problems: list[Problem] = []
    for system in spec.systems:
        for image in system.images:
            build = build_image(image, root, settings)
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
    loader = hashlib.sha256(loader_source().encode()).hexdigest()
    for system in spec.systems:
        for pipeline in system.pipelines:
            payload = pipeline_payload(pipeline, system, builds, settings)
            content_hash = digest({"loader": loader, "payload": payload})
            stamped = stamp_payload(payload, origin, content_hash)
            artifact = dag_file(origin.repo, stamped)
            used = sorted({t.image for t in pipeline.tasks if t.image and not t.external_image and t.image in builds})
            resources.append(
                Resource(
                    key=ResourceKey(origin.repo, ResourceKind.DAG, pipeline.name),
                    content_hash=content_hash,
                    body={"filename": artifact.filename, "loader_sha256": loader, "payload": payload},
                    depends_on=tuple(image_key(n) for n in used),
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
                    body=stamp_service(body, origin, content_hash),
                    depends_on=(image_key(service.image),) if served is not None else (),
                )
            )
    resources.sort(key=lambda r: (r.wave, r.key.name))
    return DesiredState(origin=origin, resources=tuple(resources))
