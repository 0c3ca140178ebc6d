"""Images come from registries that scale: a policy refusing any image outside an allowed list.

Docker Hub lets an anonymous client pull a few images an hour per IPv4 address, and every node of a
zone leaves through one NAT address: a spot wave of new nodes pulling the request front meets
``toomanyrequests`` and Triton never turns Ready. The default list holds registries without such
per-address limits for public images (ECR Public, the Kubernetes project's registry, NVIDIA's,
Quay, GHCR, Fluent's) and the account's own ECR (a pull-through cache or a mirror).

An image name without a registry is Docker Hub's, as the container runtime reads it
(``nginx:1.28.0`` is ``docker.io/library/nginx:1.28.0``). Helm releases are read for the image
values the stack sets (``image: {registry, repository, tag}`` or an image string); what a chart
renders from its own defaults is checked where the charts are rendered (tests/components).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fnmatch import fnmatchcase
from typing import Any

from inferstack.policies.rule_base import POD_CONTROLLERS, RELEASE, Config, Props, Rule, containers

DOCKER_HUB = "docker.io"
ALLOWED_REGISTRIES = (
    "public.ecr.aws",
    "*.dkr.ecr.*.amazonaws.com",
    "registry.k8s.io",
    "nvcr.io",
    "quay.io",
    "ghcr.io",
    "cr.fluentbit.io",
)


def registry_of(image: str) -> str:
    """The registry host of an image reference, as the container runtime resolves it."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def registry_problem(image: str, allowed: Sequence[str]) -> str | None:
    registry = registry_of(image)
    if any(fnmatchcase(registry, pattern) for pattern in allowed):
        return None
    hint = " (Docker Hub: anonymous pulls are limited per NAT address)" if registry == DOCKER_HUB else ""
    return f"image {image!r} comes from {registry}{hint}; allowed: {', '.join(allowed)}"


def value_images(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(where, image) for every image a Helm values tree names: an ``image`` string, or an ``image``
    object with a ``repository`` (its ``registry`` prefixed when given)."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "image" and isinstance(value, str):
                yield where, value
            elif key == "image" and isinstance(value, dict) and value.get("repository"):
                registry = value.get("registry")
                yield where, f"{registry}/{value['repository']}" if registry else str(value["repository"])
            else:
                yield from value_images(value, where)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from value_images(item, f"{path}[{i}]")


def image_registries(resource_type: str, props: Props, config: Config) -> list[str]:
    """Every container image, and every image a Helm release's values name, from an allowed registry."""
    allowed = list(config["allowed"])
    problems: list[str] = []
    if resource_type in POD_CONTROLLERS:
        for container in containers(props):
            problem = registry_problem(str(container.get("image", "")), allowed)
            if problem:
                problems.append(f"container {container.get('name')!r}: {problem}")
    if resource_type == RELEASE:
        for where, image in value_images(props.get("values") or {}):
            problem = registry_problem(image, allowed)
            if problem:
                problems.append(f"Helm value {where}: {problem}")
    return problems


REGISTRY_RULES: tuple[Rule, ...] = (
    Rule(
        "image-registries",
        "Images come from registries without anonymous pull limits (an allowed list).",
        "mandatory",
        image_registries,
        config_schema={
            "allowed": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "default": list(ALLOWED_REGISTRIES),
            }
        },
    ),
)
