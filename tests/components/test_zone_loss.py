"""A zone outage keeps capacity: the generated spread constraints, run through the scheduler's own
PodTopologySpread rule (components/topology_spread.py), on nodes shaped like the stack's node groups.

The old constraints (DoNotSchedule, maxSkew 1, minDomains 3) are evaluated too: the evaluator must
reproduce what the issue measured on a real 1.35 scheduler (scaled to 6 during the loss, 2 ran and 4
stayed Pending), or it is not the scheduler's rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from inferstack.components.model_service import TritonModelServiceArgs
from inferstack.components.model_service.args import ModelSource
from inferstack.components.model_service.pod import deployment
from inferstack.components.topology_spread import Cluster, Node, PodSpec, domain_counts, schedule
from inferstack.infra.instance_types import lookup
from inferstack.infra.node_plans import ZONE_LABEL, NodeGroupPlan, gpu_plans, gpu_spot_plans, system_plans

ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
LOST = ZONES[2]
NS = "ranker"
# What DefaultTolerationSeconds adds to every pod: NotReady/unreachable NoExecute for 300 s.
DEFAULT_TOLERATIONS = [
    {
        "key": f"node.kubernetes.io/{k}",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": "300",
    }
    for k in ("not-ready", "unreachable")
]


def _nodes(plan: NodeGroupPlan, count: int) -> list[Node]:
    taints = tuple({"key": t.key, "value": t.value, "effect": t.kubernetes_effect} for t in plan.taints)
    gpus = lookup(plan.instance_types[0], field="instance_type").gpus
    return [
        Node(f"{plan.name}-{i}", {**plan.labels, ZONE_LABEL: plan.zones[0]}, taints, gpus)
        for i in range(count)
    ]


def cluster(gpu_zones: tuple[str, ...] = ZONES) -> Cluster:
    """One system node per zone (the plan's minimum), every GPU node a zone's groups can reach."""
    nodes: list[Node] = []
    for plan in system_plans(ZONES):
        nodes += _nodes(plan, plan.min_size)
    for plan in [*gpu_plans(ZONES), *gpu_spot_plans(ZONES)]:
        nodes += _nodes(plan, plan.max_size if plan.zones[0] in gpu_zones else 0)
    return Cluster(nodes=tuple(nodes))


def pod(environment: str = "prod", constraints: list[dict[str, Any]] | None = None) -> PodSpec:
    args = TritonModelServiceArgs(
        models=["ranker"],
        source=ModelSource(role_arn="arn:aws:iam::123456789012:role/r", repository_uri="s3://b/ranker"),
        zones=len(ZONES),
        environment=environment,
    )
    template = deployment(NS, args, "s3://b/ranker")["spec"]["template"]
    template["metadata"]["labels"]["pod-template-hash"] = "7d9f"  # what the ReplicaSet adds
    template["spec"]["tolerations"] = [*template["spec"]["tolerations"], *DEFAULT_TOLERATIONS]
    if constraints is not None:
        template["spec"]["topologySpreadConstraints"] = constraints
    return PodSpec.of(template, NS, args.gpus_per_replica)


def old_constraints() -> list[dict[str, Any]]:
    """main's prod zone constraint before this change: minDomains, default inclusion policies."""
    zone, host = pod().constraints
    old = {k: v for k, v in zone.items() if k not in ("nodeAffinityPolicy", "nodeTaintsPolicy")}
    return [{**old, "minDomains": len(ZONES)}, dict(host)]


def per_zone(c: Cluster) -> dict[str, int]:
    zone_of = {n.name: n.labels[ZONE_LABEL] for n in c.nodes}
    counts = dict.fromkeys(sorted({n.labels[ZONE_LABEL] for n in c.nodes}), 0)
    for p in c.pods:
        counts[zone_of[p.node]] += 1
    return counts


def unreachable(c: Cluster) -> Cluster:
    """The node lifecycle controller's taints on every node of the lost zone once it stops answering,
    and its pods terminating once their 300 s toleration runs out (they stay, stuck, on the nodes)."""
    added = tuple({"key": "node.kubernetes.io/unreachable", "effect": e} for e in ("NoSchedule", "NoExecute"))
    lost = {n.name for n in c.nodes if n.labels[ZONE_LABEL] == LOST}
    return Cluster(
        nodes=tuple(
            dataclasses.replace(n, taints=(*n.taints, *added)) if n.name in lost else n for n in c.nodes
        ),
        pods=tuple(dataclasses.replace(p, terminating=p.node in lost) for p in c.pods),
    )


LOSSES = {
    "cordoned and drained": lambda c: c.drained(ZONE_LABEL, LOST),
    "nodes gone": lambda c: c.without(ZONE_LABEL, LOST),
    "unreachable": unreachable,
}


def serving(c: Cluster) -> int:
    return sum(1 for p in c.pods if not p.terminating)


def test_all_zones_healthy_spreads_evenly() -> None:
    placed, pending = schedule(cluster(), pod(), 6, ZONE_LABEL)
    assert pending == 0 and per_zone(placed) == dict.fromkeys(ZONES, 2)


def test_a_zone_at_zero_gpus_still_draws_its_share() -> None:
    """Normal times, GPU groups at zero: the system node makes the zone count, so the second replica
    cannot join the first zone's GPUs and waits for the autoscaler to add one where the skew allows."""
    placed, pending = schedule(cluster(gpu_zones=ZONES[:1]), pod(), 3, ZONE_LABEL)
    assert (per_zone(placed)[ZONES[0]], pending) == (1, 2)
    # The autoscaler's simulation runs the same filter on a template node of each group: the other
    # zones' groups fit the waiting pods, the first zone's does not.
    spec = pod()
    zone_counts = domain_counts(placed, spec, spec.constraints[0])
    assert zone_counts == {ZONES[0]: 1, ZONES[1]: 0, ZONES[2]: 0}


@pytest.mark.parametrize("loss", LOSSES)
def test_surviving_zones_take_every_replica(loss: str) -> None:
    before, _ = schedule(cluster(), pod(), 6, ZONE_LABEL)
    lost = LOSSES[loss](before)
    assert serving(lost) == 4
    after, pending = schedule(lost, pod(), 2, ZONE_LABEL)  # the ReplicaSet's replacements
    assert pending == 0 and serving(after) == 6
    # Scale-out during the loss: the autoscaler asks for twelve; the two surviving zones take them all.
    grown, pending = schedule(after, pod(), 6, ZONE_LABEL)
    survivors = {z: n for z, n in per_zone(grown).items() if z != LOST}
    assert pending == 0 and survivors == {ZONES[0]: 6, ZONES[1]: 6}


@pytest.mark.parametrize("loss", LOSSES)
def test_the_old_constraints_capped_a_zone_loss(loss: str) -> None:
    """The evaluator reproduces the issue's measurement: 3 replicas, a zone lost, scaled to 6: 2 run."""
    old = pod(constraints=old_constraints())
    before, _ = schedule(cluster(), old, 3, ZONE_LABEL)
    lost = LOSSES[loss](before)
    after, pending = schedule(lost, old, 6 - serving(lost), ZONE_LABEL)
    assert (serving(after), pending) == (2, 4)
