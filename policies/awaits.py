"""Stack policy: every resource Pulumi waits on is given as long as what it waits for takes.

What each kind waits for is read from the resource itself (pulumi-kubernetes' await logic): a
workload its pods (a node, the largest image, the start-up its probes allow; a rollout one
``maxSurge`` batch after another up to the ScaledObject's maximum); a Service with a selector a
ready pod of the workloads it selects (and an NLB address if it is a LoadBalancer); a Helm release
its chart's pods and volumes. The budget is ``components/awaits.py``; the timeout is the resource's
``customTimeouts`` (the engine's default where unset) or the release's ``timeout``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from inferstack.components.awaits import (
    DEFAULT_AWAIT_S,
    HELM_DEFAULT_TIMEOUT_S,
    LOAD_BALANCER_S,
    SKIP_AWAIT,
    WAIT_FOR,
    claims_volumes,
    release_timeout_s,
    workload_waits_s,
)
from inferstack.policies.rules import RELEASE, Config, namespace_of

if TYPE_CHECKING:
    from inferstack.policies.stack_rules import Stack, StackResource

SERVICE = "kubernetes:core/v1:Service"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
DAEMON_SET = "kubernetes:apps/v1:DaemonSet"
Violation = tuple[str, str]


def _annotations(resource: StackResource) -> Mapping[str, Any]:
    return (resource.props.get("metadata") or {}).get("annotations") or {}


def _skipped(resource: StackResource) -> bool:
    return str(_annotations(resource).get(SKIP_AWAIT, "")).lower() == "true"


def _max_replicas(stack: Stack, workload: StackResource) -> int:
    """The most replicas a workload runs: its ScaledObject's maximum when KEDA scales it."""
    replicas = int(float((workload.props.get("spec") or {}).get("replicas", 1)))
    scaler = stack.scaled_object_for(workload)
    if scaler is None:
        return replicas
    return max(replicas, int(float((scaler.props.get("spec") or {}).get("maxReplicaCount", 100))))


def workload_waits(stack: Stack, workload: StackResource) -> dict[str, int]:
    """Seconds a workload's create and update take at most, at the most replicas it may run."""
    stateful = workload.type == STATEFUL_SET
    return workload_waits_s(
        workload.props.get("spec") or {}, _max_replicas(stack, workload), stateful=stateful
    )


def _selected(stack: Stack, service: StackResource) -> list[StackResource]:
    selector = (service.props.get("spec") or {}).get("selector") or {}
    found = []
    for workload in stack.of_type(DEPLOYMENT, STATEFUL_SET):
        labels = (((workload.props.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
            "labels"
        )
        same_cluster = workload.provider == service.provider
        if (
            same_cluster
            and namespace_of(workload.props) == namespace_of(service.props)
            and all((labels or {}).get(k) == v for k, v in selector.items())
        ):
            found.append(workload)
    return found


def _timeout(resource: StackResource, operation: str) -> float:
    return float(resource.custom_timeouts.get(operation) or DEFAULT_AWAIT_S)


def _short(resource: StackResource, needed: Mapping[str, int], what: str) -> list[Violation]:
    label = f"{resource.type.rsplit(':', 1)[-1]} {resource.name}"
    return [
        (
            f"{label} waits for {what}, up to {seconds} s on {operation}, but Pulumi gives up after "
            f"{_timeout(resource, operation):g} s (customTimeouts.{operation})",
            resource.urn,
        )
        for operation, seconds in needed.items()
        if _timeout(resource, operation) < seconds
    ]


def _service_problems(stack: Stack, service: StackResource) -> list[Violation]:
    spec = service.props.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    if kind == "ExternalName" or spec.get("clusterIP") == "None" or not spec.get("selector"):
        return []  # pulumi-kubernetes waits for no endpoints of these
    if WAIT_FOR in _annotations(service):
        needed = LOAD_BALANCER_S if kind == "LoadBalancer" else 0
        return _short(service, {"create": needed, "update": needed}, "its load balancer") if needed else []
    workloads = _selected(stack, service)
    if not workloads:
        return [
            (
                f"Service {service.name} waits for ready pods no workload of this stack (in this cluster) "
                f"creates: skip its await ({SKIP_AWAIT}) or wait for what it needs ({WAIT_FOR})",
                service.urn,
            )
        ]
    start = min(workload_waits(stack, w)["create"] for w in workloads)
    if kind == "LoadBalancer":
        start += LOAD_BALANCER_S
    return _short(service, {"create": start, "update": start}, "a ready pod")


def await_covers_wait(stack: Stack, config: Config) -> list[Violation]:
    """Every awaited resource's timeout covers what it waits for."""
    problems: list[Violation] = []
    for resource in stack.resources:
        if _skipped(resource):
            continue
        if resource.type in (DEPLOYMENT, STATEFUL_SET):
            problems += _short(resource, workload_waits(stack, resource), "its pods")
        elif resource.type == DAEMON_SET:
            problems.append(
                (
                    f"DaemonSet {resource.name} is awaited, and its rollout waits for a pod on every node "
                    f"the autoscaler may add, one batch at a time: skip its await ({SKIP_AWAIT})",
                    resource.urn,
                )
            )
        elif resource.type == SERVICE:
            problems += _service_problems(stack, resource)
        elif resource.type == RELEASE and not resource.props.get("skipAwait"):
            needed = release_timeout_s(volumes=claims_volumes(resource.props.get("values")))
            given = float(resource.props.get("timeout") or HELM_DEFAULT_TIMEOUT_S)
            if given < needed:
                problems.append(
                    (
                        f"Release {resource.name} waits for its chart's pods (and volumes), up to "
                        f"{needed} s, but helm gives up after {given:g} s (timeout)",
                        resource.urn,
                    )
                )
    return problems
