"""CRDs are upgraded with their charts: Helm never upgrades a chart's crds/ folder, so every chart
the platform installs with CRDs there gets them applied by Pulumi, at the chart's version, first."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from inferstack.components import charts, monitoring
from inferstack.components.charts import CHARTS, Chart
from inferstack.components.gpu import device_plugin_values
from inferstack.components.monitoring import Monitoring, MonitoringArgs
from tests.harness import run_program

CONFIG_GROUP = "kubernetes:yaml/v2:ConfigGroup"
RELEASE = "kubernetes:helm.sh/v3:Release"


def helm_only_crds(vendor_dir: Path, chart: Chart, enabled_subcharts: set[str]) -> list[str]:
    """The files of every crds/ folder Helm would install once: the chart's own and those of the
    subcharts its values enable (templated CRDs, like KEDA's, Helm upgrades itself)."""
    root = vendor_dir / "charts-src" / chart.vendored
    found = sorted(p.name for p in (root / "crds").glob("*.yaml")) if (root / "crds").is_dir() else []
    for sub in sorted((root / "charts").glob("*")) if (root / "charts").is_dir() else []:
        if sub.name in enabled_subcharts and (sub / "crds").is_dir():
            found += sorted(p.name for p in (sub / "crds").glob("*.yaml"))
    return found


# Subcharts the platform's values leave on (kube-prometheus-stack's crds subchart is on by default;
# the device plugin's node-feature-discovery stays off: neither nfd.enabled nor gfd.enabled is set).
ENABLED_SUBCHARTS = {"kube-prometheus-stack": {"crds"}}


@pytest.mark.parametrize("chart", CHARTS, ids=[c.name for c in CHARTS])
def test_every_helm_only_crd_of_every_chart_is_applied_by_pulumi(vendor_dir: Path, chart: Chart) -> None:
    vendored = helm_only_crds(vendor_dir, chart, ENABLED_SUBCHARTS.get(chart.name, set()))
    assert sorted(chart.crd_files) == vendored
    for url in chart.crd_urls():
        assert f"{chart.name}-{chart.version}/" in url  # the chart's own version, never a fixed one


def test_the_device_plugin_keeps_its_crd_subchart_off() -> None:
    for replicas in (None, 4):
        values = device_plugin_values(replicas)
        assert not values.get("nfd", {}).get("enabled") and not values.get("gfd", {}).get("enabled")


def plan(chart: Chart) -> tuple[list[str], dict[str, object]]:
    def program() -> None:
        Monitoring("monitoring", MonitoringArgs())

    original = monitoring.KUBE_PROMETHEUS_STACK
    try:
        monitoring.KUBE_PROMETHEUS_STACK = chart
        recording, _ = run_program(program)
    finally:
        monitoring.KUBE_PROMETHEUS_STACK = original
    (crds,) = recording.of_type(CONFIG_GROUP)
    release = recording.one(RELEASE)
    assert crds.urn in release.dependencies and release.inputs["skipCrds"] is True
    return crds.inputs["files"], release.inputs


def test_a_chart_bump_is_a_crd_upgrade_too() -> None:
    before, _ = plan(charts.KUBE_PROMETHEUS_STACK)
    bumped = dataclasses.replace(charts.KUBE_PROMETHEUS_STACK, version="88.6.0")
    after, release = plan(bumped)
    assert release["version"] == "88.6.0"
    assert after == [u.replace("-88.5.3/", "-88.6.0/") for u in before] != before


def test_the_crd_files_are_crds(vendor_dir: Path) -> None:
    folder = vendor_dir / "charts-src" / charts.KUBE_PROMETHEUS_STACK.vendored / "charts" / "crds" / "crds"
    for name in charts.KUBE_PROMETHEUS_STACK.crd_files:
        # BaseLoader: the schemas hold a `=` scalar PyYAML's safe loader has no constructor for.
        (crd,) = [d for d in yaml.load_all((folder / name).read_text(), Loader=yaml.BaseLoader) if d]
        assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["group"] == "monitoring.coreos.com"
