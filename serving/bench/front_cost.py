"""What the request front costs per request: the CPU time of the real nginx worker (njs reading and
checking the body, then proxying it) at 1 KB, 1 MB and 10 MB JSON bodies and the same tensors sent as
binary-tensor bodies, measured side by side in one run in front of a real Triton on 127.0.0.1.

CPU time is the worker's on-CPU nanoseconds from /proc/<pid>/task/*/schedstat (the kernel's own
accounting, finer than the 10 ms ticks of /proc/<pid>/stat), read before and after a bounded loop of
sequential requests on one keep-alive connection. The rounds alternate the bodies so that a busy
machine slows every kind alike. The fitted base and per-byte cost of JSON bodies are what
``components/model_service/args.py`` sizes the front's CPU from.
"""

from __future__ import annotations

import http.client
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from inferstack.serving.local.request_front import RunningFront, running_front
from inferstack.serving.local.runtime import LocalRuntime
from inferstack.serving.models.build import build_model
from inferstack.serving.models.specs import ModelOptions

MODEL, INPUT = "wide", "values"
JSON_BYTES_PER_ELEMENT = len("0.5, ")  # json.dumps of a list of 0.5s
# Requests per round: enough CPU time per kind for the ns clock to dwarf the scheduler's noise.
SIZES = {"1 KB": (1_000, 200), "1 MB": (1_000_000, 12), "10 MB": (10_000_000, 2)}


class Wide(torch.nn.Module):
    """One FP32 input of any length, summed: the model costs nothing next to reading its input."""

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return values.sum(dim=1, keepdim=True)


@dataclass(frozen=True)
class Body:
    """One kind of request body the bench sends, and how many of it per round."""

    label: str  # "1 MB JSON"
    json_bytes: int  # the JSON body's nominal size; the binary body carries the same tensor
    binary: bool
    payload: bytes
    header_length: int | None  # Inference-Header-Content-Length, for binary bodies
    requests_per_round: int


@dataclass(frozen=True)
class Cost:
    """What one kind of body cost the nginx worker, per request, over the whole run."""

    label: str
    body_bytes: int
    requests: int
    cpu_ms_per_request: float


def build_repository(path: Path) -> Path:
    build_model(
        Wide(),
        [torch.ones(1, 8)],
        name=MODEL,
        repository=path,
        input_names=[INPUT],
        output_names=["sum"],
        variable_axes={INPUT: [0]},
        options=ModelOptions(max_batch_size=1, dynamic_batching=None),
    )
    return path


def bodies(sizes: dict[str, tuple[int, int]] = SIZES) -> list[Body]:
    made = []
    for label, (size, count) in sizes.items():
        elements = max(1, size // JSON_BYTES_PER_ELEMENT)
        declared = {"name": INPUT, "datatype": "FP32", "shape": [1, elements]}
        text = json.dumps({"inputs": [{**declared, "data": [0.5] * elements}]}).encode()
        made.append(Body(f"{label} JSON", size, False, text, None, count))
        data = torch.full((elements,), 0.5, dtype=torch.float32).numpy().tobytes()
        binary = {"name": INPUT, "datatype": "FP32", "shape": [1, elements]}
        header = json.dumps({"inputs": [{**binary, "parameters": {"binary_data_size": len(data)}}]}).encode()
        made.append(Body(f"{label} binary", size, True, header + data, len(header), count))
    return made


def cpu_ns(pids: Sequence[int]) -> int:
    """On-CPU nanoseconds of every thread of ``pids`` so far."""
    total = 0
    for pid in pids:
        for schedstat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            total += int(schedstat.read_text().split()[0])
    return total


def _send(connection: http.client.HTTPConnection, body: Body) -> None:
    headers = {"Content-Type": "application/json"}
    if body.header_length is not None:
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(body.header_length),
        }
    connection.request("POST", f"/v2/models/{MODEL}/infer", body.payload, headers)
    answer = connection.getresponse()
    text = answer.read()
    if answer.status != 200:
        raise RuntimeError(f"{body.label}: HTTP {answer.status} from the front: {text[:300]!r}")


def measure(front: RunningFront, kinds: Sequence[Body], rounds: int) -> list[Cost]:
    """Each kind's mean worker CPU per request, over ``rounds`` alternating rounds (after one warm-up
    request of each, which fills the model-config cache and nginx's buffers)."""
    parsed = urlparse(front.url)
    connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=120)
    spent = {body.label: 0 for body in kinds}
    sent = {body.label: 0 for body in kinds}
    try:
        for body in kinds:
            _send(connection, body)
        workers = front.worker_pids()
        for _ in range(rounds):
            for body in kinds:
                before = cpu_ns(workers)
                for _ in range(body.requests_per_round):
                    _send(connection, body)
                spent[body.label] += cpu_ns(workers) - before
                sent[body.label] += body.requests_per_round
    finally:
        connection.close()
    return [
        Cost(body.label, len(body.payload), sent[body.label], spent[body.label] / sent[body.label] / 1e6)
        for body in kinds
    ]


def per_byte_fit(costs: Sequence[Cost]) -> tuple[float, float]:
    """(base ms per request, ns per body byte) of JSON bodies: the smallest body's cost, and the slope
    from it to the largest. The cost grows faster than the bytes (njs keeps every parsed number until
    the request ends), so the line through the ends overestimates between them, never under."""
    points = sorted((c.body_bytes, c.cpu_ms_per_request) for c in costs if c.label.endswith("JSON"))
    (small, base), (large, top) = points[0], points[-1]
    return base, (top - base) / (large - small) * 1e6


def run_front_bench(rounds: int = 3, progress: Callable[[str], None] = print) -> list[Cost]:
    with tempfile.TemporaryDirectory(prefix="inferstack-front-bench-") as scratch:
        repository = build_repository(Path(scratch) / "repository")
        runtime = LocalRuntime(repository, work_dir=Path(scratch) / "runtime", progress=progress)
        with runtime, running_front(runtime.http_url) as front:
            progress(f"nginx children {front.worker_pids()} in front of {runtime.http_url}")
            return measure(front, bodies(), rounds)


def report(costs: Sequence[Cost]) -> list[str]:
    base = next(c for c in costs if c.label == "1 KB JSON").cpu_ms_per_request
    heads = ("bytes", "requests", "CPU ms/req", "x 1 KB JSON", "req/s/core")
    lines = [f"{'body':<14} {heads[0]:>10} {heads[1]:>8} {heads[2]:>10} {heads[3]:>11} {heads[4]:>10}"]
    for cost in costs:
        lines.append(
            f"{cost.label:<14} {cost.body_bytes:>10} {cost.requests:>8} {cost.cpu_ms_per_request:>10.3f} "
            f"{cost.cpu_ms_per_request / base:>11.1f} {1000 / cost.cpu_ms_per_request:>10.0f}"
        )
    fixed_ms, ns_per_byte = per_byte_fit(costs)
    lines.append(f"JSON fit: {fixed_ms:.3f} ms per request + {ns_per_byte:.2f} ns per body byte")
    for size in ("1 MB", "10 MB"):
        json_ms = next(c for c in costs if c.label == f"{size} JSON").cpu_ms_per_request
        binary_ms = next(c for c in costs if c.label == f"{size} binary").cpu_ms_per_request
        lines.append(f"{size}: JSON costs the front {json_ms / binary_ms:.1f}x the binary-tensor body")
    return lines
