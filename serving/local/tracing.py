"""OpenTelemetry traces from Triton: where a request's time goes, per stage, on a real server.

Triton 2.51 exports a request as three spans of one trace: ``InferRequest`` (the frontend: HTTP or
gRPC receive and send), a span named after the model (``QUEUE_START``, request start and end) and
``compute`` (input copy, the model's execution, output copy). A client that sends a W3C
``traceparent`` header makes those spans children of its own, so a trace id follows a request from
the client through Triton. `SpanReceiver` is an OTLP/HTTP endpoint on loopback that collects them;
`request_timings` turns them into per-request stage durations.

Triton's C++ exporter posts OTLP/JSON (ids in hex, as the OTLP spec has it), other exporters post
protobuf: both decode into opentelemetry-proto's ``ExportTraceServiceRequest``.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Re-exported: the flags are shared with the cluster's TritonModelService.
from inferstack.components.triton_telemetry import TRACES_PATH
from inferstack.components.triton_telemetry import triton_trace_args as triton_trace_args
from inferstack.infra.errors import InvalidInput

# Stages of one request, as the span events Triton records bound them.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("queue", "QUEUE_START", "COMPUTE_START"),
    ("compute_input", "COMPUTE_START", "COMPUTE_INPUT_END"),
    ("infer", "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START"),
    ("compute_output", "COMPUTE_OUTPUT_START", "COMPUTE_END"),
)


@dataclass(frozen=True)
class Span:
    """One span Triton exported over OTLP."""

    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    name: str
    start_ns: int
    end_ns: int
    events: dict[str, int] = field(default_factory=dict)  # event name -> time (ns since the epoch)
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestTiming:
    """One traced request: its total time and the time of each of Triton's stages."""

    trace_id: str
    model: str
    total_us: float  # the model span: from Triton's receipt of the request to its response
    stages_us: Mapping[str, float]  # STAGES by name; a stage whose two events were not exported is absent


def traceparent(trace_id: str | None = None, parent_id: str | None = None) -> str:
    """A W3C ``traceparent`` header value (sampled); random ids where none are given."""
    trace_id = trace_id or secrets.token_hex(16)
    parent_id = parent_id or secrets.token_hex(8)
    for name, value, length in (("trace_id", trace_id, 32), ("parent_id", parent_id, 16)):
        if len(value) != length or not all(c in "0123456789abcdef" for c in value) or set(value) == {"0"}:
            raise InvalidInput(name, value, f"{length} lowercase hex digits, not all zero")
    return f"00-{trace_id}-{parent_id}-01"


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON spells trace and span ids in hex; protobuf's JSON mapping wants base64 for bytes."""
    if isinstance(node, dict):
        return {
            key: base64.b64encode(bytes.fromhex(value)).decode()
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str)
            else _hex_ids_to_base64(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    return node


def _attribute(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def decode_export(body: bytes, content_type: str) -> list[Span]:
    """The spans of one OTLP/HTTP export request, JSON or protobuf."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    if "json" in content_type:
        json_format.ParseDict(_hex_ids_to_base64(json.loads(body)), request, ignore_unknown_fields=True)
    else:
        request.ParseFromString(body)
    return [
        Span(
            trace_id=span.trace_id.hex(),
            span_id=span.span_id.hex(),
            parent_span_id=span.parent_span_id.hex(),
            name=span.name,
            start_ns=span.start_time_unix_nano,
            end_ns=span.end_time_unix_nano,
            events={event.name: event.time_unix_nano for event in span.events},
            attributes={a.key: _attribute(a.value) for a in span.attributes},
        )
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


def request_timings(spans: Iterable[Span]) -> list[RequestTiming]:
    """Per traced request (the model span and its ``compute`` child): total and per-stage times."""
    spans = list(spans)
    children: dict[str, list[Span]] = {}
    for span in spans:
        children.setdefault(span.parent_span_id, []).append(span)
    timings = []
    for span in spans:
        if "triton.model_name" not in span.attributes:
            continue
        events = dict(span.events)
        for child in children.get(span.span_id, []):
            events.update(child.events)
        stages = {
            stage: (events[end] - events[start]) / 1e3
            for stage, start, end in STAGES
            if start in events and end in events
        }
        timings.append(
            RequestTiming(
                trace_id=span.trace_id,
                model=str(span.attributes["triton.model_name"]),
                total_us=(span.end_ns - span.start_ns) / 1e3,
                stages_us=stages,
            )
        )
    return sorted(timings, key=lambda t: t.trace_id)


class SpanReceiver:
    """An OTLP/HTTP traces endpoint on 127.0.0.1 that keeps what it receives (a context manager)."""

    def __init__(self, port: int = 0) -> None:
        self.spans: list[Span] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != TRACES_PATH:
                    self.send_error(404)
                    return
                try:
                    spans = decode_export(body, self.headers.get("Content-Type", ""))
                except Exception as error:  # a malformed export must not stop the receiver
                    receiver._record_error(f"{type(error).__name__}: {error}")
                    self.send_error(400)
                    return
                receiver._add(spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{TRACES_PATH}"

    def _add(self, spans: Sequence[Span]) -> None:
        with self._lock:
            self.spans.extend(spans)

    def _record_error(self, error: str) -> None:
        with self._lock:
            self.errors.append(error)

    def of_trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def __enter__(self) -> SpanReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
