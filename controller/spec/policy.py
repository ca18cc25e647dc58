"""Repository policy: what a liminal.yml may ask for beyond its own pipelines. Pure.

A repository is untrusted content: its executors could pick a Kubernetes namespace, service
account or cluster, another Docker engine or the host's network, and its volumes and secrets
could bind paths of the host that runs the task. The operator's RepoPolicy says what each
repository may use; anything more is a problem located at the key that asks for it.
"""

from __future__ import annotations

from collections.abc import Iterable

from controller.model import Problem, RepoPolicy
from controller.spec.validate import mapping_items
from controller.spec.yaml_positions import Node

__all__ = ["policy_problems"]

_WHERE = "the repository's policy (LIMINAL_POLICY_FILE)"


def policy_problems(resolved: Node, policy: RepoPolicy) -> list[Problem]:
    """Every place where the resolved system `resolved` asks for more than `policy` allows."""
    problems: list[Problem] = []
    types: dict[str, str] = {}
    for executor in mapping_items(resolved.get("executors")):
        name, kind = _text(executor.get("executor")), _text(executor.get("type"))
        if name is not None and kind is not None:
            types[name] = kind
        for key, allowed, what in (
            ("namespace", policy.namespaces, "Kubernetes namespace"),
            ("service_account_name", policy.service_accounts, "service account"),
            ("cluster_context", policy.cluster_contexts, "cluster context"),
        ):
            node = executor.get(key)
            if node is None or allowed is None or node.value in allowed:
                continue
            problems.append(
                node.problem(f"executor '{name}' asks for {what} {node.value!r}; {_allows(allowed)}", "policy")
            )
        if not policy.docker_settings:
            for key in ("docker_url", "network_mode"):
                node = executor.get(key)
                if node is not None:
                    problems.append(
                        node.problem(
                            f"executor '{name}' sets `{key}`; {_WHERE} does not allow Docker settings", "policy"
                        )
                    )
    if policy.executor_types is not None:
        for pipeline in mapping_items(resolved.get("pipelines")):
            for task in mapping_items(pipeline.get("tasks")):
                used = _text(task.get("executor")) or ""
                kind = types.get(used)
                if kind is not None and kind not in policy.executor_types:
                    at = task.get("task") or task
                    problems.append(
                        at.problem(
                            f"task '{at.value}' runs on executor '{used}' of type '{kind}'; {_WHERE} allows "
                            f"{', '.join(sorted(policy.executor_types)) or 'no executor type'}",
                            "policy",
                        )
                    )
    if not policy.host_mounts:
        for section, key, what in (("volumes", "local", "volume"), ("secrets", "local_path_file", "secret")):
            for item in mapping_items(resolved.get(section)):
                node = item.get(key)
                path = node.get("path") if node is not None and key == "local" else node
                if node is not None and not (key == "local" and not _is_absolute(path)):
                    problems.append(
                        node.problem(
                            f"{what} '{_text(item.get(what))}' uses a path on the host (`{key}`); {_WHERE} does "
                            "not allow host mounts",
                            "policy",
                            at_key=True,
                        )
                    )
    return problems


def _is_absolute(path: Node | None) -> bool:
    # a relative `local` path names no host directory (validate says it is not used)
    return path is not None and isinstance(path.value, str) and path.value.startswith("/")


def _allows(allowed: Iterable[str]) -> str:
    names = ", ".join(repr(a) for a in allowed)
    return f"{_WHERE} allows {names}" if names else f"{_WHERE} allows none"


def _text(node: Node | None) -> str | None:
    return node.value if node is not None and isinstance(node.value, str) else None
