"""Karpenter on the cluster: its CRDs, its controller, and the GPU NodePools it launches nodes for.

Order on a first `up`: the CRD release (its own release: Helm installs a chart's crds/ folder once
and never upgrades it), then the controller on the system group, then the EC2NodeClasses and the
NodePools. On destroy the order reverses, which matters: deleting a NodePool makes the controller
drain and terminate its nodes, and an EC2NodeClass keeps a finalizer that only the controller removes,
so the controller must outlive both. Pulumi waits for the controller's release (atomic, up to 15
minutes, until its two replicas are ready) but not for the custom resources, which the controller
reconciles as they come (the EC2NodeClass turns Ready once its AMI, subnets, security group and
instance profile resolve); the Triton Deployments, which Pulumi waits on for up to 10 minutes, are
ordered after the NodePools, so their pending pods are what makes Karpenter launch the GPU nodes.

Pools: GPU spot (preferred: the higher weight) across the stack's spot families, GPU on demand for
the on-demand type (the fallback when spot runs dry, and where on-demand-only services land), and,
when the stack holds reservations, a reserved pool that is used first (it is paid for either way).
Every pool carries the GPU taint and the labels the Triton services select on, spans the stack's
zones (the services' topology spread then places pods zone by zone), is bounded by the GPUs the
stack's maximums allow, replaces nodes after ``expireAfter``, and in prod never consolidates or
replaces drifted nodes more than one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi

from inferstack.components.charts import KARPENTER, KARPENTER_CRD, release
from inferstack.components.manifests import PART_OF, custom_resource
from inferstack.infra.children import child_options
from inferstack.infra.errors import InvalidInput
from inferstack.infra.instance_types import lookup
from inferstack.infra.karpenter import DISCOVERY_TAG, NAMESPACE, SERVICE_ACCOUNT
from inferstack.infra.network import subnet_tags
from inferstack.infra.node_plans import (
    CAPACITY_TYPE_LABEL,
    GPU_MODEL_LABEL,
    GPU_PRESENT_LABEL,
    GPU_RESOURCE,
    GPU_TAINT,
    NODE_ROLE_LABEL,
    ON_DEMAND,
    SPOT,
    ZONE_LABEL,
    check_spot_types,
)
from inferstack.infra.reserved import ReservedCapacity, validate_reserved
from inferstack.infra.versions import al2023_alias

NODE_POOL_API = "karpenter.sh/v1"
NODE_CLASS_API = "karpenter.k8s.aws/v1"
CAPACITY_TYPE_KEY = "karpenter.sh/capacity-type"
INSTANCE_FAMILY_KEY = "karpenter.k8s.aws/instance-family"
INSTANCE_TYPE_KEY = "node.kubernetes.io/instance-type"
# A node lives at most this long before Karpenter replaces it with one on the current AMI.
EXPIRE_AFTER = "720h"
# How long a draining node may wait on PodDisruptionBudgets before it is terminated anyway: without a
# bound, a PDB that never allows an eviction keeps a GPU node (and its bill) forever.
TERMINATION_GRACE_PERIOD = "1h"
CONSOLIDATE_AFTER = "10m"
# Prod: one node at a time for what Karpenter chooses to do (consolidation, drift, emptiness); a
# Triton replica's node is the unit its PodDisruptionBudget is sized for. Expiry and interruptions
# are forced and not budgeted: their drains still wait on the PDBs, up to TERMINATION_GRACE_PERIOD.
# Elsewhere Karpenter's own default.
PROD_BUDGETS: tuple[dict[str, str], ...] = ({"nodes": "1"},)
DEFAULT_BUDGETS: tuple[dict[str, str], ...] = ({"nodes": "10%"},)
# Higher weight is tried first: reserved capacity is paid for, spot is cheapest, on demand is the fallback.
WEIGHTS = {"reserved": 100, "spot": 50, "on-demand": 10}
ROOT_VOLUME = "/dev/xvda"  # AL2023 keeps images and containers on its root volume
CONTROLLER_RESOURCES = {"cpu": "1", "memory": "1Gi"}

PoolCapacity = Literal["on-demand", "spot", "reserved"]


@dataclass(frozen=True)
class NodePoolPlan:
    """One GPU NodePool, decided without AWS."""

    name: str
    capacity: PoolCapacity
    instance_types: tuple[str, ...]
    zones: tuple[str, ...]
    max_nodes: int  # across all zones: the pool's GPU limit is this many nodes' GPUs
    node_class: str = "gpu"

    @property
    def gpus_per_node(self) -> int:
        return min(lookup(t, field=f"{self.name}.instance_types").gpus for t in self.instance_types)

    @property
    def gpu_limit(self) -> int:
        return self.max_nodes * self.gpus_per_node

    @property
    def families(self) -> list[str]:
        return sorted({lookup(t, field=f"{self.name}.instance_types").family for t in self.instance_types})


def gpu_pool_plans(
    zones: Sequence[str],
    *,
    instance_type: str,
    max_per_zone: int,
    spot_instance_types: Sequence[str],
    spot_max_per_zone: int,
    reserved: ReservedCapacity | None = None,
) -> list[NodePoolPlan]:
    """The GPU pools of a stack: limits are the managed groups' maximums summed over the zones."""
    check_spot_types("gpu_spot", spot_instance_types)
    if not lookup(instance_type, field="instance_type").is_gpu:
        raise InvalidInput("instance_type", instance_type, "a GPU instance type")
    plans = [
        NodePoolPlan(
            "gpu-spot", "spot", tuple(spot_instance_types), tuple(zones), spot_max_per_zone * len(zones)
        ),
        NodePoolPlan("gpu-on-demand", "on-demand", (instance_type,), tuple(zones), max_per_zone * len(zones)),
    ]
    if reserved is not None:
        validate_reserved(reserved)
        plans.append(
            NodePoolPlan(
                "gpu-reserved",
                "reserved",
                (reserved.instance_type,),
                tuple(zones),  # each reservation is in one of them: Karpenter reads which
                reserved.total_instances,
                node_class="gpu-reserved",
            )
        )
    return plans


def pool_labels(plan: NodePoolPlan) -> dict[str, str]:
    """What the Triton services' node affinity selects: GPU present, capacity type, GPU model."""
    labels = {
        NODE_ROLE_LABEL: "gpu",
        GPU_PRESENT_LABEL: "true",
        # Reserved capacity is on-demand capacity paid in advance: services that want on demand take it.
        CAPACITY_TYPE_LABEL: SPOT if plan.capacity == "spot" else ON_DEMAND,
    }
    models = {lookup(t, field=f"{plan.name}.instance_types").gpu_model for t in plan.instance_types}
    if len(models) == 1:
        labels[GPU_MODEL_LABEL] = models.pop()
    return labels


def node_pool(plan: NodePoolPlan, *, prod: bool) -> dict[str, Any]:
    family: dict[str, Any] = {"key": INSTANCE_FAMILY_KEY, "operator": "In", "values": plan.families}
    if plan.capacity == "spot":
        # Karpenter launches only if it may choose among two families: one reclaimed pool cannot
        # take the whole spot fleet.
        family["minValues"] = 2
    return {
        "apiVersion": NODE_POOL_API,
        "kind": "NodePool",
        "metadata": {"name": plan.name, "labels": dict(PART_OF)},
        "spec": {
            "template": {
                "metadata": {"labels": pool_labels(plan)},
                "spec": {
                    "nodeClassRef": {
                        "group": "karpenter.k8s.aws",
                        "kind": "EC2NodeClass",
                        "name": plan.node_class,
                    },
                    "taints": [
                        {
                            "key": GPU_TAINT.key,
                            "value": GPU_TAINT.value,
                            "effect": GPU_TAINT.kubernetes_effect,
                        }
                    ],
                    "requirements": [
                        {"key": CAPACITY_TYPE_KEY, "operator": "In", "values": [plan.capacity]},
                        family,
                        {"key": INSTANCE_TYPE_KEY, "operator": "In", "values": list(plan.instance_types)},
                        {"key": ZONE_LABEL, "operator": "In", "values": list(plan.zones)},
                        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    ],
                    "expireAfter": EXPIRE_AFTER,
                    "terminationGracePeriod": TERMINATION_GRACE_PERIOD,
                },
            },
            "limits": {GPU_RESOURCE: str(plan.gpu_limit)},
            "disruption": {
                "consolidationPolicy": "WhenEmptyOrUnderutilized",
                "consolidateAfter": CONSOLIDATE_AFTER,
                "budgets": [dict(b) for b in (PROD_BUDGETS if prod else DEFAULT_BUDGETS)],
            },
            "weight": WEIGHTS[plan.capacity],
        },
    }


def node_class_subnet_tags(cluster_name: str) -> dict[str, str]:
    """The tags of the network's private subnets (and of no public one) that select them."""
    tags = subnet_tags(cluster_name, "private", "")
    return {key: tags[key] for key in (f"kubernetes.io/cluster/{cluster_name}", "inferstack.io/tier")}


def ec2_node_class(name: str, args: KarpenterArgs, reservation_ids: Sequence[str] = ()) -> dict[str, Any]:
    """The EC2NodeClass ``name`` of ``args``'s cluster, launching into ``reservation_ids`` if any."""
    cluster_name, kms_key_id = args.cluster_name, args.volume_kms_key_arn
    spec: dict[str, Any] = {
        "amiSelectorTerms": [{"alias": al2023_alias(args.kubernetes_version)}],
        "instanceProfile": args.instance_profile,
        "subnetSelectorTerms": [{"tags": node_class_subnet_tags(cluster_name)}],
        "securityGroupSelectorTerms": [{"tags": {DISCOVERY_TAG: cluster_name}}],
        "metadataOptions": {
            "httpEndpoint": "enabled",
            "httpProtocolIPv6": "disabled",
            "httpTokens": "required",  # IMDSv2 only
            # 1 hop: no pod in its own network namespace borrows the node role (as the managed groups).
            "httpPutResponseHopLimit": 1,
        },
        "blockDeviceMappings": [
            {
                "deviceName": ROOT_VOLUME,
                "rootVolume": True,
                "ebs": {
                    "volumeSize": f"{args.disk_gib}Gi",
                    "volumeType": "gp3",
                    "encrypted": True,
                    "deleteOnTermination": True,
                    # None: the account's default EBS key, which must then be usable by the controller.
                    **({"kmsKeyID": kms_key_id} if kms_key_id is not None else {}),
                },
            }
        ],
        "tags": {"inferstack.io/cluster": cluster_name, **args.tags},
    }
    if reservation_ids:
        spec["capacityReservationSelectorTerms"] = [{"id": rid} for rid in reservation_ids]
    return {
        "apiVersion": NODE_CLASS_API,
        "kind": "EC2NodeClass",
        "metadata": {"name": name, "labels": dict(PART_OF)},
        "spec": spec,
    }


def karpenter_values(args: KarpenterArgs) -> dict[str, Any]:
    """The controller on the system group, reading the interruption queue, repairing nodes if asked."""
    return {
        "settings": {
            "clusterName": args.cluster_name,
            "clusterEndpoint": args.cluster_endpoint,
            "interruptionQueue": args.interruption_queue,
            # Replaces a node whose monitoring agent reports an unhealthy condition (a fatal GPU XID
            # among them) once it has lasted the condition's toleration; alpha in 1.14, off by default.
            "featureGates": {"nodeRepair": args.node_repair},
        },
        "serviceAccount": {
            "create": True,
            "name": SERVICE_ACCOUNT,
            "annotations": {"eks.amazonaws.com/role-arn": args.controller_role_arn},
        },
        "replicas": 2,
        "nodeSelector": {"kubernetes.io/os": "linux", NODE_ROLE_LABEL: "system"},
        "controller": {"resources": {"requests": CONTROLLER_RESOURCES, "limits": CONTROLLER_RESOURCES}},
        "serviceMonitor": {"enabled": True},
    }


@dataclass
class KarpenterArgs:
    """The Kubernetes provider comes through ``ResourceOptions(provider=...)``."""

    cluster_name: str
    kubernetes_version: str
    cluster_endpoint: pulumi.Input[str]
    controller_role_arn: pulumi.Input[str]
    interruption_queue: pulumi.Input[str]
    instance_profile: str  # its name: the AWS side names it, and the caller orders us after it
    pools: Sequence[NodePoolPlan]
    prod: bool = False
    node_repair: bool = False
    disk_gib: int = 200
    reserved: ReservedCapacity | None = None
    volume_kms_key_arn: pulumi.Input[str] | None = None  # the cluster's VolumeKey, as the managed groups use
    tags: dict[str, str] = field(default_factory=dict)


def validate(args: KarpenterArgs) -> None:
    names = [p.name for p in args.pools]
    if len(set(names)) != len(names):
        raise InvalidInput("pools", names, "unique NodePool names")
    for plan in args.pools:
        if plan.max_nodes < 1:
            raise InvalidInput(f"{plan.name}.max_nodes", plan.max_nodes, "an integer >= 1")
        if not plan.gpus_per_node:
            raise InvalidInput(f"{plan.name}.instance_types", list(plan.instance_types), "GPU instance types")
    if args.disk_gib < 20:
        raise InvalidInput("disk_gib", args.disk_gib, "at least 20 GiB (images and containers live there)")
    if any(p.capacity == "reserved" for p in args.pools) != (args.reserved is not None):
        raise InvalidInput(
            "reserved", args.reserved, "reservations exactly when a pool is of reserved capacity"
        )


class Karpenter(pulumi.ComponentResource):
    """The CRDs, the controller and the GPU NodePools with their EC2NodeClasses."""

    node_pools: list[pulumi.CustomResource]

    def __init__(self, name: str, args: KarpenterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        validate(args)
        super().__init__("inferstack:karpenter:Karpenter", name, None, opts)
        crds = release(
            f"{name}-crd", KARPENTER_CRD, namespace=NAMESPACE, values={}, opts=child_options(self, opts)
        )
        controller = release(
            f"{name}-controller",
            KARPENTER,
            namespace=NAMESPACE,
            values=karpenter_values(args),
            opts=child_options(self, opts, after=[crds]),
            skip_crds=True,  # the CRD release owns them
        )
        classes = {"gpu": ()} | ({"gpu-reserved": args.reserved.reservation_ids} if args.reserved else {})
        node_classes = [
            custom_resource(
                f"{name}-{class_name}",
                ec2_node_class(class_name, args, ids),
                child_options(self, opts, after=[crds, controller]),
            )
            for class_name, ids in classes.items()
        ]
        self.node_pools = [
            custom_resource(
                f"{name}-{plan.name}",
                node_pool(plan, prod=args.prod),
                child_options(self, opts, after=[crds, controller, *node_classes]),
            )
            for plan in args.pools
        ]
        self.register_outputs({"node_pools": [p.name for p in args.pools]})
