"""Model repository building: config generation, validation, bad input, and the python-backend model."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from inferstack.infra.errors import InvalidInput
from inferstack.serving.models.build import build_from_signature, build_model
from inferstack.serving.models.config import parse_config
from inferstack.serving.models.export import libtorch_binding
from inferstack.serving.models.repository import (
    demo_model,
    generate_inputs,
    read_repository,
    run_reference,
    to_python_target,
)
from inferstack.serving.models.specs import (
    DTYPES,
    AllVersions,
    BuiltModel,
    DynamicBatching,
    LatestVersions,
    ModelOptions,
    SpecificVersions,
    TensorSpec,
    parse_tensor_spec,
)
from inferstack.serving.models.tuning import default_instance_count
from tests.serving.conftest import FeaturesAndIds


class TwoInputs(FeaturesAndIds):
    """Two outputs from 3 features and ids of any length."""

    def __init__(self) -> None:
        super().__init__(seed=1, features=3, width=4)

    def forward(self, features: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features(features) + self.embedding(ids).mean(dim=1), ids.sum(dim=1, keepdim=True)


def build_ranker(repository: Path, **kwargs: Any) -> BuiltModel:
    """TwoInputs as model "ranker", its ids axis variable."""
    example = [torch.randn(2, 3), torch.randint(0, 10, (2, 5))]
    return build_model(
        TwoInputs(), example, name="ranker", repository=repository, variable_axes={"INPUT__1": [0]}, **kwargs
    )


class Positions(torch.nn.Module):
    """Per-position scores: the output's length follows the input's."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.sum(dim=-1)


class Cast(torch.nn.Module):
    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(torch.float32) * 2).to(self.dtype)


def parsed(text: str) -> Any:
    config = mc.ModelConfig()
    text_format.Parse(text, config)
    return config


def files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def tensors(config: Any) -> list[tuple[str, str, list[int]]]:
    return [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in [*config.input, *config.output]]


# --- what gets generated -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_every_supported_dtype_becomes_its_triton_type(tmp_path: Path, dtype_name: str) -> None:
    dtype = DTYPES[dtype_name]
    example = torch.ones(2, 3).to(dtype)
    built = build_model(Cast(dtype), [example], name="cast", repository=tmp_path, target="pytorch_libtorch")
    config = parsed(built.config_text)
    assert tensors(config) == [
        ("INPUT__0", f"TYPE_{dtype_name}", [3]),
        ("OUTPUT__0", f"TYPE_{dtype_name}", [3]),
    ]
    assert config.platform == "pytorch_libtorch" and not config.backend
    assert files(tmp_path) == ["cast", "cast/1", "cast/1/model.pt", "cast/config.pbtxt"]


@pytest.mark.parametrize("dtype_name", [d for d in DTYPES if d != "BF16"])
def test_the_python_target_takes_every_numpy_type(tmp_path: Path, dtype_name: str) -> None:
    dtype = DTYPES[dtype_name]
    built = build_model(Cast(dtype), [torch.ones(2, 3).to(dtype)], name="cast", repository=tmp_path)
    config = parsed(built.config_text)
    assert config.backend == "python" and not config.platform
    assert mc.DataType.Name(config.output[0].data_type) == f"TYPE_{dtype_name}"
    assert (tmp_path / "cast" / "1" / "model.py").is_file()


def test_two_inputs_variable_axis_and_libtorch_names(tmp_path: Path) -> None:
    built = build_ranker(tmp_path)
    assert tensors(parsed(built.config_text)) == [
        ("INPUT__0", "TYPE_FP32", [3]),
        ("INPUT__1", "TYPE_INT64", [-1]),
        ("OUTPUT__0", "TYPE_FP32", [4]),
        ("OUTPUT__1", "TYPE_INT64", [1]),
    ]
    assert built.inputs[1] == TensorSpec("INPUT__1", "INT64", (-1,))
    assert parsed(built.config_text).max_batch_size == 8
    assert files(tmp_path) == [
        "ranker",
        "ranker/1",
        "ranker/1/model.pt",
        "ranker/1/model.py",
        "ranker/config.pbtxt",
    ]


def test_an_output_axis_that_follows_a_variable_input_becomes_variable(tmp_path: Path) -> None:
    example = [torch.randn(2, 5, 4)]
    variable = build_model(
        Positions(), example, name="v", repository=tmp_path, variable_axes={"INPUT__0": [0]}
    )
    assert tensors(parsed(variable.config_text)) == [
        ("INPUT__0", "TYPE_FP32", [-1, 4]),
        ("OUTPUT__0", "TYPE_FP32", [-1]),
    ]
    fixed = build_model(Positions(), example, name="f", repository=tmp_path)
    assert tensors(parsed(fixed.config_text))[1] == ("OUTPUT__0", "TYPE_FP32", [5])


def test_batching_queue_policy_instances_warmup_and_version_policy(tmp_path: Path) -> None:
    module, example = demo_model()
    options = ModelOptions(
        max_batch_size=16,
        dynamic_batching=DynamicBatching(
            (4, 8), max_queue_delay_us=250, max_queue_size=64, queue_timeout_us=50_000
        ),
        instance_kind="KIND_GPU",
        instance_count=2,
        warmup=True,
        version_policy=LatestVersions(2),
    )
    built = build_model(
        module,
        example,
        name="demo",
        repository=tmp_path,
        target="pytorch_libtorch",
        options=options,
        input_names=["features"],
        output_names=["probabilities"],
    )
    config = parsed(built.config_text)
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    queue = config.dynamic_batching.default_queue_policy
    assert (queue.max_queue_size, queue.default_timeout_microseconds) == (64, 50_000)
    assert queue.timeout_action == mc.ModelQueuePolicy.TimeoutAction.REJECT
    assert [(g.kind, g.count) for g in config.instance_group] == [(mc.ModelInstanceGroup.KIND_GPU, 2)]
    (warmup,) = config.model_warmup
    assert warmup.batch_size == 16 and set(warmup.inputs) == {"features"}
    assert warmup.inputs["features"].zero_data and list(warmup.inputs["features"].dims) == [16]
    assert warmup.inputs["features"].data_type == mc.TYPE_FP32
    assert config.version_policy.latest.num_versions == 2
    assert not (tmp_path / "demo" / "1" / "model.py").exists()  # libtorch needs no python model


def test_defaults_queue_bound_alone_and_warmup_of_a_variable_axis(tmp_path: Path) -> None:
    built = build_ranker(
        tmp_path, options=ModelOptions(dynamic_batching=DynamicBatching(max_queue_size=5), warmup=True)
    )
    config = parsed(built.config_text)
    queue = config.dynamic_batching.default_queue_policy
    assert (queue.max_queue_size, queue.default_timeout_microseconds) == (5, 0)
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    kind, count = mc.ModelInstanceGroup.KIND_CPU, default_instance_count("KIND_CPU", "python")
    assert [(g.kind, g.count) for g in config.instance_group] == [(kind, count)]  # this machine's
    assert config.version_policy.latest.num_versions == 1
    assert list(config.model_warmup[0].inputs["INPUT__1"].dims) == [1]
    assert config.model_warmup[0].batch_size == 8


def test_batching_without_the_dynamic_batcher_and_all_versions(tmp_path: Path) -> None:
    module, example = demo_model()
    options = ModelOptions(max_batch_size=4, dynamic_batching=None, version_policy=AllVersions())
    config = parsed(build_model(module, example, name="m", repository=tmp_path, options=options).config_text)
    assert config.max_batch_size == 4 and not config.HasField("dynamic_batching")
    assert config.version_policy.WhichOneof("policy_choice") == "all"


def test_no_batch_axis_and_specific_versions(tmp_path: Path) -> None:
    options = ModelOptions(
        max_batch_size=0,
        dynamic_batching=None,
        warmup=True,
        version_policy=SpecificVersions((1, 3)),
    )
    built = build_model(
        Cast(torch.float32), [torch.ones(5)], name="plain", repository=tmp_path, options=options
    )
    config = parsed(built.config_text)
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [5]
    assert config.model_warmup[0].batch_size == 1
    assert list(config.version_policy.specific.versions) == [1, 3]


def test_script_export_keeps_data_dependent_control_flow(tmp_path: Path) -> None:
    class Branchy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if bool(x.sum() > 0):
                return x * 2
            return x * -1

    build_model(Branchy(), [torch.ones(1, 2)], name="branchy", repository=tmp_path, export="script")
    model = read_repository(tmp_path)[0]
    negative = {"INPUT__0": -np.ones((1, 2), dtype=np.float32)}
    np.testing.assert_array_equal(run_reference(model, negative)["OUTPUT__0"], np.ones((1, 2)))


def test_exported_in_eval_mode_and_the_callers_module_keeps_its_mode(tmp_path: Path) -> None:
    torch.manual_seed(2)
    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5)).train()
    build_model(module, [torch.randn(2, 4)], name="m", repository=tmp_path)
    assert module.training
    model = read_repository(tmp_path)[0]
    inputs = generate_inputs(model)
    expected = module.eval()(torch.from_numpy(inputs["INPUT__0"])).detach().numpy()
    np.testing.assert_allclose(run_reference(model, inputs)["OUTPUT__0"], expected, atol=1e-6)


def test_a_new_version_beside_the_old_one(tmp_path: Path) -> None:
    module, example = demo_model()
    build_model(module, example, name="demo", repository=tmp_path)
    build_model(module, example, name="demo", repository=tmp_path, version=2)
    (model,) = read_repository(tmp_path)
    assert model.version == 2 and model.torchscript == tmp_path / "demo" / "2" / "model.pt"
    assert (tmp_path / "demo" / "1" / "model.pt").is_file()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")], "no staging left behind"


def test_read_repository_generate_inputs_and_reference(tmp_path: Path) -> None:
    build_ranker(tmp_path)
    (model,) = read_repository(tmp_path)
    assert (model.name, model.version, model.max_batch_size) == ("ranker", 1, 8)
    assert model.inputs == (TensorSpec("INPUT__0", "FP32", (3,)), TensorSpec("INPUT__1", "INT64", (-1,)))
    inputs = generate_inputs(model, batch=3, variable_length=7)
    assert inputs["INPUT__0"].shape == (3, 3) and inputs["INPUT__0"].dtype == np.float32
    assert inputs["INPUT__1"].shape == (3, 7) and inputs["INPUT__1"].dtype == np.int64
    outputs = run_reference(model, inputs)
    np.testing.assert_array_equal(outputs["OUTPUT__1"][:, 0], inputs["INPUT__1"].sum(axis=1))
    expected = TwoInputs()(*(torch.from_numpy(inputs[n]) for n in ("INPUT__0", "INPUT__1")))[0]
    np.testing.assert_allclose(outputs["OUTPUT__0"], expected.detach().numpy(), atol=1e-6)


def test_bf16_travels_as_float32_outside_the_model(tmp_path: Path) -> None:
    build_model(
        Cast(torch.bfloat16),
        [torch.ones(2, 3, dtype=torch.bfloat16)],
        name="half",
        repository=tmp_path,
        target="pytorch_libtorch",
    )
    (model,) = read_repository(tmp_path)
    inputs = generate_inputs(model)
    assert inputs["INPUT__0"].dtype == np.float32
    output = run_reference(model, inputs)["OUTPUT__0"]
    expected = (torch.from_numpy(inputs["INPUT__0"]).bfloat16().float() * 2).bfloat16().float().numpy()
    assert output.dtype == np.float32
    np.testing.assert_array_equal(output, expected)


def test_read_repository_refuses_incomplete_models(tmp_path: Path) -> None:
    module, example = demo_model()
    build_model(module, example, name="demo", repository=tmp_path / "repo")
    (tmp_path / "repo" / "demo" / "1" / "model.py").unlink()
    with pytest.raises(InvalidInput) as caught:
        read_repository(tmp_path / "repo")
    assert caught.value.field == "demo" and "model.py" in caught.value.allowed
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "absent"):
        with pytest.raises(InvalidInput) as caught:
            read_repository(path)
        assert caught.value.field == "repository"


def test_to_python_target_rewrites_only_the_backend(tmp_path: Path) -> None:
    module, example = demo_model()
    build_model(module, example, name="demo", repository=tmp_path / "src", target="pytorch_libtorch")
    served = to_python_target(tmp_path / "src", tmp_path / "served")
    before, after = read_repository(tmp_path / "src")[0].config, read_repository(served)[0].config
    assert after.backend == "python" and not after.platform
    after.backend, after.platform = "", "pytorch_libtorch"
    assert before == after
    assert (served / "demo" / "1" / "model.py").is_file()


def scripted(module: torch.nn.Module, path: Path) -> Path:
    torch.jit.script(module).save(str(path))
    return path


def specs(*texts: str) -> list[TensorSpec]:
    return [parse_tensor_spec(t, field="spec") for t in texts]


def test_build_from_signature_accepts_a_matching_declaration(tmp_path: Path) -> None:
    path = scripted(TwoInputs(), tmp_path / "model.pt")
    built = build_from_signature(
        path,
        name="ranker",
        inputs=specs("f:FP32:3", "ids:INT64:-1"),
        outputs=specs("score:FP32:4", "total:INT64:1"),
        repository=tmp_path / "repo",
        target="pytorch_libtorch",
    )
    assert tensors(parsed(built.config_text)) == [
        ("f", "TYPE_FP32", [3]),
        ("ids", "TYPE_INT64", [-1]),
        ("score", "TYPE_FP32", [4]),
        ("total", "TYPE_INT64", [1]),
    ]
    assert (tmp_path / "repo" / "ranker" / "1" / "model.pt").is_file()


# --- bad input: a clear error naming the field, and nothing written --------------------------------


def expect_invalid(tmp_path: Path, field_part: str, call: Callable[[Path], object]) -> InvalidInput:
    repo = tmp_path / "repo"
    with pytest.raises(InvalidInput) as caught:
        call(repo)
    assert field_part in caught.value.field, caught.value
    assert repr(caught.value.value) in str(caught.value) and caught.value.allowed in str(caught.value)
    assert files(repo) == [], "nothing may be written for bad input"
    return caught.value


def test_unsupported_dtype(tmp_path: Path) -> None:
    error = expect_invalid(
        tmp_path,
        "dtype",
        lambda repo: build_model(Cast(torch.complex64), [torch.ones(2, 3)], name="m", repository=repo),
    )
    assert "complex64" in str(error.value) and "torch.float32 (FP32)" in error.allowed


def test_bf16_is_refused_for_the_python_target(tmp_path: Path) -> None:
    error = expect_invalid(
        tmp_path,
        "dtype",
        lambda repo: build_model(Cast(torch.bfloat16), [torch.ones(2, 3)], name="m", repository=repo),
    )
    assert error.value == "BF16" and "pytorch_libtorch" in error.allowed and "FP16" in error.allowed
    expect_invalid(
        tmp_path,
        "dtype",
        lambda repo: build_from_signature(
            scripted(Cast(torch.bfloat16), tmp_path / "cast.pt"),
            name="m",
            inputs=specs("x:FP32:3"),
            outputs=specs("y:BF16:3"),
            repository=repo,
        ),
    )


def test_model_that_fails_to_export(tmp_path: Path) -> None:
    class Unscriptable(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * float(np.ones(1)[0])  # runs in Python; numpy calls are not TorchScript

    error = expect_invalid(
        tmp_path,
        "model",
        lambda repo: build_model(
            Unscriptable(), [torch.ones(1, 1)], name="m", repository=repo, export="script"
        ),
    )
    assert "torch.jit.script" in error.allowed


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the very warning this case is about
def test_a_trace_that_differs_from_the_model(tmp_path: Path) -> None:
    class ShapeBranch(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] > 1:  # traced at batch 1, the trace keeps the other branch for every batch
                return x * 2
            return x

    error = expect_invalid(
        tmp_path,
        "model",
        lambda repo: build_model(ShapeBranch(), [torch.ones(1, 2)], name="m", repository=repo),
    )
    assert "export='script'" in error.allowed
    build_model(ShapeBranch(), [torch.ones(1, 2)], name="m", repository=tmp_path / "ok", export="script")


def test_a_torchscript_file_that_does_not_load(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    expect_invalid(
        tmp_path,
        "torchscript",
        lambda repo: build_from_signature(
            tmp_path / "junk.pt",
            name="m",
            inputs=specs("x:FP32:3"),
            outputs=specs("y:FP32:3"),
            repository=repo,
        ),
    )


def test_example_inputs_that_do_not_match_forward(tmp_path: Path) -> None:
    error = expect_invalid(
        tmp_path,
        "example_inputs",
        lambda repo: build_model(TwoInputs(), [torch.randn(2, 3)], name="m", repository=repo),
    )
    assert "ids" in error.allowed  # forward's own complaint: the missing argument
    expect_invalid(
        tmp_path,
        "example_inputs",
        lambda repo: build_model(
            TwoInputs(), [torch.randn(2, 7), torch.randint(0, 10, (2, 5))], name="m", repository=repo
        ),
    )
    expect_invalid(
        tmp_path,
        "example_inputs",
        lambda repo: build_model(TwoInputs(), [], name="m", repository=repo),
    )


def test_example_inputs_with_different_batch_sizes(tmp_path: Path) -> None:
    expect_invalid(
        tmp_path,
        "example_inputs",
        lambda repo: build_model(
            TwoInputs(), [torch.randn(2, 3), torch.randint(0, 10, (3, 5))], name="m", repository=repo
        ),
    )


@pytest.mark.parametrize("size", [-1, 1.5, True])
def test_non_positive_or_non_integer_batch_size(tmp_path: Path, size: Any) -> None:
    module, example = demo_model()
    expect_invalid(
        tmp_path,
        "max_batch_size",
        lambda repo: build_model(
            module, example, name="m", repository=repo, options=ModelOptions(max_batch_size=size)
        ),
    )


def test_example_batch_larger_than_max_batch_size(tmp_path: Path) -> None:
    module, _ = demo_model()
    expect_invalid(
        tmp_path,
        "example_inputs",
        lambda repo: build_model(
            module, [torch.randn(9, 16)], name="m", repository=repo, options=ModelOptions(max_batch_size=8)
        ),
    )


def test_a_model_that_cannot_batch(tmp_path: Path) -> None:
    class OneAtATime(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(2, 3) * 2  # only ever a batch of 2

    error = expect_invalid(
        tmp_path,
        "max_batch_size",
        lambda repo: build_model(OneAtATime(), [torch.ones(2, 3)], name="m", repository=repo),
    )
    assert "0 for a model" in error.allowed


class Total(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum()  # one number for the whole batch


class Weighted(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x.sum()  # [4, 3] whatever the batch


@pytest.mark.parametrize("module", [Total(), Weighted()], ids=["scalar", "fixed"])
def test_an_output_without_the_batch_axis(tmp_path: Path, module: torch.nn.Module) -> None:
    error = expect_invalid(
        tmp_path,
        "output OUTPUT__0",
        lambda repo: build_model(module, [torch.ones(3, 3)], name="m", repository=repo),
    )
    assert "max_batch_size 0" in error.allowed


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "-flag", "sp ace", "x" * 129, 7])
def test_names_triton_rejects(tmp_path: Path, name: Any) -> None:
    module, example = demo_model()
    expect_invalid(tmp_path, "name", lambda repo: build_model(module, example, name=name, repository=repo))


def test_bad_tensor_names(tmp_path: Path) -> None:
    module, example = demo_model()
    expect_invalid(
        tmp_path,
        "input_names[0]",
        lambda repo: build_model(module, example, name="m", repository=repo, input_names=["a/b"]),
    )
    expect_invalid(
        tmp_path,
        "input_names",
        lambda repo: build_model(module, example, name="m", repository=repo, input_names=["a", "b"]),
    )
    expect_invalid(
        tmp_path,
        "output_names",
        lambda repo: build_model(
            module, example, name="m", repository=repo, input_names=["x"], output_names=["x"]
        ),
    )


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (
            ModelOptions(max_batch_size=4, dynamic_batching=DynamicBatching(preferred_batch_sizes=(8,))),
            "preferred",
        ),
        (ModelOptions(max_batch_size=0), "dynamic_batching"),
        (ModelOptions(dynamic_batching=DynamicBatching(max_queue_delay_us=-1)), "max_queue_delay_us"),
        (ModelOptions(dynamic_batching=DynamicBatching(max_queue_size=0)), "max_queue_size"),
        (ModelOptions(dynamic_batching=DynamicBatching(queue_timeout_us=0)), "queue_timeout_us"),
        (ModelOptions(instance_count=0), "instance_count"),
        (ModelOptions(instance_kind="KIND_TPU"), "instance_kind"),  # type: ignore[arg-type]
        (ModelOptions(version_policy=LatestVersions(0)), "version_policy.count"),
        (ModelOptions(version_policy=SpecificVersions(())), "version_policy.versions"),
        (ModelOptions(version_policy=SpecificVersions((1, -2))), "version_policy.versions"),
        (ModelOptions(version_policy="latest"), "version_policy"),  # type: ignore[arg-type]
    ],
)
def test_bad_options(tmp_path: Path, options: ModelOptions, field: str) -> None:
    module, example = demo_model()
    expect_invalid(
        tmp_path,
        field,
        lambda repo: build_model(module, example[:1], name="m", repository=repo, options=options),
    )


def test_bad_target_version_and_variable_axes(tmp_path: Path) -> None:
    module, example = demo_model()
    expect_invalid(
        tmp_path,
        "target",
        lambda repo: build_model(module, example, name="m", repository=repo, target="onnx"),  # type: ignore[arg-type]
    )
    expect_invalid(
        tmp_path, "version", lambda repo: build_model(module, example, name="m", repository=repo, version=0)
    )
    expect_invalid(
        tmp_path,
        "variable_axes",
        lambda repo: build_model(module, example, name="m", repository=repo, variable_axes={"nope": [0]}),
    )
    expect_invalid(
        tmp_path,
        "variable_axes['INPUT__0']",
        lambda repo: build_model(module, example, name="m", repository=repo, variable_axes={"INPUT__0": [1]}),
    )


def test_variable_axis_the_trace_cannot_honour(tmp_path: Path) -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(x.shape[0], 2, 2).sum(dim=2)  # only length 4 works

    expect_invalid(
        tmp_path,
        "variable_axes",
        lambda repo: build_model(
            Fixed(), [torch.ones(1, 4)], name="m", repository=repo, variable_axes={"INPUT__0": [0]}
        ),
    )


def test_wrong_declaration_for_a_torchscript_file(tmp_path: Path) -> None:
    path = scripted(TwoInputs(), tmp_path / "model.pt")

    def build(inputs: list[str], outputs: list[str]) -> Callable[[Path], object]:
        return lambda repo: build_from_signature(
            path, name="m", inputs=specs(*inputs), outputs=specs(*outputs), repository=repo
        )

    good_inputs, good_outputs = ["f:FP32:3", "ids:INT64:-1"], ["score:FP32:4", "total:INT64:1"]
    error = expect_invalid(tmp_path, "output score", build(good_inputs, ["score:FP32:5", "total:INT64:1"]))
    assert "FP32:4" in error.allowed
    expect_invalid(tmp_path, "output total", build(good_inputs, ["score:FP32:4", "total:FP32:1"]))
    expect_invalid(tmp_path, "output score", build(good_inputs, ["score:FP32:4,1", "total:INT64:1"]))
    expect_invalid(tmp_path, "outputs", build(good_inputs, ["score:FP32:4"]))
    expect_invalid(tmp_path, "inputs", build(["f:FP32:3"], good_outputs))  # too few
    expect_invalid(tmp_path, "inputs", build(["f:FP32:3", "ids:FP32:-1"], good_outputs))  # ids as floats
    expect_invalid(tmp_path, "inputs", build(["f:FP32:3,2", "ids:INT64:-1"], good_outputs))  # rank
    expect_invalid(tmp_path, "inputs/outputs", build(["f:FP32:3", "score:INT64:-1"], good_outputs))


def test_a_declared_fixed_output_that_follows_the_inputs(tmp_path: Path) -> None:
    path = scripted(Positions(), tmp_path / "positions.pt")
    error = expect_invalid(
        tmp_path,
        "output positions",
        lambda repo: build_from_signature(
            path, name="m", inputs=specs("t:FP32:-1,4"), outputs=specs("positions:FP32:3"), repository=repo
        ),
    )
    assert "-1 at axis 0" in error.allowed
    build_from_signature(
        path,
        name="m",
        inputs=specs("t:FP32:-1,4"),
        outputs=specs("positions:FP32:-1"),
        repository=tmp_path / "ok",
    )


# --- Triton's libtorch backend binds tensors by name: the config must bind them where they go -------------


@pytest.mark.parametrize(
    ("names", "arguments", "positions"),
    [
        (["INPUT__0", "INPUT__1"], ["features", "ids"], [0, 1]),
        (["ids", "features"], ["features", "ids"], [1, 0]),
        (["x__1", "y__0"], ["features", "ids"], [1, 0]),
        (["features", "y"], ["features", "ids"], [0, 1]),
        (["x__1", "y"], ["features", "ids"], [0, 1]),
        (["OUTPUT__1", "OUTPUT__0"], None, [1, 0]),
        (["score", "total"], None, [0, 1]),
        (["x__a", "y__0"], None, [0, 1]),
    ],
)
def test_libtorch_binding(names: list[str], arguments: list[str] | None, positions: list[int]) -> None:
    assert libtorch_binding(names, arguments) == positions


def test_libtorch_names_that_would_swap_tensors(tmp_path: Path) -> None:
    example = [torch.randn(2, 3), torch.randint(0, 10, (2, 5))]

    def build(**kwargs: Any) -> Callable[[Path], object]:
        return lambda repo: build_model(
            TwoInputs(), example, name="m", repository=repo, target="pytorch_libtorch", **kwargs
        )

    expect_invalid(tmp_path, "input_names", build(input_names=["ids", "features"]))
    expect_invalid(tmp_path, "output_names", build(output_names=["b__1", "a__0"]))
    build(input_names=["features", "ids"], output_names=["score", "total"])(tmp_path / "ok")
    # the python target calls forward positionally: the same names are fine there
    build_model(TwoInputs(), example, name="m", repository=tmp_path / "py", input_names=["ids", "features"])


def test_libtorch_passes_every_forward_argument(tmp_path: Path) -> None:
    class WithDefault(torch.nn.Module):
        def forward(self, x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
            return x * scale

    module = torch.jit.script(WithDefault())
    error = expect_invalid(
        tmp_path,
        "example_inputs",
        lambda repo: build_model(
            module, [torch.ones(2, 3)], name="m", repository=repo, target="pytorch_libtorch"
        ),
    )
    assert "scale: float" in error.allowed
    build_model(module, [torch.ones(2, 3)], name="m", repository=tmp_path / "py")


# --- command-line tensor declarations and config files ------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["x:FP32", "x:FP64:3", "x:FP32:a", "x:FP32:0", "x:FP32:-2", "x:FP32:3,,4", "a/b:FP32:3", ":FP32:3"],
)
def test_parse_tensor_spec_rejects(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_tensor_spec(text, field="--input[0]")
    assert caught.value.field == "--input[0]" and text in str(caught.value)


def test_parse_tensor_spec() -> None:
    assert parse_tensor_spec("ids:int64:-1,3", field="f") == TensorSpec("ids", "INT64", (-1, 3))
    assert parse_tensor_spec("x:FP32:3,224,224", field="f").dims == (3, 224, 224)


GOOD = (
    'name: "m" backend: "python" max_batch_size: 4 '
    'input { name: "a" data_type: TYPE_FP32 dims: [2, -1] } output { name: "b" data_type: TYPE_FP32 dims: 2 }'
)


def test_a_valid_config_parses() -> None:
    config = parse_config(
        GOOD + ' model_warmup { name: "w" batch_size: 4 inputs { key: "a" value '
        "{ data_type: TYPE_FP32 dims: [2, 7] zero_data: true } } }",
        folder="m",
    )
    assert config.name == "m" and list(config.input[0].dims) == [2, -1]


@pytest.mark.parametrize(
    ("text", "folder", "field"),
    [
        (GOOD, "other", "name"),
        (GOOD.replace('name: "b"', 'name: "a"'), "m", "tensor names"),
        (GOOD.replace('name: "b"', 'name: "b/c"'), "m", "tensor name"),
        (GOOD.replace("TYPE_FP32 dims: 2", "TYPE_STRING dims: 2"), "m", "b.data_type"),
        (GOOD.replace("TYPE_FP32 dims: 2", "TYPE_BF16 dims: 2"), "m", "b.data_type"),
        (GOOD.replace("dims: 2 }", "dims: 0 }"), "m", "b.dims"),
        (GOOD.replace('backend: "python"', 'backend: "onnxruntime"'), "m", "backend/platform"),
        (GOOD + ' platform: "pytorch_libtorch"', "m", "backend/platform"),
        (GOOD.replace("max_batch_size: 4", "max_batch_size: -1"), "m", "max_batch_size"),
        (
            GOOD.replace("max_batch_size: 4", "max_batch_size: 0") + " dynamic_batching { }",
            "m",
            "dynamic_batching",
        ),
        (GOOD + " dynamic_batching { preferred_batch_size: 8 }", "m", "preferred_batch_size"),
        (GOOD + " instance_group { count: 0 }", "m", "instance_group.count"),
        (GOOD + " version_policy { latest { num_versions: 0 } }", "m", "version_policy.latest"),
        (GOOD + " version_policy { specific { } }", "m", "version_policy.specific"),
        (GOOD + ' model_warmup { name: "w" batch_size: 5 }', "m", "model_warmup.batch_size"),
        (GOOD + ' model_warmup { name: "w" batch_size: 1 }', "m", "model_warmup.inputs"),
        (
            GOOD + ' model_warmup { name: "w" batch_size: 1 inputs { key: "a" value '
            "{ data_type: TYPE_FP32 dims: [3, 7] zero_data: true } } }",
            "m",
            "model_warmup.inputs[a]",
        ),
        (
            GOOD + ' model_warmup { name: "w" batch_size: 1 inputs { key: "a" value '
            "{ data_type: TYPE_INT64 dims: [2, 7] zero_data: true } } }",
            "m",
            "model_warmup.inputs[a]",
        ),
        (GOOD + " bogus_field: 1", "m", "config.pbtxt"),
    ],
)
def test_config_checks_beyond_the_schema(text: str, folder: str, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_config(text, folder=folder)
    assert caught.value.field.startswith(f"{folder}/config.pbtxt") and field in caught.value.field, (
        caught.value
    )


# --- the python-backend model, driven with several requests per execute --------------------------------


class _FakeTensor:
    def __init__(self, name: str, array: np.ndarray[Any, Any]) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray[Any, Any]:
        return self.array


class _FakeResponse:
    def __init__(self, output_tensors: list[_FakeTensor] | None = None, error: Any = None) -> None:
        self.outputs = {t.name: t.array for t in output_tensors or []}
        self.error = error


def _fake_backend_utils() -> types.ModuleType:
    """The few names model.py uses from triton_python_backend_utils, with Triton's meaning."""
    utils = types.ModuleType("triton_python_backend_utils")
    numpy_types = {
        "TYPE_FP32": np.float32,
        "TYPE_FP16": np.float16,
        "TYPE_INT64": np.int64,
        "TYPE_INT32": np.int32,
        "TYPE_INT8": np.int8,
        "TYPE_UINT8": np.uint8,
        "TYPE_BOOL": np.bool_,
    }
    utils.triton_string_to_numpy = lambda name: numpy_types[name]  # type: ignore[attr-defined]
    # Triton hands model.py read-only views of the request's memory.
    utils.get_input_tensor_by_name = lambda request, name: _FakeTensor(  # type: ignore[attr-defined]
        name, np.frombuffer(request[name].tobytes(), request[name].dtype).reshape(request[name].shape)
    )
    utils.Tensor = _FakeTensor  # type: ignore[attr-defined]
    utils.InferenceResponse = _FakeResponse  # type: ignore[attr-defined]
    utils.TritonError = str  # type: ignore[attr-defined]
    return utils


def _load_python_model(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_backend_utils())
    spec = importlib.util.spec_from_file_location("generated_model", model_dir / "1" / "model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = parse_config((model_dir / "config.pbtxt").read_text(), folder=model_dir.name)
    # Triton passes the config as JSON in protobuf's field names (data_type: "TYPE_FP32").
    config_json = json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True))
    instance = module.TritonPythonModel()
    instance.initialize(
        {"model_config": config_json, "model_repository": str(model_dir), "model_version": "1"}
    )
    return instance


def test_python_model_answers_each_of_several_requests_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_ranker(tmp_path)
    model = _load_python_model(tmp_path / "ranker", monkeypatch)
    (reference_model,) = read_repository(tmp_path)
    rng = np.random.default_rng(3)
    # Different batch sizes and two different variable lengths, interleaved: one execute call.
    requests = [
        {
            "INPUT__0": rng.standard_normal((batch, 3)).astype(np.float32),
            "INPUT__1": rng.integers(0, 10, (batch, length)).astype(np.int64),
        }
        for batch, length in [(1, 4), (3, 6), (2, 4), (1, 6), (4, 4)]
    ]
    responses = model.execute(requests)
    assert len(responses) == len(requests)
    for request, response in zip(requests, responses, strict=True):
        assert response.error is None
        expected = run_reference(reference_model, request)
        assert set(response.outputs) == set(expected)
        for name, want in expected.items():
            got = response.outputs[name]
            assert got.dtype == want.dtype and got.shape == want.shape and got.flags.c_contiguous
            np.testing.assert_allclose(got, want, atol=1e-5)


def test_python_model_without_a_batch_axis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = ModelOptions(max_batch_size=0, dynamic_batching=None)
    build_model(
        Positions(),
        [torch.randn(5, 4)],
        name="p",
        repository=tmp_path,
        options=options,
        variable_axes={"INPUT__0": [0]},
    )
    model = _load_python_model(tmp_path / "p", monkeypatch)
    requests = [{"INPUT__0": np.full((length, 4), length, dtype=np.float32)} for length in (3, 6)]
    responses = model.execute(requests)
    for request, response in zip(requests, responses, strict=True):
        np.testing.assert_array_equal(response.outputs["OUTPUT__0"], request["INPUT__0"].sum(axis=-1))


def test_python_model_fails_only_the_bad_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module, example = demo_model()
    build_model(module, example, name="demo", repository=tmp_path)
    model = _load_python_model(tmp_path / "demo", monkeypatch)
    good = {"INPUT__0": np.ones((2, 16), dtype=np.float32)}
    bad = {"INPUT__0": np.ones((1, 5), dtype=np.float32)}  # wrong width: the forward pass raises
    responses = model.execute([good, bad, good])
    assert [r.error is None for r in responses] == [True, False, True]
    assert responses[0].outputs["OUTPUT__0"].shape == (2, 4)
    assert "5" in responses[1].error  # the model's own complaint reaches the client
