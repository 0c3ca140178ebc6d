"""`inferstack plan`: what `pulumi preview` would create, from the stack program run offline.

Prints the resource tree (components and their children) with counts, and writes every first-party
Kubernetes object as a manifest file, so it can be read, diffed and validated without a cluster.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from inferstack.policies.offline import Recorded, Recording

# Helm releases and providers are not Kubernetes objects of ours: the chart renders the former.
_NOT_MANIFESTS = ("kubernetes:helm.sh/", "pulumi:providers:")


def tree_lines(recording: Recording) -> Iterator[str]:
    """``+ type name`` lines, children indented under their parent."""
    children: dict[str, list[Recorded]] = {}
    urns = {r.urn for r in recording}
    for resource in recording:
        parent = resource.parent_urn if resource.parent_urn in urns else ""
        children.setdefault(parent, []).append(resource)

    def walk(parent: str, depth: int) -> Iterator[str]:
        # By name, not registration order (which varies run to run): plans must diff cleanly.
        for resource in sorted(children.get(parent, []), key=lambda r: (r.name, r.type)):
            yield f"{'    ' * depth}+ {resource.type:<60} {resource.name}"
            yield from walk(resource.urn, depth + 1)

    yield from walk("", 0)


def summary(recording: Recording) -> list[tuple[str, int]]:
    return sorted(Counter(r.type for r in recording).items(), key=lambda item: (-item[1], item[0]))


def manifest(resource: Recorded) -> dict[str, Any] | None:
    """The Kubernetes object a recorded resource would create, or None if it is not one of ours."""
    if not resource.type.startswith("kubernetes:") or resource.type.startswith(_NOT_MANIFESTS):
        return None
    group_version, kind = resource.type.removeprefix("kubernetes:").rsplit(":", 1)
    api_version = group_version.removeprefix("core/")
    body = {k: v for k, v in resource.inputs.items() if k not in ("apiVersion", "kind")}
    return {
        "apiVersion": resource.inputs.get("apiVersion", api_version),
        "kind": resource.inputs.get("kind", kind),
        **body,
    }


def write_manifests(recording: Recording, folder: Path) -> list[Path]:
    """One YAML file per Kubernetes object: ``<namespace>/<kind>-<name>.yaml``."""
    written = []
    for resource in recording:
        document = manifest(resource)
        if document is None:
            continue
        metadata = document.get("metadata", {})
        path = (
            folder
            / metadata.get("namespace", "_cluster")
            / f"{document['kind']}-{metadata.get('name', resource.name)}.yaml"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        written.append(path)
    return written
