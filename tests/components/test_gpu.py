"""The DCGM exporter's ServiceMonitor: valid for the CRD, and keeping the labels the GPU queries need."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from inferstack.components import charts
from inferstack.components.gpu import dcgm_exporter_values
from tests.schemas import validate_custom_resource


def merged(defaults: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of user values over a chart's defaults: maps merge, anything else replaces."""
    out = copy.deepcopy(defaults)
    for key, value in ours.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def rendered_service_monitor(values: dict[str, Any], vendor_dir: Path) -> dict[str, Any]:
    """What dcgm-exporter 4.8.2's deployment/templates/service-monitor.yaml renders from ``values``.

    The template copies these fields one for one; the chart itself is not vendored, so this mirrors it.
    """
    chart_defaults = yaml.safe_load(
        (vendor_dir / "charts" / charts.DCGM_EXPORTER.vendored / "values.yaml").read_text()
    )
    monitor = merged(chart_defaults, values)["serviceMonitor"]
    return {
        "apiVersion": monitor["apiVersion"],
        "kind": "ServiceMonitor",
        "metadata": {
            "name": "dcgm-exporter",
            "namespace": "gpu-operators",
            "labels": {"app.kubernetes.io/name": "dcgm-exporter", **monitor["additionalLabels"]},
        },
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "dcgm-exporter"}},
            "namespaceSelector": {"matchNames": ["gpu-operators"]},
            "endpoints": [
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "interval": monitor["interval"],
                    "scrapeTimeout": monitor["scrapeTimeout"],
                    "honorLabels": monitor["honorLabels"],
                    "relabelings": monitor["relabelings"],
                    "metricRelabelings": monitor["metricRelabelings"],
                }
            ],
        },
    }


def test_dcgm_service_monitor_validates_against_the_crd(vendor_dir: Path) -> None:
    monitor = rendered_service_monitor(dcgm_exporter_values(), vendor_dir)
    validate_custom_resource(monitor, vendor_dir)
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert endpoint["relabelings"] == [{"action": "labeldrop", "regex": "namespace|pod|container"}]


def test_a_misspelled_relabeling_fails_the_crd(vendor_dir: Path) -> None:
    values = dcgm_exporter_values()
    values["serviceMonitor"]["relabelings"] = [{"action": "labeldorp", "regex": "pod"}]
    with pytest.raises(jsonschema.ValidationError):
        validate_custom_resource(rendered_service_monitor(values, vendor_dir), vendor_dir)
