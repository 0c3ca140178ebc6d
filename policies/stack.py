"""A stack as the stack rules see it: every resource with its engine-form properties and what it is ordered
after, and the questions several rules ask of it (zones, GPU groups and pools, their capacity by zone)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from inferstack.policies.rule_base import (
    DEPLOYMENT,
    NODE_GROUP,
    NODE_POOL,
    containers,
    gpus_per_node,
    is_triton,
    namespace_of,
    pool_gpu_limit,
    pool_gpus_per_node,
    pool_requirement,
)
from inferstack.policies.scale_from_zero import reachable_groups

ACCESS_ENTRY = "aws:eks/accessEntry:AccessEntry"
ACCESS_POLICY_ASSOCIATION = "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"
SUBNET = "aws:ec2/subnet:Subnet"
SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
CRD = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"
RELEASE_TYPES = ("kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart")
BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
ROLE = "aws:iam/role:Role"
EVENT_TARGET = "aws:cloudwatch/eventTarget:EventTarget"
ROLE_POLICIES = ("aws:iam/rolePolicy:RolePolicy",)
ROLE_POLICY_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
CLUSTER_ADMIN_POLICY = "AmazonEKSClusterAdminPolicy"
ZONE_LABEL = "topology.kubernetes.io/zone"
# Which chart installs the CRDs of an API group: a custom resource must be ordered after that release.
CRD_CHARTS = {
    "monitoring.coreos.com": "kube-prometheus-stack",
    "keda.sh": "keda",
    "karpenter.sh": "karpenter-crd",
    "karpenter.k8s.aws": "karpenter-crd",
}

Violation = tuple[str, str]  # (message, urn or "" for the stack)


@dataclass(frozen=True)
class StackResource:
    """A resource as a stack policy sees it: type, name, properties and what it is ordered after."""

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    # Every URN the engine orders this after: dependsOn plus the resources its inputs come from.
    dependencies: tuple[str, ...] = ()
    property_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The customTimeouts option in seconds by operation (create, update, delete); absent: unset.
    custom_timeouts: Mapping[str, float] = field(default_factory=dict)
    provider: str = ""  # the URN of its explicit provider ("" for the default one): which cluster


def ordered_after(depends_on: Iterable[str], by_property: Mapping[str, Iterable[str]]) -> tuple[str, ...]:
    """Every URN the engine orders a resource after: its dependsOn, then those its inputs come from."""
    return tuple(dict.fromkeys([*depends_on, *(urn for urns in by_property.values() for urn in urns)]))


class Stack:
    """The resources of one stack, with the lookups the rules share."""

    def __init__(self, resources: Iterable[StackResource]) -> None:
        self.resources = list(resources)
        self.by_urn = {r.urn: r for r in self.resources}

    def of_type(self, *types: str) -> list[StackResource]:
        return [r for r in self.resources if r.type in types]

    def after(self, resource: StackResource) -> set[str]:
        """Every URN ``resource`` waits for, directly or transitively."""
        seen: set[str] = set()
        pending = [resource]
        while pending:
            for urn in pending.pop().dependencies:
                if urn not in seen:
                    seen.add(urn)
                    if urn in self.by_urn:
                        pending.append(self.by_urn[urn])
        return seen

    def input_sources(self, resource: StackResource, key: str) -> list[StackResource]:
        return [self.by_urn[u] for u in resource.property_dependencies.get(key, ()) if u in self.by_urn]

    def zones_of(self, node_group: StackResource) -> tuple[str, ...]:
        """The zones of a node group's subnets (through the engine's property dependencies), or the
        zones a NodePool's requirement allows."""
        if node_group.type == NODE_POOL:
            return tuple(sorted(pool_requirement(node_group.props, ZONE_LABEL) or []))
        subnets = self.input_sources(node_group, "subnetIds")
        return tuple(sorted({str(s.props.get("availabilityZone")) for s in subnets if s.type == SUBNET}))

    def gpu_groups(self) -> list[tuple[StackResource, float, tuple[str, ...]]]:
        """(node group or NodePool, GPUs at its maximum, zones) for the GPU capacity the stack can move.

        A group reaches max size x GPUs per node; a NodePool its GPU limit (unbounded: infinite),
        in the zones its requirement allows. Reserved capacity is not counted on: a reservation sits in
        one zone and a Capacity Block ends, so the rest of the fleet must stand without it.
        """
        groups: list[tuple[StackResource, float, tuple[str, ...]]] = []
        for group in self.of_type(NODE_GROUP):
            gpus = gpus_per_node(list(group.props.get("instanceTypes") or []))
            if gpus and not self._reserved(group):
                max_size = float((group.props.get("scalingConfig") or {}).get("maxSize", 0))
                groups.append((group, max_size * gpus, self.zones_of(group)))
        for pool in self.of_type(NODE_POOL):
            if pool_gpus_per_node(pool.props) and not self._reserved(pool):
                limit = pool_gpu_limit(pool.props)
                groups.append((pool, float("inf") if limit is None else limit, self.zones_of(pool)))
        return groups

    def _reserved(self, capacity: StackResource) -> bool:
        if capacity.type == NODE_POOL:
            return pool_requirement(capacity.props, "karpenter.sh/capacity-type") == ["reserved"]
        templates = self.input_sources(capacity, "launchTemplate")
        return capacity.props.get("capacityType") == "CAPACITY_BLOCK" or any(
            (t.props.get("capacityReservationSpecification") or {}).get("capacityReservationTarget")
            for t in templates
        )

    def gpu_capacity_by_zone(self) -> dict[str, float]:
        """GPUs each zone reaches at every group's maximum (multi-zone groups and pools split evenly),
        counting only the node groups the autoscaler can start from zero for a pod of this stack
        (NodePools: Karpenter builds its nodes from instance types, not from a template)."""
        capacity: dict[str, float] = {}
        reachable = reachable_groups(self)
        for group, gpus, zones in self.gpu_groups():
            if group.type == NODE_GROUP and group.urn not in reachable:
                continue
            for zone in zones or ("(unknown zone)",):
                capacity[zone] = capacity.get(zone, 0.0) + gpus / max(len(zones), 1)
        return capacity

    def gpu_zones(self) -> set[str]:
        return {zone for _, _, zones in self.gpu_groups() for zone in zones}

    def tritons(self) -> list[StackResource]:
        return [d for d in self.of_type(DEPLOYMENT) if any(is_triton(c) for c in containers(d.props))]

    def scaled_object_for(self, deployment: StackResource) -> StackResource | None:
        namespace, name = resource_namespace(deployment), deployment.props.get("metadata", {}).get("name")
        for scaler in self.of_type(SCALED_OBJECT):
            target = (scaler.props.get("spec") or {}).get("scaleTargetRef") or {}
            if (
                resource_namespace(scaler) == namespace
                and target.get("name") == name
                and target.get("kind", "Deployment") == "Deployment"
            ):
                return scaler
        return None


def resource_namespace(resource: StackResource) -> str:
    return namespace_of(resource.props)


def resource_label(resource: StackResource) -> str:
    return f"{resource.type.rsplit(':', 1)[-1]} {resource.name}"


def replica_bounds(stack: Stack, deployment: StackResource) -> tuple[int, int]:
    """(minimum, maximum) replicas: the ScaledObject's bounds when KEDA scales it, else spec.replicas."""
    scaler = stack.scaled_object_for(deployment)
    if scaler is not None:
        spec = scaler.props.get("spec") or {}
        return int(float(spec.get("minReplicaCount", 0))), int(float(spec.get("maxReplicaCount", 100)))
    replicas = int(float((deployment.props.get("spec") or {}).get("replicas", 1)))
    return replicas, replicas
