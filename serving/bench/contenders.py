"""`inferstack bench`: the contenders, how each point is measured, and what the numbers say.

Four contenders serve the same TorchScript model and, but for the ceiling, face the same load generator
(perf_analyzer, closed-loop clients at each concurrency):

- ``triton``: Triton with the config ``models build`` writes (dynamic batching on);
- ``triton-unbatched``: the same model in the same Triton with dynamic batching off;
- ``plain-pytorch``: a FastAPI/uvicorn app calling the model per request (``baseline_server``);
- ``in-process``: the model called in this process on ready-made tensors at the batch size the
  clients could form (``min(clients, max_batch_size)``): no network, no serialisation, no queue. It is
  the physical limit of this machine for this model, not a server.

At each concurrency the contenders run one after the other before the next level starts, so drift from
a busy machine hits all of them alike: compare them by ratio, not by absolute numbers.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from inferstack.infra.errors import InvalidInput
from inferstack.serving.bench.perf_analyzer import (
    Load,
    Measurement,
    PerfAnalyzer,
    measure,
)
from inferstack.serving.models.build import build_model
from inferstack.serving.models.config import parse_config, render_config
from inferstack.serving.models.export import load_torchscript
from inferstack.serving.models.repository import generate_inputs, read_repository
from inferstack.serving.models.specs import RepositoryModel

TRITON, UNBATCHED, PLAIN, CEILING = "triton", "triton-unbatched", "plain-pytorch", "in-process"
CONTENDERS = (TRITON, UNBATCHED, PLAIN, CEILING)
BENCH_MODEL = "mlp"
UNBATCHED_SUFFIX = "-unbatched"
VARIABLE_LENGTH = 8  # the length every variable axis gets in the bench's requests


@dataclass(frozen=True)
class Point:
    """One measured point: a contender at a concurrency, its throughput and latencies."""

    contender: str
    concurrency: int
    throughput: float  # requests (one sample each) per second
    p50_ms: float
    p99_ms: float
    client_cpu: float | None  # load generator's share of the machine; None for the in-process ceiling
    batch: int = 1  # the in-process ceiling's batch size; every served request carries one sample
    torch_threads: int | None = None  # the in-process ceiling's faster setting
    # The ceiling per CPU-second its passes used (batch / CPU time per pass): what it does with the
    # machine to itself, where wall time shares the cores with whatever else runs.
    per_cpu_second: float | None = None
    server_queue_ms: float | None = None
    server_compute_ms: float | None = None
    error: str = ""
    # A Triton contender's requests per CPU-second of Triton and its stubs over the point: like the
    # ceiling's, what it does with the CPU it gets, which on a shared machine depends on its neighbours.
    server_per_cpu_second: float | None = None


def variable_shapes(model: RepositoryModel, length: int = VARIABLE_LENGTH) -> dict[str, list[int]]:
    """perf_analyzer's ``--shape`` for each input with a variable axis (batch axis excluded)."""
    return {
        spec.name: [length if d == -1 else d for d in spec.dims] for spec in model.inputs if -1 in spec.dims
    }


def measure_point(
    perf: PerfAnalyzer,
    load: Load,
    contender: str,
    url: str,
    served: str,
    concurrency: int,
    *,
    stats: bool = True,
    server_group: int | None = None,
) -> Point:
    """One contender at one concurrency; with ``server_group`` (Triton's process group) also the
    requests it served per CPU-second its processes used meanwhile."""
    if server_group is None:
        measured = measure(perf, load, url=url, model=served, concurrency=concurrency, server_stats=stats)
        return point_from(contender, measured)
    requests, before = served_requests(url, served), group_cpu_seconds(server_group)
    measured = measure(perf, load, url=url, model=served, concurrency=concurrency, server_stats=stats)
    requests, after = served_requests(url, served) - requests, group_cpu_seconds(server_group)
    # Per process: a stub that ends meanwhile (a model reloaded before the point) takes its time along.
    cpu = sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
    return replace(point_from(contender, measured), server_per_cpu_second=requests / cpu if cpu > 0 else None)


def served_requests(url: str, model: str) -> int:
    """Requests Triton has answered successfully for ``model`` since it loaded (its statistics API)."""
    import tritonclient.http as http

    client = http.InferenceServerClient(url.removeprefix("http://"), network_timeout=60.0)
    try:
        stats = client.get_inference_statistics(model)
    finally:
        client.close()
    return sum(int(m["inference_stats"]["success"]["count"]) for m in stats["model_stats"])


def group_cpu_seconds(pgid: int) -> dict[int, float]:
    """User and system CPU time of each live process of group ``pgid`` (Triton and its stubs)."""
    from inferstack.serving.local.processes import group_members

    seconds = {}
    for pid in group_members(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended between the listing and the read
        # utime and stime, fields 14 and 15 of proc_pid_stat(5), in clock ticks
        seconds[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


def point_from(contender: str, measured: Measurement) -> Point:
    return Point(
        contender,
        measured.concurrency,
        measured.throughput,
        measured.p50_ms,
        measured.p99_ms,
        measured.client_cpu,
        server_queue_ms=measured.server_queue_ms,
        server_compute_ms=measured.server_compute_ms,
        error=measured.error,
    )


def parse_concurrency(text: str, *, field: str = "--concurrency", maximum: int = 256) -> list[int]:
    levels = parse_integers(text, field, minimum=1)
    if any(level > maximum for level in levels):
        raise InvalidInput(field, text, f"levels from 1 to {maximum}")
    return levels


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


# --- the model -------------------------------------------------------------------------------------


def bench_model() -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """A compute-bound MLP, 256 -> 4096 -> 4096 -> 256 (19 M weights), seeded, built in code.

    Big enough that a forward pass, not the HTTP round trip, dominates a request, as with a real model;
    the demo network is too small to show what serving does.
    """
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Linear(256, 4096),
        torch.nn.ReLU(),
        torch.nn.Linear(4096, 4096),
        torch.nn.ReLU(),
        torch.nn.Linear(4096, 256),
    )
    return network.eval(), [torch.randn(2, 256)]


def build_bench_repository(path: Path) -> Path:
    """The bench MLP as ``models build`` writes it (default options: dynamic batching on)."""
    module, example = bench_model()
    build_model(module, example, name=BENCH_MODEL, repository=path, input_names=["x"], output_names=["y"])
    return path


def add_unbatched_variant(repository: Path, name: str) -> str:
    """``<name>-unbatched`` beside ``name`` in ``repository``: same files, dynamic batching removed.

    max_batch_size stays, so both accept the same requests; each request is then run on its own.
    """
    source = repository / name
    variant = f"{name}{UNBATCHED_SUFFIX}"
    target = repository / variant
    config = parse_config((source / "config.pbtxt").read_text(), folder=name)
    config.name = variant
    config.ClearField("dynamic_batching")
    for item in source.iterdir():
        if item.is_dir() and item.name.isdigit():
            (target / item.name).mkdir(parents=True, exist_ok=True)
            for file in item.iterdir():
                if file.is_file():
                    (target / item.name / file.name).symlink_to(file.resolve())
    (target / "config.pbtxt").write_text(render_config(config))
    return variant


def find_model(repository: Path, name: str | None) -> RepositoryModel:
    models = read_repository(repository)
    if name is None and len(models) == 1:
        return models[0]
    by_name = {m.name: m for m in models}
    if name not in by_name:
        raise InvalidInput("--model", name, f"one of the repository's models: {sorted(by_name)}")
    return by_name[name]


# --- the in-process ceiling ----------------------------------------------------------------------------


def ceiling_batch(concurrency: int, max_batch_size: int) -> int:
    """The largest batch ``concurrency`` closed-loop clients can form for a model of this max batch size."""
    return max(1, min(concurrency, max_batch_size)) if max_batch_size > 0 else 1


def in_process_point(model: RepositoryModel, *, concurrency: int, seconds: float) -> Point:
    """Forward passes on ready tensors: requests/s if every pass were a full batch.

    Measured with one torch thread and with one per core, ``seconds`` split between them, and the
    faster kept: a limit is the best this machine does, and which setting wins depends on its load.
    """
    batch = ceiling_batch(concurrency, model.max_batch_size)
    module = load_torchscript(model.torchscript).eval()
    inputs = generate_inputs(model, batch=batch, variable_length=VARIABLE_LENGTH)
    tensors = [torch.from_numpy(inputs[spec.name]) for spec in model.inputs]
    default_threads = torch.get_num_threads()
    best: Point | None = None
    try:
        for threads in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(threads)
            latencies: list[float] = []
            with torch.inference_mode():
                module(*tensors)  # first call: TorchScript's profiling run, not representative
                started, cpu_started = time.perf_counter(), time.process_time()
                while time.perf_counter() - started < seconds / 2:
                    begin = time.perf_counter()
                    module(*tensors)
                    latencies.append(time.perf_counter() - begin)
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            latencies.sort()
            point = Point(
                CEILING,
                concurrency,
                batch * len(latencies) / elapsed,
                percentile(latencies, 50) * 1000,
                percentile(latencies, 99) * 1000,
                None,
                batch=batch,
                torch_threads=threads,
                per_cpu_second=batch * len(latencies) / cpu if cpu > 0 else None,
            )
            best = point if best is None or point.throughput > best.throughput else best
    finally:
        torch.set_num_threads(default_threads)
    assert best is not None
    return best


# --- the sweep ---------------------------------------------------------------------------------------------


def warm_up(
    url: str, served: str, model: RepositoryModel, *, max_batch_size: int | None = None, rounds: int = 3
) -> None:
    """A few requests at each batch size the dynamic batcher can form, before anything is measured.

    TorchScript's first calls at a new shape profile and optimise the graph (tens of ms each): left in,
    they make the first windows of a point disagree, and perf_analyzer never finds a stable one.
    """
    from inferstack.serving.client.client import TritonClient

    largest = model.max_batch_size if max_batch_size is None else max_batch_size
    sizes = sorted({1, *(2**k for k in range(1, 8) if 2**k < largest), largest})
    with TritonClient(url, timeout_s=60.0) as client:
        for batch in (b for b in sizes if b > 0):
            inputs = generate_inputs(model, batch=batch, variable_length=VARIABLE_LENGTH)
            for _ in range(rounds):
                client.infer(served, inputs)


@dataclass(frozen=True)
class Endpoints:
    """Where each contender answers during a bench run."""

    triton_url: str
    model: str
    unbatched_model: str
    plain_url: str
    triton_group: int | None = None  # the local Triton's process group, whose CPU time is counted


def sweep(
    perf: PerfAnalyzer,
    endpoints: Endpoints,
    model: RepositoryModel,
    load: Load,
    *,
    levels: Sequence[int],
    rounds: int = 1,
    progress: Callable[[Point], None] | None = None,
) -> list[Point]:
    """Every contender at every level, interleaved level by level, ``rounds`` times per level."""
    triton, plain, group = endpoints.triton_url, endpoints.plain_url, endpoints.triton_group
    runs: list[Callable[[int], Point]] = [
        lambda c: measure_point(perf, load, TRITON, triton, endpoints.model, c, server_group=group),
        lambda c: measure_point(
            perf, load, UNBATCHED, triton, endpoints.unbatched_model, c, server_group=group
        ),
        lambda c: measure_point(perf, load, PLAIN, plain, endpoints.model, c, stats=False),
        lambda c: in_process_point(model, concurrency=c, seconds=load.window_ms / 1000 * 3),
    ]
    warm_up(endpoints.triton_url, endpoints.model, model)
    warm_up(endpoints.triton_url, endpoints.unbatched_model, model)
    warm_up(endpoints.plain_url, endpoints.model, model)
    points = []
    for level in levels:
        for round_ in range(rounds):
            # Odd rounds run backwards (A B C D, D C B A): a slow drift favours no contender.
            for run in runs if round_ % 2 == 0 else runs[::-1]:
                point = run(level)
                points.append(point)
                if progress:
                    progress(point)
    return points


def parse_integers(text: str, field: str, *, minimum: int) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise InvalidInput(field, text, f"comma-separated integers >= {minimum}") from None
    if any(v < minimum for v in values):
        raise InvalidInput(field, text, f"comma-separated integers >= {minimum}")
    return values
