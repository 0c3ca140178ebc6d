"""Dashboards: valid Grafana JSON, every panel query parses, and the ConfigMaps Grafana's sidecar loads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from inferstack.components import promql
from inferstack.components.alerts import platform_rule_groups
from inferstack.components.dashboards import dashboard_configmap, dashboards
from tests.components.promtool import check_expressions
from tests.schemas import validate_k8s


def expressions(dashboard: dict[str, Any]) -> dict[str, str]:
    # Grafana substitutes its variables before querying; the parser sees real values.
    return {
        f"{panel['title']}/{target['refId']}": target["expr"]
        .replace("$model", "ranker")
        .replace("$namespace", "serving")
        for panel in dashboard["panels"]
        for target in panel["targets"]
    }


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    for name, dashboard in dashboards().items():
        found = expressions(dashboard)
        assert found, name
        result = check_expressions(found, tmp_path)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


def test_dashboards_are_valid_grafana_json() -> None:
    for dashboard in dashboards().values():
        again = json.loads(json.dumps(dashboard))
        assert again == dashboard
        assert {"uid", "title", "panels", "schemaVersion", "templating"} <= set(dashboard)
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        positions = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in dashboard["panels"]}
        assert len(positions) == len(ids), "panels must not sit on each other"
        for panel in dashboard["panels"]:
            assert panel["type"] == "timeseries" and panel["targets"]
            assert all(t["refId"] and t["expr"] for t in panel["targets"])
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        assert set(re.findall(r"\$\{?([a-z_]+)", json.dumps(dashboard["panels"]))) <= variables


def test_triton_dashboard_shows_the_required_signals() -> None:
    found = set(expressions(dashboards()["triton"]).values())
    required = [
        promql.triton_request_rate(model="ranker", namespace="serving"),
        promql.triton_failure_rate_by_reason(model="ranker", namespace="serving"),
        promql.triton_queue_time_per_request_ms(model="ranker", namespace="serving"),
        promql.triton_compute_time_per_request_ms(model="ranker", namespace="serving"),
        promql.triton_average_batch_size(model="ranker", namespace="serving"),
        promql.triton_pending_requests(model="ranker", namespace="serving"),
    ]
    assert set(required) <= found


def test_gpu_dashboard_shows_the_required_signals() -> None:
    text = " ".join(expressions(dashboards()["gpu"]).values())
    for metric in (
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_XID_ERRORS",
    ):
        assert metric in text


def test_dcgm_metrics_used_are_ones_the_exporter_collects(vendor_dir: Path) -> None:
    counters = (vendor_dir / "metrics" / "dcgm-exporter-4.5.3-4.8.2" / "default-counters.csv").read_text()
    collected = {
        line.split(",")[0].strip()
        for line in counters.splitlines()
        if line.strip() and not line.startswith("#")
    }
    rules = [r["expr"] for g in platform_rule_groups() for r in g["rules"]]
    used = set(re.findall(r"DCGM_[A-Z_]+", " ".join([*expressions(dashboards()["gpu"]).values(), *rules])))
    assert len(used) == 6 and used <= collected, used - collected


def test_configmaps_are_valid_and_labelled_for_the_sidecar() -> None:
    for key, dashboard in dashboards().items():
        manifest = dashboard_configmap(f"inferstack-dashboard-{key}", "monitoring", dashboard)
        validate_k8s(manifest)
        assert manifest["metadata"]["labels"] == {"grafana_dashboard": "1"}
        (content,) = manifest["data"].values()
        assert json.loads(content)["uid"] == dashboard["uid"]
