"""The scheduler's PodTopologySpread filter, evaluated on plain data.

A model of what kube-scheduler 1.35 decides in ``pkg/scheduler/framework/plugins/podtopologyspread``
(filtering.go, common.go), written from that source so the zone-loss promise can be checked without a
cluster. What it keeps from the source:

- Only ``DoNotSchedule`` constraints filter; ``ScheduleAnyway`` ones only score.
- PreFilter counts, per constraint, the matching pods (same namespace, not terminating) on every node
  that carries *all* the hard constraints' topology keys and passes the constraint's inclusion
  policies: ``nodeAffinityPolicy`` (default Honor: the pod's required node affinity must match) and
  ``nodeTaintsPolicy`` (default Ignore; Honor drops nodes with a NoSchedule/NoExecute taint the pod
  does not tolerate - a cordon is such a taint). A domain is a topology value seen on a counted node,
  even with no pod in it.
- Filter: ``matching pods in the node's domain + 1 - global minimum <= maxSkew``, where the global
  minimum is the least count over the domains, taken as 0 when there are fewer domains than
  ``minDomains`` (default 1); a node without the topology key is rejected.
- ``matchLabelKeys`` add the incoming pod's values of those keys to the selector.

The other filters a pod meets on its way (taints, required node affinity, free GPUs) are applied by
:func:`schedule` so a test can ask "how many of these replicas run", as the issue measured on a real
scheduler.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"  # what `kubectl cordon` adds (NodeUnschedulable)
_DO_NOT_SCHEDULE_EFFECTS = ("NoSchedule", "NoExecute")


@dataclass(frozen=True)
class Node:
    """A node as the filter sees it: its labels, taints and whether it takes new pods."""

    name: str
    labels: Mapping[str, str]
    taints: tuple[Mapping[str, str], ...] = ()
    gpus: int = 0


@dataclass(frozen=True)
class Pod:
    """A pod already bound to a node (its labels are what the spread counts)."""

    labels: Mapping[str, str]
    node: str
    namespace: str = "default"
    terminating: bool = False
    gpus: int = 0


@dataclass(frozen=True)
class Cluster:
    """The nodes and bound pods the scheduler's snapshot holds."""

    nodes: tuple[Node, ...]
    pods: tuple[Pod, ...] = ()

    def drained(self, label: str, value: str) -> Cluster:
        """Every node with ``label=value`` cordoned (the taint `kubectl cordon` leads to) and its pods
        evicted, as `kubectl drain` does."""
        cordon = {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
        names = {n.name for n in self.nodes if n.labels.get(label) == value}
        return Cluster(
            nodes=tuple(replace(n, taints=(*n.taints, cordon)) if n.name in names else n for n in self.nodes),
            pods=tuple(p for p in self.pods if p.node not in names),
        )

    def without(self, label: str, value: str) -> Cluster:
        """The nodes with ``label=value`` gone, and their pods with them (the pod GC deletes them)."""
        gone = {n.name for n in self.nodes if n.labels.get(label) == value}
        return Cluster(
            nodes=tuple(n for n in self.nodes if n.name not in gone),
            pods=tuple(p for p in self.pods if p.node not in gone),
        )


@dataclass(frozen=True)
class PodSpec:
    """The parts of a pod template the filters read."""

    labels: Mapping[str, str]
    constraints: Sequence[Mapping[str, Any]]
    tolerations: Sequence[Mapping[str, str]] = ()
    required_affinity: Sequence[Mapping[str, Any]] = ()  # matchExpressions of one nodeSelectorTerm
    gpus: int = 0
    namespace: str = "default"

    @staticmethod
    def of(template: Mapping[str, Any], namespace: str, gpus: int) -> PodSpec:
        """Read a Deployment's pod template (``spec.template``)."""
        spec = template["spec"]
        terms = (
            spec.get("affinity", {})
            .get("nodeAffinity", {})
            .get("requiredDuringSchedulingIgnoredDuringExecution", {})
            .get("nodeSelectorTerms", [{}])
        )
        return PodSpec(
            labels=dict(template["metadata"]["labels"]),
            constraints=spec.get("topologySpreadConstraints", []),
            tolerations=spec.get("tolerations", []),
            required_affinity=terms[0].get("matchExpressions", []) if terms else [],
            gpus=gpus,
            namespace=namespace,
        )


def _tolerates(tolerations: Sequence[Mapping[str, str]], taint: Mapping[str, str]) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator", "Equal") == "Exists":
            if not t.get("key") or t["key"] == taint["key"]:
                return True
        elif t.get("key") == taint["key"] and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def untolerated(pod: PodSpec, node: Node) -> bool:
    """A NoSchedule/NoExecute taint on ``node`` the pod does not tolerate (TaintToleration,
    NodeUnschedulable and the Honor taints policy all ask this)."""
    return any(
        t.get("effect") in _DO_NOT_SCHEDULE_EFFECTS and not _tolerates(pod.tolerations, t)
        for t in node.taints
    )


def affinity_matches(pod: PodSpec, node: Node) -> bool:
    """The pod's required node affinity (one term, In/NotIn/Exists/DoesNotExist) holds on ``node``."""
    for expression in pod.required_affinity:
        value = node.labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


def _selector(constraint: Mapping[str, Any], pod: PodSpec) -> dict[str, str]:
    selector = dict(constraint.get("labelSelector", {}).get("matchLabels", {}))
    for key in constraint.get("matchLabelKeys", []):
        if key in pod.labels:
            selector[key] = pod.labels[key]
    return selector


def _counted(constraint: Mapping[str, Any], pod: PodSpec, node: Node) -> bool:
    """common.go's matchNodeInclusionPolicies."""
    if constraint.get("nodeAffinityPolicy", "Honor") == "Honor" and not affinity_matches(pod, node):
        return False
    return not (constraint.get("nodeTaintsPolicy", "Ignore") == "Honor" and untolerated(pod, node))


def hard_constraints(pod: PodSpec) -> list[Mapping[str, Any]]:
    return [c for c in pod.constraints if c["whenUnsatisfiable"] == "DoNotSchedule"]


def domain_counts(cluster: Cluster, pod: PodSpec, constraint: Mapping[str, Any]) -> dict[str, int]:
    """PreFilter: matching pods per topology value, over the nodes this constraint counts."""
    hard = hard_constraints(pod)
    selector = _selector(constraint, pod)
    key = constraint["topologyKey"]
    counts: dict[str, int] = {}
    for node in cluster.nodes:
        if not all(c["topologyKey"] in node.labels for c in hard) or not _counted(constraint, pod, node):
            continue
        value = node.labels[key]
        counts[value] = counts.get(value, 0) + sum(
            1
            for p in cluster.pods
            if p.node == node.name
            and p.namespace == pod.namespace
            and not p.terminating
            and all(p.labels.get(k) == v for k, v in selector.items())
        )
    return counts


def spread_allows(cluster: Cluster, pod: PodSpec, node: Node) -> bool:
    """Filter: whether every hard constraint admits ``pod`` on ``node``."""
    for constraint in hard_constraints(pod):
        key = constraint["topologyKey"]
        if key not in node.labels:
            return False
        counts = domain_counts(cluster, pod, constraint)
        # No domain at all: the critical path keeps its MaxInt32 start, so any node passes.
        minimum = min(counts.values()) if counts else 2**31 - 1
        if len(counts) < int(constraint.get("minDomains", 1)):
            minimum = 0
        selector = _selector(constraint, pod)
        self_match = int(all(pod.labels.get(k) == v for k, v in selector.items()))
        if counts.get(node.labels[key], 0) + self_match - minimum > int(constraint["maxSkew"]):
            return False
    return True


def _free_gpus(cluster: Cluster, node: Node) -> int:
    return node.gpus - sum(p.gpus for p in cluster.pods if p.node == node.name)


def schedule(cluster: Cluster, pod: PodSpec, replicas: int, zone_label: str) -> tuple[Cluster, int]:
    """Place ``replicas`` more pods one at a time, as the scheduler's queue does; return the cluster
    and how many stayed Pending. Among feasible nodes the least-filled zone wins (what the soft
    zone spread scores for); the filters alone decide whether a pod runs."""
    pending = 0
    for _ in range(replicas):
        feasible = [
            n
            for n in cluster.nodes
            if not untolerated(pod, n)
            and affinity_matches(pod, n)
            and _free_gpus(cluster, n) >= pod.gpus
            and spread_allows(cluster, pod, n)
        ]
        if not feasible:
            pending += 1
            continue
        zone_of = {n.name: n.labels.get(zone_label, "") for n in cluster.nodes}
        load = {z: 0 for z in zone_of.values()}
        for p in cluster.pods:
            if p.namespace == pod.namespace:
                load[zone_of[p.node]] += 1
        chosen = min(feasible, key=lambda n: (load[zone_of[n.name]], n.name))
        placed = Pod(labels=dict(pod.labels), node=chosen.name, namespace=pod.namespace, gpus=pod.gpus)
        cluster = replace(cluster, pods=(*cluster.pods, placed))
    return cluster, pending
