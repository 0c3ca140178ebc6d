"""A model repository read back from disk: its models, the files each needs, the python-backend copy of a
libtorch repository, and reference answers computed by PyTorch."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tritonclient.grpc import model_config_pb2 as mc

from inferstack.infra.errors import InvalidInput
from inferstack.infra.model_manifest import REPOSITORY_FOLDER, VersionPolicy
from inferstack.serving.models.config import dtype_name, parse_config, render_config
from inferstack.serving.models.export import load_torchscript, run_model
from inferstack.serving.models.specs import (
    DTYPES,
    INT_HIGH,
    MODEL_FILE,
    NUMPY_DTYPES,
    PYTHON_MODEL_FILE,
    PYTHON_MODEL_SOURCE,
    PYTHON_TORCH_THREADS,
    Array,
    RepositoryModel,
    TensorSpec,
)


def specs_of(tensors: Any) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(t.name, dtype_name(t.data_type), tuple(t.dims)) for t in tensors)


def versions_served_by(policy: Any, versions: Sequence[int]) -> list[int]:
    """The versions Triton loads under ``policy`` (a ModelVersionPolicy) from the folders present."""
    kind = policy.WhichOneof("policy_choice") or "latest"
    count = policy.latest.num_versions if policy.HasField("latest") else 1
    return VersionPolicy(kind, count, tuple(policy.specific.versions)).served(versions)


def needed_files(config: Any) -> list[str]:
    """The files each version folder of a model with ``config`` must hold for its backend to load it."""
    return [MODEL_FILE, PYTHON_MODEL_FILE] if config.backend == "python" else [MODEL_FILE]


def read_repository(path: Path) -> list[RepositoryModel]:
    """Every model of a local repository folder, each config parsed and validated, each version its
    policy serves holding the files its backend loads; ``version`` is the one Triton answers by default
    (the highest served)."""
    if not path.is_dir():
        raise InvalidInput("repository", str(path), REPOSITORY_FOLDER)
    models = []
    for config_path in sorted(path.glob("*/config.pbtxt")):
        folder = config_path.parent
        config = parse_config(config_path.read_text(), folder=folder.name)
        versions = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
        needed = needed_files(config)
        served = versions_served_by(config.version_policy, versions)
        if not served or not all((folder / str(v) / file).is_file() for v in served for file in needed):
            raise InvalidInput(
                folder.name,
                [p.name for p in sorted(folder.iterdir())],
                f"numbered version folders holding {' and '.join(needed)} for every version "
                f"its version policy serves ({served or 'the newest'})",
            )
        newest = folder / str(served[-1])
        models.append(
            RepositoryModel(
                name=config.name,
                version=served[-1],
                config=config,
                torchscript=newest / MODEL_FILE,
                inputs=specs_of(config.input),
                outputs=specs_of(config.output),
                max_batch_size=config.max_batch_size,
                served_versions=tuple(served),
            )
        )
    if not models:
        raise InvalidInput("repository", str(path), "a folder holding at least one <model>/config.pbtxt")
    return models


def to_python_target(source: Path, destination: Path) -> Path:
    """A copy of ``source`` where every libtorch model is served by the python backend instead.

    Same TorchScript, same tensors and batching: only ``platform`` becomes ``backend: "python"`` and
    ``model.py`` joins each version folder. This is how a CPU-only Triton serves the cluster's repository.
    """
    models = read_repository(source)
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    for model in models:
        if model.config.backend == "python":
            continue
        config = mc.ModelConfig()
        config.CopyFrom(model.config)
        config.ClearField("platform")
        config.backend = "python"
        if "INTRA_OP_THREAD_COUNT" in config.parameters:  # same threads, under the python model's name
            threads = config.parameters["INTRA_OP_THREAD_COUNT"].string_value
            del config.parameters["INTRA_OP_THREAD_COUNT"]
            config.parameters[PYTHON_TORCH_THREADS].string_value = threads
        folder = destination / model.name
        (folder / "config.pbtxt").write_text(render_config(config))
        for version in (p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()):
            shutil.copyfile(PYTHON_MODEL_SOURCE, version / PYTHON_MODEL_FILE)
    return destination


def sample_inputs(
    specs: Sequence[TensorSpec], *, batch: int | None, variable_length: int, seed: int
) -> dict[str, Array]:
    """Arrays of the declared shapes in the client's numpy types: normal floats, small ids, coin flips."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, Array] = {}
    for spec in specs:
        shape = ([] if batch is None else [batch]) + [variable_length if d == -1 else d for d in spec.dims]
        numpy_type = NUMPY_DTYPES[spec.dtype]
        if spec.dtype == "BOOL":
            arrays[spec.name] = rng.random(shape) < 0.5
        elif np.issubdtype(numpy_type, np.floating):
            arrays[spec.name] = rng.standard_normal(shape).astype(numpy_type)
        else:
            arrays[spec.name] = rng.integers(0, INT_HIGH, size=shape).astype(numpy_type)
    return arrays


def to_torch(array: Array, spec: TensorSpec) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=NUMPY_DTYPES[spec.dtype])).to(DTYPES[spec.dtype])


def _to_numpy(tensor: torch.Tensor) -> Array:
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


def generate_inputs(
    model: RepositoryModel, *, batch: int = 2, variable_length: int = 5, seed: int = 0
) -> dict[str, Array]:
    """Inputs of the model's declared shapes: variable axes at ``variable_length``, small integers for ids."""
    return sample_inputs(
        model.inputs,
        batch=batch if model.max_batch_size > 0 else None,
        variable_length=variable_length,
        seed=seed,
    )


def run_reference(model: RepositoryModel, inputs: Mapping[str, Array]) -> dict[str, Array]:
    """The model's own TorchScript on ``inputs``, in-process: what Triton's answer is compared with."""
    module = load_torchscript(model.torchscript).eval()
    tensors = [to_torch(inputs[spec.name], spec) for spec in model.inputs]
    results = run_model(module, tensors, field=f"{model.name} inputs")
    return {spec.name: _to_numpy(t) for spec, t in zip(model.outputs, results, strict=True)}


def demo_model() -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """A small seeded network built in code (nothing downloaded), with a batch of example inputs."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4), torch.nn.Softmax(dim=-1)
    )
    return network.eval(), [torch.randn(2, 16)]
