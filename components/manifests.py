"""Kubernetes objects from inferstack's pure manifests: labelled namespaces and custom resources."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

PART_OF = {"app.kubernetes.io/part-of": "inferstack"}


def restricted_security_context(uid: int) -> dict[str, Any]:
    """A container's security context under the restricted Pod Security Standard, as user ``uid``."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


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
