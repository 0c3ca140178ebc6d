"""The GPU layer: NVIDIA's device plugin (GPUs become schedulable) and DCGM exporter (GPUs become visible)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from inferstack.components.charts import (
    DCGM_EXPORTER,
    DCGM_EXPORTER_IMAGE_TAG,
    DEVICE_PLUGIN_IMAGE_TAG,
    NVIDIA_DEVICE_PLUGIN,
    release,
)
from inferstack.components.manifests import namespace
from inferstack.infra.errors import InvalidInput
from inferstack.infra.nodegroups import GPU_PRESENT_LABEL, GPU_TAINT_KEY

GPU_TOLERATION = {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
GPU_NODE_SELECTOR = {GPU_PRESENT_LABEL: "true"}


def device_plugin_values(time_slicing_replicas: int | None) -> dict[str, Any]:
    """Runs only on GPU nodes; with time-slicing, each GPU is advertised as ``replicas`` shares."""
    values: dict[str, Any] = {
        "image": {"tag": DEVICE_PLUGIN_IMAGE_TAG},
        "nodeSelector": GPU_NODE_SELECTOR,
        "tolerations": [GPU_TOLERATION],
    }
    if time_slicing_replicas is not None:
        sharing = {
            "version": "v1",
            "sharing": {
                "timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": time_slicing_replicas}]}
            },
        }
        values["config"] = {"map": {"default": yaml.safe_dump(sharing)}, "default": "default"}
    return values


# The exporter labels each GPU's series with the namespace/pod/container of the pod holding it.
# Prometheus would also attach the exporter pod's own namespace/pod/container as target labels and,
# by default (honorLabels false), rename the exporter's to exported_namespace/exported_pod: every
# per-service GPU query (dashboards, alerts, KEDA's GPU trigger) would then match nothing. Honouring
# the exporter's labels is not enough on its own: a GPU that no pod holds has none, and would be
# stamped with the exporter pod's. So the target's copies are dropped before the scrape.
DCGM_TARGET_LABELS_DROPPED = "namespace|pod|container"


def dcgm_exporter_values() -> dict[str, Any]:
    """On every GPU node, with a ServiceMonitor that the cluster's Prometheus selects."""
    return {
        "image": {"tag": DCGM_EXPORTER_IMAGE_TAG},
        "nodeSelector": GPU_NODE_SELECTOR,
        "tolerations": [GPU_TOLERATION],
        "serviceMonitor": {
            "enabled": True,
            "interval": "15s",
            "honorLabels": True,
            "relabelings": [{"action": "labeldrop", "regex": DCGM_TARGET_LABELS_DROPPED}],
            "additionalLabels": {"release": "kube-prometheus-stack"},
        },
    }


@dataclass
class GpuOperatorsArgs:
    provider: k8s.Provider
    namespace: str = "gpu-operators"
    time_slicing_replicas: int | None = None  # None: one pod per GPU


class GpuOperators(pulumi.ComponentResource):
    namespace: pulumi.Output[str]

    def __init__(self, name: str, args: GpuOperatorsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        if args.time_slicing_replicas is not None and not 2 <= args.time_slicing_replicas <= 48:
            raise InvalidInput(
                "time_slicing_replicas", args.time_slicing_replicas, "None, or 2 to 48 shares per GPU"
            )
        super().__init__("inferstack:gpu:GpuOperators", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        ns = namespace(f"{name}-ns", args.namespace, child)
        after_namespace = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=[ns])
        release(
            f"{name}-device-plugin",
            NVIDIA_DEVICE_PLUGIN,
            namespace=args.namespace,
            values=device_plugin_values(args.time_slicing_replicas),
            opts=after_namespace,
        )
        release(
            f"{name}-dcgm-exporter",
            DCGM_EXPORTER,
            namespace=args.namespace,
            values=dcgm_exporter_values(),
            opts=after_namespace,
        )
        self.namespace = ns.metadata.apply(lambda m: m.name or args.namespace)
        self.register_outputs({"namespace": self.namespace})
