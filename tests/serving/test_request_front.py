"""The cluster's request front for real: Debian's nginx with njs 0.7.9 running the very nginx.conf and
njs script the pods get (only ports and file paths differ) in front of the real Triton 2.51.

The shared request table (tests/request_cases.py) goes through it: every refusal is the Python rule's,
word for word, and every valid request gets Triton's own answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from inferstack.components.model_service import METRICS_PORT, ModelSource, TritonModelServiceArgs
from inferstack.components.model_service.pod import TRITON_HTTP_PORT, triton_args
from inferstack.components.request_front import LIVE_PATH, REQUEST_ID_CHARS, TIMES_LOG
from inferstack.infra.errors import InvalidInput
from inferstack.infra.log_volume import FRONT_LOG_BYTES_PER_REQUEST
from inferstack.serving.client.limits import limits_from_config
from inferstack.serving.local.gateway import check_body
from inferstack.serving.local.processes import RuntimeFailure, find_triton, free_port
from inferstack.serving.local.request_front import RunningFront, running_front
from inferstack.serving.local.runtime import LocalRuntime
from tests.conftest import require_tool, unavailable
from tests.request_cases import CASES, HUGE, LIMITS, REFUSED, VALID, RequestCase

pytestmark = pytest.mark.real_server

REFUSAL = "refused before reaching Triton: "


def post(url: str, body: bytes, header_length: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json" if header_length is None else "application/octet-stream"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = header_length
    request = urllib.request.Request(url, body, headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def running(served: LocalRuntime) -> Iterator[RunningFront]:
    require_tool("nginx")
    try:
        with running_front(served.http_url) as front:
            yield front
    except RuntimeFailure as failure:
        if "needs nginx" not in str(failure):
            raise
        unavailable(str(failure))


@pytest.fixture(scope="module")
def front(running: RunningFront) -> str:
    return running.url


def test_triton_serves_the_limits_the_table_assumes(served: LocalRuntime) -> None:
    for model, limits in LIMITS.items():
        status, config = get(f"{served.http_url}/v2/models/{model}/config")
        assert status == 200 and limits_from_config(json.loads(config)) == limits


def test_the_crashing_request_is_refused_and_triton_keeps_serving(front: str, served: LocalRuntime) -> None:
    crashing = REFUSED[0]
    assert crashing.header == {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [8, HUGE], "data": [0.25] * 16}]
    }
    status, body = post(f"{front}/v2/models/demo/infer", crashing.body())
    assert status == 400 and json.loads(body)["error"].startswith(REFUSAL + "[8, 1099511627776]: not valid")
    assert all(c.alive() for c in served.children)
    valid = CASES[0].body()
    answer = post(f"{front}/v2/models/demo/infer", valid)
    assert answer[0] == 200 and answer == post(f"{served.http_url}/v2/models/demo/infer", valid)


def python_refusal(case: RequestCase) -> str:
    with pytest.raises(InvalidInput) as caught:
        check_body(LIMITS[case.model], case.body(), case.inference_header_length())
    return REFUSAL + str(caught.value)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.label)
def test_the_shared_request_cases_through_the_njs_rule(
    case: RequestCase, front: str, served: LocalRuntime
) -> None:
    for path in (f"/v2/models/{case.model}/infer", f"/v2/models/{case.model}/versions/1/infer"):
        status, body = post(front + path, case.body(), case.inference_header_length())
        if case.refused is None:
            # Handed over unchanged: Triton's own answer, as it gives it without the front.
            direct = post(served.http_url + path, case.body(), case.inference_header_length())
            assert (status, json.loads(body)) == (200, json.loads(direct[1])), body
        else:
            assert (status, json.loads(body)["error"]) == (400, python_refusal(case))
    assert all(c.alive() for c in served.children)


def test_what_is_not_an_inference_passes_through_and_limits_hold(front: str, served: LocalRuntime) -> None:
    assert get(f"{front}/v2/health/ready")[0] == 200
    assert json.loads(get(f"{front}/v2/models/ranker/config")[1])["name"] == "ranker"
    status, body = post(f"{front}/v2/models/absent/infer", CASES[0].body())
    assert status == 400 and json.loads(body)["error"].startswith(
        REFUSAL + "model 'absent' is not served here"
    )
    # Over the 64 MiB data limit plus the header allowance: refused unread, in Triton's error format.
    status, body = post(f"{front}/v2/models/demo/infer", b"{" + b" " * (65 << 20) + b"}")
    assert status == 413 and "limit" in json.loads(body)["error"]
    assert post(f"{front}/v2/models/demo/infer", CASES[0].body())[0] == 200
    assert all(c.alive() for c in served.children)


def test_the_model_configs_come_from_tritons_cache(front: str, running: RunningFront) -> None:
    """The check's limits are Triton's own config, fetched on loopback and kept by nginx's cache."""
    assert post(f"{front}/v2/models/ranker/infer", VALID[3].body())[0] == 200
    cached = [p for p in (running.folder / "tmp" / "model-configs").rglob("*") if p.is_file()]
    assert any(b"/_front/model-config/ranker/config" in p.read_bytes() for p in cached)


def test_grpc_needs_no_front_triton_checks_the_shape_first(served: LocalRuntime) -> None:
    """Why the pod's gRPC port stays open: the crashing shape over gRPC is an INVALID_ARGUMENT, with or
    without data, and Triton keeps serving. Its health service is what the liveness probe asks."""
    with grpc.insecure_channel(served.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for raw in (None, b"\0" * 64):
            request = service_pb2.ModelInferRequest(model_name="demo")
            declared = request.inputs.add(name="features", datatype="FP32")
            declared.shape.extend([8, HUGE])
            if raw is not None:
                request.raw_input_contents.append(raw)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(request, timeout=20)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # grpc.health.v1.Health/Check, empty request -> HealthCheckResponse{status: SERVING}
        assert channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5) == b"\x08\x01"
    assert all(c.alive() for c in served.children)


def listening_tcp4() -> set[tuple[str, int]]:
    """(address, port) of every listening IPv4 TCP socket, from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A":  # LISTEN
            address, port = fields[1].split(":")
            found.add((".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)), int(port, 16)))
    return found


@pytest.mark.usefixtures("triton_present")
@pytest.mark.parametrize("with_metrics_address", [True, False])
def test_triton_binds_http_to_loopback_and_metrics_to_every_address_as_the_pod_says(
    tmp_path: Path, with_metrics_address: bool
) -> None:
    """The pod's binding flags on the real 2.51 binary; without --metrics-address, metrics would follow
    --http-address onto loopback, out of Prometheus's reach."""
    pod = TritonModelServiceArgs(
        models=["demo"],
        source=ModelSource(role_arn="arn:aws:iam::1:role/r", repository_uri="s3://b/p"),
        zones=3,
    )
    flags = [
        a
        for a in triton_args(pod, "s3://b/p")
        if isinstance(a, str) and a.startswith(("--http-", "--metrics-"))
    ]
    assert "--http-address=127.0.0.1" in flags and f"--http-port={TRITON_HTTP_PORT}" in flags
    if not with_metrics_address:
        flags.remove("--metrics-address=0.0.0.0")
    http, metrics = free_port(), free_port()
    ports = {
        f"--http-port={TRITON_HTTP_PORT}": f"--http-port={http}",
        f"--metrics-port={METRICS_PORT}": f"--metrics-port={metrics}",
    }
    triton = find_triton()
    env = {**os.environ, "LD_LIBRARY_PATH": str(triton.libraries)}
    argv = [
        str(triton.server),
        f"--model-repository={tmp_path}",
        f"--grpc-port={free_port()}",
        *(ports.get(f, f) for f in flags),
    ]
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while not {http, metrics} <= {port for _, port in listening_tcp4()} and time.monotonic() < deadline:
            time.sleep(0.1)
        bound = {port: address for address, port in listening_tcp4() if port in (http, metrics)}
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert bound == {http: "127.0.0.1", metrics: "0.0.0.0" if with_metrics_address else "127.0.0.1"}


def front_counters(running: RunningFront) -> dict[str, float]:
    status, text = get(running.metrics_url)
    assert status == 200
    # Prometheus's own linter reads the exposition: parse errors fail here.
    lint = subprocess.run(
        [require_tool("promtool"), "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    return {
        name: float(value)
        for name, value in (line.split() for line in text.decode().splitlines() if not line.startswith("#"))
    }


def test_the_time_requests_spend_in_the_front_is_exported(
    running: RunningFront, served: LocalRuntime
) -> None:
    """Every inference request through the front counts once, refused or answered, with the time the
    front held it less the time Triton took to answer; the liveness probe folds the log, so it stays
    small when nothing scrapes."""
    before = front_counters(running)
    big = json.dumps(
        {
            "inputs": [
                {
                    "name": "tokens",
                    "datatype": "FP32",
                    "shape": [16, 4096, 4],
                    "data": [0.5] * (16 * 4096 * 4),
                }
            ]
        }
    ).encode()
    for _ in range(3):
        assert post(f"{running.url}/v2/models/sequence/infer", big)[0] == 200
    assert post(f"{running.url}/v2/models/demo/infer", REFUSED[0].body())[0] == 400
    assert get(f"{running.url}/v2/health/ready")[0] == 200  # not an inference: not counted
    assert get(running.url + LIVE_PATH)[0] == 200
    assert (running.folder / "tmp" / TIMES_LOG).stat().st_size == 0
    after = front_counters(running)
    assert after["inferstack_front_requests_total"] - before["inferstack_front_requests_total"] == 4
    spent = after["inferstack_front_seconds_total"] - before["inferstack_front_seconds_total"]
    # njs parsing 4 MiB of JSON takes milliseconds of the worker's time, each of three times.
    assert 0.003 < spent < 30
    assert all(c.alive() for c in served.children)


def access_lines(running: RunningFront) -> list[dict[str, object]]:
    """The front's request log: its stdout's JSON lines (nginx's warnings share the file)."""
    text = (running.folder / "nginx.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def named(case: RequestCase, request_id: str) -> bytes:
    """The case's request with ``"id": request_id`` in its JSON."""
    assert isinstance(case.header, dict)
    return json.dumps({**case.header, "id": request_id}).encode()


def test_every_inference_request_logs_one_json_line_with_its_request_id(
    running: RunningFront, served: LocalRuntime
) -> None:
    """What Triton at --log-verbose=0 never writes: one line per inference request, refused or answered,
    with the id the request carries (JSON or binary), its model, status, sizes and times."""
    before = len(access_lines(running))
    assert post(f"{running.url}/v2/models/demo/infer", named(CASES[0], "req-json-7"))[0] == 200
    assert post(f"{running.url}/v2/models/demo/infer", named(CASES[0], "x" * 100_000))[0] == 200
    assert post(f"{running.url}/v2/models/demo/infer", CASES[0].body())[0] == 200  # no id
    assert post(f"{running.url}/v2/models/demo/infer", named(REFUSED[0], "req-refused-8"))[0] == 400
    binary = next(c for c in VALID if c.binary is not None)
    header = named(binary, "req-binary-9")
    status, _ = post(
        f"{running.url}/v2/models/{binary.model}/versions/1/infer",
        header + (binary.binary or b""),
        str(len(header)),
    )
    assert status == 200
    assert get(f"{running.url}/v2/health/ready")[0] == 200  # not an inference: no line
    time.sleep(0.2)
    lines = access_lines(running)[before:]
    assert [(line["request_id"], line["model"], line["status"]) for line in lines] == [
        ("req-json-7", "demo", 200),
        ("x" * REQUEST_ID_CHARS, "demo", 200),  # a client's huge id, cut: Fluent Bit would skip the line
        ("", "demo", 200),
        ("req-refused-8", "demo", 400),
        ("req-binary-9", binary.model, 200),
    ]
    answered = lines[0]
    assert answered["triton_seconds"] not in ("", "-") and lines[3]["triton_seconds"] == ""  # refused
    assert isinstance(answered["seconds"], float) and isinstance(answered["request_bytes"], int)


def test_the_request_logs_bytes_per_request_are_the_measured_ones(running: RunningFront) -> None:
    """What infra.log_volume (and so `inferstack cost`) says a request's front line costs: 100 requests
    with ids like Triton's measurement (req-0 .. req-99), no traceparent."""
    log = running.folder / "nginx.log"
    size = log.stat().st_size
    for i in range(100):
        assert post(f"{running.url}/v2/models/demo/infer", named(CASES[0], f"req-{i}"))[0] == 200
    time.sleep(0.2)
    grown = log.read_bytes()[size:].decode().splitlines(keepends=True)
    assert len(grown) == 100 and all(line.startswith("{") for line in grown)
    per_request = sum(len(line.encode()) for line in grown) / 100
    print(f"request front log per request: {per_request:.0f} B")
    # Timestamps and times vary in width a little from run to run.
    assert per_request == pytest.approx(FRONT_LOG_BYTES_PER_REQUEST, rel=0.05)
