"""Alert rules checked and unit-tested by the real promtool: each alert fires, and does not, when it should.

Series are named and labelled as Triton, DCGM exporter and kube-state-metrics name them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferstack.components.alerts import (
    SEVERITIES,
    alertmanager_config,
    platform_rule_groups,
    prometheus_rule,
    service_rule_group,
)
from inferstack.serving.local.processes import free_port, start_child
from inferstack.serving.local.prometheus import wait_ready
from tests.components.promtool import check_rules, unit_test_alert
from tests.conftest import require_tool, unavailable
from tests.schemas import validate_custom_resource

SERVICE = service_rule_group(
    service="ranker", namespace="serving", models=["ranker"], queue_time_target_ms=50
)
GPU = 'Hostname="node-a",gpu="0",namespace="serving",pod="ranker-7d9f8b6c4-x2x9q"'
TRITON = 'namespace="serving",model="ranker",version="1",pod="ranker-7d9f8b6c4-x2x9q",service="ranker"'
GPU_LABELS = {"Hostname": "node-a", "gpu": "0", "namespace": "serving", "pod": "ranker-7d9f8b6c4-x2x9q"}
SERVICE_LABELS = {"service": "ranker", "namespace": "serving"}
SPOT_GROUP = 'node_group="eks-nodes-gpu-spot-us-east-1a-ng-5ec8a1b2",reason="cloudProviderError"'
OD_GROUP = 'node_group="eks-nodes-gpu-us-east-1a-ng-77d0c3e9",reason="cloudProviderError"'


def all_groups() -> list[dict[str, Any]]:
    return [*platform_rule_groups(), SERVICE]


def test_every_rule_group_passes_promtool_check(tmp_path: Path) -> None:
    result = check_rules(all_groups(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_every_alert_is_tiered() -> None:
    for group in all_groups():
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in SEVERITIES
    severities = {r["alert"]: r["labels"]["severity"] for g in all_groups() for r in g["rules"]}
    assert severities == {
        "GPUMemoryNearlyFull": "P1",
        "GPUXidErrors": "P1",
        "GPUUnderused": "P2",
        "SpotGPUCapacityGone": "P2",
        "TritonNoReadyReplica": "P0",
        "TritonAllRequestsFailing": "P0",
        "TritonQueueTimeHigh": "P1",
    }


Case = tuple[str, str, list[dict[str, str]], str, dict[str, str] | None]
FIRES, QUIET = True, False


def cases(alert: str, fired: dict[str, str], *rows: tuple[str, dict[str, str], str, bool]) -> list[Case]:
    """One alert's rows: (case, input series and their promtool values, eval time, fires or stays quiet);
    a firing row expects the labels ``fired``."""
    return [
        (alert, case, [{"series": s, "values": v} for s, v in series.items()], at, fired if fires else None)
        for case, series, at, fires in rows
    ]


FB_USED, FB_FREE = f"DCGM_FI_DEV_FB_USED{{{GPU}}}", f"DCGM_FI_DEV_FB_FREE{{{GPU}}}"
XID, UTIL = f"DCGM_FI_DEV_XID_ERRORS{{{GPU}}}", f"DCGM_FI_DEV_GPU_UTIL{{{GPU}}}"
SPOT_BACKOFF = f"cluster_autoscaler_node_group_backoff_status{{{SPOT_GROUP}}}"
OD_BACKOFF = f"cluster_autoscaler_node_group_backoff_status{{{OD_GROUP}}}"
GPU_NODE = 'kube_node_labels{node="a",label_inferstack_io_node_role="gpu",label_inferstack_io_capacity_type="on-demand"}'
AVAILABLE = 'kube_deployment_status_replicas_available{namespace="serving",deployment="ranker"}'
FAILED = f'nv_inference_request_failure{{{TRITON},reason="BACKEND"}}'
SUCCEEDED, QUEUED = f"nv_inference_request_success{{{TRITON}}}", f"nv_inference_queue_duration_us{{{TRITON}}}"

# Each alert fires, and does not, on series as the exporters write them.
CASES: list[Case] = [
    *cases(
        "GPUMemoryNearlyFull",
        {"severity": "P1", **GPU_LABELS, "service": "ranker"},
        ("nearly full", {FB_USED: "23500x30", FB_FREE: "500x30"}, "15m", FIRES),
        ("80% used", {FB_USED: "19200x30", FB_FREE: "4800x30"}, "15m", QUIET),
    ),
    *cases(
        "GPUXidErrors",
        {"severity": "P1", "Hostname": "node-a", "gpu": "0"},
        ("xid 79", {XID: "0 0 79x10"}, "8m", FIRES),
        # The exporter keeps the last code: one fault must not page for as long as the node lives.
        ("xid 79 an hour ago", {XID: "0 0 79x60"}, "60m", QUIET),
        ("another xid later", {XID: "0 0 79x60 48x10"}, "65m", FIRES),
        ("exporter restarted after an old xid", {XID: "79x30"}, "20m", QUIET),
        ("no xid", {XID: "0x10"}, "8m", QUIET),
    ),
    *cases(
        "GPUUnderused",
        {"severity": "P2", "namespace": "serving", "pod": "ranker-7d9f8b6c4-x2x9q", "service": "ranker"},
        ("idle for hours", {UTIL: "3x300"}, "4h", FIRES),
        ("busy", {UTIL: "60x300"}, "4h", QUIET),
    ),
    *cases(
        "SpotGPUCapacityGone",
        {"severity": "P2", "node_group": "eks-nodes-gpu-spot-us-east-1a-ng-5ec8a1b2"},
        # The default prod shape at rest: the on-demand baseline runs, spot is at zero, nothing fails.
        ("on-demand baseline, no spot nodes", {GPU_NODE: "1x90", SPOT_BACKOFF: "0x90"}, "75m", QUIET),
        ("spot scale-ups keep failing", {SPOT_BACKOFF: "0x10 1x80"}, "75m", FIRES),
        ("one brief backoff", {SPOT_BACKOFF: "0x30 1x5 0x60"}, "90m", QUIET),
        ("an on-demand group backed off", {OD_BACKOFF: "1x90"}, "75m", QUIET),
    ),
    *cases(
        "TritonNoReadyReplica",
        {"severity": "P0", **SERVICE_LABELS},
        ("none available", {AVAILABLE: "2 2 0x10"}, "8m", FIRES),
        ("deployment gone", {'up{job="x"}': "1x10"}, "5m", FIRES),
        ("two available", {AVAILABLE: "2x10"}, "8m", QUIET),
    ),
    *cases(
        "TritonAllRequestsFailing",
        {"severity": "P0", "model": "ranker", **SERVICE_LABELS},
        ("every request fails", {FAILED: "0+60x20", SUCCEEDED: "100x20"}, "15m", FIRES),
        ("some fail", {FAILED: "0+6x20", SUCCEEDED: "0+60x20"}, "15m", QUIET),
    ),
    *cases(
        "TritonQueueTimeHigh",
        {"severity": "P1", "model": "ranker", **SERVICE_LABELS},
        ("200 ms per request", {QUEUED: "0+6000000x30", SUCCEEDED: "0+30x30"}, "20m", FIRES),
        ("10 ms per request", {QUEUED: "0+300000x30", SUCCEEDED: "0+30x30"}, "20m", QUIET),
        ("idle", {SUCCEEDED: "0x30"}, "20m", QUIET),
    ),
]


@pytest.mark.parametrize(
    ("alert", "case", "series", "at", "expected"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
def test_alert_fires_exactly_when_it_should(
    tmp_path: Path,
    alert: str,
    case: str,
    series: list[dict[str, str]],
    at: str,
    expected: dict[str, str] | None,
) -> None:
    result = unit_test_alert(all_groups(), tmp_path, alert=alert, series=series, at=at, expected=expected)
    assert result.returncode == 0, f"{alert} / {case}:\n{result.stdout}{result.stderr}"


def test_promtool_test_does_catch_a_wrong_expectation(tmp_path: Path) -> None:
    alert, case, series, at, _ = CASES[0]
    with pytest.raises(AssertionError):
        test_alert_fires_exactly_when_it_should(tmp_path, alert, case, series, at, None)


def test_prometheus_rule_object_validates_against_the_crd(vendor_dir: Path) -> None:
    validate_custom_resource(prometheus_rule("inferstack-platform", "monitoring", all_groups()), vendor_dir)


def alertmanager_binary() -> str:
    """Debian ships Alertmanager as ``prometheus-alertmanager``; upstream's release as ``alertmanager``."""
    found = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
    if found is None:
        unavailable("`alertmanager` (Debian: prometheus-alertmanager) is not on PATH (bash .ci/bootstrap)")
    assert found is not None
    return found


def http(url: str, body: object = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read()
    return json.loads(text) if text else None


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager on loopback, running inferstack's config; yields its URL."""
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump(alertmanager_config()))
    port = free_port()
    argv = [
        alertmanager_binary(),
        f"--config.file={config}",
        f"--storage.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no gossip: a single, private instance
    ]
    child = start_child(
        "alertmanager", argv, log=tmp_path / "alertmanager.log", env={"PATH": "/usr/bin:/bin"}
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(child, f"{url}/-/ready", timeout_s=20)
        yield url
    finally:
        child.stop()


def firing(group: dict[str, Any], alert: str, **labels: str) -> dict[str, Any]:
    """An alert as Prometheus would send it: the rule's own labels plus those of the series."""
    rule = next(r for r in group["rules"] if r["alert"] == alert)
    return {"labels": {"alertname": alert, **rule["labels"], **labels}, "annotations": {}}


def test_a_p0_inhibits_p1_and_p2_of_its_own_service_only(alertmanager: str) -> None:
    """Posted to a real Alertmanager: what it suppresses is what the operator will not be paged for."""
    staging = service_rule_group(
        service="ranker", namespace="staging", models=["ranker"], queue_time_target_ms=50
    )
    search = service_rule_group(
        service="search", namespace="serving", models=["search"], queue_time_target_ms=50
    )
    (gpu,) = platform_rule_groups()
    alerts = {
        "P0 serving/ranker": firing(SERVICE, "TritonNoReadyReplica"),
        "P1 serving/ranker": firing(SERVICE, "TritonQueueTimeHigh"),
        "P2 serving/ranker": firing(
            gpu, "GPUUnderused", namespace="serving", pod="ranker-7d9f8b6c4-x2x9q", service="ranker"
        ),
        "P1 staging/ranker": firing(staging, "TritonQueueTimeHigh"),
        "P1 serving/search": firing(search, "TritonQueueTimeHigh"),
        "P1 no service": firing(gpu, "GPUXidErrors", Hostname="node-a", gpu="0"),
        # A GPU fault somewhere says nothing about spot capacity: both stay active.
        "P2 no service": firing(gpu, "SpotGPUCapacityGone", node_group="eks-nodes-gpu-spot-us-east-1a-ng-1"),
    }
    http(f"{alertmanager}/api/v2/alerts", list(alerts.values()))
    expected = {
        name: "suppressed" if name in ("P1 serving/ranker", "P2 serving/ranker") else "active"
        for name in alerts
    }
    by_labels = {json.dumps(a["labels"], sort_keys=True): name for name, a in alerts.items()}
    deadline = time.monotonic() + 10
    while True:  # the inhibitor learns of the P0 asynchronously, within moments
        states = {
            by_labels[json.dumps(a["labels"], sort_keys=True)]: a["status"]["state"]
            for a in http(f"{alertmanager}/api/v2/alerts")
        }
        if states == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert states == expected


def test_alerts_are_grouped_per_service() -> None:
    assert alertmanager_config()["route"]["group_by"] == ["namespace", "service"]


def test_alertmanager_config_passes_amtool_check(tmp_path: Path) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(alertmanager_config()))
    result = subprocess.run(
        [require_tool("amtool"), "check-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Found:" in result.stdout and "1 receivers" in result.stdout
    broken = alertmanager_config() | {"route": {"receiver": "nobody"}}
    path.write_text(yaml.safe_dump(broken))
    assert (
        subprocess.run(
            [require_tool("amtool"), "check-config", str(path)], capture_output=True, timeout=60
        ).returncode
        != 0
    )
