"""Every Triton query inferstack ships, evaluated by a real Prometheus scraping a real Triton under load.

A query with a misspelled metric or label returns nothing and autoscales nothing; here each one must
return data, and queue time per request must rise under concurrent load compared with light traffic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from inferstack.components import promql
from inferstack.components.alerts import service_rule_group
from inferstack.components.dashboards import triton_dashboard
from inferstack.components.gpu import dcgm_exporter_values
from inferstack.components.model_service import ModelSource, TritonModelServiceArgs, scaled_object
from inferstack.serving.client.client import TritonClient
from inferstack.serving.local.processes import RuntimeFailure
from inferstack.serving.local.prometheus import LocalPrometheus, ScrapeTarget
from inferstack.serving.local.runtime import LocalRuntime
from tests.conftest import require_tool, unavailable

pytestmark = pytest.mark.real_server

NAMESPACE, MODEL, SERVICE = "serving", "demo", "demo"
# The service a cluster would run for this model; its ScaledObject's queries are evaluated verbatim.
SERVICE_ARGS = TritonModelServiceArgs(
    models=[MODEL],
    namespace=NAMESPACE,
    source=ModelSource(role_arn="arn:aws:iam::1:role/r", repository_uri="s3://b/p"),
    zones=3,
    region="us-east-1",
)


def keda_trigger_queries() -> dict[str, str]:
    """The query strings of the ScaledObject itself (the GPU trigger is off: no GPU, no DCGM here)."""
    return {
        t["name"]: t["metadata"]["query"] for t in scaled_object(SERVICE, SERVICE_ARGS)["spec"]["triggers"]
    }


def shipped_queries() -> dict[str, str]:
    """Dashboards' Triton panels, the service alert rules over Triton metrics, and the KEDA-facing functions."""
    queries = {
        f"dashboard {panel['title']}": target["expr"]
        .replace("$model", MODEL)
        .replace("$namespace", NAMESPACE)
        for panel in triton_dashboard()["panels"]
        for target in panel["targets"]
    }
    group = service_rule_group(service=SERVICE, namespace=NAMESPACE, models=[MODEL], queue_time_target_ms=50)
    for rule in group["rules"]:
        if "nv_inference" in rule["expr"]:  # TritonNoReadyReplica reads kube-state-metrics, not Triton
            # The alert's comparison filters its result; the query under it must return data.
            queries[f"rule {rule['alert']}"] = rule["expr"].rsplit(" > ", 1)[0]
    for name, query in promql.triton_queries(model=MODEL, namespace=NAMESPACE).items():
        queries[f"promql {name}"] = query
    for name, query in keda_trigger_queries().items():
        queries[f"keda {name}"] = query
    return queries


@pytest.fixture(scope="module")
def prometheus(served: LocalRuntime) -> Iterator[LocalPrometheus]:
    require_tool("prometheus")
    target = ScrapeTarget(
        "triton", served.metrics_url, {"namespace": NAMESPACE, "service": SERVICE, "pod": "demo-5f7b9c-abcde"}
    )
    try:
        with LocalPrometheus([target], interval_s=1.0) as running:
            assert running.wait_for(
                f'nv_inference_request_success{{namespace="{NAMESPACE}",model="{MODEL}"}}'
            )
            yield running
    except RuntimeFailure as error:
        unavailable(str(error))


def drive(url: str, *, workers: int, seconds: float, pause_s: float = 0.0) -> int:
    """Send requests from ``workers`` threads for ``seconds``; returns how many were answered."""
    deadline = time.monotonic() + seconds
    batch = {"features": np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)}

    def worker() -> int:
        done = 0
        with TritonClient(url, timeout_s=10) as client:
            while time.monotonic() < deadline:
                client.infer(MODEL, batch)
                done += 1
                time.sleep(pause_s)
        return done

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(lambda _: worker(), range(workers)))


def value(prometheus: LocalPrometheus, expr: str) -> float:
    result = prometheus.query(expr)
    assert len(result) == 1, (expr, result)
    return float(result[0]["value"][1])


def test_every_shipped_triton_query_returns_data_and_queue_time_rises_under_load(
    served: LocalRuntime, prometheus: LocalPrometheus
) -> None:
    queue = promql.triton_queue_time_per_request_ms(model=MODEL, namespace=NAMESPACE)
    keda_queue = keda_trigger_queries()[f"queue-time-{MODEL}"]
    light = drive(served.http_url, workers=1, seconds=6, pause_s=0.2)
    time.sleep(3)  # let two scrapes land
    idle_queue, idle_keda = value(prometheus, queue), value(prometheus, keda_queue)

    heavy = drive(served.http_url, workers=32, seconds=12)
    time.sleep(3)
    loaded_queue, loaded_keda = value(prometheus, queue), value(prometheus, keda_queue)
    print(
        f"\nlight: {light} requests, queue {idle_queue:.3f} ms/request (KEDA metric {idle_keda:.3f}); "
        f"heavy: {heavy} requests, queue {loaded_queue:.3f} ms/request (KEDA metric {loaded_keda:.3f})"
    )
    assert heavy > light
    assert loaded_queue > idle_queue
    assert loaded_keda > idle_keda  # the autoscaling signal itself rises

    batch = value(prometheus, promql.triton_average_batch_size(model=MODEL, namespace=NAMESPACE))
    assert batch > 1.0, "concurrent load should be merged into batches"
    assert value(prometheus, promql.triton_request_rate(model=MODEL, namespace=NAMESPACE)) > 0

    empty = {name: query for name, query in shipped_queries().items() if not prometheus.query(query)}
    assert not empty, f"queries that returned no data: {empty}"


def test_a_misspelled_query_would_have_been_caught(prometheus: LocalPrometheus) -> None:
    broken = promql.triton_request_rate(model=MODEL, namespace=NAMESPACE).replace(
        "nv_inference_request_success", "nv_inference_requests_success"
    )
    assert prometheus.query(broken) == []
    wrong_label = promql.triton_pending_requests(model=MODEL, namespace="other")
    assert prometheus.query(wrong_label) == []


# --- GPU queries against DCGM exporter series, as the cluster's scrape labels them --------------------

NODE, SERVICE_POD = "ip-10-0-1-5.ec2.internal", "ranker-7d9f8b6c4-x2x9q"
# Shaped as dcgm-exporter 4.8.2 renders them (rendermetrics): GPU 0 is held by a serving pod (the
# exporter adds its namespace/pod/container), GPU 1 by no pod.
_GPU = 'device="nvidia{i}",gpu="{i}",modelName="NVIDIA A10G",Hostname="{node}",UUID="GPU-{i}"'
DCGM_TEXT = "\n".join(
    [
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge",
        "DCGM_FI_DEV_GPU_UTIL{"
        + _GPU.format(i=0, node=NODE)
        + f',container="triton",namespace="serving",pod="{SERVICE_POD}"}} 87',
        "DCGM_FI_DEV_GPU_UTIL{" + _GPU.format(i=1, node=NODE) + "} 0",
        "",
    ]
)
# What the Prometheus Operator attaches to every target of the exporter's ServiceMonitor.
OPERATOR_TARGET_LABELS = {
    "namespace": "gpu-operators",
    "service": "dcgm-exporter",
    "pod": "dcgm-exporter-x7k2p",
    "container": "exporter",
    "endpoint": "metrics",
}


@contextmanager
def fake_dcgm_exporter() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = DCGM_TEXT.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def scrape_as_service_monitor(url: str, service_monitor: dict[str, Any]) -> ScrapeTarget:
    """The scrape the operator generates from a ServiceMonitor endpoint's honorLabels and relabelings."""
    snake = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    relabel = [{snake.get(k, k): v for k, v in r.items()} for r in service_monitor.get("relabelings", [])]
    return ScrapeTarget(
        "dcgm-exporter",
        url,
        OPERATOR_TARGET_LABELS,
        honor_labels=bool(service_monitor.get("honorLabels", False)),
        relabel_configs=relabel,
    )


@pytest.fixture(scope="module")
def gpu_results() -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The GPU queries' answers under our ServiceMonitor and under the chart's default one.

    Two Prometheus servers side by side: each takes ~5 s to apply its first targets.
    """
    require_tool("prometheus")
    monitors = {
        "ours": dcgm_exporter_values()["serviceMonitor"],
        "chart default": {"honorLabels": False, "relabelings": []},
    }
    queries = {
        "service": promql.gpu_utilization(
            namespace="serving", pod_regex=promql.deployment_pod_regex(service="ranker")
        ),
        "by_pod": promql.GPU_UTILIZATION_BY_POD,
        "by_node": promql.GPU_UTILIZATION_BY_NODE,
    }
    try:
        with ExitStack() as stack:
            url = stack.enter_context(fake_dcgm_exporter())
            servers = {
                name: stack.enter_context(LocalPrometheus([scrape_as_service_monitor(url, monitor)]))
                for name, monitor in monitors.items()
            }
            for server in servers.values():
                assert server.wait_for("DCGM_FI_DEV_GPU_UTIL")
            return {
                name: {key: server.query(query) for key, query in queries.items()}
                for name, server in servers.items()
            }
    except RuntimeFailure as error:
        unavailable(str(error))
        raise


def test_gpu_queries_see_the_serving_pods_gpu_through_our_service_monitor(
    gpu_results: dict[str, dict[str, list[dict[str, Any]]]],
) -> None:
    found = gpu_results["ours"]
    assert [float(s["value"][1]) for s in found["service"]] == [87.0]
    # Only the GPU a pod holds is attributed, and to that pod, not to the exporter's own.
    assert [s["metric"] for s in found["by_pod"]] == [{"namespace": "serving", "pod": SERVICE_POD}]
    assert sorted(s["metric"]["gpu"] for s in found["by_node"]) == ["0", "1"]


def test_with_the_charts_default_service_monitor_the_service_gpu_query_sees_nothing(
    gpu_results: dict[str, dict[str, list[dict[str, Any]]]],
) -> None:
    """The failure our values prevent: the exporter's pod labels renamed exported_*, no GPU per service."""
    found = gpu_results["chart default"]
    assert found["service"] == []
    assert {s["metric"]["pod"] for s in found["by_pod"]} == {"dcgm-exporter-x7k2p"}
