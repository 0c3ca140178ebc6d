"""Stack rules on GPU capacity: enough of it after losing a zone, over enough zones, scaled objects that
cover them, complete model services, and interruptions that reach Karpenter."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from inferstack.infra.interruptions import INTERRUPTION_EVENTS
from inferstack.policies.rule_base import (
    DEPLOYMENT,
    NODE_GROUP,
    NODE_POOL,
    QUEUE,
    Config,
    gpus_of,
    pod_spec,
)
from inferstack.policies.stack import (
    EVENT_TARGET,
    PDB,
    RELEASE_TYPES,
    SCALED_OBJECT,
    ZONE_LABEL,
    Stack,
    StackResource,
    Violation,
    replica_bounds,
    resource_label,
    resource_namespace,
)
from inferstack.policies.stack_access import chart_name

# --- capacity and zones -----------------------------------------------------------------------------


def gpu_capacity(stack: Stack, config: Config) -> list[Violation]:
    """Every service's minimum fits GPU capacity with the largest zone lost; every maximum fits it all."""
    demand_min = demand_max = 0.0
    services = 0
    for deployment in stack.of_type(DEPLOYMENT):
        per_replica = sum(gpus_of(c) for c in pod_spec(deployment.props).get("containers") or [])
        if per_replica:
            low, high = replica_bounds(stack, deployment)
            demand_min += low * per_replica
            demand_max += high * per_replica
            services += 1
    if not services:
        return []
    capacity = stack.gpu_capacity_by_zone()
    if not capacity:
        return [
            (
                f"{services} GPU service(s) need {demand_min:g} GPUs, but the stack has no GPU NodePool, nor "
                "node group the autoscaler can start from zero for them (see node-template-fits)",
                "",
            )
        ]
    total = sum(capacity.values())
    worst_zone, worst = max(sorted(capacity.items()), key=lambda item: item[1])
    problems: list[Violation] = []
    if demand_min > total - worst:
        problems.append(
            (
                f"{services} GPU service(s) need {demand_min:g} GPUs at their minimum replicas, but losing "
                f"{worst_zone} ({worst:g} GPUs) leaves {total - worst:g} of the node groups' {total:g} "
                "at maximum size",
                "",
            )
        )
    if demand_max > total:
        problems.append(
            (
                f"{services} GPU service(s) scale to {demand_max:g} GPUs at their maximum replicas, but the "
                f"GPU node groups reach only {total:g}",
                "",
            )
        )
    return problems


def zone_loss(stack: Stack, config: Config) -> list[Violation]:
    """Losing any one zone keeps a share of GPU capacity, and Triton pods are spread over zones."""
    problems: list[Violation] = []
    capacity = stack.gpu_capacity_by_zone()
    total = sum(capacity.values())
    minimum = float(config["minSurvivingShare"])
    if capacity and len([z for z, c in capacity.items() if c > 0]) < 2:
        problems.append((f"all GPU capacity is in {sorted(capacity)}: one zone down stops serving", ""))
    elif total:
        for zone, in_zone in sorted(capacity.items()):
            share = (total - in_zone) / total
            if share < minimum:
                problems.append((f"losing {zone} leaves {share:.2f} of GPU capacity, below {minimum:g}", ""))
    for deployment in stack.tritons():
        spreads = pod_spec(deployment.props).get("topologySpreadConstraints") or []
        if not any(s.get("topologyKey") == ZONE_LABEL for s in spreads):
            problems.append(
                (
                    f"{resource_label(deployment)} does not spread its pods over zones ({ZONE_LABEL})",
                    deployment.urn,
                )
            )
        problems += [(f"{resource_label(deployment)}: {p}", deployment.urn) for p in zone_loss_caps(spreads)]
    return problems


def zone_loss_caps(spreads: list[dict[str, Any]]) -> list[str]:
    """A hard zone spread that would hold the surviving zones to the lost zone's count (see
    components/topology_spread.py for the scheduler's rule)."""
    problems = []
    for spread in spreads:
        if spread.get("topologyKey") != ZONE_LABEL or spread.get("whenUnsatisfiable") != "DoNotSchedule":
            continue
        if int(spread.get("minDomains") or 1) > 1:
            problems.append(
                f"zone spread sets minDomains {spread['minDomains']}: with a zone lost the scheduler takes "
                "the global minimum as 0 and the surviving zones hold one replica each; leave it unset"
            )
        if spread.get("nodeTaintsPolicy", "Ignore") != "Honor":
            problems.append(
                "zone spread does not set nodeTaintsPolicy: Honor: a cordoned or unreachable zone "
                "still counts, empty, and caps the others at maxSkew replicas"
            )
    return problems


def zones(stack: Stack, config: Config) -> list[Violation]:
    """Nodes span at least the configured number of zones (2; 3 in prod)."""
    capacity = stack.of_type(NODE_GROUP, NODE_POOL)
    spanned = {z for group in capacity for z in stack.zones_of(group)}
    minimum = int(config["minimum"])
    if capacity and len(spanned) < minimum:
        return [(f"node groups span {len(spanned)} zone(s) {sorted(spanned)}; at least {minimum}", "")]
    return []


def scaled_object_covers_zones(stack: Stack, config: Config) -> list[Violation]:
    """A service's minimum keeps a replica in every GPU zone, so a zone loss is not an outage."""
    count = len(stack.gpu_zones())
    problems = []
    for scaler in stack.of_type(SCALED_OBJECT):
        minimum = float((scaler.props.get("spec") or {}).get("minReplicaCount", 0))
        if minimum < count:
            problems.append(
                (
                    f"{resource_label(scaler)}: minReplicaCount {minimum:g} is below the {count} GPU zones",
                    scaler.urn,
                )
            )
    return problems


def model_service_complete(stack: Stack, config: Config) -> list[Violation]:
    """Every Triton Deployment has a PodDisruptionBudget selecting its pods and a ScaledObject."""
    problems: list[Violation] = []
    for deployment in stack.tritons():
        labels = _template_metadata(deployment).get("labels") or {}
        budgets = [
            p
            for p in stack.of_type(PDB)
            if resource_namespace(p) == resource_namespace(deployment)
            and _selects((p.props.get("spec") or {}).get("selector") or {}, labels)
        ]
        if not budgets:
            problems.append((f"{resource_label(deployment)} has no PodDisruptionBudget", deployment.urn))
        if stack.scaled_object_for(deployment) is None:
            problems.append((f"{resource_label(deployment)} has no ScaledObject", deployment.urn))
    return problems


def _template_metadata(deployment: StackResource) -> Mapping[str, Any]:
    metadata: Mapping[str, Any] = ((deployment.props.get("spec") or {}).get("template") or {}).get(
        "metadata"
    ) or {}
    return metadata


def _selects(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    match = selector.get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


# --- interruptions ---------------------------------------------------------------------------------


def _event_pattern(text: Any) -> Mapping[str, Any]:
    try:
        pattern = json.loads(str(text or "{}"))
    except json.JSONDecodeError:
        return {}
    return pattern if isinstance(pattern, Mapping) else {}


def karpenter_interruptions(stack: Stack, config: Config) -> list[Violation]:
    """Karpenter reads an interruption queue of this stack that every documented event reaches."""
    problems: list[Violation] = []
    for controller in stack.of_type(*RELEASE_TYPES):
        if chart_name(controller.props.get("chart")) != "karpenter":
            continue
        settings = ((controller.props.get("values") or {}).get("settings")) or {}
        name = settings.get("interruptionQueue")
        if not name:
            problems.append(
                (
                    f"{resource_label(controller)} has no interruption queue "
                    "(settings.interruptionQueue): spot "
                    "reclaims and scheduled events take its nodes without a drain",
                    controller.urn,
                )
            )
            continue
        queues = [q for q in stack.of_type(QUEUE) if q.props.get("name") == name]
        if not queues:
            problems.append(
                (
                    f"{resource_label(controller)} reads queue {name!r}, which this stack does not create",
                    controller.urn,
                )
            )
            continue
        delivered = set()
        for target in stack.of_type(EVENT_TARGET):
            if {q.urn for q in queues} & set(target.property_dependencies.get("arn", ())):
                for rule in stack.input_sources(target, "rule"):
                    pattern = _event_pattern(rule.props.get("eventPattern"))
                    delivered |= {
                        (s, d) for s in pattern.get("source", []) for d in pattern.get("detail-type", [])
                    }
        missing = [f"{s}: {d}" for _, s, d in INTERRUPTION_EVENTS if (s, d) not in delivered]
        if missing:
            problems.append((f"queue {name!r} does not receive {missing}", controller.urn))
    return problems
