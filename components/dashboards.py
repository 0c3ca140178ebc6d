"""Grafana dashboards for GPUs and Triton, built from the shared PromQL and shipped as ConfigMaps
that Grafana's sidecar (kube-prometheus-stack) picks up by label.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from inferstack.components import promql

SIDECAR_LABEL = ("grafana_dashboard", "1")  # kube-prometheus-stack's grafana.sidecar.dashboards default
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _panel(
    panel_id: int, title: str, unit: str, targets: list[tuple[str, str]], x: int, y: int
) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def _dashboard(
    uid: str,
    title: str,
    panels: list[tuple[str, str, list[tuple[str, str]]]],
    variables: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["inferstack"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
                *variables,
            ]
        },
        "panels": [
            _panel(i + 1, title, unit, targets, x=12 * (i % 2), y=8 * (i // 2))
            for i, (title, unit, targets) in enumerate(panels)
        ],
    }


def _query_variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "refresh": 2,
        "includeAll": False,
    }


def gpu_dashboard() -> dict[str, Any]:
    return _dashboard(
        "inferstack-gpu",
        "inferstack / GPUs",
        [
            (
                "GPU utilisation by node",
                "percent",
                [(promql.GPU_UTILIZATION_BY_NODE, "{{Hostname}} gpu {{gpu}}")],
            ),
            (
                "GPU utilisation by pod",
                "percent",
                [(promql.GPU_UTILIZATION_BY_POD, "{{namespace}}/{{pod}}")],
            ),
            (
                "Framebuffer used / free",
                "bytes",
                [
                    (promql.GPU_MEMORY_USED_BYTES, "used {{Hostname}} gpu {{gpu}}"),
                    (promql.GPU_MEMORY_FREE_BYTES, "free {{Hostname}} gpu {{gpu}}"),
                ],
            ),
            (
                "Framebuffer used by pod",
                "bytes",
                [(promql.GPU_MEMORY_USED_BYTES_BY_POD, "{{namespace}}/{{pod}}")],
            ),
            ("Power", "watt", [(promql.GPU_POWER_WATTS, "{{Hostname}} gpu {{gpu}}")]),
            ("Temperature", "celsius", [(promql.GPU_TEMPERATURE_CELSIUS, "{{Hostname}} gpu {{gpu}}")]),
            ("XID errors (last code)", "none", [(promql.GPU_XID_ERRORS, "{{Hostname}} gpu {{gpu}}")]),
        ],
        [],
    )


class _TritonQuery(Protocol):
    def __call__(self, *, model: str, namespace: str) -> str: ...


# (title, unit, query, legend): every Triton panel is one query of the chosen model, legend by model.
TRITON_PANELS: tuple[tuple[str, str, _TritonQuery, str], ...] = (
    ("Requests / s", "reqps", promql.triton_request_rate, "{{model}}"),
    ("Failures / s by reason", "reqps", promql.triton_failure_rate_by_reason, "{{reason}}"),
    ("Queue time per request", "ms", promql.triton_queue_time_per_request_ms, "{{model}}"),
    ("Compute time per request", "ms", promql.triton_compute_time_per_request_ms, "{{model}}"),
    ("Average batch size", "none", promql.triton_average_batch_size, "{{model}}"),
    ("Pending requests", "none", promql.triton_pending_requests, "{{model}}"),
)


def triton_dashboard() -> dict[str, Any]:
    model, namespace = "$model", "$namespace"
    return _dashboard(
        "inferstack-triton",
        "inferstack / Triton",
        [
            (title, unit, [(query(model=model, namespace=namespace), legend)])
            for title, unit, query, legend in TRITON_PANELS
        ],
        [
            _query_variable("namespace", "label_values(nv_inference_request_success, namespace)"),
            _query_variable(
                "model", 'label_values(nv_inference_request_success{namespace="$namespace"}, model)'
            ),
        ],
    )


def dashboards() -> dict[str, dict[str, Any]]:
    return {"gpu": gpu_dashboard(), "triton": triton_dashboard()}


def dashboard_configmap(name: str, namespace: str, dashboard: dict[str, Any]) -> dict[str, Any]:
    key, value = SIDECAR_LABEL
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {key: value}},
        "data": {f"{dashboard['uid']}.json": json.dumps(dashboard, indent=2, sort_keys=True)},
    }
