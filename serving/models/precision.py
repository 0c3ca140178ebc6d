"""Reduced precision at packaging: FP16, BF16 and dynamic INT8, checked against the FP32 model.

A reduced model ships only when its answers stay within a tolerance of the FP32 model's on
calibration inputs (generated from the signature, or the user's own). The report of that
comparison (error per output, size on disk, in-process speed against FP32) is written beside the
model as ``precision.json``, and the local runtime's smoke test serves with the tolerance it holds.

What each precision is, and where it runs:

- ``fp16`` / ``bf16``: the module's floating parameters and buffers are cast; floating inputs are
  cast to the reduced type inside the model and floating outputs back to FP32, so the config, the
  clients and the python backend see the same FP32 tensors as before (numpy has no bfloat16). The
  libtorch target serves both on GPU: FP16 on every NVIDIA GPU of the node table, BF16 natively
  only from Ampere on (A10G, L4, A100...; a T4 has no BF16 units). On CPU both run, usually
  slower than FP32 (the report says by how much).
- ``int8-dynamic``: PyTorch dynamic quantization (INT8 weights, activations quantized per batch at
  run time). From a ``torch.nn.Module``, Linear and LSTM layers; from a TorchScript file, graph-mode
  quantization covers Linear layers only. Its kernels (fbgemm / qnnpack) are **CPU only**: a libtorch
  model on ``KIND_GPU`` cannot run them, so the builder refuses that combination. INT8 on a GPU
  needs TensorRT, which this libtorch path does not use.
"""

from __future__ import annotations

import copy
import io
import json
import math
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from inferstack.infra.errors import InvalidInput

Array = npt.NDArray[Any]

Precision = Literal["fp32", "fp16", "bf16", "int8-dynamic"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "bf16", "int8-dynamic")
CPU_ONLY: tuple[Precision, ...] = ("int8-dynamic",)
REPORT_FILE = "precision.json"
# Relative to the largest |FP32| value of each output. FP16 keeps ~3 decimal digits, BF16 ~2;
# dynamic INT8 quantizes weights per tensor and activations per batch.
DEFAULT_MAX_REL_ERROR: Mapping[str, float] = {"fp16": 1e-2, "bf16": 5e-2, "int8-dynamic": 5e-2}
_CAST: Mapping[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16}
_TIMING_RUNS = 30
_TIMING_BUDGET_S = 1.0


@dataclass(frozen=True)
class Tolerance:
    """How far the reduced model may be from FP32; every bound given must hold. None: not checked.

    ``max_rel_error`` is relative to the largest |FP32| value of the output (so near-zero values do
    not blow it up); ``min_top1_agreement`` is the share of rows whose argmax over the last axis is
    the same (outputs with a class axis only).
    """

    max_abs_error: float | None = None
    max_rel_error: float | None = None
    min_top1_agreement: float | None = None

    def given(self) -> bool:
        return any(v is not None for v in (self.max_abs_error, self.max_rel_error, self.min_top1_agreement))


@dataclass(frozen=True)
class PrecisionOptions:
    """The precision to package at, the tolerance (empty: the precision's default) and optional
    calibration inputs (named arrays, batch axis first where the model batches)."""

    precision: Precision = "fp32"
    tolerance: Tolerance = Tolerance()
    calibration: Mapping[str, Array] | None = None

    @property
    def effective_tolerance(self) -> Tolerance:
        if self.tolerance.given() or self.precision == "fp32":
            return self.tolerance
        return Tolerance(max_rel_error=DEFAULT_MAX_REL_ERROR[self.precision])


FULL_PRECISION = PrecisionOptions()


def check_precision(options: PrecisionOptions, *, instance_kind: str) -> None:
    """The options as given, checked before anything is exported."""
    if options.precision not in PRECISIONS:
        raise InvalidInput("precision", options.precision, f"one of {', '.join(PRECISIONS)}")
    if options.precision in CPU_ONLY and instance_kind != "KIND_CPU":
        raise InvalidInput(
            "precision",
            options.precision,
            "with instance_kind KIND_CPU: dynamic INT8 kernels (fbgemm/qnnpack) run on CPU only; "
            "on a GPU use fp16 or bf16",
        )
    tolerance = options.tolerance
    for name in ("max_abs_error", "max_rel_error"):
        value = getattr(tolerance, name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf
        ):
            raise InvalidInput(f"tolerance.{name}", value, "None or a finite number > 0")
    top1 = tolerance.min_top1_agreement
    if top1 is not None and (
        isinstance(top1, bool) or not isinstance(top1, int | float) or not 0 < top1 <= 1
    ):
        raise InvalidInput("tolerance.min_top1_agreement", top1, "None or a share in (0, 1]")


def load_calibration(path: Path) -> dict[str, Array]:
    """Named input arrays from an ``.npz`` file (``numpy.savez(path, features=..., ids=...)``)."""
    allowed = "an .npz file of named input arrays, as numpy.savez writes"
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InvalidInput("calibration", str(path), f"{allowed} ({error})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array has no input names
        raise InvalidInput("calibration", str(path), allowed)
    with loaded:
        return {name: loaded[name] for name in loaded.files}


# --- reducing ---------------------------------------------------------------------------------------


class _Boundary(torch.nn.Module):
    """The reduced module behind FP32 inputs and outputs: the cast happens inside the model."""

    def __init__(self, inner: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = inner
        self.dtype = dtype

    def forward(self, *inputs: torch.Tensor) -> Any:
        result = self.inner(*(t.to(self.dtype) if t.is_floating_point() else t for t in inputs))
        if isinstance(result, torch.Tensor):
            return result.float() if result.is_floating_point() else result
        return tuple(t.float() if t.is_floating_point() else t for t in result)


def _copy(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    loaded: torch.jit.ScriptModule = torch.jit.load(buffer, map_location="cpu")  # type: ignore[no-untyped-call]
    return loaded.eval()


def _quantized_ops(module: torch.jit.ScriptModule) -> bool:
    graph: Any = module.inlined_graph
    # Linear: quantized::linear_dynamic; LSTM: aten::quantized_lstm.
    return any(node.kind().startswith(("quantized::", "aten::quantized_")) for node in graph.nodes())


Export = Callable[[torch.nn.Module, Sequence[torch.Tensor]], torch.jit.ScriptModule]


def reduce(
    module: torch.jit.ScriptModule,
    precision: Precision,
    example: Sequence[torch.Tensor],
    *,
    eager: torch.nn.Module | None = None,
    export: Export | None = None,
) -> tuple[torch.jit.ScriptModule, tuple[str, ...]]:
    """The TorchScript of ``module`` at ``precision``, and notes on what was (not) reduced.

    Given the ``eager`` module and the ``export`` that made ``module`` from it, the eager module is
    reduced and exported again: a trace records the dtypes it saw (an LSTM's FP32 initial state, say),
    so casting the FP32 TorchScript would not run. INT8 then covers Linear and LSTM layers; from
    TorchScript alone, graph-mode quantization covers Linear layers only.
    """
    if precision == "fp32":
        return module, ()
    with warnings.catch_warnings(), torch.no_grad():
        # PyTorch announces that torch.ao quantization moves to torchao; the kernels are the same.
        warnings.simplefilter("ignore")
        if precision in _CAST:
            dtype = _CAST[precision]
            if eager is not None and export is not None:
                cast_example = [t.to(dtype) if t.is_floating_point() else t for t in example]
                inner = export(copy.deepcopy(eager).eval().to(dtype), cast_example)
            else:
                inner = _copy(module).to(dtype)
            boundary = _Boundary(inner, dtype).eval()
            reduced: torch.jit.ScriptModule = torch.jit.trace(boundary, tuple(example), check_trace=False)  # type: ignore[no-untyped-call]
            return reduced, (f"floating inputs and outputs stay FP32; cast to {precision} inside the model",)
        if eager is not None and export is not None:
            quantized = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                copy.deepcopy(eager).eval(), {torch.nn.Linear, torch.nn.LSTM}, dtype=torch.qint8
            )
            reduced = export(quantized, example)
            note = "Linear and LSTM layers quantized (eager dynamic quantization)"
        else:
            from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic_jit

            reduced = quantize_dynamic_jit(_copy(module), {"": default_dynamic_qconfig})  # type: ignore[no-untyped-call]
            note = "Linear layers quantized (graph mode, from TorchScript: LSTM layers stay FP32)"
    if not _quantized_ops(reduced):
        raise InvalidInput(
            "precision", precision, "a model with Linear (or, from a module, LSTM) layers: this one has none"
        )
    return reduced, (note, "CPU only: dynamic INT8 kernels do not run on a GPU")


# --- comparing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputError:
    """The reduced model's error on one output over every calibration row."""

    name: str
    max_abs_error: float
    mean_abs_error: float
    max_rel_error: float | None  # None: the FP32 output is all zeros while the reduced one is not
    top1_agreement: float | None  # None: no class axis (floating, rank >= 2, last axis > 1)
    allowed_abs_error: float | None  # the absolute bound the tolerance implies; None: unbounded


@dataclass(frozen=True)
class PrecisionReport:
    """How far a reduced-precision build's answers are from FP32's, against the tolerance allowed."""

    precision: Precision
    rows: int
    outputs: tuple[OutputError, ...]
    tolerance: Tolerance
    fp32_bytes: int
    reduced_bytes: int
    fp32_ms: float  # median in-process time of one calibration batch, one thread
    reduced_ms: float
    notes: tuple[str, ...]
    failures: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"passed": self.passed}, indent=2, allow_nan=False)

    def lines(self) -> list[str]:
        """The report as printed: one line per output, then size and speed."""
        head = f"{self.precision} vs fp32 on {self.rows} calibration rows"
        rows = [
            f"  {o.name}: max |err| {o.max_abs_error:.3g}, mean |err| {o.mean_abs_error:.3g}, "
            f"max rel err {'-' if o.max_rel_error is None else f'{o.max_rel_error:.3g}'}"
            + ("" if o.top1_agreement is None else f", top-1 agreement {o.top1_agreement:.2%}")
            for o in self.outputs
        ]
        speed = self.fp32_ms / self.reduced_ms if self.reduced_ms > 0 else math.nan
        return [
            head,
            *rows,
            f"  size on disk: {self.reduced_bytes:,} bytes vs {self.fp32_bytes:,} "
            f"({self.reduced_bytes / max(self.fp32_bytes, 1):.0%})",
            f"  in-process speed (one thread): {self.reduced_ms:.3f} ms vs {self.fp32_ms:.3f} ms per batch "
            f"({speed:.2f}x fp32)",
            *(f"  note: {note}" for note in self.notes),
            *(f"  REFUSED: {failure}" for failure in self.failures),
        ]


class ToleranceExceeded(InvalidInput):
    """The reduced model is further from FP32 than the tolerance allows; ``report`` has the numbers."""

    def __init__(self, report: PrecisionReport) -> None:
        super().__init__(
            f"{report.precision} build",
            "; ".join(report.failures),
            "a model within the tolerance of its FP32 answers: loosen the tolerance or keep fp32",
        )
        self.report = report


def _outputs(result: Any) -> tuple[torch.Tensor, ...]:
    return (result,) if isinstance(result, torch.Tensor) else tuple(result)


def _has_class_axis(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() and tensor.dim() >= 2 and tensor.shape[-1] > 1


def measure(
    reference: torch.nn.Module,
    reduced: torch.nn.Module,
    batches: Sequence[Sequence[torch.Tensor]],
    names: Sequence[str],
    tolerance: Tolerance,
) -> tuple[tuple[OutputError, ...], tuple[str, ...]]:
    """Per-output error of ``reduced`` against ``reference`` over ``batches``, and the bounds broken."""
    count = len(names)
    worst = [0.0] * count
    total = [0.0] * count
    elements = [0] * count
    largest = [0.0] * count
    agree = [0] * count
    rows = [0] * count
    with torch.no_grad():
        for batch in batches:
            want = _outputs(reference(*batch))
            got = _outputs(reduced(*batch))
            for i, (w, g) in enumerate(zip(want, got, strict=True)):
                if g.shape != w.shape:
                    raise InvalidInput(
                        f"output {names[i]}", list(g.shape), f"the FP32 model's shape {list(w.shape)}"
                    )
                diff = (w.double() - g.double()).abs()
                worst[i] = max(worst[i], float(diff.max()) if diff.numel() else 0.0)
                total[i] += float(diff.sum())
                elements[i] += diff.numel()
                largest[i] = max(largest[i], float(w.double().abs().max()) if w.numel() else 0.0)
                if _has_class_axis(w):
                    agree[i] += int((w.argmax(dim=-1) == g.argmax(dim=-1)).sum())
                    rows[i] += w.argmax(dim=-1).numel()
    outputs = []
    failures = []
    for i, name in enumerate(names):
        relative = worst[i] / largest[i] if largest[i] > 0 else (0.0 if worst[i] == 0 else None)
        top1 = agree[i] / rows[i] if rows[i] else None
        bounds = []
        if tolerance.max_abs_error is not None:
            bounds.append(tolerance.max_abs_error)
            if worst[i] > tolerance.max_abs_error:
                failures.append(
                    f"{name}: max |error| {worst[i]:.3g} > max_abs_error {tolerance.max_abs_error:g}"
                )
        if tolerance.max_rel_error is not None:
            bounds.append(tolerance.max_rel_error * largest[i])
            if relative is None or relative > tolerance.max_rel_error:
                shown = "(FP32 all zeros)" if relative is None else f"{relative:.3g}"
                bound = tolerance.max_rel_error
                failures.append(f"{name}: max relative error {shown} > max_rel_error {bound:g}")
        least = tolerance.min_top1_agreement
        if least is not None and top1 is not None and top1 < least:
            failures.append(f"{name}: top-1 agreement {top1:.2%} < min_top1_agreement {least:.2%}")
        outputs.append(
            OutputError(
                name, worst[i], total[i] / max(elements[i], 1), relative, top1, min(bounds, default=None)
            )
        )
    if tolerance.min_top1_agreement is not None and all(o.top1_agreement is None for o in outputs):
        failures.append("min_top1_agreement given, but no output has a class axis to take the argmax of")
    return tuple(outputs), tuple(failures)


def saved_bytes(module: torch.jit.ScriptModule) -> int:
    """The size of the TorchScript file ``module.save`` would write."""
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    return buffer.getbuffer().nbytes


def median_ms(modules: Sequence[torch.nn.Module], batch: Sequence[torch.Tensor]) -> list[float]:
    """Median wall time of one forward pass of each module, in-process, bounded in runs and in time.

    The modules take turns, so load from other processes hits them alike, on one thread: a
    multi-threaded GEMM on a busy machine measures the scheduler, not the kernels.
    """
    times: list[list[float]] = [[] for _ in modules]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for module in modules:
                for _ in range(2):  # TorchScript's profiling executor optimizes on the second call
                    module(*batch)
            deadline = time.perf_counter() + _TIMING_BUDGET_S
            while len(times[0]) < _TIMING_RUNS and (len(times[0]) < 3 or time.perf_counter() < deadline):
                for module, spent in zip(modules, times, strict=True):
                    start = time.perf_counter()
                    module(*batch)
                    spent.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(threads)
    return [statistics.median(spent) for spent in times]


def reduce_checked(
    module: torch.jit.ScriptModule,
    batches: Sequence[Sequence[torch.Tensor]],
    names: Sequence[str],
    options: PrecisionOptions,
    *,
    batched: bool,
    eager: torch.nn.Module | None = None,
    export: Export | None = None,
) -> tuple[torch.jit.ScriptModule, PrecisionReport]:
    """Reduce ``module`` and compare it with the FP32 one on ``batches``; ToleranceExceeded if too far."""
    tolerance = options.effective_tolerance
    try:
        reduced, notes = reduce(module, options.precision, batches[0], eager=eager, export=export)
        outputs, failures = measure(module, reduced, batches, names, tolerance)
    except RuntimeError as error:  # a kernel without the reduced type, dtypes mixed inside the model
        last = [line for line in str(error).splitlines() if line.strip()][-1:] or [""]
        raise InvalidInput(
            "precision",
            options.precision,
            f"a model that runs at {options.precision} ({last[0].strip()}); a trace keeps the dtypes it "
            "saw: build from the torch module, or script it",
        ) from None
    fp32_ms, reduced_ms = median_ms([module, reduced], batches[0])
    report = PrecisionReport(
        precision=options.precision,
        rows=sum(int(b[0].shape[0]) for b in batches) if batched else len(batches),
        outputs=outputs,
        tolerance=tolerance,
        fp32_bytes=saved_bytes(module),
        reduced_bytes=saved_bytes(reduced),
        fp32_ms=fp32_ms,
        reduced_ms=reduced_ms,
        notes=notes,
        failures=failures,
    )
    if not report.passed:
        raise ToleranceExceeded(report)
    return reduced, report


def served_tolerance(version_folder: Path, default: float) -> float:
    """The smoke test's tolerance for a served version: its build's own bound when reduced, else ``default``.

    Triton's answers are compared with the reduced TorchScript run in-process; a reduced model may
    differ from itself with the batch it is merged into (FP16 rounding), never by more than its build
    allowed against FP32.
    """
    path = version_folder / REPORT_FILE
    if not path.is_file():
        return default
    # An output bounded only by top-1 agreement is held to the error its build measured and accepted.
    bounds = [
        o["max_abs_error"] if o["allowed_abs_error"] is None else o["allowed_abs_error"]
        for o in json.loads(path.read_text())["outputs"]
    ]
    return max(default, min(bounds, default=default))
