"""What a stack runs that costs money, read off the resources its program registers: the footprint that
``infra.cost`` prices.

Pure: resources as the offline runner records them (type, name, engine-form inputs). Node groups and
Karpenter's NodePools become node shapes (instance type, sizes, spot or not, reserved or not, disk),
the services' Deployments the GPUs their minimum replicas ask for, on spot or on demand, and their
pods the log bytes each request costs (Triton's level, the request front's line).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from inferstack.infra.instance_types import INSTANCE_TYPES
from inferstack.infra.log_volume import (
    FRONT_LOG_BYTES_PER_REQUEST,
    FRONT_LOG_DIRECTIVE,
    bytes_per_request,
)
from inferstack.infra.registered import RegisteredResource

_GPU_LIMIT = "nvidia.com/gpu"
_CAPACITY_LABEL = "inferstack.io/capacity-type"
_NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
_NODE_CLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"


@dataclass(frozen=True)
class NodeGroupShape:
    """A node group as the estimate sees it: capacity type, instance type and sizes."""

    name: str
    spot: bool
    instance_type: str  # the first listed: what the group is sized and priced by
    min_size: int
    desired_size: int
    max_size: int
    disk_gib: int
    reserved: bool = False  # its instances are a reservation's, paid whole

    @property
    def gpus_per_node(self) -> int:
        known = INSTANCE_TYPES.get(self.instance_type)
        return known.gpus if known else 0


@dataclass(frozen=True)
class Footprint:
    """What a stack runs that costs money by the hour or the month."""

    clusters: int
    nat_gateways: int
    public_ips: int
    node_groups: tuple[NodeGroupShape, ...]
    spot_gpu_demand: int  # GPUs the services' minimum replicas may take on spot
    on_demand_gpu_demand: int  # GPUs the services' minimum replicas must have on demand
    kms_keys: int
    model_buckets: int
    load_balancers: int
    health_check_intervals: tuple[int, ...]
    # per Triton service: log bytes per request, Triton's and its request front's
    service_log_bytes: tuple[int, ...] = ()


def _int(value: Any) -> int:
    return int(float(value or 0))


def _may_run_on_spot(pod: Mapping[str, Any]) -> bool:
    terms = (
        pod.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    for term in terms:
        for expression in term.get("matchExpressions", []):
            if expression.get("key") == _CAPACITY_LABEL and "spot" not in expression.get("values", []):
                return False
    return True


def _requirement(pool: Mapping[str, Any], key: str) -> list[str]:
    template = (pool.get("spec") or {}).get("template", {}).get("spec") or {}
    for requirement in template.get("requirements") or []:
        if requirement.get("key") == key and requirement.get("operator") == "In":
            return [str(v) for v in requirement.get("values") or []]
    return []


def _gib(size: Any) -> int:
    """An EBS size as Kubernetes spells it (``200Gi``; ``G`` and ``T`` taken alike) in GiB."""
    text = str(size or "0")
    for suffix, factor in (("Ti", 1024), ("T", 1024), ("Gi", 1), ("G", 1)):
        if text.endswith(suffix):
            return int(float(text.removesuffix(suffix)) * factor)
    return int(float(text) / 2**30)


def _pool_shape(
    pool: RegisteredResource, disks: Mapping[str, int], on_demand_demand: int
) -> NodeGroupShape | None:
    """A NodePool as a group: nodes from zero to its GPU limit; on demand, as many as the services
    that may not run on spot ask for (Karpenter starts nodes for pending pods, and no others)."""
    types = _requirement(pool.inputs, "node.kubernetes.io/instance-type")
    known = INSTANCE_TYPES.get(types[0]) if types else None
    if known is None or not known.gpus:
        return None
    capacity = _requirement(pool.inputs, "karpenter.sh/capacity-type")
    limit = _int(((pool.inputs.get("spec") or {}).get("limits") or {}).get(_GPU_LIMIT))
    nodes = limit // known.gpus
    node_class = ((pool.inputs.get("spec") or {}).get("template", {}).get("spec") or {}).get(
        "nodeClassRef"
    ) or {}
    desired = {"reserved": nodes, "on-demand": min(nodes, math.ceil(on_demand_demand / known.gpus))}
    return NodeGroupShape(
        name=pool.name,
        spot=capacity == ["spot"],
        instance_type=types[0],
        min_size=0,
        desired_size=desired.get(capacity[0] if capacity else "", 0),
        max_size=nodes,
        disk_gib=disks.get(str(node_class.get("name")), 0),
        reserved=capacity == ["reserved"],
    )


def footprint(resources: Iterable[RegisteredResource]) -> Footprint:
    records = list(resources)
    templates = {r.urn: r.inputs for r in records if r.type == "aws:ec2/launchTemplate:LaunchTemplate"}
    disks = {
        urn: max(
            (_int(m.get("ebs", {}).get("volumeSize")) for m in t.get("blockDeviceMappings", [])), default=0
        )
        for urn, t in templates.items()
    }
    class_disks = {
        str((r.inputs.get("metadata") or {}).get("name")): max(
            (
                _gib(m.get("ebs", {}).get("volumeSize"))
                for m in (r.inputs.get("spec") or {}).get("blockDeviceMappings", [])
            ),
            default=0,
        )
        for r in records
        if r.type == _NODE_CLASS
    }
    groups = []
    demand = on_demand_demand = 0
    count = {t: 0 for t in ("cluster", "nat", "eip", "kms", "bucket", "lb")}
    intervals = []
    log_bytes: list[int] = []
    # The request fronts' ConfigMaps whose nginx.conf writes a line per request.
    request_logs = {
        r.inputs.get("metadata", {}).get("name")
        for r in records
        if r.type == "kubernetes:core/v1:ConfigMap"
        and FRONT_LOG_DIRECTIVE in str(r.inputs.get("data", {}).get("nginx.conf", ""))
    }
    for r in records:
        if r.type == "kubernetes:apps/v1:Deployment":
            pod = r.inputs.get("spec", {}).get("template", {}).get("spec", {})
            gpus = sum(
                _int((c.get("resources") or {}).get("limits", {}).get(_GPU_LIMIT))
                for c in pod.get("containers", [])
            )
            asked = _int(r.inputs.get("spec", {}).get("replicas", 1)) * gpus
            if gpus and _may_run_on_spot(pod):
                demand += asked
            elif gpus:
                on_demand_demand += asked
    for r in records:
        kind = {
            "aws:eks/cluster:Cluster": "cluster",
            "aws:ec2/natGateway:NatGateway": "nat",
            "aws:ec2/eip:Eip": "eip",
            "aws:kms/key:Key": "kms",
            "aws:s3/bucket:Bucket": "bucket",
        }.get(r.type)
        if kind:
            count[kind] += 1
        if r.type == "aws:eks/nodeGroup:NodeGroup":
            scaling = r.inputs.get("scalingConfig", {})
            launch = r.property_dependencies.get("launchTemplate", ())
            reservation = any(
                (templates.get(u, {}).get("capacityReservationSpecification") or {}).get(
                    "capacityReservationTarget"
                )
                for u in launch
            )
            groups.append(
                NodeGroupShape(
                    name=r.name,
                    spot=r.inputs.get("capacityType") == "SPOT",
                    instance_type=(r.inputs.get("instanceTypes") or [""])[0],
                    min_size=_int(scaling.get("minSize")),
                    desired_size=_int(scaling.get("desiredSize")),
                    max_size=_int(scaling.get("maxSize")),
                    disk_gib=max([disks.get(u, 0) for u in launch] + [_int(r.inputs.get("diskSize"))]),
                    reserved=reservation or r.inputs.get("capacityType") == "CAPACITY_BLOCK",
                )
            )
        if r.type == _NODE_POOL:
            shape = _pool_shape(r, class_disks, on_demand_demand)
            if shape is not None:
                groups.append(shape)
        if r.type == "kubernetes:apps/v1:Deployment":
            pod = r.inputs.get("spec", {}).get("template", {}).get("spec", {})
            log_bytes.extend(_service_log_bytes(pod, request_logs))
        if r.type == "kubernetes:core/v1:Service" and r.inputs.get("spec", {}).get("type") == "LoadBalancer":
            count["lb"] += 1
        if r.type == "aws:route53/healthCheck:HealthCheck":
            intervals.append(_int(r.inputs.get("requestInterval")) or 30)
    return Footprint(
        clusters=count["cluster"],
        nat_gateways=count["nat"],
        public_ips=count["eip"],
        node_groups=tuple(groups),
        spot_gpu_demand=demand,
        on_demand_gpu_demand=on_demand_demand,
        kms_keys=count["kms"],
        model_buckets=count["bucket"],
        load_balancers=count["lb"],
        health_check_intervals=tuple(intervals),
        service_log_bytes=tuple(log_bytes),
    )


def _service_log_bytes(pod: Mapping[str, Any], request_logs: set[Any]) -> list[int]:
    """The log bytes per request of a pod's Triton (its --log-verbose; Triton's default is 0), plus its
    request front's line when the front's ConfigMap (a volume of the pod) has the request log on."""
    mounted = {(v.get("configMap") or {}).get("name") for v in pod.get("volumes", [])}
    front = FRONT_LOG_BYTES_PER_REQUEST if mounted & request_logs else 0
    found = []
    for container in pod.get("containers", []):
        args = [str(a) for a in container.get("args", [])]
        if "tritonserver" in str(container.get("image", "")):
            levels = [int(a.split("=", 1)[1]) for a in args if a.startswith("--log-verbose=")]
            found.append(bytes_per_request(levels[-1] if levels else 0) + front)
    return found
