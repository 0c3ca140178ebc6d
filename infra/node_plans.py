"""Node group plans (pure): the system group, GPU on demand, GPU on spot, their labels, taints, sizes and
autoscaler tags, and the arithmetic of what survives losing a zone.

GPU groups come one per zone, so cluster-autoscaler can add capacity in the very zone a pending
pod needs (a group spanning zones lets the ASG pick the wrong one). Spot groups diversify across
instance families with the same GPU count, so one reclaimed pool does not take all capacity and
a pod fits whichever type arrives. Every GPU node carries the nvidia.com/gpu taint so only
pods that ask for GPUs land there, and the node-template tags let the autoscaler scale a group up
from zero: it cannot see a node's labels, taints or GPUs before one exists.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypedDict, Unpack

from inferstack.infra.errors import InvalidInput
from inferstack.infra.instance_types import lookup
from inferstack.infra.node_template import EPHEMERAL_STORAGE, ephemeral_storage_tag
from inferstack.infra.versions import AL2023_RELEASE_VERSIONS, SUPPORTED_KUBERNETES_VERSIONS
from inferstack.infra.zones import check_zones

CAPACITY_TYPE_LABEL = "inferstack.io/capacity-type"
GPU_MODEL_LABEL = "inferstack.io/gpu-model"
NODE_ROLE_LABEL = "inferstack.io/node-role"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_RESOURCE = "nvidia.com/gpu"
ZONE_LABEL = "topology.kubernetes.io/zone"
# The label cluster-autoscaler reads to know a node from a scale-from-zero template carries a GPU.
ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"
# EKS puts these two on every managed node group's Auto Scaling group itself.
AUTOSCALER_DISCOVERY_TAGS = ("k8s.io/cluster-autoscaler/enabled", "k8s.io/cluster-autoscaler/{cluster}")
SPOT, ON_DEMAND = "spot", "on-demand"  # values of CAPACITY_TYPE_LABEL
# The node-local model cache (infra/model_cache.py) every Triton pod's init container fills: on the
# instance-store NVMe where the node has one (the bootstrap below), on the root volume otherwise.
NODE_MODEL_CACHE_PATH = "/var/lib/inferstack/model-cache"
NODE_MODEL_CACHE_UID = 1000  # Triton's user: the fill runs as it, under the restricted security context

CapacityType = Literal["ON_DEMAND", "SPOT", "CAPACITY_BLOCK"]
AmiType = Literal[
    "AL2023_x86_64_STANDARD", "AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64", "BOTTLEROCKET_x86_64_NVIDIA"
]
GPU_AMI_TYPES: tuple[AmiType, ...] = ("AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA")
CPU_AMI_TYPES: tuple[AmiType, ...] = ("AL2023_x86_64_STANDARD", "BOTTLEROCKET_x86_64")
# Spot types count as comparable when GPU memory differs by at most this factor: a model sized
# for the smallest still fits, and the larger ones are not wasted on it.
SPOT_GPU_MEMORY_SPREAD = 1.5


@dataclass(frozen=True)
class Taint:
    """A Kubernetes taint in EKS's spelling (NO_SCHEDULE...), with its Kubernetes form."""

    key: str
    value: str
    effect: Literal["NO_SCHEDULE", "NO_EXECUTE", "PREFER_NO_SCHEDULE"] = "NO_SCHEDULE"

    @property
    def kubernetes_effect(self) -> str:
        return {
            "NO_SCHEDULE": "NoSchedule",
            "NO_EXECUTE": "NoExecute",
            "PREFER_NO_SCHEDULE": "PreferNoSchedule",
        }[self.effect]


GPU_TAINT = Taint(GPU_TAINT_KEY, "true")


@dataclass(frozen=True)
class NodeGroupPlan:
    """Everything about one managed node group that can be decided without AWS."""

    name: str
    zones: tuple[str, ...]
    capacity_type: CapacityType
    instance_types: tuple[str, ...]
    ami_type: AmiType
    min_size: int
    desired_size: int
    max_size: int
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    disk_gib: int = 50
    # The AMI release; None: the pinned AL2023 release of the cluster's Kubernetes version.
    release_version: str | None = None
    # A Capacity Block or On-Demand Capacity Reservation the group launches into (infra/reserved.py).
    capacity_reservation_id: str | None = None

    @property
    def gpus_per_node(self) -> int:
        return lookup(self.instance_types[0], field=f"{self.name}.instance_types[0]").gpus


def check_sizes(prefix: str, min_size: int, desired_size: int, max_size: int) -> None:
    if min_size < 0:
        raise InvalidInput(f"{prefix}.min_size", min_size, "an integer >= 0")
    if max_size < 1:
        raise InvalidInput(f"{prefix}.max_size", max_size, "an integer >= 1")
    if not min_size <= desired_size <= max_size:
        raise InvalidInput(
            f"{prefix}.desired_size",
            desired_size,
            f"min_size ({min_size}) <= desired_size <= max_size ({max_size})",
        )


def _check_gpu_types(prefix: str, types: Sequence[str]) -> None:
    for i, name in enumerate(types):
        if not lookup(name, field=f"{prefix}.instance_types[{i}]").is_gpu:
            raise InvalidInput(
                f"{prefix}.instance_types[{i}]", name, "a GPU instance type (g4dn, g5, g6, g6e, p4d, p5)"
            )


def check_spot_types(prefix: str, types: Sequence[str]) -> None:
    """Diversified: >= 2 types, >= 2 families, one GPU count, comparable GPU memory, one CPU/memory shape."""
    if len(types) < 2:
        raise InvalidInput(
            f"{prefix}.instance_types", list(types), "at least 2 types, so one spot pool can run dry"
        )
    _check_gpu_types(prefix, types)
    infos = [lookup(t, field=f"{prefix}.instance_types") for t in types]
    if len({i.family for i in infos}) < 2:
        raise InvalidInput(f"{prefix}.instance_types", list(types), "types from at least 2 instance families")
    counts = {i.name: i.gpus for i in infos}
    if len(set(counts.values())) != 1:
        raise InvalidInput(f"{prefix}.instance_types", counts, "types with the same number of GPUs")
    memory = [i.gpu_memory_gib for i in infos]
    if max(memory) > SPOT_GPU_MEMORY_SPREAD * min(memory):
        raise InvalidInput(
            f"{prefix}.instance_types",
            {i.name: i.gpu_memory_gib for i in infos},
            f"GPU memory within a factor {SPOT_GPU_MEMORY_SPREAD} across types",
        )
    shapes = {i.name: f"{i.vcpus} vCPU, {i.memory_gib:g} GiB" for i in infos}
    if len(set(shapes.values())) != 1:
        # cluster-autoscaler builds the group's node template from one type: a pod sized to it must
        # fit whichever type spot delivers.
        raise InvalidInput(f"{prefix}.instance_types", shapes, "types with the same vCPUs and memory")


def system_plans(
    zones: Sequence[str],
    *,
    instance_types: Sequence[str] = ("m7i.xlarge", "m6i.xlarge"),
    min_size: int = 1,
    desired_size: int = 1,
    max_size: int = 2,
) -> list[NodeGroupPlan]:
    """On-demand CPU nodes for the controllers, Prometheus, KEDA and CoreDNS: one group per zone.

    Per zone so that a node lost with a zonal volume (Prometheus's, Jaeger's) comes back in the
    volume's zone: one group across zones lets the autoscaler add the replacement anywhere. Every
    live zone keeps at least one node, which is also what makes it count for Triton's zone spread
    (docs/concepts/zone-loss.md).
    """
    check_zones(zones)
    check_sizes("system", min_size, desired_size, max_size)
    if min_size < 1:
        raise InvalidInput("system.min_size", min_size, "at least 1: every zone keeps a system node")
    if not instance_types:
        raise InvalidInput("system.instance_types", list(instance_types), "one or more CPU instance types")
    for i, name in enumerate(instance_types):
        if lookup(name, field=f"system.instance_types[{i}]").is_gpu:
            raise InvalidInput(
                f"system.instance_types[{i}]", name, "a CPU instance type (GPUs are for the gpu groups)"
            )
    return [
        NodeGroupPlan(
            name=f"system-{zone}",
            zones=(zone,),
            capacity_type="ON_DEMAND",
            instance_types=tuple(instance_types),
            ami_type="AL2023_x86_64_STANDARD",
            min_size=min_size,
            desired_size=desired_size,
            max_size=max_size,
            labels={NODE_ROLE_LABEL: "system", CAPACITY_TYPE_LABEL: ON_DEMAND},
        )
        for zone in zones
    ]


def _gpu_labels(instance_types: Sequence[str], capacity_type: CapacityType) -> dict[str, str]:
    labels = {
        NODE_ROLE_LABEL: "gpu",
        CAPACITY_TYPE_LABEL: SPOT if capacity_type == "SPOT" else ON_DEMAND,
        GPU_PRESENT_LABEL: "true",
        # The autoscaler only asks whether this is there: spot groups, whose GPU model differs per type
        # (pods select spot GPUs by capacity type instead), name the vendor.
        ACCELERATOR_LABEL: "nvidia",
    }
    if capacity_type != "SPOT":
        model = lookup(instance_types[0], field="instance_type").gpu_model
        labels |= {GPU_MODEL_LABEL: model, ACCELERATOR_LABEL: model}
    return labels


class GpuGroupOptions(TypedDict, total=False):
    """What a GPU group builder takes besides its instance types, each with the builder's default."""

    ami_type: AmiType
    min_size: int
    desired_size: int
    max_size: int
    disk_gib: int
    release_version: str | None  # None: the pinned AL2023 release of the cluster's Kubernetes version


ON_DEMAND_GPU_DEFAULTS: GpuGroupOptions = {
    "ami_type": "AL2023_x86_64_NVIDIA",
    "min_size": 0,
    "desired_size": 1,
    "max_size": 4,
    "disk_gib": 200,
    "release_version": None,
}
SPOT_GPU_DEFAULTS: GpuGroupOptions = {**ON_DEMAND_GPU_DEFAULTS, "desired_size": 0, "max_size": 6}


def _check_gpu_ami(field_prefix: str, ami_type: str) -> None:
    if ami_type not in GPU_AMI_TYPES:
        raise InvalidInput(f"{field_prefix}.ami_type", ami_type, f"an NVIDIA AMI: {', '.join(GPU_AMI_TYPES)}")


def _gpu_groups(
    key: str,
    zones: Sequence[str],
    capacity_type: CapacityType,
    types: Sequence[str],
    options: GpuGroupOptions,
) -> list[NodeGroupPlan]:
    """One tainted GPU group per zone, named for ``key`` (gpu_spot: gpu-spot-<zone>); errors name ``key``."""
    check_zones(zones)
    check_sizes(key, options["min_size"], options["desired_size"], options["max_size"])
    if capacity_type == "SPOT":
        check_spot_types(key, types)
    else:
        _check_gpu_types(key, types)
    _check_gpu_ami(key, options["ami_type"])
    labels = _gpu_labels(types, capacity_type)
    name = key.replace("_", "-")
    return [
        NodeGroupPlan(
            name=f"{name}-{zone}",
            zones=(zone,),
            capacity_type=capacity_type,
            instance_types=tuple(types),
            labels=labels,
            taints=(GPU_TAINT,),
            **options,
        )
        for zone in zones
    ]


def gpu_plans(
    zones: Sequence[str], *, instance_type: str = "g5.xlarge", **options: Unpack[GpuGroupOptions]
) -> list[NodeGroupPlan]:
    """On-demand GPU capacity: one group per zone, tainted, labelled with GPU model and capacity type."""
    return _gpu_groups("gpu", zones, "ON_DEMAND", [instance_type], {**ON_DEMAND_GPU_DEFAULTS, **options})


def gpu_spot_plans(
    zones: Sequence[str],
    *,
    instance_types: Sequence[str] = ("g5.xlarge", "g6.xlarge", "g4dn.xlarge"),
    **options: Unpack[GpuGroupOptions],
) -> list[NodeGroupPlan]:
    """Spot GPU capacity, per zone, across diversified types with the same GPU count."""
    return _gpu_groups("gpu_spot", zones, "SPOT", instance_types, {**SPOT_GPU_DEFAULTS, **options})


def validate_plan(plan: NodeGroupPlan) -> None:
    """The checks the preset builders make, for a plan however it was made."""
    if not plan.zones:
        raise InvalidInput(f"{plan.name}.zones", [], "one or more zones")
    check_sizes(plan.name, plan.min_size, plan.desired_size, plan.max_size)
    if not plan.instance_types:
        raise InvalidInput(f"{plan.name}.instance_types", [], "one or more instance types")
    infos = [lookup(t, field=f"{plan.name}.instance_types[{i}]") for i, t in enumerate(plan.instance_types)]
    if any(i.is_gpu for i in infos):
        if plan.capacity_type == "SPOT":
            check_spot_types(plan.name, plan.instance_types)
        else:
            _check_gpu_types(plan.name, plan.instance_types)
        _check_gpu_ami(plan.name, plan.ami_type)
        if GPU_TAINT not in plan.taints:
            raise InvalidInput(
                f"{plan.name}.taints", list(plan.taints), f"the {GPU_TAINT_KEY}=true:NoSchedule taint"
            )
    elif plan.ami_type not in CPU_AMI_TYPES:
        raise InvalidInput(f"{plan.name}.ami_type", plan.ami_type, f"a CPU AMI: {', '.join(CPU_AMI_TYPES)}")


def release_version(plan: NodeGroupPlan, kubernetes_version: str) -> str:
    """The AMI release a group runs: pinned, so a replaced node never boots a newer image unasked."""
    if kubernetes_version not in SUPPORTED_KUBERNETES_VERSIONS:
        raise InvalidInput(
            "kubernetes_version", kubernetes_version, f"one of {', '.join(SUPPORTED_KUBERNETES_VERSIONS)}"
        )
    if plan.release_version is not None:
        al2023 = plan.ami_type.startswith("AL2023")
        if al2023 and not plan.release_version.startswith(f"{kubernetes_version}."):
            raise InvalidInput(
                f"{plan.name}.release_version",
                plan.release_version,
                f"an AL2023 release for {kubernetes_version}",
            )
        return plan.release_version
    if plan.ami_type.startswith("BOTTLEROCKET"):
        raise InvalidInput(
            f"{plan.name}.release_version", None, "a pinned Bottlerocket release (such as 1.55.0-xxxxxxxx)"
        )
    return AL2023_RELEASE_VERSIONS[kubernetes_version]


def autoscaler_tags(cluster_name: str, plan: NodeGroupPlan) -> dict[str, str]:
    """Discovery tags plus the node template cluster-autoscaler needs to scale this group up from zero."""
    tags = {
        "k8s.io/cluster-autoscaler/enabled": "true",
        f"k8s.io/cluster-autoscaler/{cluster_name}": "owned",
    }
    template = "k8s.io/cluster-autoscaler/node-template"
    for key, value in plan.labels.items():
        tags[f"{template}/label/{key}"] = value
    if len(plan.zones) == 1:
        tags[f"{template}/label/{ZONE_LABEL}"] = plan.zones[0]
    for taint in plan.taints:
        tags[f"{template}/taint/{taint.key}"] = f"{taint.value}:{taint.kubernetes_effect}"
    if plan.gpus_per_node:
        tags[f"{template}/resources/{GPU_RESOURCE}"] = str(plan.gpus_per_node)
    # The template has no ephemeral storage otherwise (kubernetes/autoscaler#1869): a pod that asks
    # for any, as Triton does for its model cache, would never scale a group up from zero.
    tags[f"{template}/resources/{EPHEMERAL_STORAGE}"] = ephemeral_storage_tag(plan.disk_gib)
    return tags


def gpu_capacity_by_zone(plans: Sequence[NodeGroupPlan]) -> dict[str, float]:
    """GPUs each zone can reach at full scale (max size x GPUs per node; multi-zone groups split evenly)."""
    capacity: dict[str, float] = {}
    for plan in plans:
        for zone in plan.zones:
            capacity[zone] = capacity.get(zone, 0.0) + plan.max_size * plan.gpus_per_node / len(plan.zones)
    return capacity


def surviving_share(plans: Sequence[NodeGroupPlan], lost_zone: str) -> float:
    capacity = gpu_capacity_by_zone(plans)
    total = sum(capacity.values())
    return (total - capacity.get(lost_zone, 0.0)) / total if total else 0.0


def check_zone_loss(plans: Sequence[NodeGroupPlan], min_share: float) -> None:
    """Refuse node groups where losing any one zone would leave less than ``min_share`` of GPU capacity."""
    if not 0 <= min_share < 1:
        raise InvalidInput("min_surviving_gpu_share", min_share, "a fraction from 0 to below 1")
    capacity = gpu_capacity_by_zone(plans)
    if min_share and len([z for z, c in capacity.items() if c > 0]) < 2:
        raise InvalidInput("plans", sorted(capacity), "GPU capacity in at least 2 zones, so one can fail")
    for zone in capacity:
        share = surviving_share(plans, zone)
        if share < min_share:
            raise InvalidInput(
                "min_surviving_gpu_share",
                min_share,
                f"at most {share:.2f}: losing {zone} leaves only that share of GPU capacity; "
                "spread max sizes over zones",
            )


@dataclass(frozen=True)
class Volume:
    """One EBS volume of a node; every one is encrypted gp3."""

    device_name: str
    size_gib: int | None  # None: the size of the AMI's own snapshot


def volumes(plan: NodeGroupPlan) -> list[Volume]:
    """AL2023 keeps images and containers on its root volume; Bottlerocket on a second, data volume,
    beside a small OS volume that is listed too, so that it is encrypted as well."""
    if plan.ami_type.startswith("BOTTLEROCKET"):
        return [Volume("/dev/xvda", None), Volume("/dev/xvdb", plan.disk_gib)]
    return [Volume("/dev/xvda", plan.disk_gib)]


# Where nodeadm's localStorage RAID0 strategy mounts the instance-store NVMe array (setup-local-disks).
INSTANCE_STORE_ARRAY = "/mnt/k8s-disks/0"
_USER_DATA_BOUNDARY = "==INFERSTACK=="


def node_user_data(plan: NodeGroupPlan) -> str | None:
    """The launch template's user data of an AL2023 group (None for Bottlerocket, which takes TOML):
    nodeadm puts the instance-store NVMe disks, where the type has them (g5, g6, g6e, g4dn, p4d), into
    one RAID0 array that holds containerd's images and the kubelet's volumes; then a script gives the
    node-local model cache a folder on that array (the root volume where there is none), owned by
    Triton's user. EKS merges its own NodeConfig (the cluster's endpoint and CA) with this one.

    Order on the node: nodeadm's config phase and setup-local-disks run before multi-user.target,
    cloud-init's scripts after it (cloud-final), and the kubelet starts after cloud-final: the array
    is mounted when the script runs, and the folder exists before any pod can mount it.
    """
    if not plan.ami_type.startswith("AL2023"):
        return None
    node_config = "\n".join(
        [
            "---",
            "apiVersion: node.eks.aws/v1alpha1",
            "kind: NodeConfig",
            "spec:",
            "  instance:",
            "    localStorage:",
            "      strategy: RAID0",
        ]
    )
    script = "\n".join(
        [
            "#!/bin/bash",
            "# inferstack: the node-local model cache (infra/model_cache.py fills it from S3)",
            "set -euo pipefail",
            f"cache={NODE_MODEL_CACHE_PATH}",
            'mkdir -p "$cache"',
            f"nvme={INSTANCE_STORE_ARRAY}/inferstack-model-cache",
            f"if mountpoint -q {INSTANCE_STORE_ARRAY}; then",
            '  mkdir -p "$nvme"',
            '  mountpoint -q "$cache" || mount --bind "$nvme" "$cache"',
            "fi",
            f'chown {NODE_MODEL_CACHE_UID}:{NODE_MODEL_CACHE_UID} "$cache"',
            'chmod 0750 "$cache"',
        ]
    )
    parts = [("application/node.eks.aws", node_config), ('text/x-shellscript; charset="us-ascii"', script)]
    lines = ["MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{_USER_DATA_BOUNDARY}"', ""]
    for content_type, body in parts:
        lines += [f"--{_USER_DATA_BOUNDARY}", f"Content-Type: {content_type}", "", body, ""]
    return "\n".join([*lines, f"--{_USER_DATA_BOUNDARY}--", ""])


def check_subnets(plans: Sequence[NodeGroupPlan], subnet_zones: Collection[str]) -> None:
    """Every zone a plan names has a subnet to put its nodes in."""
    for plan in plans:
        missing = sorted(set(plan.zones) - set(subnet_zones))
        if missing:
            raise InvalidInput(f"{plan.name}.zones", missing, f"zones with subnets: {sorted(subnet_zones)}")
