"""Alerts reach people: receivers per severity from stack config, proven on amtool and a real
Alertmanager; secrets never in the plan; the chart's rules that cannot be true on EKS are off."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferstack.components.alert_routing import AlertRouting, Receiver, check_routing, sns_publish_policy
from inferstack.components.alerts import alertmanager_config
from inferstack.components.monitoring import Monitoring, MonitoringArgs
from inferstack.infra.errors import InvalidInput
from inferstack.serving.local.processes import free_port, start_child
from inferstack.serving.local.prometheus import wait_ready
from inferstack.stacks import offline
from inferstack.stacks.plan import preview_json
from tests.components.test_alerts import alertmanager_binary, http
from tests.components.test_helm_render import render_monitoring
from tests.conftest import ROOT, require_tool
from tests.harness import run_program

PAGER_KEY = "R0ut1ngKeyThatMustNeverShow0000"
SLACK_URL = "https://hooks.slack.example/services/T0/B0/s3cr3t-never-in-the-plan"
TOPIC = "arn:aws:sns:us-east-1:123456789012:inferstack-p2"
SECRET_SIG, SECRET_MARK = (
    "4dabf18193072939515e22adb298388d",
    "1b47061264138c4ac30d75fd1eb44270",
)  # engine form
ROUTING = AlertRouting(
    receivers=(
        Receiver("oncall", pagerduty_routing_key=PAGER_KEY),
        Receiver("ops-chat", webhook_url=SLACK_URL, slack_channel="#inference"),
        Receiver("ops-topic", sns_topic_arn=TOPIC),
    ),
    by_severity={"P0": ("oncall", "ops-chat"), "P1": ("ops-chat",), "P2": ("ops-topic",)},
)


def routes_test(tmp_path: Path, config: dict[str, Any], *labels: str) -> set[str]:
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [require_tool("amtool"), "config", "routes", "test", f"--config.file={path}", *labels],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(out.stdout.strip().split(","))


def test_amtool_routes_each_severity_to_its_receivers_and_watchdog_nowhere(tmp_path: Path) -> None:
    config = alertmanager_config(ROUTING)
    assert routes_test(tmp_path, config, "alertname=TritonServiceDown", "severity=P0", "service=ranker") == {
        "oncall",
        "ops-chat",
    }
    assert routes_test(tmp_path, config, "alertname=QueueTimeHigh", "severity=P1") == {"ops-chat"}
    assert routes_test(tmp_path, config, "alertname=GpusIdle", "severity=P2") == {"ops-topic"}
    # The dead man's switch fires always: it must not page, whatever severity it carries.
    for severity in ("none", "P0"):
        assert routes_test(tmp_path, config, "alertname=Watchdog", f"severity={severity}") == {"null"}
    assert routes_test(tmp_path, config, "alertname=KubePodCrashLooping", "severity=warning") == {"null"}
    # Without routing (today's main), P0 goes nowhere: the check above is what changed.
    assert routes_test(tmp_path, alertmanager_config(), "alertname=TritonServiceDown", "severity=P0") == {
        "null"
    }


class _Inbox(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def inbox() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver on loopback that keeps what it is sent."""
    received: list[dict[str, Any]] = []
    handler = type("Inbox", (_Inbox,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.real_server
def test_a_real_alertmanager_delivers_a_fired_p0_to_the_webhook(
    tmp_path: Path, inbox: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = inbox
    routing = AlertRouting(receivers=(Receiver("hook", webhook_url=url),), by_severity={"P0": ("hook",)})
    config = alertmanager_config(routing)
    config["route"]["group_wait"] = "1s"  # the routing under test; 30 s of batching is not
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        alertmanager_binary(),
        f"--config.file={path}",
        f"--storage.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    child = start_child("alertmanager", argv, log=tmp_path / "am.log", env={"PATH": "/usr/bin:/bin"})
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(child, f"{base}/-/ready", timeout_s=20)
        fired = [
            {"labels": {"alertname": "TritonServiceDown", "severity": "P0", "service": "ranker"}},
            {"labels": {"alertname": "Watchdog", "severity": "none"}},
        ]
        http(f"{base}/api/v2/alerts", fired)
        deadline = time.monotonic() + 20
        while not received and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        child.stop()
    assert received, f"nothing delivered; see {tmp_path / 'am.log'}"
    names = {a["labels"]["alertname"] for message in received for a in message["alerts"]}
    assert names == {"TritonServiceDown"} and received[0]["receiver"] == "hook"


@pytest.mark.parametrize(
    ("routing", "field"),
    [
        (AlertRouting(by_severity={"P0": ("nobody",)}), "alerts.p0"),
        (AlertRouting(receivers=(Receiver("x"),)), "alerts.receivers[0]"),
        (
            AlertRouting(receivers=(Receiver("x", webhook_url="http://plain"),)),
            "alerts.receivers[0].webhookUrl",
        ),
        (
            AlertRouting(receivers=(Receiver("x", sns_topic_arn="my-topic"),)),
            "alerts.receivers[0].snsTopicArn",
        ),
        (AlertRouting(receivers=(Receiver("null", sns_topic_arn=TOPIC),)), "alerts.receivers[0].name"),
    ],
)
def test_bad_routing_names_the_key(routing: AlertRouting, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_routing(routing, "alerts")
    assert caught.value.field == field


ALERTS_SETTING = json.dumps(
    {
        "receivers": [
            {"name": "oncall", "pagerdutyRoutingKey": PAGER_KEY},
            {"name": "ops-topic", "snsTopicArn": TOPIC},
        ],
        "p0": ["oncall"],
        "p2": ["ops-topic"],
    }
)
SETTINGS = {
    "inferstack:cluster.publicAccessCidrs": '["198.51.100.7/32"]',
    "inferstack:alerts": ALERTS_SETTING,
}


def test_the_plan_never_shows_a_receiver_secret() -> None:
    recording = offline.run_stack(ROOT / "stacks", "prod", SETTINGS, secret_keys=["inferstack:alerts"])
    config = offline.with_settings(offline.stack_config(ROOT / "stacks", "prod"), SETTINGS)
    plan = json.dumps(preview_json(recording, "prod", config))
    assert PAGER_KEY not in plan
    release = next(
        r
        for r in recording.of_type("kubernetes:helm.sh/v3:Release")
        if r.inputs["chart"] == "kube-prometheus-stack"
    )
    values = release.inputs["values"]
    assert values.get(SECRET_SIG) == SECRET_MARK  # the chart's values travel as a secret
    # The Alertmanager publishes to SNS with its own role, limited to the configured topic.
    alertmanager = values["value"]["alertmanager"]
    assert alertmanager["config"]["receivers"][1]["pagerduty_configs"][0]["routing_key"] == PAGER_KEY
    assert alertmanager["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"]
    policies = [json.loads(p.inputs["policy"]) for p in recording.of_type("aws:iam/rolePolicy:RolePolicy")]
    assert sns_publish_policy([TOPIC]) in policies


def test_a_receiver_secret_in_plain_config_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        offline.run_stack(ROOT / "stacks", "prod", SETTINGS)
    assert caught.value.field == "inferstack:alerts"


def test_rules_that_cannot_be_true_on_eks_are_not_rendered(vendor_dir: Path) -> None:
    recording, _ = run_program(lambda: Monitoring("monitoring", MonitoringArgs()))
    values = recording.one("kubernetes:helm.sh/v3:Release").inputs["values"]
    objects = render_monitoring(vendor_dir, values)
    alerts = {
        rule["alert"]
        for o in objects
        if o["kind"] == "PrometheusRule"
        for group in o["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert "Watchdog" in alerts and "KubeAPIErrorBudgetBurn" in alerts  # the rules did render
    for never_true in (
        "KubeSchedulerDown",
        "KubeControllerManagerDown",
        "etcdMembersDown",
        "etcdInsufficientMembers",
    ):
        assert never_true not in alerts
    scraped = {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceMonitor"}
    assert not any(s.endswith(("kube-scheduler", "kube-controller-manager", "kube-etcd")) for s in scraped)
