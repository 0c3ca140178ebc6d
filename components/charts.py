"""The Helm charts inferstack installs, pinned to exact versions, and the images pinned with them.

Bumping a chart here is the whole upgrade: tests check every value we set against that version's
own defaults (vendored), so a key the new chart renamed fails before it reaches a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from inferstack.components.awaits import claims_volumes, release_timeout_s


@dataclass(frozen=True)
class Chart:
    name: str
    repository: str
    version: str

    @property
    def vendored(self) -> str:
        """The folder name of this chart's default values under shared/vendor/charts."""
        return f"{self.name}-{self.version}"


KUBE_PROMETHEUS_STACK = Chart(
    "kube-prometheus-stack", "https://prometheus-community.github.io/helm-charts", "88.5.3"
)
KEDA = Chart("keda", "https://kedacore.github.io/charts", "2.20.2")
DCGM_EXPORTER = Chart("dcgm-exporter", "https://nvidia.github.io/dcgm-exporter/helm-charts", "4.8.2")
NVIDIA_DEVICE_PLUGIN = Chart("nvidia-device-plugin", "https://nvidia.github.io/k8s-device-plugin", "0.20.0")
CLUSTER_AUTOSCALER = Chart("cluster-autoscaler", "https://kubernetes.github.io/autoscaler", "9.59.0")
CHARTS = (KUBE_PROMETHEUS_STACK, KEDA, DCGM_EXPORTER, NVIDIA_DEVICE_PLUGIN, CLUSTER_AUTOSCALER)

# Charts whose image tag defaults to "" (the chart's appVersion) get it spelled out, so what runs
# is readable in the stack and checkable by policy.
KEDA_IMAGE_TAG = "2.20.2"
DEVICE_PLUGIN_IMAGE_TAG = "v0.20.0"
DCGM_EXPORTER_IMAGE_TAG = "4.5.3-4.8.2-distroless"
CLUSTER_AUTOSCALER_IMAGE_TAG = "v1.35.0"  # the minor must equal the cluster's Kubernetes minor
PROMETHEUS_OPERATOR_IMAGE_TAG = "v0.93.1"  # operator, config reloader and admission webhook


def release(
    name: str,
    chart: Chart,
    *,
    namespace: pulumi.Input[str],
    values: dict[str, object],
    opts: pulumi.ResourceOptions,
) -> k8s.helm.v3.Release:
    """A Helm release of a pinned chart: a custom resource whose chart, version and values are inspectable."""
    return k8s.helm.v3.Release(
        name,
        k8s.helm.v3.ReleaseArgs(
            name=chart.name,
            chart=chart.name,
            version=chart.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=chart.repository),
            namespace=namespace,
            values=values,
            atomic=True,  # a failed upgrade rolls back instead of leaving half a release
            cleanup_on_fail=True,
            # helm's wait, which Pulumi's await is: the chart's pods, and its volumes where it claims any.
            timeout=release_timeout_s(volumes=claims_volumes(values)),
        ),
        opts=opts,
    )
