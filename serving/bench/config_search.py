"""`inferstack bench --search`: the model's batching, instances and torch threads, measured one by one.

Like Triton's Model Analyzer in its brute-force mode: every combination of max_batch_size, max queue
delay, instance count and torch threads per instance is loaded into the running Triton (a config
override, nothing republished), warmed up and measured by perf_analyzer at one concurrency; the
fastest that meets the p99 target wins and can be written into the model's config.pbtxt.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferstack.serving.bench.contenders import TRITON, Point, measure_point, warm_up
from inferstack.serving.bench.perf_analyzer import Load, PerfAnalyzer
from inferstack.serving.bench.report import format_ms
from inferstack.serving.models.config import render_config
from inferstack.serving.models.repository import read_repository
from inferstack.serving.models.specs import RepositoryModel


@dataclass(frozen=True)
class Candidate:
    """One point of the search space, as Model Analyzer's brute-force search walks it."""

    max_batch_size: int
    max_queue_delay_us: int
    instances: int
    torch_threads: int

    def label(self) -> str:
        return (
            f"batch<={self.max_batch_size} delay {self.max_queue_delay_us} us "
            f"x{self.instances} threads {self.torch_threads}"
        )


def search_space(
    *,
    max_batch_sizes: Sequence[int] = (8, 16, 32),
    delays_us: Sequence[int] = (100, 2000),
    instances: Sequence[int] = (1, 2),
    torch_threads: Sequence[int] | None = None,
) -> list[Candidate]:
    threads = torch_threads or sorted({1, os.cpu_count() or 1})
    return [
        Candidate(b, d, i, t) for b in max_batch_sizes for d in delays_us for i in instances for t in threads
    ]


def candidate_config(base: Any, candidate: Candidate) -> Any:
    """``base`` (a ModelConfig) with the candidate's batching, instances and threads; validated."""
    from tritonclient.grpc import model_config_pb2 as mc

    from inferstack.serving.models.config import threads_parameter, validate_config

    config = mc.ModelConfig()
    config.CopyFrom(base)
    config.max_batch_size = candidate.max_batch_size
    config.dynamic_batching.max_queue_delay_microseconds = candidate.max_queue_delay_us
    config.dynamic_batching.ClearField("preferred_batch_size")
    kind = (
        base.instance_group[0].kind if base.instance_group else mc.ModelInstanceGroup.Kind.Value("KIND_CPU")
    )
    del config.instance_group[:]
    config.instance_group.add(kind=kind, count=candidate.instances)
    key = threads_parameter(config)
    config.parameters[key].string_value = str(candidate.torch_threads)
    validate_config(config, folder=config.name)
    return config


@dataclass(frozen=True)
class Trial:
    """One candidate config and what it measured."""

    candidate: Candidate
    point: Point


def best_trial(trials: Sequence[Trial], p99_ms: float | None) -> Trial | None:
    """Highest throughput among the error-free trials within the p99 target (None: none qualifies)."""
    fitting = [
        t
        for t in trials
        if not t.point.error
        and t.point.throughput > 0
        and (p99_ms is None or (math.isfinite(t.point.p99_ms) and t.point.p99_ms <= p99_ms))
    ]
    return max(fitting, key=lambda t: t.point.throughput, default=None)


def search(
    perf: PerfAnalyzer,
    triton_url: str,
    model: RepositoryModel,
    served_config: Any,
    candidates: Sequence[Candidate],
    load: Load,
    *,
    admin_headers: Mapping[str, str],
    concurrency: int,
    progress: Callable[[str], None] | None = None,
    server_group: int | None = None,
) -> list[Trial]:
    """Each candidate loaded into the running Triton (config override, nothing republished, through its
    admin API with ``admin_headers``), then measured."""
    import tritonclient.http as http
    from google.protobuf import json_format
    from tritonclient.utils import InferenceServerException

    from inferstack.serving.local.processes import RuntimeFailure

    trials = []
    client = http.InferenceServerClient(triton_url.removeprefix("http://"), network_timeout=300.0)

    def load_config(config: Any, what: str) -> None:
        try:
            client.load_model(
                model.name, headers=dict(admin_headers), config=json_format.MessageToJson(config)
            )
        except InferenceServerException as error:  # a dead S3 or Triton: the search cannot go on
            raise RuntimeFailure(
                f"search: Triton did not load {model.name} with {what}: {error.message()}"
            ) from None

    try:
        for candidate in candidates:
            load_config(candidate_config(served_config, candidate), candidate.label())
            warm_up(triton_url, model.name, model, max_batch_size=candidate.max_batch_size)
            point = measure_point(
                perf, load, TRITON, triton_url, model.name, concurrency, server_group=server_group
            )
            trial = Trial(candidate, point)
            trials.append(trial)
            if progress:
                p = trial.point
                progress(
                    f"search {candidate.label():<40} {p.throughput:7.0f} req/s  p99 {format_ms(p.p99_ms)}"
                    + (f"  {p.error}" if p.error else "")
                )
        load_config(served_config, "its served config")
    finally:
        client.close()
    return trials


def write_best(repository: Path, model: RepositoryModel, candidate: Candidate) -> Path:
    """The winning batching, instances and threads into the model's own config.pbtxt (its backend kept)."""
    config = candidate_config(model.config, candidate)
    path = repository / model.name / "config.pbtxt"
    path.write_text(render_config(config))
    read_repository(repository)  # the repository must still read back whole
    return path
