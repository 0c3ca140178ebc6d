"""The demo repositories `local up` serves when given none: one model, or one with a canary version."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from inferstack.serving.models.build import build_model
from inferstack.serving.models.precision import FULL_PRECISION, PrecisionOptions
from inferstack.serving.models.repository import demo_model
from inferstack.serving.models.specs import DynamicBatching, ModelOptions, SpecificVersions


def _build_demo(
    path: Path,
    options: ModelOptions,
    *,
    version: int = 1,
    target: Literal["python", "pytorch_libtorch"] = "python",
    precision: PrecisionOptions = FULL_PRECISION,
) -> None:
    """One version of the demo model, with the tensor names every demo client and dashboard uses."""
    module, example = demo_model()
    build_model(
        module,
        example,
        name="demo",
        repository=path,
        target=target,
        options=options,
        version=version,
        input_names=["features"],
        output_names=["probabilities"],
        precision=precision,
    )


def build_demo_repository(
    path: Path, *, target: Literal["python", "pytorch_libtorch"] = "python", torch_threads: int | None = None
) -> Path:
    """The demo model as a repository folder (built in code, nothing downloaded)."""
    options = ModelOptions(
        dynamic_batching=DynamicBatching(preferred_batch_sizes=(4, 8), max_queue_delay_us=500),
        # A forward pass of microseconds: a second instance (a second stub process loading torch)
        # would only slow start-up, where the machine's default pays for compute-bound models.
        instance_count=1,
        torch_threads=torch_threads,
    )
    _build_demo(path, options, target=target)
    return path


def build_canary_demo_repository(path: Path, versions: tuple[int, ...] = (1, 2)) -> Path:
    """The demo model twice, as a stable and a canary version Triton serves side by side: version 1 at
    FP32, version 2 the same network at FP16 (checked against version 1's answers when built).
    ``versions``: what the repository holds and its version policy serves (``(1,)``: before the canary)."""
    options = ModelOptions(instance_count=1, version_policy=SpecificVersions(versions))
    precisions = {1: FULL_PRECISION, 2: PrecisionOptions("fp16")}
    for version in versions:
        _build_demo(path, options, version=version, precision=precisions[version])
    return path
