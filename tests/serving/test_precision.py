"""Reduced precision at packaging: each build compared with its FP32 model, refused outside its tolerance,
and served by the real Triton within it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inferstack.infra.errors import InvalidInput
from inferstack.serving.client.client import TritonClient
from inferstack.serving.local.processes import SMOKE_TOLERANCE
from inferstack.serving.local.runtime import LocalRuntime
from inferstack.serving.models.build import build_from_signature, build_model
from inferstack.serving.models.export import load_torchscript
from inferstack.serving.models.precision import (
    REPORT_FILE,
    PrecisionOptions,
    Tolerance,
    ToleranceExceeded,
    served_tolerance,
)
from inferstack.serving.models.repository import demo_model, read_repository
from inferstack.serving.models.specs import LatestVersions, ModelOptions, TensorSpec
from tests.serving.conftest import Ranker

REDUCED = ("fp16", "bf16", "int8-dynamic")


def build_mlp(repository: Path, precision: str, *, name: str | None = None, **options: Any) -> Any:
    module, example = demo_model()
    return build_model(
        module,
        example,
        name=name or f"mlp-{precision}",
        repository=repository,
        input_names=["features"],
        output_names=["probabilities"],
        precision=PrecisionOptions(precision, **options),  # type: ignore[arg-type]
    )


def build_ranker(repository: Path, precision: str, **options: Any) -> Any:
    return build_model(
        Ranker(),
        [torch.randn(2, 6), torch.randint(0, 10, (2, 3))],
        name=f"ranker-{precision}",
        repository=repository,
        input_names=["features", "ids"],
        output_names=["score"],
        precision=PrecisionOptions(precision, **options),  # type: ignore[arg-type]
    )


def report_of(built: Any) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((built.path / str(built.version) / REPORT_FILE).read_text())
    return report


@pytest.mark.parametrize("precision", REDUCED)
@pytest.mark.parametrize("build", [build_mlp, build_ranker], ids=["mlp", "embedding"])
def test_reduced_builds_pass_their_tolerance_and_write_the_report(
    tmp_path: Path, precision: str, build: Any
) -> None:
    built = build(tmp_path, precision)
    report = report_of(built)
    assert report["passed"] and report["precision"] == precision and report["rows"] == 16 * 8
    for output in report["outputs"]:
        # A real comparison: a reduced model is never bit-identical, and stays inside the bound.
        assert 0 < output["max_abs_error"] <= output["allowed_abs_error"]
        assert 0 < output["max_rel_error"] <= report["tolerance"]["max_rel_error"]
    assert report["fp32_bytes"] > 0 and report["reduced_bytes"] > 0
    assert report["fp32_ms"] > 0 and report["reduced_ms"] > 0
    assert built.report is not None and built.report.passed


def test_the_shipped_model_is_the_reduced_one(tmp_path: Path) -> None:
    half = load_torchscript(build_ranker(tmp_path, "fp16").path / "1" / "model.pt")
    assert {p.dtype for p in half.parameters()} == {torch.float16}
    # The boundary stays FP32: the config and the clients do not change.
    assert half(torch.randn(3, 6), torch.randint(0, 10, (3, 2))).dtype == torch.float32
    int8 = load_torchscript(build_mlp(tmp_path, "int8-dynamic").path / "1" / "model.pt")
    assert "quantized::linear_dynamic" in str(int8.inlined_graph)
    assert "REDUCED" not in (tmp_path / "mlp-int8-dynamic" / "config.pbtxt").read_text()


class Wide(torch.nn.Module):
    """Wide enough that parameters, not TorchScript's code, dominate the file."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 64)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.mark.parametrize(("precision", "at_most"), [("fp16", 0.55), ("int8-dynamic", 0.35)])
def test_reduced_models_are_smaller_on_disk(tmp_path: Path, precision: str, at_most: float) -> None:
    built = build_model(
        Wide(), [torch.randn(2, 256)], name="wide", repository=tmp_path, precision=PrecisionOptions(precision)
    )  # type: ignore[arg-type]
    report = report_of(built)
    on_disk = (built.path / "1" / "model.pt").stat().st_size
    assert report["reduced_bytes"] <= at_most * report["fp32_bytes"]
    assert abs(on_disk - report["reduced_bytes"]) < 0.05 * on_disk


@pytest.mark.parametrize(
    ("tolerance", "broken"),
    [
        (Tolerance(max_abs_error=1e-7), "max |error|"),
        (Tolerance(max_rel_error=1e-6), "max relative error"),
    ],
)
def test_a_too_tight_tolerance_is_refused_with_the_numbers_and_nothing_written(
    tmp_path: Path, tolerance: Tolerance, broken: str
) -> None:
    with pytest.raises(ToleranceExceeded) as refused:
        build_mlp(tmp_path, "int8-dynamic", tolerance=tolerance)
    report = refused.value.report
    assert not report.passed and broken in str(refused.value)
    measured = report.outputs[0]
    # The message carries the measured error, not just the bound.
    assert f"{measured.max_abs_error:.3g}" in str(refused.value) or f"{measured.max_rel_error:.3g}" in str(
        refused.value
    )
    assert any(line.startswith("  REFUSED:") for line in report.lines())
    assert not (tmp_path / "mlp-int8-dynamic").exists()


def test_top1_agreement_is_measured_on_classifiers_and_enforced(tmp_path: Path) -> None:
    report = report_of(build_mlp(tmp_path, "fp16", tolerance=Tolerance(min_top1_agreement=0.95)))
    (output,) = report["outputs"]
    assert 0.95 <= output["top1_agreement"] <= 1.0
    # The ranker's score has no class axis: a top-1 tolerance cannot be checked on it, so it is refused.
    with pytest.raises(ToleranceExceeded, match="no output has a class axis"):
        build_ranker(tmp_path, "fp16", tolerance=Tolerance(min_top1_agreement=0.9))


def test_int8_dynamic_is_refused_on_gpu_instances_before_anything_runs(tmp_path: Path) -> None:
    module, example = demo_model()

    def build_for_gpu(name: str, precision: str) -> Any:
        return build_model(
            module,
            example,
            name=name,
            repository=tmp_path,
            target="pytorch_libtorch",
            options=ModelOptions(instance_kind="KIND_GPU"),
            precision=PrecisionOptions(precision),  # type: ignore[arg-type]
        )

    with pytest.raises(InvalidInput, match="CPU only") as error:
        build_for_gpu("gpu-int8", "int8-dynamic")
    assert error.value.field == "precision"
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    # The GPU target takes FP16, with the FP32 boundary the libtorch backend binds to.
    built = build_for_gpu("gpu-fp16", "fp16")
    assert "TYPE_FP32" in built.config_text and built.report is not None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"tolerance": Tolerance(max_abs_error=0)}, "tolerance.max_abs_error"),
        ({"tolerance": Tolerance(max_rel_error=float("inf"))}, "tolerance.max_rel_error"),
        ({"tolerance": Tolerance(min_top1_agreement=1.5)}, "tolerance.min_top1_agreement"),
    ],
)
def test_bad_tolerances_are_refused(tmp_path: Path, options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as error:
        build_mlp(tmp_path, "fp16", **options)
    assert error.value.field == field


def test_a_model_without_linear_layers_has_nothing_to_quantize(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="has none"):
        build_model(
            torch.nn.Tanh(),
            [torch.randn(2, 4)],
            name="tanh",
            repository=tmp_path,
            precision=PrecisionOptions("int8-dynamic"),
        )


def test_calibration_inputs_are_used_and_checked(tmp_path: Path) -> None:
    rows = np.random.default_rng(5).standard_normal((20, 16)).astype(np.float32)
    report = report_of(build_mlp(tmp_path, "fp16", calibration={"features": rows}))
    assert report["rows"] == 20
    for calibration, field in [
        ({"other": rows}, "calibration"),
        ({"features": rows.astype(np.float64)}, "calibration[features]"),
        ({"features": rows[:, :8]}, "calibration[features]"),
    ]:
        with pytest.raises(InvalidInput) as error:
            build_mlp(tmp_path, "fp16", name="bad", calibration=calibration)
        assert error.value.field == field


class Recurrent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.lstm = torch.nn.LSTM(8, 16, batch_first=True)
        self.head = torch.nn.Linear(16, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(tokens)
        return self.head(out[:, -1])


def test_int8_from_a_module_quantizes_lstm_and_from_torchscript_says_it_cannot(tmp_path: Path) -> None:
    eager = build_model(
        Recurrent(),
        [torch.randn(2, 5, 8)],
        name="eager",
        repository=tmp_path,
        precision=PrecisionOptions("int8-dynamic"),
    )
    assert "aten::quantized_lstm" in str(load_torchscript(eager.path / "1" / "model.pt").inlined_graph)
    scripted = tmp_path / "recurrent.pt"
    torch.jit.script(Recurrent()).save(str(scripted))
    from_file = build_from_signature(
        scripted,
        name="from-file",
        inputs=[TensorSpec("tokens", "FP32", (5, 8))],
        outputs=[TensorSpec("OUTPUT__0", "FP32", (2,))],
        repository=tmp_path,
        precision=PrecisionOptions("int8-dynamic"),
    )
    assert from_file.report is not None
    assert any("LSTM layers stay FP32" in note for note in from_file.report.notes)
    graph = str(load_torchscript(from_file.path / "1" / "model.pt").inlined_graph)
    assert "quantized::linear_dynamic" in graph and "quantized_lstm" not in graph


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_a_cast_is_made_on_the_module_and_a_trace_that_cannot_take_it_is_refused(
    tmp_path: Path, precision: str
) -> None:
    # The LSTM's initial state is made in the input's dtype: re-exported from the cast module, it runs.
    built = build_model(
        Recurrent(),
        [torch.randn(2, 5, 8)],
        name="eager",
        repository=tmp_path,
        precision=PrecisionOptions(precision),  # type: ignore[arg-type]
    )
    assert built.report is not None and built.report.passed
    # A trace recorded that state as FP32: cast afterwards, it mixes dtypes, and is refused plainly.
    traced = tmp_path / "traced.pt"
    torch.jit.trace(Recurrent().eval(), (torch.randn(2, 5, 8),)).save(str(traced))
    with pytest.raises(InvalidInput) as error:
        build_from_signature(
            traced,
            name="traced",
            inputs=[TensorSpec("tokens", "FP32", (5, 8))],
            outputs=[TensorSpec("OUTPUT__0", "FP32", (2,))],
            repository=tmp_path,
            precision=PrecisionOptions(precision),  # type: ignore[arg-type]
        )
    assert error.value.field == "precision" and "a trace keeps the dtypes it saw" in error.value.allowed
    assert not (tmp_path / "traced").exists()


def test_versions_served_together_must_share_the_signature(tmp_path: Path) -> None:
    module, example = demo_model()
    served_two = ModelOptions(version_policy=LatestVersions(2))

    def build(version: int, names: tuple[str, str], options: ModelOptions, precision: str = "fp32") -> Any:
        return build_model(
            module,
            example,
            name="mlp",
            repository=tmp_path,
            version=version,
            input_names=[names[0]],
            output_names=[names[1]],
            options=options,
            precision=PrecisionOptions(precision),  # type: ignore[arg-type]
        )

    build(1, ("features", "probabilities"), served_two)
    # FP16 keeps the FP32 boundary: version 2 may be served beside version 1 under one config.
    build(2, ("features", "probabilities"), served_two, "fp16")
    assert sorted(p.name for p in (tmp_path / "mlp").iterdir()) == ["1", "2", "config.pbtxt"]
    with pytest.raises(InvalidInput, match=r"which its version policy also serves"):
        build(3, ("x", "y"), served_two)
    assert not (tmp_path / "mlp" / "3").exists()
    # Served alone, a new signature fits its config.
    build(3, ("x", "y"), ModelOptions())


def test_served_tolerance_is_the_builds_own_bound(tmp_path: Path) -> None:
    fp32 = build_mlp(tmp_path, "fp32")
    assert served_tolerance(fp32.path / "1", SMOKE_TOLERANCE) == SMOKE_TOLERANCE
    reduced = build_mlp(tmp_path, "int8-dynamic")
    (output,) = report_of(reduced)["outputs"]
    assert served_tolerance(reduced.path / "1", SMOKE_TOLERANCE) == output["allowed_abs_error"]


# --- served by the real Triton ------------------------------------------------------------------


@pytest.fixture(scope="module")
def reduced_runtime(tmp_path_factory: pytest.TempPathFactory, triton_present: None) -> Iterator[LocalRuntime]:
    repository = tmp_path_factory.mktemp("reduced")
    for precision in ("fp16", "int8-dynamic"):
        build_mlp(repository, precision)
        build_ranker(repository, precision)
    with LocalRuntime(repository, work_dir=tmp_path_factory.mktemp("runtime"), progress=print) as runtime:
        yield runtime


@pytest.mark.real_server
@pytest.mark.parametrize("precision", ["fp16", "int8-dynamic"])
def test_triton_serves_reduced_models_within_their_tolerance_of_fp32(
    reduced_runtime: LocalRuntime, precision: str
) -> None:
    rng = np.random.default_rng(11)
    features = rng.standard_normal((5, 16)).astype(np.float32)
    module, _ = demo_model()
    ranker_inputs = {
        "features": rng.standard_normal((5, 6)).astype(np.float32),
        "ids": rng.integers(0, 10, (5, 3)).astype(np.int64),
    }
    cases = [
        (f"mlp-{precision}", {"features": features}, module(torch.from_numpy(features))),
        (
            f"ranker-{precision}",
            ranker_inputs,
            Ranker()(*(torch.from_numpy(a) for a in ranker_inputs.values())),
        ),
    ]
    with TritonClient(reduced_runtime.http_url) as client, torch.no_grad():
        for name, inputs, fp32 in cases:
            (answer,) = client.infer(name, inputs).values()
            model = next(m for m in reduced_runtime.models if m.name == name)
            (output,) = json.loads((model.torchscript.parent / REPORT_FILE).read_text())["outputs"]
            error = float(np.max(np.abs(answer - fp32.numpy())))
            assert answer.dtype == np.float32
            assert 0 < error <= output["allowed_abs_error"], (name, error, output)


@pytest.mark.real_server
def test_smoke_holds_reduced_models_to_their_own_tolerance(reduced_runtime: LocalRuntime) -> None:
    results = reduced_runtime.smoke(("http",))
    assert {r.model for r in results} == {
        "mlp-fp16",
        "mlp-int8-dynamic",
        "ranker-fp16",
        "ranker-int8-dynamic",
    }
    assert all(r.ok for r in results), results


# --- the command line ------------------------------------------------------------------------------


@pytest.fixture
def mlp_file(tmp_path: Path) -> Path:
    module, example = demo_model()
    path = tmp_path / "mlp.pt"
    torch.jit.trace(module, tuple(example)).save(str(path))
    return path


def build_command(mlp_file: Path, out: Path, *extra: str) -> list[str]:
    return [
        "models",
        "build",
        "--torchscript",
        str(mlp_file),
        "--name",
        "mlp",
        "--input",
        "features:FP32:16",
        "--output",
        "probabilities:FP32:4",
        "--out",
        str(out),
        *extra,
    ]


def test_models_build_reduces_prints_and_writes_the_report(
    mlp_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from inferstack.cli.main import main

    out = tmp_path / "repo"
    assert (
        main(build_command(mlp_file, out, "--precision", "int8-dynamic", "--min-top1-agreement", "0.9")) == 0
    )
    printed = capsys.readouterr().out
    assert "int8-dynamic vs fp32 on 128 calibration rows" in printed and "top-1 agreement" in printed
    report = json.loads((out / "mlp" / "1" / REPORT_FILE).read_text())
    assert report["tolerance"] == {"max_abs_error": None, "max_rel_error": None, "min_top1_agreement": 0.9}
    assert f"{report['outputs'][0]['max_abs_error']:.3g}" in printed


def test_models_build_refuses_a_reduction_outside_the_tolerance(
    mlp_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from inferstack.cli.main import main

    out = tmp_path / "repo"
    assert main(build_command(mlp_file, out, "--precision", "fp16", "--max-abs-error", "1e-9")) == 1
    error = capsys.readouterr().err
    assert "REFUSED: probabilities: max |error|" in error and "> max_abs_error 1e-09" in error
    assert not (out / "mlp").exists()


def test_models_build_calibration_file_and_version_policy(
    mlp_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from inferstack.cli.main import main

    calibration = tmp_path / "rows.npz"
    np.savez(calibration, features=np.random.default_rng(2).standard_normal((12, 16)).astype(np.float32))
    out = tmp_path / "repo"
    assert main(build_command(mlp_file, out, "--version-policy", "specific:1,2")) == 0
    command = build_command(mlp_file, out, "--version", "2", "--version-policy", "specific:1,2")
    assert main([*command, "--precision", "fp16", "--calibration", str(calibration)]) == 0
    assert json.loads((out / "mlp" / "2" / REPORT_FILE).read_text())["rows"] == 12
    (model,) = read_repository(out)
    assert list(model.config.version_policy.specific.versions) == [1, 2]
    capsys.readouterr()
    assert main(build_command(mlp_file, out, "--version-policy", "newest")) == 2
    assert "'newest': not valid for --version-policy: latest:N" in capsys.readouterr().err
    np.save(tmp_path / "array.npy", np.zeros((2, 16), np.float32))
    assert (
        main(
            build_command(mlp_file, out, "--precision", "fp16", "--calibration", str(tmp_path / "array.npy"))
        )
        == 2
    )
    (tmp_path / "bad.npz").write_text("not numpy")
    assert (
        main(build_command(mlp_file, out, "--precision", "fp16", "--calibration", str(tmp_path / "bad.npz")))
        == 2
    )
