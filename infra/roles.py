"""IAM roles the platform makes the same way: a role an AWS service assumes with AWS-managed policies
attached (the EKS cluster's), and the role every EC2 node of the cluster runs as, whether a managed
node group or Karpenter launched it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from inferstack.infra.cluster_access import assume_role_policy

# What a node needs to join the cluster and pull images (its pods' AWS access is IRSA's, not the node's).
NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryReadOnly")


@dataclass(frozen=True)
class GrantedRole:
    """A role and the policies granted to it: what a user of the role waits for before its first call."""

    role: aws.iam.Role
    grants: list[pulumi.CustomResource]


def aws_managed_policy_arn(partition: str, policy: str) -> str:
    return f"arn:{partition}:iam::aws:policy/{policy}"


def attach_policies(
    role: aws.iam.Role, policy_arns: Mapping[str, pulumi.Input[str]], opts: pulumi.ResourceOptions | None
) -> list[aws.iam.RolePolicyAttachment]:
    """One attachment per logical name -> managed policy ARN."""
    return [
        aws.iam.RolePolicyAttachment(attachment, role=role.name, policy_arn=arn, opts=opts)
        for attachment, arn in policy_arns.items()
    ]


def service_role(
    resource_name: str,
    service: str,
    policy_arns: Mapping[str, pulumi.Input[str]],
    *,
    tags: Mapping[str, str],
    opts: pulumi.ResourceOptions | None,
) -> GrantedRole:
    """A role ``service`` (such as eks.amazonaws.com) assumes, with managed policies attached."""
    role = aws.iam.Role(
        resource_name, assume_role_policy=assume_role_policy(service), tags=dict(tags), opts=opts
    )
    return GrantedRole(role, list(attach_policies(role, policy_arns, opts)))


def node_role(
    name: str, partition: str, *, tags: Mapping[str, str], opts: pulumi.ResourceOptions | None
) -> GrantedRole:
    """``<name>-node``, the role EC2 nodes run as, with NODE_POLICIES (``<name>-node-<policy>``)."""
    arns = {f"{name}-node-{policy}": aws_managed_policy_arn(partition, policy) for policy in NODE_POLICIES}
    return service_role(f"{name}-node", "ec2.amazonaws.com", arns, tags=tags, opts=opts)
