"""Model repository building: config generation, validation, bad input, and the python-backend model."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from inferstack.infra.errors import InvalidInput
from inferstack.serving.repository import (
    DTYPES,
    BuiltModel,
    DynamicBatching,
    ModelOptions,
    TensorSpec,
    VersionPolicy,
    build_from_signature,
    build_model,
    demo_model,
    generate_inputs,
    parse_config,
    parse_tensor_spec,
    read_repository,
    run_reference,
    to_python_target,
)


class TwoInputs(torch.nn.Module):
    """FP32 features and INT64 ids of variable length: two inputs of different dtypes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.embedding = torch.nn.Embedding(10, 4)
        self.linear = torch.nn.Linear(3, 4)

    def forward(self, features: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(features) + self.embedding(ids).mean(dim=1), ids.sum(dim=1, keepdim=True)


def build_ranker(repository: Path) -> BuiltModel:
    """TwoInputs as model "ranker", its ids axis variable."""
    example = [torch.randn(2, 3), torch.randint(0, 10, (2, 5))]
    return build_model(
        TwoInputs(), example, name="ranker", repository=repository, variable_axes={"INPUT__1": [0]}
    )


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


# --- what gets generated -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype_name", ["FP32", "FP16", "BF16", "INT64", "INT32", "INT8", "UINT8", "BOOL"])
def test_every_supported_dtype_becomes_its_triton_type(tmp_path: Path, dtype_name: str) -> None:
    dtype = DTYPES[dtype_name]
    example = torch.ones(2, 3).to(dtype)
    built = build_model(Cast(dtype), [example], name="cast", repository=tmp_path, target="pytorch_libtorch")
    config = parsed(built.config_text)
    assert mc.DataType.Name(config.input[0].data_type) == f"TYPE_{dtype_name}"
    assert mc.DataType.Name(config.output[0].data_type) == f"TYPE_{dtype_name}"
    assert config.platform == "pytorch_libtorch" and not config.backend


def test_two_inputs_variable_axis_and_libtorch_names(tmp_path: Path) -> None:
    built = build_ranker(tmp_path)
    config = parsed(built.config_text)
    assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        ("INPUT__0", "TYPE_FP32", [3]),
        ("INPUT__1", "TYPE_INT64", [-1]),
    ]
    assert [(t.name, list(t.dims)) for t in config.output] == [("OUTPUT__0", [4]), ("OUTPUT__1", [1])]
    assert config.backend == "python" and config.max_batch_size == 8
    assert files(tmp_path) == [
        "ranker",
        "ranker/1",
        "ranker/1/model.pt",
        "ranker/1/model.py",
        "ranker/config.pbtxt",
    ]


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
        version_policy=VersionPolicy("latest", latest=2),
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
    assert config.model_warmup[0].batch_size == 16
    assert config.model_warmup[0].inputs["features"].zero_data
    assert list(config.model_warmup[0].inputs["features"].dims) == [16]
    assert config.version_policy.latest.num_versions == 2
    assert not (tmp_path / "demo" / "1" / "model.py").exists()  # libtorch needs no python model


def test_no_batch_axis_and_specific_versions(tmp_path: Path) -> None:
    options = ModelOptions(
        max_batch_size=0, dynamic_batching=None, version_policy=VersionPolicy("specific", versions=(1, 3))
    )
    built = build_model(
        Cast(torch.float32), [torch.ones(5)], name="plain", repository=tmp_path, options=options
    )
    config = parsed(built.config_text)
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [5]
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


def test_read_repository_generate_inputs_and_reference(tmp_path: Path) -> None:
    build_ranker(tmp_path)
    (model,) = read_repository(tmp_path)
    inputs = generate_inputs(model, batch=3, variable_length=7)
    assert inputs["INPUT__0"].shape == (3, 3) and inputs["INPUT__0"].dtype == np.float32
    assert inputs["INPUT__1"].shape == (3, 7) and inputs["INPUT__1"].dtype == np.int64
    outputs = run_reference(model, inputs)
    np.testing.assert_array_equal(outputs["OUTPUT__1"][:, 0], inputs["INPUT__1"].sum(axis=1))


def test_to_python_target_rewrites_only_the_backend(tmp_path: Path) -> None:
    module, example = demo_model()
    build_model(module, example, name="demo", repository=tmp_path / "src", target="pytorch_libtorch")
    served = to_python_target(tmp_path / "src", tmp_path / "served")
    before, after = read_repository(tmp_path / "src")[0].config, read_repository(served)[0].config
    assert after.backend == "python" and not after.platform
    after.backend, after.platform = "", "pytorch_libtorch"
    assert before == after
    assert (served / "demo" / "1" / "model.py").is_file()


def test_build_from_signature_accepts_a_matching_declaration(tmp_path: Path) -> None:
    scripted = torch.jit.script(TwoInputs())
    path = tmp_path / "model.pt"
    scripted.save(str(path))
    built = build_from_signature(
        path,
        name="ranker",
        inputs=[parse_tensor_spec("f:FP32:3", field="i"), parse_tensor_spec("ids:INT64:-1", field="i")],
        outputs=[parse_tensor_spec("score:FP32:4", field="o"), parse_tensor_spec("total:INT64:1", field="o")],
        repository=tmp_path / "repo",
    )
    assert [t.name for t in parsed(built.config_text).input] == ["f", "ids"]


# --- bad input: a clear error naming the field, and nothing written --------------------------------


def expect_invalid(tmp_path: Path, field_part: str, call: Any) -> InvalidInput:
    repo = tmp_path / "repo"
    with pytest.raises(InvalidInput) as caught:
        call(repo)
    assert field_part in caught.value.field, caught.value
    assert str(caught.value.value) in str(caught.value) and caught.value.allowed in str(caught.value)
    assert files(repo) == [], "nothing may be written for bad input"
    return caught.value


def test_unsupported_dtype(tmp_path: Path) -> None:
    error = expect_invalid(
        tmp_path,
        "dtype",
        lambda repo: build_model(Cast(torch.complex64), [torch.ones(2, 3)], name="m", repository=repo),
    )
    assert "complex64" in str(error.value)


def test_bf16_is_refused_for_the_python_target(tmp_path: Path) -> None:
    expect_invalid(
        tmp_path,
        "dtype",
        lambda repo: build_model(Cast(torch.bfloat16), [torch.ones(2, 3)], name="m", repository=repo),
    )


def test_model_that_fails_to_export(tmp_path: Path) -> None:
    class Unscriptable(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * float(np.ones(1)[0])  # runs in Python; numpy calls are not TorchScript

    expect_invalid(
        tmp_path,
        "model",
        lambda repo: build_model(
            Unscriptable(), [torch.ones(1, 1)], name="m", repository=repo, export="script"
        ),
    )


def test_example_inputs_that_do_not_match_forward(tmp_path: Path) -> None:
    expect_invalid(
        tmp_path,
        "example_inputs",
        lambda repo: build_model(TwoInputs(), [torch.randn(2, 3)], name="m", repository=repo),
    )
    expect_invalid(
        tmp_path,
        "example_inputs",
        lambda repo: build_model(
            TwoInputs(), [torch.randn(2, 7), torch.randint(0, 10, (2, 5))], name="m", repository=repo
        ),
    )


@pytest.mark.parametrize("size", [-1, 1.5])
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
        "example_inputs[0].shape",
        lambda repo: build_model(
            module, [torch.randn(9, 16)], name="m", repository=repo, options=ModelOptions(max_batch_size=8)
        ),
    )


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "sp ace", "x" * 129])
def test_names_triton_rejects(tmp_path: Path, name: str) -> None:
    module, example = demo_model()
    expect_invalid(tmp_path, "name", lambda repo: build_model(module, example, name=name, repository=repo))


def test_bad_tensor_names_and_preferred_sizes(tmp_path: Path) -> None:
    module, example = demo_model()
    expect_invalid(
        tmp_path,
        "input_names",
        lambda repo: build_model(module, example, name="m", repository=repo, input_names=["a/b"]),
    )
    options = ModelOptions(max_batch_size=4, dynamic_batching=DynamicBatching(preferred_batch_sizes=(8,)))
    expect_invalid(
        tmp_path,
        "preferred_batch_sizes",
        lambda repo: build_model(module, example, name="m", repository=repo, options=options),
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
    path = tmp_path / "model.pt"
    torch.jit.script(TwoInputs()).save(str(path))

    def build(outputs: list[str]) -> Any:
        return lambda repo: build_from_signature(
            path,
            name="m",
            inputs=[parse_tensor_spec("f:FP32:3", field="i"), parse_tensor_spec("ids:INT64:-1", field="i")],
            outputs=[parse_tensor_spec(o, field="o") for o in outputs],
            repository=repo,
        )

    error = expect_invalid(tmp_path, "output score", build(["score:FP32:5", "total:INT64:1"]))
    assert "FP32:4" in error.allowed
    expect_invalid(tmp_path, "outputs", build(["score:FP32:4"]))
    expect_invalid(
        tmp_path,
        "inputs",
        lambda repo: build_from_signature(
            path,
            name="m",
            inputs=[parse_tensor_spec("f:FP32:3", field="i")],
            outputs=[parse_tensor_spec("s:FP32:4", field="o")],
            repository=repo,
        ),
    )


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("x:FP32", "--input[0]"),
        ("x:FP64:3", "--input[0]"),
        ("x:FP32:a", "--input[0]"),
        ("x:FP32:0", "--input[0]"),
    ],
)
def test_parse_tensor_spec_rejects(text: str, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_tensor_spec(text, field=field)
    assert caught.value.field == field and text in str(caught.value)


def test_parse_tensor_spec() -> None:
    assert parse_tensor_spec("ids:int64:-1,3", field="f") == TensorSpec("ids", "INT64", (-1, 3))


def test_config_checks_beyond_the_schema() -> None:
    good = 'name: "m" backend: "python" max_batch_size: 4 input { name: "a" data_type: TYPE_FP32 dims: 2 } '
    good += 'output { name: "b" data_type: TYPE_FP32 dims: 2 }'
    assert parse_config(good, folder="m").name == "m"
    cases = {
        "name": (good, "other"),
        "tensor names": (good.replace('name: "b"', 'name: "a"'), "m"),
        "data_type": (
            good.replace("data_type: TYPE_FP32 dims: 2 }", "data_type: TYPE_STRING dims: 2 }", 1),
            "m",
        ),
        "dims": (good.replace("dims: 2 }", "dims: 0 }", 1), "m"),
        "backend/platform": (good.replace('backend: "python"', 'backend: "onnxruntime"'), "m"),
        "config.pbtxt": (good + " bogus_field: 1", "m"),
    }
    for field, (text, folder) in cases.items():
        with pytest.raises(InvalidInput) as caught:
            parse_config(text, folder=folder)
        assert field in caught.value.field, (field, caught.value)


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
        "TYPE_INT64": np.int64,
        "TYPE_FP16": np.float16,
        "TYPE_BOOL": np.bool_,
    }
    utils.triton_string_to_numpy = lambda name: numpy_types[name]  # type: ignore[attr-defined]
    utils.get_input_tensor_by_name = lambda request, name: _FakeTensor(name, request[name])  # type: ignore[attr-defined]
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
    config = read_repository(model_dir.parent)[0].config
    from google.protobuf import json_format

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
        for name, want in expected.items():
            assert response.outputs[name].dtype == want.dtype
            np.testing.assert_allclose(response.outputs[name], want, atol=1e-5)


def test_python_model_fails_only_the_bad_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module, example = demo_model()
    build_model(module, example, name="demo", repository=tmp_path)
    model = _load_python_model(tmp_path / "demo", monkeypatch)
    good = {"INPUT__0": np.ones((2, 16), dtype=np.float32)}
    bad = {"INPUT__0": np.ones((1, 5), dtype=np.float32)}  # wrong width: the forward pass raises
    responses = model.execute([good, bad, good])
    assert [r.error is None for r in responses] == [True, False, True]
    assert responses[0].outputs["OUTPUT__0"].shape == (2, 4)
