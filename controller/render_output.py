"""`liminal render --out DIR`: the rendered artifacts as files a person or CI can read and diff."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from controller.errors import ConfigError
from controller.model import DagFile, DesiredState, ImageBuild, ResourceKind, ServiceDeployment
from controller.render.dags import dag_text
from controller.render.hashing import plain

__all__ = ["INDEX", "resources_index", "write_render"]

INDEX = "resources.json"
"""The file listing kind, name and content hash per resource; its presence marks a render folder."""


def resources_index(desired: DesiredState) -> dict[str, Any]:
    """kind, name, hash and dependencies of every resource, plus where they came from."""
    return {
        "repo": desired.origin.repo,
        "commit": desired.origin.commit,
        "resources": [
            {
                "kind": str(r.key.kind),
                "name": r.key.name,
                "hash": r.content_hash,
                "depends_on": [{"kind": str(d.kind), "name": d.name} for d in r.depends_on],
            }
            for r in desired.resources
        ],
    }


def write_render(desired: DesiredState, out: Path) -> int:
    """Write every artifact under `out`, replacing an earlier render there; returns the file count.

    `out` must be missing, empty, or an earlier render (holding resources.json): a folder with
    other content is refused rather than overwritten. The new render is built beside it and
    swapped in, so an interrupted run never leaves a half-written folder.
    """
    if out.exists() and any(out.iterdir()) and not (out / INDEX).is_file():
        raise ConfigError(f"{out} is not empty and holds no {INDEX}; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    count = 0
    try:
        for resource in desired.resources:
            for rel, data in _files(resource.key.kind, resource.key.name, resource.body, resource.artifact):
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                count += 1
        (staging / INDEX).write_text(json.dumps(resources_index(desired), indent=2) + "\n", encoding="utf-8")
        count += 1
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return count


def _files(kind: ResourceKind, name: str, body: Any, artifact: object) -> list[tuple[str, bytes]]:
    if isinstance(artifact, DagFile):
        return [(f"dags/{artifact.filename}", dag_text(artifact).encode())]
    if isinstance(artifact, ImageBuild):
        folder = f"images/{name.replace('/', '__').replace(':', '_')}"
        listing = "".join(f"{f.mode:o} {f.sha256} {f.path}\n" for f in artifact.files)
        return [(f"{folder}/Dockerfile", artifact.dockerfile.encode()), (f"{folder}/context.txt", listing.encode())]
    if isinstance(artifact, ServiceDeployment) and artifact.target == "kubernetes":
        text = yaml.safe_dump_all([plain(m) for m in artifact.manifests], sort_keys=False)
        return [(f"manifests/{name}.yaml", text.encode())]
    if kind in (ResourceKind.CLAIM, ResourceKind.SECRET):
        # `namespace/name`: one file per claim or secret a pod task needs, made (manifests) or required
        flat = name.replace("/", "__")
        if "manifests" in body:
            text = yaml.safe_dump_all([plain(m) for m in body["manifests"]], sort_keys=False)
            return [(f"manifests/{kind}-{flat}.yaml", text.encode())]
        return [(f"requires/{kind}-{flat}.json", (json.dumps(plain(body["requires"]), indent=2) + "\n").encode())]
    return [(f"services/{name}.json", (json.dumps(plain(body), indent=2) + "\n").encode())]
