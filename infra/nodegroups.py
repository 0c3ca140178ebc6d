"""EKS managed node groups made from their plans (node_plans): launch templates, the groups, and the
tags that reach their Auto Scaling groups.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from inferstack.infra.errors import InvalidInput
from inferstack.infra.node_plans import (
    AUTOSCALER_DISCOVERY_TAGS,
    NodeGroupPlan,
    autoscaler_tags,
    check_subnets,
    check_zone_loss,
    node_user_data,
    release_version,
    validate_plan,
    volumes,
)


@dataclass
class NodeGroupArgs:
    """One managed node group: its plan (zone, instance types, sizes, labels, taints) on a cluster."""

    cluster_name: str
    eks_cluster_name: pulumi.Input[str]  # the cluster resource's output, so the group waits for it
    node_role_arn: pulumi.Input[str]
    subnet_ids_by_zone: Mapping[str, pulumi.Input[str]]
    plan: NodeGroupPlan
    kubernetes_version: str
    # The key node volumes are encrypted with (storage.VolumeKey); None: the account's default EBS
    # key, which must then be AWS-managed or granted to the Auto Scaling service-linked role.
    volume_kms_key_arn: pulumi.Input[str] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # EKS replaces a node whose monitoring agent reports it unhealthy (a fatal GPU XID among the causes).
    node_repair: bool = False


def asg_tags(cluster_name: str, plan: NodeGroupPlan) -> dict[str, str]:
    """The autoscaler tags the Auto Scaling group needs and EKS does not put there itself."""
    skip = {tag.format(cluster=cluster_name) for tag in AUTOSCALER_DISCOVERY_TAGS}
    return {k: v for k, v in autoscaler_tags(cluster_name, plan).items() if k not in skip}


def tag_resource_name(group: str, key: str) -> str:
    """A stable logical name per tag key: adding a label never renames the other tags' resources."""
    return f"{group}-asg-{re.sub(r'[^A-Za-z0-9-]+', '-', key.removeprefix('k8s.io/cluster-autoscaler/'))}"


def caller_dependencies(opts: pulumi.ResourceOptions | None) -> list[pulumi.Resource]:
    """The resources a caller's ``depends_on`` names, to hand on to the children that must wait."""
    given = opts.depends_on if opts else None
    if given is None:
        return []
    return [r for r in (given if isinstance(given, list) else [given]) if isinstance(r, pulumi.Resource)]


class NodeGroup(pulumi.ComponentResource):
    """One managed node group with its hardened launch template and autoscaler tags."""

    node_group: aws.eks.NodeGroup

    def __init__(self, name: str, args: NodeGroupArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        plan = args.plan
        validate_plan(plan)
        check_subnets([plan], args.subnet_ids_by_zone)
        release = release_version(plan, args.kubernetes_version)
        super().__init__("inferstack:nodegroups:NodeGroup", name, None, opts)
        # A component's depends_on does not reach its children: the group itself must wait (on
        # create) and go first (on destroy) for what the caller named, such as the node role's policies.
        waits_for = caller_dependencies(opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {"inferstack.io/cluster": args.cluster_name, **args.tags}
        user_data = node_user_data(plan)
        template = aws.ec2.LaunchTemplate(
            f"{name}-lt",
            user_data=None if user_data is None else base64.b64encode(user_data.encode()).decode(),
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",  # IMDSv2 only
                # 1 hop: host-network pods (aws-node, kube-proxy) still reach it; a pod with its own
                # network namespace cannot, so no pod borrows the node role (IRSA gives pods theirs).
                http_put_response_hop_limit=1,
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name=volume.device_name,
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=volume.size_gib,
                        volume_type="gp3",
                        encrypted="true",
                        kms_key_id=args.volume_kms_key_arn,
                        delete_on_termination="true",
                    ),
                )
                for volume in volumes(plan)
            ],
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags={**tags, "Name": name})
                for kind in ("instance", "volume")
            ],
            capacity_reservation_specification=_reservation_target(plan),
            # A Capacity Block is its own market: instances outside it cannot be had.
            instance_market_options=aws.ec2.LaunchTemplateInstanceMarketOptionsArgs(
                market_type="capacity-block"
            )
            if plan.capacity_type == "CAPACITY_BLOCK"
            else None,
            tags=tags,
            opts=child,
        )
        scaling_tags = autoscaler_tags(args.cluster_name, plan)
        self.node_group = aws.eks.NodeGroup(
            f"{name}-ng",
            cluster_name=args.eks_cluster_name,
            version=args.kubernetes_version,
            release_version=release,
            node_role_arn=args.node_role_arn,
            subnet_ids=[args.subnet_ids_by_zone[z] for z in plan.zones],
            capacity_type=plan.capacity_type,
            instance_types=list(plan.instance_types),
            ami_type=plan.ami_type,
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=plan.min_size, desired_size=plan.desired_size, max_size=plan.max_size
            ),
            labels=dict(plan.labels),
            taints=[
                aws.eks.NodeGroupTaintArgs(key=t.key, value=t.value, effect=t.effect) for t in plan.taints
            ],
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            node_repair_config=aws.eks.NodeGroupNodeRepairConfigArgs(enabled=True)
            if args.node_repair
            else None,
            tags={**tags, **scaling_tags},
            # The autoscaler owns desired size once running; Pulumi must not reset it on every update.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=waits_for, ignore_changes=["scalingConfig.desiredSize"]
            ),
        )
        # Managed node groups do not copy their tags to the Auto Scaling group, where the autoscaler
        # reads node templates; tag the group explicitly.
        asg_name = self.node_group.resources.apply(_autoscaling_group_name)
        for key, value in sorted(asg_tags(args.cluster_name, plan).items()):
            aws.autoscaling.Tag(
                tag_resource_name(name, key),
                autoscaling_group_name=asg_name,
                tag=aws.autoscaling.TagTagArgs(key=key, value=value, propagate_at_launch=False),
                opts=child,
            )
        self.register_outputs({"node_group_name": self.node_group.node_group_name})


def _reservation_target(
    plan: NodeGroupPlan,
) -> aws.ec2.LaunchTemplateCapacityReservationSpecificationArgs | None:
    """Where a group's instances launch when it has a reservation (infra/reserved.py)."""
    if plan.capacity_reservation_id is None:
        return None
    target = aws.ec2.LaunchTemplateCapacityReservationSpecificationCapacityReservationTargetArgs
    return aws.ec2.LaunchTemplateCapacityReservationSpecificationArgs(
        capacity_reservation_target=target(capacity_reservation_id=plan.capacity_reservation_id)
    )


def _autoscaling_group_name(resources: Sequence[aws.eks.outputs.NodeGroupResource] | None) -> str:
    groups = resources[0].autoscaling_groups if resources else None
    return (groups[0].name or "") if groups else ""


@dataclass
class NodeGroupsArgs:
    """Every node group of a cluster, from plans made by ``system_plan``, ``gpu_plans`` and
    ``gpu_spot_plans`` (one group per zone each), on a node role and the subnets by zone."""

    cluster_name: str
    eks_cluster_name: pulumi.Input[str]
    node_role_arn: pulumi.Input[str]
    subnet_ids_by_zone: Mapping[str, pulumi.Input[str]]
    plans: Sequence[NodeGroupPlan]
    kubernetes_version: str
    min_surviving_gpu_share: float = 0.5
    volume_kms_key_arn: pulumi.Input[str] | None = None  # as NodeGroupArgs's
    tags: dict[str, str] = field(default_factory=dict)
    node_repair: bool = False


class NodeGroups(pulumi.ComponentResource):
    """Every node group of a cluster, checked together: names unique, GPU capacity survives a zone loss."""

    groups: dict[str, NodeGroup]

    def __init__(self, name: str, args: NodeGroupsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        for plan in args.plans:
            validate_plan(plan)
        names = [p.name for p in args.plans]
        if len(set(names)) != len(names):
            raise InvalidInput("plans", names, "unique node group names")
        check_subnets(args.plans, args.subnet_ids_by_zone)
        for plan in args.plans:
            release_version(plan, args.kubernetes_version)
        # Reserved capacity is in one zone and may end (a Capacity Block): not counted on.
        gpu = [p for p in args.plans if p.gpus_per_node and p.capacity_reservation_id is None]
        if gpu:
            check_zone_loss(gpu, args.min_surviving_gpu_share)
        super().__init__("inferstack:nodegroups:NodeGroups", name, None, opts)
        self.groups = {
            plan.name: NodeGroup(
                f"{name}-{plan.name}",
                NodeGroupArgs(
                    cluster_name=args.cluster_name,
                    eks_cluster_name=args.eks_cluster_name,
                    node_role_arn=args.node_role_arn,
                    subnet_ids_by_zone=args.subnet_ids_by_zone,
                    plan=plan,
                    kubernetes_version=args.kubernetes_version,
                    volume_kms_key_arn=args.volume_kms_key_arn,
                    tags=args.tags,
                    node_repair=args.node_repair,
                ),
                pulumi.ResourceOptions(parent=self, depends_on=caller_dependencies(opts)),
            )
            for plan in args.plans
        }
        self.register_outputs({"groups": sorted(self.groups)})
