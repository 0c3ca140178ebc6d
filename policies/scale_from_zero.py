"""Stack policy: every GPU group can start from zero, for every pod that may land on it.

Each node group's template node is built as cluster-autoscaler's AWS provider builds it, from what
the stack gives the autoscaler: the first instance type, the Auto Scaling group's tags (the
``aws:autoscaling/tag:Tag`` resources on the group's ASG) and, where the autoscaler may call
``eks:DescribeNodegroup``, the managed group's own labels, taints and tags. Every workload pod that
may land there (its node affinity and tolerations against the template's labels and taints) must
fit it together with every DaemonSet that runs there (the stack's own, and those of its charts and
add-ons, ``components/node_agents.py``), on the template and on the node that then joins.

Types only from ``stack_rules`` (it imports this module for ``gpu-capacity`` and ``zone-loss``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inferstack.components.node_agents import NODE_AGENTS
from inferstack.infra.instance_types import INSTANCE_TYPES
from inferstack.infra.node_template import (
    GroupFacts,
    NodeTaint,
    Shortfall,
    TemplateNode,
    may_land,
    pod_requests,
    shortfalls,
    template_node,
)
from inferstack.policies.rule_base import (
    LAUNCH_TEMPLATE,
    NODE_GROUP,
    RELEASE,
    Config,
    listed,
    pod_spec,
    statements,
)

if TYPE_CHECKING:
    from inferstack.policies.stack import Stack, StackResource

ASG_TAG = "aws:autoscaling/tag:Tag"
ADDON = "aws:eks/addon:Addon"
DAEMON_SET = "kubernetes:apps/v1:DaemonSet"
WORKLOADS = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", "kubernetes:batch/v1:Job")
ROLE_POLICIES = ("aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy")
_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}

Violation = tuple[str, str]


def _autoscaler_reads_managed_groups(stack: Stack) -> bool:
    """The autoscaler fills labels, taints and resource tags from DescribeNodegroup only if allowed to."""
    for policy in stack.of_type(*ROLE_POLICIES):
        for statement in statements(policy.props.get("policy")):
            if statement.get("Effect") == "Allow" and "eks:DescribeNodegroup" in listed(
                statement.get("Action")
            ):
                return True
    return False


def _nodefs_gib(stack: Stack, group: StackResource) -> float:
    """The volume the kubelet's file system is on: AL2023's root (xvda), Bottlerocket's data (xvdb)."""
    device = "/dev/xvdb" if str(group.props.get("amiType", "")).startswith("BOTTLEROCKET") else "/dev/xvda"
    for template in stack.input_sources(group, "launchTemplate"):
        if template.type != LAUNCH_TEMPLATE:
            continue
        for mapping in template.props.get("blockDeviceMappings") or []:
            size = (mapping.get("ebs") or {}).get("volumeSize")
            if mapping.get("deviceName") == device and size is not None:
                return float(size)
    return 20.0  # EKS's default disk for a managed group without a launch template volume


def _asg_tags(stack: Stack, group: StackResource) -> dict[str, str]:
    tags: dict[str, str] = {}
    for tag in stack.of_type(ASG_TAG):
        if group in stack.input_sources(tag, "autoscalingGroupName"):
            given = tag.props.get("tag") or {}
            tags[str(given.get("key"))] = str(given.get("value"))
    return tags


def group_node(stack: Stack, group: StackResource, managed: bool) -> TemplateNode | None:
    """The template node of ``group``; None for an instance type the autoscaler would not know either."""
    types = list(group.props.get("instanceTypes") or [])
    instance = INSTANCE_TYPES.get(types[0]) if types else None
    if instance is None:
        return None
    zones = stack.zones_of(group)
    facts = GroupFacts(
        name=group.name,
        instance=instance,
        zone=zones[0] if zones else "unknown-zone-a",
        asg_tags=_asg_tags(stack, group),
        nodefs_gib=_nodefs_gib(stack, group),
        managed_labels=dict(group.props.get("labels") or {}) if managed else {},
        managed_taints=tuple(
            NodeTaint(
                str(t.get("key")), str(t.get("value", "")), _EFFECTS.get(str(t.get("effect")), "NoSchedule")
            )
            for t in group.props.get("taints") or []
        )
        if managed
        else (),
        managed_tags={str(k): str(v) for k, v in (group.props.get("tags") or {}).items()} if managed else {},
    )
    return template_node(facts)


@dataclass(frozen=True)
class Placed:
    """A pod spec the stack puts somewhere, and where it came from."""

    label: str
    spec: Mapping[str, Any]
    urn: str


def daemon_sets(stack: Stack) -> list[Placed]:
    """The stack's own DaemonSets and those its charts and add-ons install."""
    placed = [Placed(f"DaemonSet {d.name}", pod_spec(d.props), d.urn) for d in stack.of_type(DAEMON_SET)]
    charts = {str(r.props.get("chart")) for r in stack.of_type(RELEASE)}
    addons = {str(a.props.get("addonName")) for a in stack.of_type(ADDON)}
    for agent in NODE_AGENTS:
        if agent.installed_by in (charts if agent.source == "chart" else addons):
            placed.append(Placed(f"{agent.name} ({agent.source} {agent.installed_by})", agent.pod, ""))
    return placed


def workloads(stack: Stack) -> list[Placed]:
    return [
        Placed(f"{w.type.rsplit(':', 1)[-1]} {w.name}", pod_spec(w.props), w.urn)
        for w in stack.of_type(*WORKLOADS)
    ]


@dataclass(frozen=True)
class Fit:
    """A pod on a GPU group's template node beside its DaemonSets, and what does not fit."""

    group: StackResource
    node: TemplateNode
    pod: Placed
    agents: tuple[Placed, ...]  # the DaemonSets that land on the node too

    @functools.cached_property  # asked by every rule that reads the fit
    def missing(self) -> list[Shortfall]:
        return shortfalls(self.node, [pod_requests(p.spec) for p in (self.pod, *self.agents)])


def fits(stack: Stack) -> list[Fit]:
    """For every GPU node group, every workload pod that may land on it, with that group's DaemonSets."""
    managed = _autoscaler_reads_managed_groups(stack)
    agents = daemon_sets(stack)
    pods = workloads(stack)
    found: list[Fit] = []
    for group, _gpus, _zones in stack.gpu_groups():
        if group.type != NODE_GROUP:
            continue  # a NodePool: Karpenter picks instance types for the pods, no template node
        node = group_node(stack, group, managed)
        if node is None:
            continue
        there = tuple(a for a in agents if may_land(a.spec, node))
        found += [Fit(group, node, pod, there) for pod in pods if may_land(pod.spec, node)]
    return found


def reachable_groups(stack: Stack) -> set[str]:
    """URNs of the GPU groups the autoscaler can start from zero for at least one pod of the stack."""
    return {f.group.urn for f in fits(stack) if not f.missing}


def node_template_fits(stack: Stack, config: Config) -> list[Violation]:
    """Every pod that may land on a GPU group fits the group's template node with its DaemonSets."""
    problems: list[Violation] = []
    for fit in fits(stack):
        if fit.missing:
            problems.append(
                (
                    f"{fit.pod.label} does not fit node group {fit.group.name} scaled up from zero, beside "
                    f"{len(fit.agents)} DaemonSet(s): " + "; ".join(str(m) for m in fit.missing),
                    fit.group.urn,
                )
            )
    return problems
