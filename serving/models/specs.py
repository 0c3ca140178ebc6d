"""What a model in a Triton repository is: names, tensor specs, batching, version policies, build options and
what a build or a read of the repository returns."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from inferstack.infra.errors import InvalidInput
from inferstack.serving.models.precision import (
    PrecisionReport,
)

Array = npt.NDArray[Any]

Target = Literal["python", "pytorch_libtorch"]
TARGETS: tuple[Target, ...] = ("python", "pytorch_libtorch")
InstanceKind = Literal["KIND_GPU", "KIND_CPU"]

DTYPES: Mapping[str, torch.dtype] = {
    "FP32": torch.float32,
    "FP16": torch.float16,
    "BF16": torch.bfloat16,
    "INT64": torch.int64,
    "INT32": torch.int32,
    "INT8": torch.int8,
    "UINT8": torch.uint8,
    "BOOL": torch.bool,
}
TRITON_NAME = {dtype: name for name, dtype in DTYPES.items()}
# The numpy type a client sends and receives. numpy has no bfloat16: tritonclient carries BF16 as
# float32 arrays, and so do generate_inputs and run_reference.
NUMPY_DTYPES: Mapping[str, type[np.generic]] = {
    "FP32": np.float32,
    "FP16": np.float16,
    "BF16": np.float32,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}
# The python backend hands model.py numpy arrays of the exact type, which BF16 has none of.
PYTHON_TARGET_DTYPES = tuple(name for name in DTYPES if name != "BF16")

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# Triton itself only needs max_batch_size to fit its int32 field and be >= 0. The cap is ours: no
# serving batch comes near it, and a typo (an extra zero or three) would otherwise configure a
# dynamic batcher and warmup for batches no request may bring (see limits.py for the byte limit).
MAX_BATCH_SIZE = 4096
MODEL_FILE = "model.pt"
PYTHON_MODEL_FILE = "model.py"
PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_python_model.py")
PYTHON_TORCH_THREADS = "torch_threads"  # read by triton_python_model.py (which cannot import this module)
# Generated integers stay below this: id inputs usually index an embedding table.
INT_HIGH = 10
CALIBRATION_BATCHES = 16  # generated batches a reduced-precision build is compared on


def check_name(name: object, *, field: str) -> str:
    """Model and tensor names: a folder name Triton accepts, never a path."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            field, name, "1-128 characters from A-Z a-z 0-9 _ . -, not starting with '.' or '-' (no paths)"
        )
    return name


def check_integer(value: object, field: str, *, minimum: int, note: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(field, value, f"an integer >= {minimum}{note}")
    return value


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: Triton datatype name (``FP32``), dims without the batch axis (-1: variable)."""

    name: str
    dtype: str
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        check_name(self.name, field="tensor name")
        if self.dtype not in DTYPES:
            raise InvalidInput(f"{self.name}.dtype", self.dtype, f"one of {', '.join(DTYPES)}")
        if not self.dims or any(
            isinstance(d, bool) or not isinstance(d, int) or d == 0 or d < -1 for d in self.dims
        ):
            raise InvalidInput(f"{self.name}.dims", list(self.dims), "one or more sizes, each positive or -1")


def parse_tensor_spec(text: str, *, field: str) -> TensorSpec:
    """``NAME:DTYPE:DIMS`` as given on the command line, e.g. ``ids:INT64:-1`` or ``x:FP32:3,224,224``."""
    parts = text.split(":")
    if len(parts) != 3:
        raise InvalidInput(field, text, "NAME:DTYPE:DIMS, e.g. features:FP32:16 or ids:INT64:-1")
    name, dtype, dims_text = parts
    try:
        dims = tuple(int(d) for d in dims_text.split(","))
    except ValueError:
        raise InvalidInput(field, text, "DIMS as comma-separated integers (-1 for a variable axis)") from None
    try:
        return TensorSpec(name, dtype.upper(), dims)
    except InvalidInput as error:
        raise InvalidInput(field, text, f"{error.field}: {error.allowed}") from None


@dataclass(frozen=True)
class DynamicBatching:
    """Triton's dynamic batcher; the queue policy rejects what waits too long or does not fit."""

    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 100
    max_queue_size: int | None = None
    queue_timeout_us: int | None = None


@dataclass(frozen=True)
class LatestVersions:
    """Serve the ``count`` highest-numbered versions (Triton's default, with count 1)."""

    count: int = 1


@dataclass(frozen=True)
class AllVersions:
    """Serve every version folder."""


@dataclass(frozen=True)
class SpecificVersions:
    """Serve exactly these versions."""

    versions: tuple[int, ...]


VersionPolicy = LatestVersions | AllVersions | SpecificVersions


def parse_version_policy(text: str, *, field: str) -> VersionPolicy:
    """``latest:N``, ``specific:V,V`` or ``all``, as given on the command line."""
    kind, _, values = text.partition(":")
    try:
        if kind == "latest":
            return LatestVersions(int(values))
        if kind == "specific":
            return SpecificVersions(tuple(int(v) for v in values.split(",")))
    except ValueError:
        pass
    if text == "all":
        return AllVersions()
    raise InvalidInput(field, text, "latest:N, specific:V[,V...] or all (e.g. specific:1,2 for a canary)")


@dataclass(frozen=True)
class ModelOptions:
    """How a model is built: batching, instances, warm-up, the versions served and torch threads."""

    max_batch_size: int = 8  # 0: the model has no batch axis
    dynamic_batching: DynamicBatching | None = DynamicBatching()
    instance_kind: InstanceKind = "KIND_CPU"
    instance_count: int | None = None  # None: default_instance_count (tuning.py), for this machine
    warmup: bool = False  # zero-filled requests at max_batch_size (variable axes at length 1) before ready
    version_policy: VersionPolicy = LatestVersions()
    torch_threads: int | None = None  # per instance; None: the python model takes half the cores


@dataclass(frozen=True)
class BuiltModel:
    """A model written into a repository: name, version, folder, target and its config.pbtxt."""

    name: str
    version: int
    path: Path
    target: Target
    config_text: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    report: PrecisionReport | None = None  # a reduced-precision build's comparison with FP32


@dataclass(frozen=True)
class RepositoryModel:
    """A model found in a repository folder, with its parsed and validated config."""

    name: str
    version: int
    config: Any  # model_config_pb2.ModelConfig
    torchscript: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    served_versions: tuple[int, ...] = ()  # what its version policy has Triton load; ``version`` is the last
