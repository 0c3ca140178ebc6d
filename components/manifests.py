"""Kubernetes objects from inferstack's pure manifests: labelled namespaces and custom resources,
and the one rule every component follows for the order of its children."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

PART_OF = {"app.kubernetes.io/part-of": "inferstack"}


def namespace(resource_name: str, name: str, opts: pulumi.ResourceOptions) -> k8s.core.v1.Namespace:
    """A namespace labelled as inferstack's, so it can be found (and policed) as such."""
    return k8s.core.v1.Namespace(resource_name, metadata={"name": name, "labels": PART_OF}, opts=opts)


def custom_resource(
    resource_name: str, manifest: dict[str, Any], opts: pulumi.ResourceOptions
) -> k8s.apiextensions.CustomResource:
    """A custom resource (ServiceMonitor, ScaledObject, PrometheusRule) from its manifest."""
    return k8s.apiextensions.CustomResource(
        resource_name,
        api_version=manifest["apiVersion"],
        kind=manifest["kind"],
        metadata=manifest["metadata"],
        spec=manifest["spec"],
        opts=opts,
    )


def inherited_dependencies(opts: pulumi.ResourceOptions | None) -> list[pulumi.Resource]:
    """What a component was told to wait for, for its children to wait for too.

    The Python SDK does not pass a component's ``depends_on`` down to its children: without this, a
    ScaledObject inside a service that "depends on" KEDA would still race KEDA's CRD.
    """
    given = opts.depends_on if opts is not None else None
    if given is None:
        return []
    if isinstance(given, pulumi.Resource):
        return [given]
    if isinstance(given, Sequence) and all(isinstance(r, pulumi.Resource) for r in given):
        return list(given)
    raise TypeError("depends_on of an inferstack component: a resource or a list of resources")


def child_options(
    parent: pulumi.Resource,
    opts: pulumi.ResourceOptions | None,
    *,
    provider: pulumi.ProviderResource | None = None,
    after: Sequence[pulumi.Resource] = (),
) -> pulumi.ResourceOptions:
    """Options of a component's child: parented, on ``provider``, after what the component waits for and ``after``."""
    return pulumi.ResourceOptions(
        parent=parent, provider=provider, depends_on=[*inherited_dependencies(opts), *after]
    )
