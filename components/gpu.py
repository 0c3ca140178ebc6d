"""The GPU layer: NVIDIA's device plugin (GPUs become schedulable) and DCGM exporter (GPUs become visible).

Bottlerocket's NVIDIA variants run the device plugin as part of the OS; a second one from the chart
would advertise the same GPUs twice, so the chart's plugin is installed only for AL2023 GPU nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import yaml

from inferstack.components.charts import (
    DCGM_EXPORTER,
    DCGM_EXPORTER_IMAGE_TAG,
    DEVICE_PLUGIN_IMAGE_TAG,
    NVIDIA_DEVICE_PLUGIN,
    release,
)
from inferstack.components.manifests import namespace
from inferstack.infra.children import child_options
from inferstack.infra.errors import InvalidInput
from inferstack.infra.nodegroups import GPU_AMI_TYPES, GPU_PRESENT_LABEL, GPU_TAINT_KEY, AmiType

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


def _bottlerocket(ami_type: str) -> bool:
    return ami_type.startswith("BOTTLEROCKET")


def needs_device_plugin(gpu_ami_types: Sequence[str]) -> bool:
    """Whether the GPU nodes need the chart's device plugin: AL2023 does, Bottlerocket brings its own.

    One family for every GPU group: the DaemonSet could not tell the two apart by any node label.
    """
    if not gpu_ami_types or any(t not in GPU_AMI_TYPES for t in gpu_ami_types):
        raise InvalidInput("gpu_ami_types", list(gpu_ami_types), f"one or more of {', '.join(GPU_AMI_TYPES)}")
    families = {_bottlerocket(t) for t in gpu_ami_types}
    if len(families) > 1:
        raise InvalidInput(
            "gpu_ami_types",
            sorted(set(gpu_ami_types)),
            "one AMI family (AL2023 or Bottlerocket) for all GPU groups",
        )
    return not families.pop()


@dataclass
class GpuOperatorsArgs:
    """Where the GPU operators run, GPU time-slicing, and the GPU node groups' AMI types."""

    namespace: str = "gpu-operators"
    time_slicing_replicas: int | None = None  # None: one pod per GPU
    # The AMI types of the GPU node groups: Bottlerocket runs its own device plugin.
    gpu_ami_types: Sequence[AmiType] = field(default_factory=lambda: ["AL2023_x86_64_NVIDIA"])


class GpuOperators(pulumi.ComponentResource):
    """The NVIDIA device plugin (except on Bottlerocket, which brings its own) and the DCGM exporter."""

    namespace: pulumi.Output[str]

    def __init__(self, name: str, args: GpuOperatorsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        if args.time_slicing_replicas is not None and not 2 <= args.time_slicing_replicas <= 48:
            raise InvalidInput(
                "time_slicing_replicas", args.time_slicing_replicas, "None, or 2 to 48 shares per GPU"
            )
        device_plugin = needs_device_plugin(args.gpu_ami_types)
        if args.time_slicing_replicas is not None and not device_plugin:
            raise InvalidInput(
                "time_slicing_replicas",
                args.time_slicing_replicas,
                "None on Bottlerocket: its own device plugin takes time-slicing from the node settings",
            )
        super().__init__("inferstack:gpu:GpuOperators", name, None, opts)
        ns = namespace(f"{name}-ns", args.namespace, child_options(self, opts))
        after_namespace = child_options(self, opts, after=[ns])
        if device_plugin:
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
