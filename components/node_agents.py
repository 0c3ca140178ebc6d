"""The DaemonSets that charts and EKS add-ons put on every node they tolerate, as pod specs the
node-template fit can place (``inferstack.infra.node_template``).

The stack records a chart as one Release and an add-on as one Addon, not their pods: these are their
pods' placement and requests. Chart entries are what the pinned charts render with our values
(``tests/components/test_node_agents.py`` renders them with the real helm and holds this table to
them); add-on entries are the add-ons' published defaults, which the stack does not override.
Pure data: the policy pack imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Literals, not imports: this module must not load the Pulumi components that define them.
_GPU_NODES = {"nvidia.com/gpu.present": "true"}
_GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
_EVERYWHERE = [{"operator": "Exists"}]


@dataclass(frozen=True)
class NodeAgent:
    """A DaemonSet that runs on GPU nodes, with what it requests of each node."""

    name: str  # the DaemonSet's name as rendered
    source: str  # "chart" or "addon"
    installed_by: str  # the chart name of a Release, or the add-on name of an Addon
    pod: dict[str, Any]  # the pod spec's placement (nodeSelector, affinity, tolerations) and containers


def _containers(*requests: dict[str, str]) -> list[dict[str, Any]]:
    return [{"resources": {"requests": r}} if r else {} for r in requests]


NODE_AGENTS: tuple[NodeAgent, ...] = (
    NodeAgent(
        "fluent-bit",
        "chart",
        "fluent-bit",
        # components/telemetry/values.py: every taint tolerated, so it ships the GPU nodes' logs too.
        {"tolerations": _EVERYWHERE, "containers": _containers({"cpu": "50m", "memory": "64Mi"})},
    ),
    NodeAgent(
        "nvidia-device-plugin",
        "chart",
        "nvidia-device-plugin",
        # No requests in the chart's defaults; ours sets none.
        {"nodeSelector": _GPU_NODES, "tolerations": [_GPU_TOLERATION], "containers": _containers({})},
    ),
    NodeAgent(
        "dcgm-exporter",
        "chart",
        "dcgm-exporter",
        {
            "nodeSelector": _GPU_NODES,
            "tolerations": [_GPU_TOLERATION],
            "containers": _containers({"cpu": "100m", "memory": "128Mi"}),
        },
    ),
    NodeAgent(
        "kube-prometheus-stack-prometheus-node-exporter",
        "chart",
        "kube-prometheus-stack",
        # The subchart tolerates every NoSchedule taint and requests nothing by default.
        {
            "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
            "containers": _containers({}),
        },
    ),
    # EKS add-ons at their defaults: every node, every taint tolerated.
    NodeAgent(
        "kube-proxy",
        "addon",
        "kube-proxy",
        {"tolerations": _EVERYWHERE, "containers": _containers({"cpu": "100m"})},
    ),
    NodeAgent(
        "aws-node",
        "addon",
        "vpc-cni",
        {"tolerations": _EVERYWHERE, "containers": _containers({"cpu": "25m"}, {})},
    ),
    NodeAgent(
        "ebs-csi-node",
        "addon",
        "aws-ebs-csi-driver",
        # ebs-plugin, node-driver-registrar, liveness-probe
        {
            "tolerations": _EVERYWHERE,
            "containers": _containers(*[{"cpu": "10m", "memory": "40Mi"}] * 3),
        },
    ),
    NodeAgent(
        "eks-pod-identity-agent",
        "addon",
        "eks-pod-identity-agent",
        # Its requests are not published with the add-on: counted as a small agent, to err towards refusing.
        {"tolerations": _EVERYWHERE, "containers": _containers({"cpu": "25m", "memory": "64Mi"})},
    ),
)
