"""The AWS side of Karpenter: its controller's IAM, its nodes' role, and the interruption queue.

Karpenter launches GPU nodes itself (EC2 CreateFleet), so it needs what a managed node group gets
from EKS: a node role with an instance profile and an access entry of type EC2_LINUX (EKS makes one
for a managed group's role, never for ours; without it a node boots and is refused by the API). Its
controller's permissions follow Karpenter's documented controller policy, scoped to the cluster's
tags: it can run, tag and terminate only instances that carry ``kubernetes.io/cluster/<name>: owned``
and a ``karpenter.sh/nodepool`` tag, and pass only its own node role.

Spot interruption warnings (two minutes' notice), rebalance recommendations, instance state changes
and AWS Health scheduled events reach the controller through EventBridge rules into one SQS queue,
encrypted, that only EventBridge (and SQS itself) may send to; Karpenter then cordons and drains the
node before EC2 takes it, and starts a replacement at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from inferstack.infra.children import child_options
from inferstack.infra.errors import InvalidInput
from inferstack.infra.interruptions import INTERRUPTION_EVENTS
from inferstack.infra.irsa import irsa_role
from inferstack.infra.names import IAM_ROLE_NAME_MAX, check_derived_name
from inferstack.infra.roles import node_role
from inferstack.infra.storage import key_user_policy

SERVICE_ACCOUNT = "karpenter"
NAMESPACE = "kube-system"
# The tag Karpenter's EC2NodeClass selects its security group by; subnets are selected by the
# tags the network already puts on its private subnets.
DISCOVERY_TAG = "karpenter.sh/discovery"
# SQS keeps a message at most this long: an interruption older than 5 minutes has happened already.
QUEUE_RETENTION_SECONDS = 300
# Role names derived from the component's: the longest bounds it.
_ROLE_SUFFIXES = ("-node", "-controller")
SQS_QUEUE_NAME_MAX = 80


def _policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def event_pattern(source: str, detail_type: str) -> str:
    return json.dumps({"source": [source], "detail-type": [detail_type]})


def queue_policy(queue_arn: str) -> dict[str, Any]:
    """Only EventBridge and SQS may send; nobody reaches the queue without TLS."""
    return _policy(
        {
            "Sid": "EventBridgeSendsInterruptions",
            "Effect": "Allow",
            "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
        },
        {
            "Sid": "DenyHTTP",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sqs:*",
            "Resource": queue_arn,
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
    )


def controller_policy(
    *,
    cluster_name: str,
    partition: str,
    region: str,
    account_id: str,
    queue_arn: str,
    node_role_arn: str,
) -> dict[str, Any]:
    """Karpenter's documented controller statements, for one cluster, one region, one node role.

    The instance profile is ours (the EC2NodeClass names it), so the statements that let Karpenter
    create, tag and delete instance profiles are left out; it still reads and lists them.
    """
    ec2 = f"arn:{partition}:ec2:{region}"
    owned = {f"aws:RequestTag/kubernetes.io/cluster/{cluster_name}": "owned"}
    owned_resource = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"}
    # An existing resource this cluster's Karpenter made: owned by the cluster, tagged with a NodePool.
    karpenters_own = {
        "StringEquals": owned_resource,
        "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
    }
    launched = [f"{ec2}:*:{kind}/*" for kind in ("fleet", "instance", "volume", "network-interface")]
    return _policy(
        {
            "Sid": "AllowScopedEC2InstanceAccessActions",
            "Effect": "Allow",
            "Resource": [
                f"{ec2}::image/*",
                f"{ec2}::snapshot/*",
                f"{ec2}:*:security-group/*",
                f"{ec2}:*:subnet/*",
                f"{ec2}:*:capacity-reservation/*",
                f"{ec2}:*:placement-group/*",
            ],
            "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
        },
        {
            "Sid": "AllowScopedEC2LaunchTemplateAccessActions",
            "Effect": "Allow",
            "Resource": f"{ec2}:*:launch-template/*",
            "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
            "Condition": karpenters_own,
        },
        {
            "Sid": "AllowScopedEC2InstanceActionsWithTags",
            "Effect": "Allow",
            "Resource": [*launched, f"{ec2}:*:launch-template/*", f"{ec2}:*:spot-instances-request/*"],
            "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
            "Condition": {
                "StringEquals": {**owned, "aws:RequestTag/eks:eks-cluster-name": cluster_name},
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        },
        {
            "Sid": "AllowScopedResourceCreationTagging",
            "Effect": "Allow",
            "Resource": [*launched, f"{ec2}:*:launch-template/*", f"{ec2}:*:spot-instances-request/*"],
            "Action": "ec2:CreateTags",
            "Condition": {
                "StringEquals": {
                    **owned,
                    "aws:RequestTag/eks:eks-cluster-name": cluster_name,
                    "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"],
                },
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        },
        {
            "Sid": "AllowScopedResourceTagging",
            "Effect": "Allow",
            "Resource": f"{ec2}:*:instance/*",
            "Action": "ec2:CreateTags",
            "Condition": {
                **karpenters_own,
                "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster_name},
                "ForAllValues:StringEquals": {
                    "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                },
            },
        },
        {
            "Sid": "AllowScopedDeletion",
            "Effect": "Allow",
            "Resource": [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
            "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
            "Condition": karpenters_own,
        },
        {
            "Sid": "AllowRegionalReadActions",
            "Effect": "Allow",
            "Resource": "*",
            "Action": [
                "ec2:DescribeAvailabilityZones",
                "ec2:DescribeCapacityReservations",
                "ec2:DescribeImages",
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceStatus",
                "ec2:DescribeInstanceTypeOfferings",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeLaunchTemplates",
                "ec2:DescribePlacementGroups",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSpotPriceHistory",
                "ec2:DescribeSubnets",
            ],
            "Condition": {"StringEquals": {"aws:RequestedRegion": region}},
        },
        {
            "Sid": "AllowSSMReadActions",
            "Effect": "Allow",
            "Resource": f"arn:{partition}:ssm:{region}::parameter/aws/service/*",
            "Action": "ssm:GetParameter",
        },
        {
            "Sid": "AllowPricingReadActions",
            "Effect": "Allow",
            "Resource": "*",
            "Action": "pricing:GetProducts",
        },
        {
            "Sid": "AllowInterruptionQueueActions",
            "Effect": "Allow",
            "Resource": queue_arn,
            "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
        },
        {
            "Sid": "AllowPassingInstanceRole",
            "Effect": "Allow",
            "Resource": node_role_arn,
            "Action": "iam:PassRole",
            "Condition": {
                "StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}
            },
        },
        {
            "Sid": "AllowInstanceProfileReadActions",
            "Effect": "Allow",
            "Resource": "*",
            "Action": ["iam:GetInstanceProfile", "iam:ListInstanceProfiles"],
        },
        {
            "Sid": "AllowAPIServerEndpointDiscovery",
            "Effect": "Allow",
            "Resource": f"arn:{partition}:eks:{region}:{account_id}:cluster/{cluster_name}",
            "Action": "eks:DescribeCluster",
        },
    )


def instance_profile_name(cluster_name: str) -> str:
    return f"{cluster_name}-karpenter-node"


def validate_names(name: str, cluster_name: str) -> None:
    for suffix in _ROLE_SUFFIXES:
        check_derived_name("name", name, suffix=suffix, limit=IAM_ROLE_NAME_MAX)
    if len(cluster_name) > SQS_QUEUE_NAME_MAX:
        raise InvalidInput(
            "cluster_name",
            cluster_name,
            f"at most {SQS_QUEUE_NAME_MAX} characters (it names the interruption queue)",
        )


@dataclass
class KarpenterAwsArgs:
    """What Karpenter's AWS side is given: the cluster, its OIDC provider and security group, the volume
    key."""

    cluster_name: str
    eks_cluster_name: pulumi.Input[str]  # the cluster resource's output: the access entry waits for it
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    cluster_security_group_id: pulumi.Input[str]
    # The cluster's volume key (VolumeKey): the controller launches nodes whose disks it encrypts.
    volume_kms_key_arn: pulumi.Input[str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class KarpenterAws(pulumi.ComponentResource):
    """Everything in AWS that Karpenter's controller and its nodes need before the first NodePool."""

    controller_role_arn: pulumi.Output[str]
    controller_policy: pulumi.CustomResource  # the controller starts after it: without it, every call fails
    node_role_name: pulumi.Output[str]
    queue_name: pulumi.Output[str]
    # What a node needs before it can join: its role's policies, profile and access entry.
    node_prerequisites: list[pulumi.Resource]

    def __init__(self, name: str, args: KarpenterAwsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        validate_names(name, args.cluster_name)
        super().__init__("inferstack:karpenter:KarpenterAws", name, None, opts)
        child = child_options(self, opts)
        invoke = pulumi.InvokeOptions(parent=self)
        partition = aws.get_partition(opts=invoke).partition
        region = aws.get_region(opts=invoke).region
        account_id = aws.get_caller_identity(opts=invoke).account_id
        tags = {"inferstack.io/cluster": args.cluster_name, **args.tags}

        nodes = node_role(name, partition, tags=tags, opts=child)
        # Named, so the EC2NodeClass can name it before it exists (it waits for it through depends_on).
        profile = aws.iam.InstanceProfile(
            f"{name}-node",
            name=instance_profile_name(args.cluster_name),
            role=nodes.role.name,
            tags=tags,
            opts=child,
        )
        access = aws.eks.AccessEntry(
            f"{name}-node",
            cluster_name=args.eks_cluster_name,
            principal_arn=nodes.role.arn,
            type="EC2_LINUX",
            tags=tags,
            opts=child,
        )
        # The EC2NodeClass selects security groups by this tag; EKS's own cluster group gets it.
        aws.ec2.Tag(
            f"{name}-discovery",
            resource_id=args.cluster_security_group_id,
            key=DISCOVERY_TAG,
            value=args.cluster_name,
            opts=child,
        )

        queue = aws.sqs.Queue(
            f"{name}-interruptions",
            name=args.cluster_name,
            message_retention_seconds=QUEUE_RETENTION_SECONDS,
            sqs_managed_sse_enabled=True,
            tags=tags,
            opts=child,
        )
        queue_access = aws.sqs.QueuePolicy(
            f"{name}-interruptions",
            queue_url=queue.url,
            policy=queue.arn.apply(lambda arn: json.dumps(queue_policy(arn))),
            opts=child,
        )
        for suffix, source, detail_type in INTERRUPTION_EVENTS:
            rule = aws.cloudwatch.EventRule(
                f"{name}-{suffix}",
                event_pattern=event_pattern(source, detail_type),
                tags=tags,
                opts=child,
            )
            aws.cloudwatch.EventTarget(
                f"{name}-{suffix}",
                rule=rule.name,
                arn=queue.arn,
                target_id="KarpenterInterruptionQueueTarget",
                # Events sent before the queue's policy lets EventBridge in would be dropped.
                opts=child_options(self, opts, after=[queue_access]),
            )

        policy = pulumi.Output.all(queue.arn, nodes.role.arn).apply(
            lambda v: json.dumps(
                controller_policy(
                    cluster_name=args.cluster_name,
                    partition=partition,
                    region=region,
                    account_id=account_id,
                    queue_arn=v[0],
                    node_role_arn=v[1],
                )
            )
        )
        controller = irsa_role(
            f"{name}-controller",
            args,
            NAMESPACE,
            SERVICE_ACCOUNT,
            policies={f"{name}-controller": policy},
            tags=tags,
            opts=child,
        )
        role = controller.role
        self.controller_policy = controller.grants[0]
        if args.volume_kms_key_arn is not None:
            # RunInstances with a customer-managed key checks the caller's KMS rights: without them
            # every launch fails (Client.InvalidKMSKey.InvalidState) and pods stay Pending.
            self.controller_policy = aws.iam.RolePolicy(
                f"{name}-controller-volume-key",
                role=role.id,
                policy=pulumi.Output.from_input(args.volume_kms_key_arn).apply(key_user_policy),
                opts=pulumi.ResourceOptions.merge(
                    child, pulumi.ResourceOptions(depends_on=[self.controller_policy])
                ),
            )
        self.controller_role_arn = role.arn
        self.node_role_name = nodes.role.name
        self.queue_name = queue.name
        self.node_prerequisites = [*nodes.grants, profile, access]
        self.register_outputs(
            {
                "controller_role_arn": self.controller_role_arn,
                "node_role_name": self.node_role_name,
                "queue_name": self.queue_name,
            }
        )
