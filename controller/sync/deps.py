"""Deps: what the reconciler works with, passed in (no module-level singletons); and
`desired_for`, the desired state of a snapshot under them (load and render, memoized)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.model import DesiredState, Memo, Origin, Policies, ResourceKind, Snapshot
from controller.ports import LedgerPort, Source, Target
from controller.render import RenderSettings, render
from controller.spec import SourceFile, discover, load
from controller.sync.cache import DesiredStore, RenderCache, stable_key

__all__ = ["Deps", "desired_for"]


@dataclass(frozen=True, slots=True)
class Deps:
    """Everything a reconcile touches. `controller.compose.build_deps` makes the real one from
    settings; the fast tests make one of fakes (tests/fakes.py)."""

    source: Source
    ledger: LedgerPort
    targets: Mapping[ResourceKind, Target]
    settings: RenderSettings
    environ: Mapping[str, str] = field(default_factory=dict)
    cache: RenderCache | None = field(default_factory=RenderCache)
    """Kept between reconciles of a long-lived process; None renders everything every time."""
    store: DesiredStore | None = None
    """Desired states kept on disk for other processes (a CLI plan of a commit serve rendered)."""
    policies: Policies = field(default_factory=Policies)
    """What each repository may ask for (the safe default unless the operator's policy file says more)."""


def desired_for(snapshot: Snapshot, deps: Deps) -> DesiredState:
    """Load and render a snapshot, keeping only the kinds a target is configured for.

    With a cache, a commit rendered before under the same settings is not loaded again, and a
    new commit loads and renders only the files, systems and images whose content changed.
    """
    cache = deps.cache
    if cache is None:
        return _desired(snapshot, deps, None)
    key = (
        snapshot.repo.name,
        snapshot.commit,
        deps.settings,
        tuple(sorted(deps.environ.items())),
        frozenset(deps.targets),
        deps.policies.for_repo(snapshot.repo.name),
    )
    return cache.get_or_make("desired", key, lambda: _stored(key, snapshot, deps, cache))


def _stored(key: tuple[object, ...], snapshot: Snapshot, deps: Deps, cache: RenderCache) -> DesiredState:
    """The desired state from the disk store, or made (and stored) when it is not there.

    Made in a process that has not rendered this repository (under these settings) yet, the
    parts of its last render (parsed files, validated systems, image specs, DAG payloads) are
    read first: only what the new commit's trees changed is loaded and rendered again."""
    store = deps.store
    if store is None:
        return _desired(snapshot, deps, cache.view(deps.source.trees(snapshot)))
    name = stable_key(key)
    found = store.get(name)
    if isinstance(found, DesiredState) and found.origin == Origin(snapshot.repo.name, snapshot.commit):
        return found
    lineage = stable_key((key[0], *key[2:]))  # the same, but for the commit
    if store.first_use(lineage):
        cache.preload(store.parts(lineage))
    view = cache.view(deps.source.trees(snapshot))
    made = _desired(snapshot, deps, view)
    store.put(name, made)
    store.put_parts(lineage, view.used())
    return made


def _desired(snapshot: Snapshot, deps: Deps, memo: Memo | None) -> DesiredState:
    origin = Origin(snapshot.repo.name, snapshot.commit)
    # files are named relative to the repository: errors read `pipelines/a/liminal.yml:3:5`, and
    # the names (memo keys) are the same in every commit's checkout
    files = [SourceFile(f.path, f.path.relative_to(f.root).as_posix(), f.root) for f in discover([snapshot.root])]
    if not files:
        return DesiredState(origin, ())
    spec = load(files, deps.environ, memo=memo, policy=deps.policies.for_repo(snapshot.repo.name))
    state = render(spec, snapshot.root, deps.settings, origin, memo=memo)
    kept = tuple(r for r in state.resources if r.key.kind in deps.targets)
    left_out = tuple(sorted((r.key for r in state.resources if r.key.kind not in deps.targets), key=str))
    return DesiredState(origin, kept, state.warnings, left_out)
