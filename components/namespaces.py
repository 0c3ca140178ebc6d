"""Namespaces inferstack creates, labelled so they can be found (and policed) as inferstack's."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

PART_OF = {"app.kubernetes.io/part-of": "inferstack"}


def namespace(resource_name: str, name: str, opts: pulumi.ResourceOptions) -> k8s.core.v1.Namespace:
    return k8s.core.v1.Namespace(resource_name, metadata={"name": name, "labels": PART_OF}, opts=opts)
