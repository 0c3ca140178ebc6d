"""What `models build` writes when the builder names no instance count: the machine's tuned setting.

The setting's speed is the bench's to show (docs/benchmark.md); these tests pin that it is what the
build writes, and how it follows the machine's cores.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest
import torch
from google.protobuf import json_format

from inferstack.cli.main import main
from inferstack.serving.bench.contenders import BENCH_MODEL, build_bench_repository
from inferstack.serving.models.config import parse_config
from inferstack.serving.models.tuning import MAX_CPU_INSTANCES, default_instance_count
from tests.serving.conftest import Ranker

BUILD = [
    *("--name", "ranker", "--input", "features:FP32:6", "--input", "ids:INT64:-1"),
    *("--output", "score:FP32:1"),
]


def torch_threads_at_load(config_text: str, folder: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """The threads the generated model.py gives torch in each instance, from the config Triton hands it."""
    monkeypatch.setitem(
        sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils")
    )
    model_py = importlib.import_module("inferstack.serving.models.triton_python_model")
    as_triton_passes_it = json_format.MessageToDict(
        parse_config(config_text, folder=folder), preserving_proto_field_name=True
    )
    threads: int = model_py.torch_threads(as_triton_passes_it)
    return threads


def test_cpu_python_models_get_one_instance_per_core_up_to_the_cap() -> None:
    assert [default_instance_count("KIND_CPU", "python", cores) for cores in (1, 2, 3, 4, 8, 64)] == [
        1,
        2,
        3,
        4,
        MAX_CPU_INSTANCES,
        MAX_CPU_INSTANCES,
    ]
    # GPU instances share one device; libtorch's intra-op threads already take every core.
    assert default_instance_count("KIND_GPU", "python", 8) == 1
    assert default_instance_count("KIND_CPU", "pytorch_libtorch", 8) == 1


@pytest.mark.parametrize(("cores", "instances", "threads"), [(2, 2, 1), (1, 1, 1), (16, 4, 2)])
def test_models_build_writes_the_machines_setting(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cores: int,
    instances: int,
    threads: int,
) -> None:
    """On 2 cores (the bench's machine): two instances of one torch thread each, not one of one."""
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    torch.jit.script(Ranker()).save(str(tmp_path / "ranker.pt"))
    repo = tmp_path / "repo"
    assert (
        main(["models", "build", "--torchscript", str(tmp_path / "ranker.pt"), *BUILD, "--out", str(repo)])
        == 0
    )
    text = (repo / "ranker" / "config.pbtxt").read_text()
    config = parse_config(text, folder="ranker")
    assert [g.count for g in config.instance_group] == [instances]
    assert "torch_threads" not in config.parameters  # resolved at load, on the serving machine
    assert torch_threads_at_load(text, "ranker", monkeypatch) == threads
    assert f"instances: {instances} (KIND_CPU, chosen for this machine" in capsys.readouterr().out


def test_an_instance_count_given_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    torch.jit.script(Ranker()).save(str(tmp_path / "ranker.pt"))
    repo = tmp_path / "repo"
    arguments = ["models", "build", "--torchscript", str(tmp_path / "ranker.pt"), *BUILD, "--out", str(repo)]
    assert main([*arguments, "--instances", "1"]) == 0
    assert (
        parse_config((repo / "ranker" / "config.pbtxt").read_text(), folder="ranker").instance_group[0].count
        == 1
    )
    assert main([*arguments, "--instance-kind", "KIND_GPU"]) == 0
    assert (
        parse_config((repo / "ranker" / "config.pbtxt").read_text(), folder="ranker").instance_group[0].count
        == 1
    )


def test_the_bench_serves_what_models_build_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's `triton` contender is the default build: its share of the ceiling is the default's."""
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    repo = build_bench_repository(tmp_path / "repo")
    text = (repo / BENCH_MODEL / "config.pbtxt").read_text()
    config = parse_config(text, folder=BENCH_MODEL)
    assert config.instance_group[0].count == 2 and config.max_batch_size == 8
    assert torch_threads_at_load(text, BENCH_MODEL, monkeypatch) == 1
