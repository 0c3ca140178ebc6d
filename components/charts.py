"""The Helm charts inferstack installs, pinned to exact versions, and the images pinned with them.

Bumping a chart here upgrades it: tests check every value we set against that version's own
defaults (vendored), so a key the new chart renamed fails before it reaches a cluster. Helm itself
installs a chart's ``crds/`` folder once and never upgrades it (kube-prometheus-stack's README says
so), so a chart with CRDs there names them (``crd_files``): Pulumi applies them from the chart's
source at the chart's own version before the release, and the release skips them. A test keeps
``crd_files`` equal to the vendored chart's folder, so a bump whose CRD set changed fails until
the list follows.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from inferstack.components.awaits import claims_volumes, release_timeout_s


@dataclass(frozen=True)
class Chart:
    """A pinned Helm chart: name, repository and exact version."""

    name: str
    repository: str
    version: str
    # CRDs Helm would install once and never upgrade: files of the chart's crds/ folder, and where
    # that folder is published for a version ({version} and {file} filled in).
    crd_files: tuple[str, ...] = ()
    crd_source: str = ""

    @property
    def reference(self) -> str:
        """What a release names as its chart: the bare name in a Helm repository, the whole
        ``oci://`` reference in an OCI registry (which has no index a repository option could read)."""
        return f"{self.repository}/{self.name}" if self.oci else self.name

    @property
    def oci(self) -> bool:
        return self.repository.startswith("oci://")

    @property
    def vendored(self) -> str:
        """The folder name of this chart's default values under shared/vendor/charts."""
        return f"{self.name}-{self.version}"

    def crd_urls(self) -> list[str]:
        return [self.crd_source.format(version=self.version, file=f) for f in self.crd_files]


KUBE_PROMETHEUS_STACK = Chart(
    "kube-prometheus-stack",
    "https://prometheus-community.github.io/helm-charts",
    "88.5.3",
    crd_files=tuple(
        f"crd-{kind}.yaml"
        for kind in (
            "alertmanagerconfigs",
            "alertmanagers",
            "podmonitors",
            "probes",
            "prometheusagents",
            "prometheuses",
            "prometheusrules",
            "scrapeconfigs",
            "servicemonitors",
            "thanosrulers",
        )
    ),
    # The chart-releaser tag of this version; the crds subchart's folder in the repository.
    crd_source="https://raw.githubusercontent.com/prometheus-community/helm-charts/"
    "kube-prometheus-stack-{version}/charts/kube-prometheus-stack/charts/crds/crds/{file}",
)
KEDA = Chart("keda", "https://kedacore.github.io/charts", "2.20.2")
DCGM_EXPORTER = Chart("dcgm-exporter", "https://nvidia.github.io/dcgm-exporter/helm-charts", "4.8.2")
NVIDIA_DEVICE_PLUGIN = Chart("nvidia-device-plugin", "https://nvidia.github.io/k8s-device-plugin", "0.20.0")
CLUSTER_AUTOSCALER = Chart("cluster-autoscaler", "https://kubernetes.github.io/autoscaler", "9.59.0")
OPENTELEMETRY_COLLECTOR = Chart(
    "opentelemetry-collector", "https://open-telemetry.github.io/opentelemetry-helm-charts", "0.170.0"
)
JAEGER = Chart("jaeger", "https://jaegertracing.github.io/helm-charts", "4.11.1")  # 4.x: Jaeger v2
FLUENT_BIT = Chart("fluent-bit", "https://fluent.github.io/helm-charts", "0.58.1")
CHARTS = (
    KUBE_PROMETHEUS_STACK,
    KEDA,
    DCGM_EXPORTER,
    NVIDIA_DEVICE_PLUGIN,
    CLUSTER_AUTOSCALER,
    OPENTELEMETRY_COLLECTOR,
    JAEGER,
    FLUENT_BIT,
)
# With `capacity: karpenter`: the CRDs as their own release (Helm never upgrades a chart's crds/
# folder), then the controller, in place of cluster-autoscaler.
KARPENTER_CRD = Chart("karpenter-crd", "oci://public.ecr.aws/karpenter", "1.14.1")
KARPENTER = Chart("karpenter", "oci://public.ecr.aws/karpenter", "1.14.1")
KARPENTER_CHARTS = (KARPENTER_CRD, KARPENTER)

# Charts whose image tag defaults to "" (the chart's appVersion) get it spelled out, so what runs
# is readable in the stack and checkable by policy.
KEDA_IMAGE_TAG = "2.20.2"
DEVICE_PLUGIN_IMAGE_TAG = "v0.20.0"
DCGM_EXPORTER_IMAGE_TAG = "4.5.3-4.8.2-distroless"
CLUSTER_AUTOSCALER_IMAGE_TAG = "v1.35.0"  # the minor must equal the cluster's Kubernetes minor
PROMETHEUS_OPERATOR_IMAGE_TAG = "v0.93.1"  # operator, config reloader and admission webhook
GRAFANA_IMAGE_TAG = "13.2.0"  # kube-prometheus-stack's grafana subchart appVersion


@dataclass(frozen=True)
class Image:
    """A container image as registry host, repository and tag: each part is a chart value of its own."""

    registry: str
    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


# Images named in full, registry included, where the chart's default is Docker Hub (anonymous pulls are
# rate-limited per node IP) or nothing: each from a registry its project publishes to, tag = appVersion.
# No digest: none could be read from a registry where this is built, and an unverified one is worse.
COLLECTOR_IMAGE = Image(  # the Kubernetes distribution: OTLP, memory_limiter, batch, health_check
    "ghcr.io", "open-telemetry/opentelemetry-collector-releases/opentelemetry-collector-k8s", "0.158.0"
)
JAEGER_IMAGE = Image("quay.io", "jaegertracing/jaeger", "2.19.0")  # the chart's default is Docker Hub's
FLUENT_BIT_IMAGE = Image("cr.fluentbit.io", "fluent/fluent-bit", "5.1.1")  # Fluent's own registry
IMAGES = (COLLECTOR_IMAGE, JAEGER_IMAGE, FLUENT_BIT_IMAGE)


def release(
    name: str,
    chart: Chart,
    *,
    namespace: pulumi.Input[str],
    values: dict[str, object],
    opts: pulumi.ResourceOptions,
    skip_crds: bool = False,
) -> k8s.helm.v3.Release:
    """A Helm release of a pinned chart: a custom resource whose chart, version and values are inspectable.

    ``skip_crds`` leaves the chart's crds/ folder to another release. A chart with ``crd_files`` gets
    them applied first (server-side, by Pulumi, which waits for each CRD to be Established), the same
    version as the chart, on install and on every bump.
    """
    if chart.crd_files:
        skip_crds = True
        crds = k8s.yaml.v2.ConfigGroup(f"{name}-crds", files=chart.crd_urls(), opts=opts)
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[crds]))
    return k8s.helm.v3.Release(
        name,
        k8s.helm.v3.ReleaseArgs(
            name=chart.name,
            chart=chart.reference,
            version=chart.version,
            repository_opts=None if chart.oci else k8s.helm.v3.RepositoryOptsArgs(repo=chart.repository),
            skip_crds=skip_crds or None,
            namespace=namespace,
            values=values,
            atomic=True,  # a failed upgrade rolls back instead of leaving half a release
            cleanup_on_fail=True,
            # helm's wait, which Pulumi's await is: the chart's pods, and its volumes where it claims any.
            timeout=release_timeout_s(volumes=claims_volumes(values)),
        ),
        opts=opts,
    )
