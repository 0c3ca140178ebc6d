"""The image-registries policy on its own, and on what the charts render (helm, vendored charts)."""

from __future__ import annotations

import pytest

from inferstack.policies.rules_registries import (
    ALLOWED_REGISTRIES,
    image_registries,
    registry_of,
    registry_problem,
)
from tests.components.test_helm_render import Rendered, images
from tests.components.test_helm_render import stack as stack

DEPLOYMENT = "kubernetes:apps/v1:Deployment"


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("nginx:1.28.0", "docker.io"),
        ("grafana/grafana:13.2.0", "docker.io"),
        ("docker.io/grafana/grafana:13.2.0", "docker.io"),
        ("public.ecr.aws/docker/library/nginx:1.28.0", "public.ecr.aws"),
        ("localhost:5000/x:1", "localhost:5000"),
        (
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/docker-hub/grafana/grafana:13.2.0",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
        ),
    ],
)
def test_registry_as_the_runtime_reads_it(image: str, registry: str) -> None:
    assert registry_of(image) == registry


def test_the_allowed_list_is_configurable() -> None:
    pod = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "ghcr.io/x/y:1"}]}}}}
    assert image_registries(DEPLOYMENT, pod, {"allowed": list(ALLOWED_REGISTRIES)}) == []
    (problem,) = image_registries(DEPLOYMENT, pod, {"allowed": ["public.ecr.aws"]})
    assert "ghcr.io" in problem and "allowed: public.ecr.aws" in problem
    assert registry_problem("123456789012.dkr.ecr.eu-west-1.amazonaws.com/r:1", ALLOWED_REGISTRIES) is None


def test_every_rendered_image_comes_from_an_allowed_registry(stack: Rendered) -> None:
    """What the charts render from their own defaults too, not only the values the stack sets; and
    the pods the program registers itself."""
    found = {image for objects in stack.objects.values() for o in objects for image in images(o)}
    for kind in ("Deployment", "DaemonSet", "StatefulSet"):
        found |= {i for r in stack.recording.of_type(f"kubernetes:apps/v1:{kind}") for i in images(r.inputs)}
    assert len(found) > 10
    problems = [p for image in sorted(found) if (p := registry_problem(image, ALLOWED_REGISTRIES))]
    assert problems == []
