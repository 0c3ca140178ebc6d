"""The node cluster-autoscaler imagines for a node group at zero, the node that then joins, and whether
the pods that may land there fit on both.

cluster-autoscaler's AWS provider (``buildNodeFromTemplate`` in ``cloudprovider/aws/aws_manager.go``)
builds a group's template node from the instance type (110 pods, its vCPUs, memory and GPUs) and
the group's tags: ``.../node-template/resources/<name>`` sets a resource (ephemeral-storage has no
other source, kubernetes/autoscaler#1869), ``.../label/<key>`` a label, ``.../taint/<key>`` a taint
(``value:Effect``); for an EKS managed group it adds the labels, taints and resource tags that
DescribeNodegroup returns. Its allocatable is its capacity. The node that joins has less: the kubelet
of the EKS AMIs reserves CPU and memory for itself and evicts below a threshold. A pod must fit both,
or the autoscaler never adds the node (template) or adds one the pod still cannot use (real node).

Pure: the policy pack and Karpenter's NodePools use the same fit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from inferstack.infra.instance_types import InstanceType

TEMPLATE_TAG = "k8s.io/cluster-autoscaler/node-template"
CPU, MEMORY, EPHEMERAL_STORAGE, PODS = "cpu", "memory", "ephemeral-storage", "pods"
GPU = "nvidia.com/gpu"
FITTED = (CPU, MEMORY, EPHEMERAL_STORAGE, GPU, PODS)
TEMPLATE_PODS = 110  # buildNodeFromTemplate's pod capacity, whatever the type
GIB = 1024**3
MIB = 1024**2

# Pods per node as the EKS AMIs compute them for the VPC CNI without prefix delegation:
# ENIs x (IPv4 addresses per ENI - 1) + 2. A type not listed gets nodeadm's ceiling, which reserves
# the most memory: the fit errs towards refusing.
MAX_PODS = {
    "g4dn.xlarge": 29,
    "g4dn.2xlarge": 29,
    "g5.xlarge": 58,
    "g5.2xlarge": 58,
    "g6.xlarge": 58,
    "g6.2xlarge": 58,
    "g6e.xlarge": 58,
    "m6i.xlarge": 58,
    "m7i.xlarge": 58,
}
MAX_PODS_CEILING = 250
# The kubelet's own share on EKS AMIs (AL2023 nodeadm, as the AL2 bootstrap before it): memory
# 11 MiB a pod + 255 MiB; CPU 6% of the first core, 1% of the second, 0.5% of the next two, 0.25%
# of the rest; 1 GiB of the node file system. Eviction starts at 100 MiB of memory and 10% of the
# file system free, so neither is allocatable.
KUBE_RESERVED_EPHEMERAL_GIB = 1.0
EVICTION_MEMORY_MIB = 100
EVICTION_NODEFS_SHARE = 0.10
# XFS keeps ~1% of a volume for its own metadata: the file system the kubelet sees is that much smaller.
FILESYSTEM_SHARE = 0.99

Resources = dict[str, float]  # cores, bytes or counts by resource name

_QUANTITY = re.compile(r"^([0-9.]+(?:e[0-9]+)?)([a-zA-Z]*)$")
_SUFFIXES = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 1024.0,
    "Mi": float(MIB),
    "Gi": float(GIB),
    "Ti": 1024.0**4,
}


def quantity(value: Any) -> float:
    """A Kubernetes quantity ("500m", "10Gi", 3) as a number in the resource's base unit."""
    match = _QUANTITY.match(str(value).strip())
    if match is None or match.group(2) not in _SUFFIXES:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return float(match.group(1)) * _SUFFIXES[match.group(2)]


def shown(resource: str, amount: float) -> str:
    """An amount as a person reads it: GiB for bytes, cores to the millicore, counts as is."""
    if resource in (MEMORY, EPHEMERAL_STORAGE):
        return f"{amount / GIB:.2f}Gi"
    if resource == CPU:
        return f"{round(amount * 1000)}m"
    return f"{amount:g}"


@dataclass(frozen=True)
class NodeTaint:
    """A taint on a template node, in Kubernetes' spelling."""

    key: str
    value: str
    effect: str  # NoSchedule, NoExecute, PreferNoSchedule


@dataclass(frozen=True)
class TemplateNode:
    """One group's node: labels and taints as the autoscaler sees them, and what pods may use."""

    group: str
    labels: Mapping[str, str]
    taints: tuple[NodeTaint, ...]
    template: Resources  # the autoscaler's template (its allocatable is its capacity)
    joined: Resources  # the allocatable of the node that joins

    @property
    def allocatable(self) -> Resources:
        """What both the autoscaler and the scheduler agree fits: the smaller of the two, per resource."""
        return {r: min(self.template.get(r, 0.0), self.joined.get(r, 0.0)) for r in FITTED}


def max_pods(instance_type: str) -> int:
    return MAX_PODS.get(instance_type, MAX_PODS_CEILING)


def kubelet_reserved_cpu(vcpus: int) -> float:
    """Cores the EKS AMIs keep for the kubelet and the OS."""
    shares = [0.06, 0.01, 0.005, 0.005] + [0.0025] * max(vcpus - 4, 0)
    return sum(shares[:vcpus])


def nodefs_allocatable_gib(volume_gib: float) -> float:
    """The ephemeral storage a node with a ``volume_gib`` node file system gives pods."""
    filesystem = volume_gib * FILESYSTEM_SHARE
    return filesystem - KUBE_RESERVED_EPHEMERAL_GIB - EVICTION_NODEFS_SHARE * filesystem


def ephemeral_storage_tag(volume_gib: float) -> str:
    """The node-template tag value for a group whose node file system is ``volume_gib``: what the
    joined node really allocates (whole GiB, rounded down), so the autoscaler's template promises no more."""
    return f"{math.floor(nodefs_allocatable_gib(volume_gib))}Gi"


def joined_allocatable(instance: InstanceType, nodefs_gib: float) -> Resources:
    pods = max_pods(instance.name)
    memory = instance.memory_gib * GIB - (11 * pods + 255 + EVICTION_MEMORY_MIB) * MIB
    return {
        CPU: instance.vcpus - kubelet_reserved_cpu(instance.vcpus),
        MEMORY: memory,
        EPHEMERAL_STORAGE: nodefs_allocatable_gib(nodefs_gib) * GIB,
        GPU: float(instance.gpus),
        PODS: float(pods),
    }


def _template_resources(instance: InstanceType, tags: Iterable[Mapping[str, str]]) -> Resources:
    resources: Resources = {
        PODS: float(TEMPLATE_PODS),
        CPU: float(instance.vcpus),
        GPU: float(instance.gpus),
        MEMORY: instance.memory_gib * GIB,
    }
    prefix = f"{TEMPLATE_TAG}/resources/"
    for source in tags:  # later sources win: the managed group's tags override the ASG's
        for key, value in source.items():
            if key.startswith(prefix) and key != prefix:
                try:
                    resources[key.removeprefix(prefix)] = quantity(value)
                except ValueError:
                    continue  # the autoscaler skips a tag it cannot parse
    return resources


def _taints(tags: Mapping[str, str]) -> list[NodeTaint]:
    prefix = f"{TEMPLATE_TAG}/taint/"
    found = []
    for key, value in tags.items():
        match = re.fullmatch(r"(.*):(NoSchedule|NoExecute|PreferNoSchedule)", value)
        if key.startswith(prefix) and key != prefix and match:
            found.append(NodeTaint(key.removeprefix(prefix), match.group(1), match.group(2)))
    return found


@dataclass(frozen=True)
class GroupFacts:
    """What the autoscaler reads of one group: its first instance type, zone, tags and EKS's answer."""

    name: str
    instance: InstanceType
    zone: str  # the ASG's first: getAsgTemplate labels the template node with that zone alone
    asg_tags: Mapping[str, str]
    nodefs_gib: float  # the volume the kubelet's file system is on (AL2023: root; Bottlerocket: data)
    managed_labels: Mapping[str, str] = field(default_factory=dict)
    managed_taints: Sequence[NodeTaint] = ()
    managed_tags: Mapping[str, str] = field(default_factory=dict)


def template_node(group: GroupFacts) -> TemplateNode:
    """The group's node as ``buildNodeFromTemplate`` builds it, beside the node that then joins."""
    label_prefix = f"{TEMPLATE_TAG}/label/"
    labels = {
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": group.instance.name,
        "topology.kubernetes.io/region": group.zone[:-1],
        "topology.kubernetes.io/zone": group.zone,
        "topology.ebs.csi.aws.com/zone": group.zone,
        **{k.removeprefix(label_prefix): v for k, v in group.asg_tags.items() if k.startswith(label_prefix)},
        **group.managed_labels,
    }
    taints = [*_taints(group.asg_tags), *group.managed_taints]
    template = _template_resources(group.instance, (group.asg_tags, group.managed_tags))
    return TemplateNode(
        group.name,
        labels,
        tuple(dict.fromkeys(taints)),
        template,
        joined_allocatable(group.instance, group.nodefs_gib),
    )


# --- pods -------------------------------------------------------------------------------------------


def _requests(container: Mapping[str, Any]) -> Resources:
    given = ((container.get("resources") or {}).get("requests")) or {}
    return {name: quantity(value) for name, value in given.items()}


def _add(total: Resources, more: Resources) -> Resources:
    return {k: total.get(k, 0.0) + more.get(k, 0.0) for k in {*total, *more}}


def pod_requests(spec: Mapping[str, Any]) -> Resources:
    """What the scheduler reserves for a pod: its containers plus its sidecars (init containers that
    keep running), or the largest plain init container with the sidecars started before it."""
    sidecars: Resources = {}
    largest_init: Resources = {}
    for init in spec.get("initContainers") or []:
        if init.get("restartPolicy") == "Always":
            sidecars = _add(sidecars, _requests(init))
        else:
            during = _add(sidecars, _requests(init))
            largest_init = {
                k: max(largest_init.get(k, 0.0), during.get(k, 0.0)) for k in {*largest_init, *during}
            }
    running = sidecars
    for container in spec.get("containers") or []:
        running = _add(running, _requests(container))
    total = {k: max(running.get(k, 0.0), largest_init.get(k, 0.0)) for k in {*running, *largest_init}}
    total[PODS] = 1.0
    return total


def tolerates(tolerations: Sequence[Mapping[str, Any]], taint: NodeTaint) -> bool:
    if taint.effect == "PreferNoSchedule":
        return True
    for toleration in tolerations:
        if toleration.get("effect") not in (None, "", taint.effect):
            continue
        key, operator = toleration.get("key"), toleration.get("operator", "Equal")
        if operator == "Exists" and key in (None, "", taint.key):
            return True
        if operator == "Equal" and key == taint.key and str(toleration.get("value", "")) == taint.value:
            return True
    return False


def _matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator = expression.get("key", ""), expression.get("operator")
    values = [str(v) for v in expression.get("values") or []]
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and values:
        number, bound = float(labels[key]), float(values[0])
        return number > bound if operator == "Gt" else number < bound
    return False


def selects(spec: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """The pod's nodeSelector and required node affinity both accept a node with ``labels``."""
    selector = spec.get("nodeSelector") or {}
    if any(labels.get(k) != str(v) for k, v in selector.items()):
        return False
    required = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(
        all(_matches(e, labels) for e in term.get("matchExpressions") or []) for term in terms
    )


def may_land(spec: Mapping[str, Any], node: TemplateNode) -> bool:
    """Whether the scheduler would consider ``node`` for a pod with this spec at all."""
    return selects(spec, node.labels) and all(
        tolerates(spec.get("tolerations") or [], t) for t in node.taints
    )


@dataclass(frozen=True)
class Shortfall:
    """What a pod (with the DaemonSets beside it) asks of a resource beyond what the node offers."""

    resource: str
    needed: float
    allocatable: float
    template: float  # what the autoscaler's template offers
    joined: float  # what the joined node offers

    def __str__(self) -> str:
        where = []
        if self.template < self.needed:
            where.append(f"the autoscaler's template offers {shown(self.resource, self.template)}")
        if self.joined < self.needed:
            where.append(f"a joined node allocates {shown(self.resource, self.joined)}")
        return f"{self.resource}: needs {shown(self.resource, self.needed)}, but {' and '.join(where)}"


def shortfalls(node: TemplateNode, pods: Iterable[Resources]) -> list[Shortfall]:
    """Every resource the pods together need more of than the node offers."""
    needed: Resources = {}
    for pod in pods:
        needed = _add(needed, pod)
    allocatable = node.allocatable
    return [
        Shortfall(r, needed.get(r, 0.0), allocatable[r], node.template.get(r, 0.0), node.joined.get(r, 0.0))
        for r in FITTED
        if needed.get(r, 0.0) > allocatable[r] + 1e-9
    ]
