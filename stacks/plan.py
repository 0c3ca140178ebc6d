"""`inferstack plan`: what `pulumi preview` would create, from the stack program run offline.

Prints the resource tree (components and their children) with counts, or the whole plan in the
shape of `pulumi preview --json`, and writes every first-party Kubernetes object as a manifest
file, so it can be read, diffed and validated without a cluster.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from pulumi.runtime.config import is_config_secret

from inferstack.stacks.offline import Recorded, Recording

# What the engine shows for values it cannot know during a preview (pulumi-policy's UNKNOWN_STRING_VALUE).
UNKNOWN_ID = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
_SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")

# Helm releases and providers are not Kubernetes objects of ours: the chart renders the former. A
# yaml/v2 ConfigGroup is Pulumi's component over files it reads at deploy time (a chart's CRDs).
_NOT_MANIFESTS = ("kubernetes:helm.sh/", "pulumi:providers:", "kubernetes:yaml/")


def _chart(resource: Recorded) -> str:
    """The chart and exact version a Helm release installs: what an upgrade review looks for."""
    if not resource.type.startswith("kubernetes:helm.sh/"):
        return ""
    chart, version = resource.inputs.get("chart"), resource.inputs.get("version")
    return f"  (chart {chart} {version})" if chart else ""


def tree_lines(recording: Recording) -> Iterator[str]:
    """``+ type name`` lines, children indented under their parent; releases name their chart."""
    children: dict[str, list[Recorded]] = {}
    urns = {r.urn for r in recording}
    for resource in recording:
        parent = resource.parent_urn if resource.parent_urn in urns else ""
        children.setdefault(parent, []).append(resource)

    def walk(parent: str, depth: int) -> Iterator[str]:
        # By name, not registration order (which varies run to run): plans must diff cleanly.
        for resource in sorted(children.get(parent, []), key=lambda r: (r.name, r.type)):
            yield f"{'    ' * depth}+ {resource.type:<60} {resource.name}{_chart(resource)}"
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
    # Secrets as the object carries them (offline, only the mocks' stand-in values ever are).
    body = {
        k: _secrets(v, lambda secret: secret)
        for k, v in resource.inputs.items()
        if k not in ("apiVersion", "kind")
    }
    return {
        "apiVersion": resource.inputs.get("apiVersion", api_version),
        "kind": resource.inputs.get("kind", kind),
        **body,
    }


def cluster_of(resource: Recorded) -> str:
    """The cluster a Kubernetes object goes to: the name of its Kubernetes provider (the stack's own
    cluster, or another one it reaches, such as the failover stack's primary)."""
    if not resource.provider:
        return "default-provider"
    return resource.provider.rsplit("::", 1)[0].rsplit("::", 1)[-1]


def write_manifests(recording: Recording, folder: Path) -> list[Path]:
    """One YAML file per Kubernetes object: ``<cluster>/<namespace>/<kind>-<name>.yaml``, ``<cluster>``
    the Kubernetes provider it goes through (one stack may write into two clusters)."""
    written = []
    for resource in recording:
        document = manifest(resource)
        if document is None:
            continue
        metadata = document.get("metadata", {})
        path = (
            folder
            / cluster_of(resource)
            / metadata.get("namespace", "_cluster")
            / f"{document['kind']}-{metadata.get('name', resource.name)}.yaml"
        )
        if path in written:
            raise ValueError(f"two objects of {cluster_of(resource)} would be written to {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        written.append(path)
    return written


def _secrets(value: Any, shown: Callable[[Any], Any]) -> Any:
    """Each engine-form secret in ``value`` replaced by what ``shown`` makes of the secret's value."""
    if isinstance(value, Mapping):
        if value.get(_SECRET_SIG[0]) == _SECRET_SIG[1]:
            return shown(value.get("value"))
        return {key: _secrets(item, shown) for key, item in value.items()}
    if isinstance(value, list):
        return [_secrets(item, shown) for item in value]
    return value


def _hide_secrets(value: Any) -> Any:
    """Engine-form secrets as `pulumi preview --json` prints them without --show-secrets."""
    return _secrets(value, lambda _: "[secret]")


def _default_provider_urn(stack: str, package: str) -> str:
    """The URN the engine gives the default provider of ``package`` (``default_<version>``)."""
    try:
        version = metadata.version(f"pulumi_{package}").replace(".", "_")
    except metadata.PackageNotFoundError:
        version = ""
    name = f"default_{version}" if version else "default"
    return f"urn:pulumi:{stack}::inferstack::pulumi:providers:{package}::{name}"


def _state(urn: str, resource_type: str, custom: bool, **fields: Any) -> dict[str, Any]:
    """A ``newState``: the engine leaves out what a resource does not have (no provider, no parent...)."""
    return {"urn": urn, "custom": custom, "type": resource_type, **{k: v for k, v in fields.items() if v}}


def ordered(recording: Recording) -> list[Recorded]:
    """Registration order varies run to run; this order does not, and still puts every resource after
    its parent, its provider and everything it depends on, as the engine's steps are."""
    urns = {r.urn: r for r in recording}
    before = {
        r.urn: {
            u
            for u in (*r.dependencies, r.parent_urn, r.provider.rsplit("::", 1)[0])
            if u in urns and u != r.urn
        }
        for r in recording
    }
    waiting_on = {urn: len(deps) for urn, deps in before.items()}
    dependents: dict[str, list[str]] = {}
    for urn, deps in before.items():
        for dep in deps:
            dependents.setdefault(dep, []).append(urn)
    ready = sorted(urn for urn, count in waiting_on.items() if count == 0)
    result: list[Recorded] = []
    while ready:
        urn = ready.pop(0)
        result.append(urns[urn])
        for dependent in dependents.get(urn, []):
            waiting_on[dependent] -= 1
            if waiting_on[dependent] == 0:
                bisect.insort(ready, dependent)
    return result


def preview_json(recording: Recording, stack: str, config: Mapping[str, str]) -> dict[str, Any]:
    """The plan as `pulumi preview --json` prints it: ``steps[]`` of ``op`` and ``newState``."""
    stack_urn = f"urn:pulumi:{stack}::inferstack::pulumi:pulumi:Stack::inferstack-{stack}"
    steps: list[dict[str, Any]] = [
        {"op": "create", "urn": stack_urn, "newState": _state(stack_urn, "pulumi:pulumi:Stack", False)}
    ]
    defaults: dict[str, str] = {}
    for resource in ordered(recording):
        provider = resource.provider
        package = resource.type.split(":")[0]
        if resource.custom and not provider and package != "pulumi":
            if package not in defaults:
                urn = _default_provider_urn(stack, package)
                defaults[package] = f"{urn}::{UNKNOWN_ID}"
                steps.append(
                    {
                        "op": "create",
                        "urn": urn,
                        "newState": _state(urn, f"pulumi:providers:{package}", True, parent=stack_urn),
                    }
                )
            provider = defaults[package]
        step: dict[str, Any] = {"op": "create", "urn": resource.urn}
        if provider:
            step["provider"] = provider
        step["newState"] = _state(
            resource.urn,
            resource.type,
            resource.custom,
            parent=resource.parent_urn or stack_urn,
            provider=provider,
            dependencies=list(resource.dependencies),
            propertyDependencies={k: list(v) for k, v in resource.property_dependencies.items() if v},
            customTimeouts=dict(resource.custom_timeouts),
        )
        step["newState"]["inputs"] = _hide_secrets(resource.inputs)
        steps.append(step)
    return {
        # As `pulumi preview --json` prints config: a key set with --secret as "[secret]".
        "config": {k: "[secret]" if is_config_secret(k) else v for k, v in sorted(config.items())},
        "steps": steps,
        "changeSummary": {"create": len(steps)},
    }
