"""Traces and logs: a client's trace id reaches Triton's spans, and Triton's log lines become records.

The real-server test runs the Triton 2.51 that the cluster image ships, with OpenTelemetry export to
a receiver on loopback; the decoding tests use what that Triton really sent (captured on 2026-11-23).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from inferstack.infra.errors import InvalidInput
from inferstack.serving.client.client import TritonClient
from inferstack.serving.local.demo import build_demo_repository
from inferstack.serving.local.runtime import LocalRuntime
from inferstack.serving.local.tracing import (
    SpanReceiver,
    decode_export,
    request_timings,
    traceparent,
    triton_trace_args,
)
from inferstack.serving.local.triton_logs import (
    parse_line,
    parse_lines,
    request_states,
    triton_log_args,
    write_json_lines,
)
from tests.conftest import packages_loaded_by

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def exported(
    span_id: str,
    parent: str,
    name: str,
    events: dict[str, str],
    *,
    attributes: list[dict[str, Any]] | None = None,
    resource: dict[str, Any] | None = None,
    scope: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One span in one OTLP/JSON export, as Triton 2.51 sends it: the span starts at its first event and
    ends at its last; attributes, resource and scope appear where Triton sends them."""
    times = list(events.values())
    span: dict[str, Any] = {
        **({} if attributes is None else {"attributes": attributes}),
        "endTimeUnixNano": times[-1],
        "events": [{"name": event, "timeUnixNano": at} for event, at in events.items()],
        "kind": 2,
        "name": name,
        "parentSpanId": parent,
        "spanId": span_id,
        "startTimeUnixNano": times[0],
        "traceId": TRACE,
    }
    scopes = {"spans": [span]} if scope is None else {"scope": scope, "spans": [span]}
    found = {"scopeSpans": [scopes]} if resource is None else {"resource": resource, "scopeSpans": [scopes]}
    return {"resourceSpans": [found]}


# Two of the three exports Triton 2.51 made for one request (trimmed to one resource attribute).
MODEL_SPAN = exported(
    "610c238a3262a793",
    "0edf482053b46ce9",
    "demo",
    {
        "REQUEST_START": "1795452823813186568",
        "QUEUE_START": "1795452823813212757",
        "REQUEST_END": "1795452823964576888",
    },
    attributes=[
        {"key": "triton.model_name", "value": {"stringValue": "demo"}},
        {"key": "triton.model_version", "value": {"intValue": "1"}},
    ],
    resource={"attributes": [{"key": "service.name", "value": {"stringValue": "triton-local"}}]},
    scope={"name": "triton-server"},
)
COMPUTE_SPAN = exported(
    "593899af3ee3fd30",
    "610c238a3262a793",
    "compute",
    {
        "COMPUTE_START": "1795452823815568879",
        "COMPUTE_INPUT_END": "1795452823815886743",
        "COMPUTE_OUTPUT_START": "1795452823963478350",
        "COMPUTE_END": "1795452823963605510",
    },
)


def test_triton_json_exports_decode_with_hex_ids() -> None:
    (model,) = decode_export(json.dumps(MODEL_SPAN).encode(), "application/json")
    assert model.trace_id == TRACE and model.span_id == "610c238a3262a793"
    assert model.parent_span_id == "0edf482053b46ce9"
    assert model.attributes == {"triton.model_name": "demo", "triton.model_version": 1}
    assert model.events["QUEUE_START"] == 1795452823813212757


def test_protobuf_exports_decode_too() -> None:
    span = ProtoSpan(trace_id=bytes.fromhex(TRACE), span_id=bytes.fromhex("593899af3ee3fd30"), name="compute")
    body = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    ).SerializeToString()
    (decoded,) = decode_export(body, "application/x-protobuf")
    assert decoded.trace_id == TRACE and decoded.name == "compute"


def test_stage_timings_come_from_the_model_span_and_its_compute_child() -> None:
    spans = decode_export(json.dumps(MODEL_SPAN).encode(), "application/json") + decode_export(
        json.dumps(COMPUTE_SPAN).encode(), "application/json"
    )
    (timing,) = request_timings(spans)
    assert timing.model == "demo" and timing.trace_id == TRACE
    assert timing.stages_us == pytest.approx(
        {
            "queue": (1795452823815568879 - 1795452823813212757) / 1e3,
            "compute_input": (1795452823815886743 - 1795452823815568879) / 1e3,
            "infer": (1795452823963478350 - 1795452823815886743) / 1e3,
            "compute_output": (1795452823963605510 - 1795452823963478350) / 1e3,
        }
    )
    assert timing.total_us == pytest.approx((1795452823964576888 - 1795452823813186568) / 1e3)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"trace_id": "xyz"}, "trace_id"),
        ({"parent_id": "0" * 16}, "parent_id"),
        ({"trace_id": "A" * 32}, "trace_id"),
    ],
)
def test_traceparent_refuses_ids_w3c_does_not_allow(kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        traceparent(**kwargs)
    assert caught.value.field == field


def test_trace_flags_are_checked() -> None:
    args = triton_trace_args("http://127.0.0.1:4318/v1/traces", rate=100, service_name="ranker")
    assert args[args.index("mode=opentelemetry") - 1] == "--trace-config"
    assert "rate=100" in args and "opentelemetry,url=http://127.0.0.1:4318/v1/traces" in args
    with pytest.raises(InvalidInput):
        triton_trace_args("http://127.0.0.1:4318", rate=1)
    with pytest.raises(InvalidInput):
        triton_trace_args("http://127.0.0.1:4318/v1/traces", rate=0)


def test_the_flags_shared_with_the_cluster_keep_serving_free_of_pulumi() -> None:
    """Triton's flags and log pattern live in components.triton_telemetry, which imports no Pulumi."""
    loaded = packages_loaded_by("inferstack.serving.local.tracing", "inferstack.serving.local.triton_logs")
    assert "inferstack" in loaded and not [p for p in loaded if p.startswith("pulumi")]


LOG = [
    '2026-11-23T16:54:26Z I 30519 infer_request.cc:132] "[request id: req-42] Setting state from INITIALIZED to PENDING"\n',
    '2026-11-23T16:54:26Z I 30519 infer_request.cc:905] "[request id: req-42] prepared: [0x0x7f2b68004590] request id: req-42, model: demo, requested version: -1, actual version: 1, flags: 0x0\\noriginal inputs:\\n"\n',
    "| exit_timeout                     | 1 |\n",
    '2026-11-23T16:54:26Z I 30519 infer_request.cc:132] "[request id: req-42] Setting state from PENDING to EXECUTING"\n',
    "2026-11-23T16:54:27Z E 30520 model_lifecycle.cc:654] \"failed to load 'x'\"\n",
]


def test_log_lines_become_records_with_request_ids(tmp_path: Path) -> None:
    records = list(parse_lines(LOG))
    assert len(records) == 4  # the table row is not a log entry
    prepared = records[1]
    assert prepared.request_id == "req-42" and prepared.model == "demo" and prepared.model_version == 1
    assert records[3].level == "error" and records[3].request_id is None
    assert request_states(records) == {"req-42": ["PENDING", "EXECUTING"]}
    assert write_json_lines(records, tmp_path / "triton.jsonl") == 4
    first = json.loads((tmp_path / "triton.jsonl").read_text().splitlines()[0])
    assert first["request_id"] == "req-42" and first["source"] == "infer_request.cc:132"
    assert parse_line("not a log line") is None


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory, triton_present: None
) -> Iterator[tuple[LocalRuntime, SpanReceiver]]:
    repository = build_demo_repository(tmp_path_factory.mktemp("repository"))
    with SpanReceiver() as receiver:
        args = [
            *triton_trace_args(receiver.url, rate=1_000_000, service_name="triton-test"),
            *triton_log_args(),
        ]
        work = tmp_path_factory.mktemp("runtime")
        with LocalRuntime(repository, work_dir=work, triton_args=args) as runtime:
            yield runtime, receiver


@pytest.mark.real_server
def test_a_clients_trace_id_reaches_tritons_spans(traced: tuple[LocalRuntime, SpanReceiver]) -> None:
    """Sampling 1 in a million: only the request that carries a sampled traceparent is traced."""
    runtime, receiver = traced
    client = TritonClient(runtime.http_url, timeout_s=10)
    features = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    client.infer(
        "demo", {"features": features}, headers={"traceparent": traceparent(trace_id, "b7ad6b7169203331")}
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(receiver.of_trace(trace_id)) < 3:
        time.sleep(0.1)
    spans = receiver.of_trace(trace_id)
    assert {s.name for s in spans} == {"InferRequest", "demo", "compute"}, receiver.errors
    frontend = next(s for s in spans if s.name == "InferRequest")
    assert frontend.parent_span_id == "b7ad6b7169203331"  # a child of the client's span
    (timing,) = request_timings(spans)
    assert set(timing.stages_us) == {"queue", "compute_input", "infer", "compute_output"}
    assert all(v >= 0 for v in timing.stages_us.values()) and timing.total_us >= sum(
        timing.stages_us.values()
    )
    assert not receiver.errors


def logged_request(runtime: LocalRuntime, request_id: str) -> list[str]:
    """Send one request with ``request_id``; Triton's log lines once it has logged its release."""
    TritonClient(runtime.http_url, timeout_s=10).infer(
        "demo", {"features": np.zeros((1, 16), np.float32)}, request_id=request_id
    )
    assert runtime.work_dir is not None
    log = runtime.work_dir / "triton-0.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "RELEASED" not in request_states(
        parse_lines(log.read_text().splitlines())
    ).get(request_id, []):
        time.sleep(0.1)
    return log.read_text().splitlines()


@pytest.mark.real_server
def test_the_request_id_follows_a_request_through_tritons_log(
    traced: tuple[LocalRuntime, SpanReceiver],
) -> None:
    runtime, _ = traced
    states = request_states(parse_lines(logged_request(runtime, "req-trace-test"))).get("req-trace-test", [])
    assert states[:3] == ["PENDING", "EXECUTING", "RELEASED"] or states[-1] == "RELEASED", states


@pytest.mark.real_server
def test_the_clusters_fluent_bit_reads_this_tritons_log_with_request_ids(
    traced: tuple[LocalRuntime, SpanReceiver], vendor_dir: Path
) -> None:
    """The parser the cluster's Fluent Bit is given (as its chart renders it), on every line this real
    Triton wrote."""
    from tests.components.test_telemetry import fluent_bit_fields_agree, triton_parser

    runtime, _ = traced
    client = TritonClient(runtime.http_url, timeout_s=10)
    client.infer("demo", {"features": np.zeros((1, 16), np.float32)}, request_id="req-fluent-bit")
    assert runtime.work_dir is not None
    log = runtime.work_dir / "triton-0.log"
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline and "req-fluent-bit] Setting state from EXECUTING" not in log.read_text()
    ):
        time.sleep(0.1)
    lines = log.read_text().splitlines()
    parser = triton_parser(vendor_dir)
    assert fluent_bit_fields_agree(parser, lines) > 10
    ids = {fields.get("request_id") for line in lines if (fields := parser.match(line))}
    assert "req-fluent-bit" in ids


@pytest.mark.real_server
def test_local_up_prints_where_traced_requests_spent_their_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], triton_present: None
) -> None:
    from inferstack.cli.main import main

    work = tmp_path / "work"
    assert (
        main(["local", "up", "--once", "--json", "--no-prometheus", "--trace", "3", "--work-dir", str(work)])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    traced = summary["traces"]["requests"]
    assert sorted(r["request_id"] for r in traced) == ["trace-0", "trace-1", "trace-2"]
    for request in traced:
        assert set(request["stages_us"]) == {"queue", "compute_input", "infer", "compute_output"}
        assert request["states"][-1] == "RELEASED"
    records = [json.loads(line) for line in (work / "triton-0.jsonl").read_text().splitlines()]
    assert {r.get("request_id") for r in records} >= {"trace-0", "trace-1", "trace-2"}
