"""`inferstack bench`: a concurrency sweep against Triton, with a baseline measured side by side.

Every point runs closed-loop clients (each sends its next request when the last answer arrives)
for a fixed time; the candidate and the baseline alternate at each concurrency in the same run on
the same server, so their ratio is meaningful even on a busy machine, where absolute numbers are not.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inferstack.infra.errors import InvalidInput
from inferstack.serving.client import Protocol, TritonClient

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Point:
    model: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(
    model: str, concurrency: int, latencies_s: Sequence[float], errors: int, seconds: float
) -> Point:
    ordered = sorted(latencies_s)
    return Point(
        model,
        concurrency,
        len(ordered),
        errors,
        seconds,
        percentile(ordered, 50) * 1000,
        percentile(ordered, 99) * 1000,
    )


def parse_concurrency(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",")]
    except ValueError:
        raise InvalidInput("--concurrency", text, "comma-separated positive integers, e.g. 1,4,16") from None
    if not levels or any(level < 1 or level > 256 for level in levels):
        raise InvalidInput("--concurrency", text, "levels from 1 to 256")
    return levels


def run_point(
    url: str,
    model: str,
    inputs: Mapping[str, Array],
    *,
    concurrency: int,
    seconds: float,
    protocol: Protocol = "http",
) -> Point:
    """Closed-loop load from ``concurrency`` clients for ``seconds`` (bounded: loopback, fixed time)."""
    deadline = time.monotonic() + seconds

    def client_loop() -> tuple[list[float], int]:
        latencies, errors = [], 0
        with TritonClient(url, protocol=protocol, timeout_s=30) as client:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    client.infer(model, inputs)
                except Exception:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - start)
        return latencies, errors

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(lambda _: client_loop(), range(concurrency)))
    elapsed = time.monotonic() - started
    latencies = [latency for values, _ in results for latency in values]
    return summarize(model, concurrency, latencies, sum(e for _, e in results), elapsed)


def sweep(
    url: str,
    models: Sequence[str],
    inputs: Mapping[str, Array],
    *,
    levels: Sequence[int],
    seconds: float,
    protocol: Protocol = "http",
    progress: Callable[[Point], None] | None = None,
) -> list[Point]:
    """Every model at every level, interleaved (a, b, a, b ...) so drift hits all models alike."""
    points = []
    for level in levels:
        for model in models:
            point = run_point(url, model, inputs, concurrency=level, seconds=seconds, protocol=protocol)
            points.append(point)
            if progress:
                progress(point)
    return points


def ratio_table(points: Sequence[Point], candidate: str, baseline: str) -> list[list[str]]:
    """Rows of: concurrency, both throughputs and p99s, and candidate/baseline throughput ratio."""
    by_key = {(p.model, p.concurrency): p for p in points}
    rows = [
        ["clients", f"{candidate} req/s", f"{baseline} req/s", "ratio", f"{candidate} p99", f"{baseline} p99"]
    ]
    for level in sorted({p.concurrency for p in points}):
        a, b = by_key[(candidate, level)], by_key[(baseline, level)]
        ratio = a.throughput / b.throughput if b.throughput else math.inf
        rows.append(
            [
                str(level),
                f"{a.throughput:.0f}",
                f"{b.throughput:.0f}",
                f"{ratio:.2f}x",
                f"{a.p99_ms:.1f} ms",
                f"{b.p99_ms:.1f} ms",
            ]
        )
    return rows


def geometric_mean_ratio(points: Sequence[Point], candidate: str, baseline: str) -> float:
    by_key = {(p.model, p.concurrency): p for p in points}
    ratios = [
        by_key[(candidate, level)].throughput / by_key[(baseline, level)].throughput
        for level in sorted({p.concurrency for p in points})
        if by_key[(baseline, level)].throughput
    ]
    return statistics.geometric_mean(ratios) if ratios else math.nan


def bench_inputs(batch: int = 1) -> dict[str, Array]:
    """One request of the demo model's shape (features: FP32[batch, 16])."""
    return {"features": np.random.default_rng(0).standard_normal((batch, 16)).astype(np.float32)}


def inputs_from_metadata(metadata: Mapping[str, Any], *, batch: int = 1, length: int = 8) -> dict[str, Array]:
    """Random inputs shaped after a served model's metadata (-1: batch on the first axis, else ``length``)."""
    from tritonclient.utils import triton_to_np_dtype

    rng = np.random.default_rng(0)
    arrays: dict[str, Array] = {}
    for tensor in metadata["inputs"]:
        shape = [int(d) for d in tensor["shape"]]
        shape = [(batch if i == 0 else length) if d == -1 else d for i, d in enumerate(shape)]
        dtype = np.dtype(triton_to_np_dtype(tensor["datatype"]))
        if dtype.kind == "f":
            arrays[tensor["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            arrays[tensor["name"]] = rng.random(shape) < 0.5
        else:
            arrays[tensor["name"]] = rng.integers(0, 10, size=shape).astype(dtype)
    return arrays


def build_bench_repository(path: Path) -> tuple[str, str]:
    """The demo network twice: with Triton's dynamic batcher (candidate) and without (baseline)."""
    from inferstack.serving.repository import DynamicBatching, ModelOptions, build_model, demo_model

    module, example = demo_model()
    batched = ModelOptions(
        dynamic_batching=DynamicBatching(preferred_batch_sizes=(8,), max_queue_delay_us=1000)
    )
    variants = {"demo-batched": batched, "demo-unbatched": ModelOptions(dynamic_batching=None)}
    for name, options in variants.items():
        build_model(
            module,
            example,
            name=name,
            repository=path,
            options=options,
            input_names=["features"],
            output_names=["probabilities"],
        )
    candidate, baseline = variants
    return candidate, baseline
