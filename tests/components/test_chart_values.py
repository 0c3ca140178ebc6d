"""Every Helm value inferstack sets exists in the pinned chart's own default values (vendored).

Helm ignores an unknown key without a word, so a misspelled or renamed key would silently do
nothing. Where a chart passes values through to a subchart or takes an open map, the path is
listed below with the reason, narrowly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from inferstack.components import charts
from inferstack.components.autoscaling import cluster_autoscaler_values, keda_values
from inferstack.components.gpu import dcgm_exporter_values, device_plugin_values
from inferstack.components.karpenter import KarpenterArgs, karpenter_values
from inferstack.components.monitoring import MonitoringArgs, kube_prometheus_stack_values
from inferstack.components.telemetry import collector_values, fluent_bit_values, jaeger_values

OPEN_PATHS = {
    # Values of the grafana subchart; the parent documents adminPassword in a comment only.
    ("kube-prometheus-stack", "grafana.adminPassword"),
    # The grafana subchart's own values (charts-src/kube-prometheus-stack-*/charts/grafana/values.yaml).
    ("kube-prometheus-stack", "grafana.image"),
    ("kube-prometheus-stack", "grafana.testFramework"),
    # Kubernetes annotation map (the Alertmanager's IAM role, for SNS receivers).
    ("kube-prometheus-stack", "alertmanager.serviceAccount.annotations"),
    # A Prometheus StorageSpec (the CRD's type), documented in the comment beside `storageSpec: {}`.
    ("kube-prometheus-stack", "prometheus.prometheusSpec.storageSpec"),
    # Kubernetes label maps: any label is a valid key.
    ("kube-prometheus-stack", "prometheus.prometheusSpec.nodeSelector"),
    ("nvidia-device-plugin", "nodeSelector"),
    ("dcgm-exporter", "nodeSelector"),
    ("dcgm-exporter", "serviceMonitor.additionalLabels"),
    ("keda", "nodeSelector"),
    ("cluster-autoscaler", "nodeSelector"),
    # Kubernetes annotation map.
    ("cluster-autoscaler", "rbac.serviceAccount.annotations"),
    # Config name -> device plugin config file, as the chart documents.
    ("nvidia-device-plugin", "config.map"),
    # Priority -> node group name patterns, as the chart documents.
    ("cluster-autoscaler", "expanderPriorities"),
    # Free-form map of command-line flags, as the chart documents.
    ("cluster-autoscaler", "extraArgs"),
    # The collector's whole configuration, which the chart uses instead of `config` (its own schema).
    ("opentelemetry-collector", "alternateConfig"),
    ("opentelemetry-collector", "nodeSelector"),
    ("jaeger", "jaeger.nodeSelector"),
    # Kubernetes types the charts copy into the pod spec whole (toYaml), defaults empty.
    ("opentelemetry-collector", "securityContext"),
    ("opentelemetry-collector", "resources"),
    ("jaeger", "jaeger.securityContext"),
    ("fluent-bit", "securityContext"),
    ("fluent-bit", "resources"),
    ("fluent-bit", "updateStrategy"),
    ("fluent-bit", "serviceAccount.annotations"),
    # Kubernetes label, annotation and resource maps.
    ("karpenter", "nodeSelector"),
    ("karpenter", "serviceAccount.annotations"),
    ("karpenter", "controller.resources"),
}

# Keys the chart reads but its values.yaml documents only in a comment: each must appear in a template.
READ_BY_TEMPLATES = {
    ("jaeger", "jaeger.resources"),  # templates/jaeger/jaeger-deploy.yaml: `with .Values.jaeger.resources`
    ("jaeger", "jaeger.podLabels"),  # templates/jaeger/jaeger-deploy.yaml: `if .Values.jaeger.podLabels`
}


def unknown_keys(chart: str, ours: dict[str, Any], defaults: dict[str, Any], path: str = "") -> list[str]:
    unknown = []
    for key, value in ours.items():
        where = f"{path}.{key}" if path else key
        if (chart, where) in OPEN_PATHS | READ_BY_TEMPLATES:
            continue
        if key not in defaults:
            unknown.append(where)
            continue
        default = defaults[key]
        # Recurse where the chart spells out a map. An empty default map ({}) is no licence: its
        # keys are checked against nothing, so every key under it fails unless OPEN_PATHS lists it.
        if isinstance(value, dict) and isinstance(default, dict):
            unknown += unknown_keys(chart, value, default, where)
    return unknown


def defaults(vendor_dir: Path, chart: charts.Chart) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(
        (vendor_dir / "charts" / chart.vendored / "values.yaml").read_text()
    )
    return loaded


VALUES = [
    (
        charts.KUBE_PROMETHEUS_STACK,
        lambda: kube_prometheus_stack_values(
            MonitoringArgs(retention="15d", storage_gib=100, storage_class="gp3", node_selector={"a": "b"}),
            grafana_admin_password="x",
        ),
    ),
    (charts.NVIDIA_DEVICE_PLUGIN, lambda: device_plugin_values(None)),
    (charts.NVIDIA_DEVICE_PLUGIN, lambda: device_plugin_values(4)),
    (charts.DCGM_EXPORTER, dcgm_exporter_values),
    (charts.KEDA, keda_values),
    (
        charts.CLUSTER_AUTOSCALER,
        lambda: cluster_autoscaler_values(
            cluster_name="prod", region="us-east-1", role_arn="arn", namespace="kube-system"
        ),
    ),
    (charts.OPENTELEMETRY_COLLECTOR, lambda: collector_values("telemetry", {"a": "b"})),
    (
        charts.JAEGER,
        lambda: jaeger_values(
            trace_retention_hours=72, storage_class="gp3", storage_gib=20, node_selector={"a": "b"}
        ),
    ),
    (charts.FLUENT_BIT, lambda: fluent_bit_values(region="us-east-1", log_group="/g", role_arn="arn")),
    (
        charts.KARPENTER,
        # Cluster, Kubernetes version, endpoint, controller role, interruption queue, instance profile, pools.
        lambda: karpenter_values(
            KarpenterArgs("prod", "1.35", "https://x", "arn", "prod", "p", [], node_repair=True)
        ),
    ),
]


@pytest.mark.parametrize(
    ("chart", "values"), VALUES, ids=[f"{c.name}-{i}" for i, (c, _) in enumerate(VALUES)]
)
def test_every_value_exists_in_the_pinned_chart(vendor_dir: Path, chart: charts.Chart, values: Any) -> None:
    assert unknown_keys(chart.name, values(), defaults(vendor_dir, chart)) == []


def test_keys_documented_only_in_comments_are_read_by_the_charts_templates(vendor_dir: Path) -> None:
    by_name = {c.name: c for c in charts.CHARTS}
    for chart, path in sorted(READ_BY_TEMPLATES):
        templates = (vendor_dir / "charts-src" / by_name[chart].vendored / "templates").rglob("*")
        text = "".join(t.read_text() for t in templates if t.is_file())
        assert f".Values.{path}" in text, (chart, path)
        # Still missing from the defaults (else the exception is no longer needed), under a parent
        # the chart does spell out.
        *parents, leaf = path.split(".")
        node = defaults(vendor_dir, by_name[chart])
        for key in parents:
            node = node[key]
        assert leaf not in node, (chart, path)


def test_a_misspelled_key_is_caught(vendor_dir: Path) -> None:
    values = dcgm_exporter_values()
    values["serviceMonitor"]["enable"] = True
    values["tolerashuns"] = []
    values["affinity"] = {"nodeAfinity": {}}  # under a map the chart leaves empty ({})
    found = unknown_keys("dcgm-exporter", values, defaults(vendor_dir, charts.DCGM_EXPORTER))
    assert found == ["serviceMonitor.enable", "tolerashuns", "affinity.nodeAfinity"]


def test_pinned_versions_match_the_vendored_charts(vendor_dir: Path) -> None:
    for chart in (*charts.CHARTS, *charts.KARPENTER_CHARTS):
        meta = yaml.safe_load((vendor_dir / "charts" / chart.vendored / "Chart.yaml").read_text())
        assert (meta["name"], str(meta["version"])) == (chart.name, chart.version)


def test_images_are_pinned_to_the_charts_app_versions(vendor_dir: Path) -> None:
    app = {
        c.name: str(
            yaml.safe_load((vendor_dir / "charts" / c.vendored / "Chart.yaml").read_text())["appVersion"]
        )
        for c in charts.CHARTS
    }
    assert app["keda"] == charts.KEDA_IMAGE_TAG
    assert f"v{app['nvidia-device-plugin']}" == charts.DEVICE_PLUGIN_IMAGE_TAG
    assert f"v{app['cluster-autoscaler']}" == charts.CLUSTER_AUTOSCALER_IMAGE_TAG
    assert app["kube-prometheus-stack"] == charts.PROMETHEUS_OPERATOR_IMAGE_TAG
    assert defaults(vendor_dir, charts.DCGM_EXPORTER)["image"]["tag"] == charts.DCGM_EXPORTER_IMAGE_TAG
    assert app["opentelemetry-collector"] == charts.COLLECTOR_IMAGE.tag
    assert app["jaeger"] == charts.JAEGER_IMAGE.tag
    assert app["fluent-bit"] == charts.FLUENT_BIT_IMAGE.tag
    # Docker Hub rate-limits anonymous pulls per node address: no image of ours is pulled from it.
    assert not [
        i for i in charts.IMAGES if i.registry in {"docker.io", "index.docker.io", "registry-1.docker.io"}
    ]
    assert all("." in i.registry for i in charts.IMAGES)  # a bare name would mean Docker Hub


def test_time_slicing_config_is_what_the_device_plugin_reads() -> None:
    config = yaml.safe_load(device_plugin_values(4)["config"]["map"]["default"])
    assert config == {
        "version": "v1",
        "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}},
    }
