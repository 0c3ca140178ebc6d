"""Autoscaling: KEDA (pods, on Triton and GPU metrics) and cluster-autoscaler (nodes).

The autoscaler discovers node groups by the cluster's tags, prefers spot GPU groups through the
priority expander and falls back to on-demand when spot cannot be had, and balances similar groups
across zones so capacity stays spread. Its IAM role can change only groups tagged as this cluster's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from inferstack.components.charts import (
    CLUSTER_AUTOSCALER,
    CLUSTER_AUTOSCALER_IMAGE_TAG,
    KEDA,
    KEDA_IMAGE_TAG,
    release,
)
from inferstack.components.manifests import namespace
from inferstack.components.promql import SPOT_NODE_GROUPS
from inferstack.infra.children import child_options
from inferstack.infra.errors import InvalidInput
from inferstack.infra.irsa import irsa_role
from inferstack.infra.node_plans import NODE_ROLE_LABEL

AUTOSCALER_SERVICE_ACCOUNT = "cluster-autoscaler"
# Priority expander: higher wins; a pattern matches node group (ASG) names. Reserved groups first:
# their capacity is paid for by the hour whether used or not.
EXPANDER_PRIORITIES = {
    "60": [".*gpu-reserved-.*"],
    "50": [SPOT_NODE_GROUPS],
    "20": [".*gpu-.*"],
    "10": [".*"],
}
# Node labels that differ between otherwise identical groups in different zones; balancing must
# ignore them or it never finds two similar groups. The autoscaler's AWS provider already ignores
# the zone and eks.amazonaws.com/nodegroup; EKS also stamps each group's launch template and image.
BALANCING_IGNORED_LABELS = (
    "topology.kubernetes.io/zone",
    "eks.amazonaws.com/nodegroup",
    "eks.amazonaws.com/sourceLaunchTemplateId",
    "eks.amazonaws.com/sourceLaunchTemplateVersion",
    "eks.amazonaws.com/nodegroup-image",
)


def autoscaler_policy(cluster_name: str) -> dict[str, Any]:
    """Read what it needs to plan; change only the Auto Scaling groups this cluster owns."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Describe",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeLaunchConfigurations",
                    "autoscaling:DescribeScalingActivities",
                    "autoscaling:DescribeTags",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplateVersions",
                    "ec2:GetInstanceTypesFromInstanceRequirements",
                    "eks:DescribeNodegroup",
                ],
                "Resource": "*",
            },
            {
                "Sid": "ScaleOwnGroups",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:SetDesiredCapacity",
                    "autoscaling:TerminateInstanceInAutoScalingGroup",
                ],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"}
                },
            },
        ],
    }


def cluster_autoscaler_values(
    *, cluster_name: pulumi.Input[str], region: str, role_arn: pulumi.Input[str], namespace: str
) -> dict[str, Any]:
    ignored = {f"balancing-ignore-label_{i}": label for i, label in enumerate(BALANCING_IGNORED_LABELS, 1)}
    return {
        "autoDiscovery": {"clusterName": cluster_name},
        "awsRegion": region,
        "image": {"tag": CLUSTER_AUTOSCALER_IMAGE_TAG},
        "nodeSelector": {NODE_ROLE_LABEL: "system"},
        "rbac": {
            "serviceAccount": {
                "create": True,
                "name": AUTOSCALER_SERVICE_ACCOUNT,
                "annotations": {"eks.amazonaws.com/role-arn": role_arn},
            }
        },
        "expanderPriorities": EXPANDER_PRIORITIES,
        "extraArgs": {
            "expander": "priority",
            "balance-similar-node-groups": True,
            **ignored,
            # Per-group backoff: the spot alert reads when spot groups cannot scale up.
            "emit-per-nodegroup-metrics": True,
            "skip-nodes-with-system-pods": False,
            "scale-down-unneeded-time": "10m",
            "scale-down-delay-after-add": "10m",
            "scale-down-utilization-threshold": 0.5,
            # A spot request that never arrives must not block the on-demand fallback for long.
            "max-node-provision-time": "10m",
        },
        # Prometheus selects every ServiceMonitor; the chart's default namespace is not the release's.
        "serviceMonitor": {
            "enabled": True,
            "namespace": namespace,
            "selector": {"release": "kube-prometheus-stack"},
        },
    }


def keda_values() -> dict[str, Any]:
    tag = {"tag": KEDA_IMAGE_TAG}
    return {
        "image": {"keda": tag, "metricsApiServer": tag, "webhooks": tag, "pullPolicy": "IfNotPresent"},
        "nodeSelector": {NODE_ROLE_LABEL: "system"},
    }


@dataclass
class AutoscalingArgs:
    """The Kubernetes provider comes through ``ResourceOptions(provider=...)``."""

    cluster_name: pulumi.Input[str]
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    autoscaler_namespace: str = "kube-system"
    keda_namespace: str = "keda"
    region: str | None = None  # None: the region of this component's AWS provider
    # False where Karpenter provisions the GPU nodes: two node autoscalers would fight over them.
    cluster_autoscaler: bool = True


class Autoscaling(pulumi.ComponentResource):
    """Node and pod autoscaling: cluster-autoscaler (IRSA, scoped to the cluster's node groups) and
    KEDA, which installs the ScaledObject CRD the model services use."""

    autoscaler_role_arn: pulumi.Output[str] | None

    def __init__(self, name: str, args: AutoscalingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        if isinstance(args.cluster_name, str) and not args.cluster_name:
            raise InvalidInput("cluster_name", args.cluster_name, "the EKS cluster's name")
        if args.region is not None and not args.region:
            raise InvalidInput("region", args.region, "an AWS region such as us-east-1")
        super().__init__("inferstack:autoscaling:Autoscaling", name, None, opts)
        region = args.region or aws.get_region(opts=pulumi.InvokeOptions(parent=self)).region
        cluster_name = pulumi.Output.from_input(args.cluster_name)
        keda_ns = namespace(f"{name}-keda-ns", args.keda_namespace, child_options(self, opts))
        release(
            f"{name}-keda",
            KEDA,
            namespace=args.keda_namespace,
            values=keda_values(),
            opts=child_options(self, opts, after=[keda_ns]),
        )
        self.autoscaler_role_arn = None
        if args.cluster_autoscaler:
            self.autoscaler_role_arn = self._cluster_autoscaler(name, args, cluster_name, region, opts)
        self.register_outputs({"autoscaler_role_arn": self.autoscaler_role_arn})

    def _cluster_autoscaler(
        self,
        name: str,
        args: AutoscalingArgs,
        cluster_name: pulumi.Output[str],
        region: str,
        opts: pulumi.ResourceOptions | None,
    ) -> pulumi.Output[str]:
        child = child_options(self, opts)
        policy = cluster_name.apply(lambda cluster: json.dumps(autoscaler_policy(cluster)))
        role = irsa_role(
            f"{name}-cluster-autoscaler",
            args,
            args.autoscaler_namespace,
            AUTOSCALER_SERVICE_ACCOUNT,
            policies={f"{name}-cluster-autoscaler": policy},
            opts=child,
        ).role
        release(
            f"{name}-cluster-autoscaler",
            CLUSTER_AUTOSCALER,
            namespace=args.autoscaler_namespace,
            values=cluster_autoscaler_values(
                cluster_name=cluster_name,
                region=region,
                role_arn=role.arn,
                namespace=args.autoscaler_namespace,
            ),
            opts=child,
        )
        return role.arn
