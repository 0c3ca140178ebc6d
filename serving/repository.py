"""A Triton model repository built from a PyTorch model.

torch module (or TorchScript file) + example inputs -> TorchScript ``model.pt`` -> ``config.pbtxt``
generated from the model's real inputs and outputs, parsed back into Triton's own ``ModelConfig``
protobuf and checked for what the schema cannot say -> files on disk. Everything is validated
before anything is written, so bad input leaves the repository untouched.

Two targets: ``pytorch_libtorch`` (what the cluster's GPU Triton image serves) and ``python`` (the
same TorchScript run by Triton's python backend through ``model.py``: what the CPU Triton of the
local runtime serves).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from inferstack.infra.errors import InvalidInput
from inferstack.serving.precision import (
    FULL_PRECISION,
    REPORT_FILE,
    Export,
    PrecisionOptions,
    PrecisionReport,
    check_precision,
    reduce_checked,
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
_TRITON_NAME = {dtype: name for name, dtype in DTYPES.items()}
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
_MODEL_FILE = "model.pt"
_PYTHON_MODEL_FILE = "model.py"
_PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")
PYTHON_TORCH_THREADS = "torch_threads"  # read by triton_python_model.py (which cannot import this module)
# Generated integers stay below this: id inputs usually index an embedding table.
_INT_HIGH = 10
_CALIBRATION_BATCHES = 16  # generated batches a reduced-precision build is compared on


def check_name(name: object, *, field: str) -> str:
    """Model and tensor names: a folder name Triton accepts, never a path."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            field, name, "1-128 characters from A-Z a-z 0-9 _ . -, not starting with '.' or '-' (no paths)"
        )
    return name


def _integer(value: object, field: str, *, minimum: int, note: str = "") -> int:
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
    max_batch_size: int = 8  # 0: the model has no batch axis
    dynamic_batching: DynamicBatching | None = DynamicBatching()
    instance_kind: InstanceKind = "KIND_CPU"
    instance_count: int = 1
    warmup: bool = False  # zero-filled requests at max_batch_size (variable axes at length 1) before ready
    version_policy: VersionPolicy = LatestVersions()
    torch_threads: int | None = None  # per instance; None: the python model takes half the cores


@dataclass(frozen=True)
class BuiltModel:
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


# --- config.pbtxt ------------------------------------------------------------------------------


def check_options(options: ModelOptions, target: Target) -> None:
    """Options as the caller gave them, checked with the caller's field names."""
    if target not in TARGETS:
        raise InvalidInput("target", target, f"one of {', '.join(TARGETS)}")
    max_batch = _integer(options.max_batch_size, "max_batch_size", minimum=0, note=" (0: no batch axis)")
    if max_batch > MAX_BATCH_SIZE:
        raise InvalidInput("max_batch_size", max_batch, f"0 to {MAX_BATCH_SIZE} (0: no batch axis)")
    if options.instance_kind not in ("KIND_GPU", "KIND_CPU"):
        raise InvalidInput("instance_kind", options.instance_kind, "KIND_GPU or KIND_CPU")
    _integer(options.instance_count, "instance_count", minimum=1)
    if options.torch_threads is not None:
        _integer(options.torch_threads, "torch_threads", minimum=1, note=" or None")
    batching = options.dynamic_batching
    if batching is not None:
        if max_batch == 0:
            raise InvalidInput("dynamic_batching", batching, "None when max_batch_size is 0")
        sizes = batching.preferred_batch_sizes
        if any(isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= max_batch for s in sizes):
            raise InvalidInput(
                "dynamic_batching.preferred_batch_sizes",
                list(sizes),
                f"integers from 1 to max_batch_size ({max_batch})",
            )
        _integer(batching.max_queue_delay_us, "dynamic_batching.max_queue_delay_us", minimum=0)
        if batching.max_queue_size is not None:
            _integer(batching.max_queue_size, "dynamic_batching.max_queue_size", minimum=1, note=" or None")
        if batching.queue_timeout_us is not None:
            _integer(
                batching.queue_timeout_us, "dynamic_batching.queue_timeout_us", minimum=1, note=" or None"
            )
    match options.version_policy:
        case LatestVersions(count=count):
            _integer(count, "version_policy.count", minimum=1)
        case SpecificVersions(versions=versions):
            if not versions:
                raise InvalidInput("version_policy.versions", list(versions), "one or more versions")
            for version in versions:
                _integer(version, "version_policy.versions", minimum=1)
        case AllVersions():
            pass
        case other:
            raise InvalidInput(
                "version_policy", other, "LatestVersions(count), AllVersions() or SpecificVersions(versions)"
            )


def model_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    target: Target,
    options: ModelOptions,
) -> Any:
    """The ``ModelConfig`` message for a model (validated)."""
    check_name(name, field="name")
    check_options(options, target)
    config = mc.ModelConfig(name=name, max_batch_size=options.max_batch_size)
    if target == "python":
        config.backend = "python"
    else:
        config.platform = "pytorch_libtorch"
    for spec in inputs:
        config.input.add(name=spec.name, data_type=_type_enum(spec.dtype), dims=list(spec.dims))
    for spec in outputs:
        config.output.add(name=spec.name, data_type=_type_enum(spec.dtype), dims=list(spec.dims))
    config.instance_group.add(
        kind=mc.ModelInstanceGroup.Kind.Value(options.instance_kind), count=options.instance_count
    )
    batching = options.dynamic_batching
    if batching is not None:
        config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
        config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
        if batching.max_queue_size is not None or batching.queue_timeout_us is not None:
            queue = config.dynamic_batching.default_queue_policy
            queue.timeout_action = mc.ModelQueuePolicy.TimeoutAction.REJECT
            queue.max_queue_size = batching.max_queue_size or 0  # 0: unbounded
            queue.default_timeout_microseconds = batching.queue_timeout_us or 0  # 0: no timeout
    match options.version_policy:
        case LatestVersions(count=count):
            config.version_policy.latest.num_versions = count
        case AllVersions():
            config.version_policy.all.SetInParent()
        case SpecificVersions(versions=versions):
            config.version_policy.specific.versions.extend(versions)
    if options.torch_threads is not None:
        config.parameters[threads_parameter(config)].string_value = str(options.torch_threads)
    if options.warmup:
        warmup = config.model_warmup.add(
            name=f"{name}-warmup", batch_size=max(options.max_batch_size, 1), count=1
        )
        for spec in inputs:
            # Variable axes get length 1: warmup must work for every model, whatever its real lengths;
            # zeros are valid for every input, ids into an embedding included.
            warmup.inputs[spec.name].CopyFrom(
                mc.ModelWarmup.Input(
                    data_type=_type_enum(spec.dtype), dims=[max(d, 1) for d in spec.dims], zero_data=True
                )
            )
    validate_config(config, folder=name)
    return config


def threads_parameter(config: Any) -> str:
    """The config parameter that sets torch's intra-op threads: the python model's own, or libtorch's."""
    return PYTHON_TORCH_THREADS if config.backend == "python" else "INTRA_OP_THREAD_COUNT"


def render_config(config: Any) -> str:
    """config.pbtxt text, checked by parsing it back into a fresh ``ModelConfig``."""
    text: str = text_format.MessageToString(config)
    parsed = parse_config(text, folder=config.name)
    if parsed != config:
        raise AssertionError("config.pbtxt does not parse back to the same ModelConfig")
    return text


def parse_config(text: str, *, folder: str) -> Any:
    """Parse config.pbtxt text with Triton's schema and check what the schema cannot say."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise InvalidInput(
            f"{folder}/config.pbtxt", str(error), "text matching Triton's ModelConfig"
        ) from None
    validate_config(config, folder=folder)
    return config


def validate_config(config: Any, *, folder: str) -> None:
    """The checks Triton would make at load time, made before anything is written or uploaded."""
    where = f"{folder}/config.pbtxt"
    if config.name != folder:
        raise InvalidInput(f"{where}: name", config.name, f"the model's folder name {folder!r}")
    check_name(config.name, field=f"{where}: name")
    python = config.backend == "python"
    if python == (config.platform == "pytorch_libtorch"):
        raise InvalidInput(
            f"{where}: backend/platform",
            (config.backend, config.platform),
            'backend "python" or platform "pytorch_libtorch", not both',
        )
    if not 0 <= config.max_batch_size <= MAX_BATCH_SIZE:
        raise InvalidInput(f"{where}: max_batch_size", config.max_batch_size, f"0 to {MAX_BATCH_SIZE}")
    if not config.input or not config.output:
        raise InvalidInput(
            f"{where}: input/output", (len(config.input), len(config.output)), "at least one of each"
        )
    names = [t.name for t in [*config.input, *config.output]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInput(f"{where}: tensor names", duplicates, "names unique across inputs and outputs")
    allowed = PYTHON_TARGET_DTYPES if python else tuple(DTYPES)
    for tensor in [*config.input, *config.output]:
        check_name(tensor.name, field=f"{where}: tensor name")
        if tensor.data_type not in {_type_enum(name) for name in allowed}:
            raise InvalidInput(
                f"{where}: {tensor.name}.data_type",
                mc.DataType.Name(tensor.data_type),
                f"for {'backend python' if python else 'pytorch_libtorch'} one of "
                + ", ".join("TYPE_" + n for n in allowed),
            )
        if not tensor.dims or any(d == 0 or d < -1 for d in tensor.dims):
            raise InvalidInput(
                f"{where}: {tensor.name}.dims", list(tensor.dims), "one or more sizes, positive or -1"
            )
    _validate_batching(config, where)
    _validate_warmup(config, where)
    _validate_version_policy(config, where)
    for group in config.instance_group:
        if group.count < 1:
            raise InvalidInput(f"{where}: instance_group.count", group.count, "an integer >= 1")


def _validate_batching(config: Any, where: str) -> None:
    if not config.HasField("dynamic_batching"):
        return
    if config.max_batch_size == 0:
        raise InvalidInput(f"{where}: dynamic_batching", "set", "absent when max_batch_size is 0")
    sizes = list(config.dynamic_batching.preferred_batch_size)
    if any(not 1 <= s <= config.max_batch_size for s in sizes):
        raise InvalidInput(
            f"{where}: dynamic_batching.preferred_batch_size", sizes, f"1..{config.max_batch_size}"
        )
    queue = config.dynamic_batching.default_queue_policy
    if queue.max_queue_size < 0:
        raise InvalidInput(f"{where}: default_queue_policy.max_queue_size", queue.max_queue_size, ">= 0")


def _validate_warmup(config: Any, where: str) -> None:
    """Warmup requests must be ones the model accepts: every input, its type, concrete declared dims."""
    declared = {t.name: t for t in config.input}
    for warmup in config.model_warmup:
        if not 1 <= warmup.batch_size <= max(config.max_batch_size, 1):
            raise InvalidInput(
                f"{where}: model_warmup.batch_size", warmup.batch_size, f"1..{max(config.max_batch_size, 1)}"
            )
        if set(warmup.inputs) != set(declared):
            raise InvalidInput(
                f"{where}: model_warmup.inputs", sorted(warmup.inputs), f"exactly {sorted(declared)}"
            )
        for name, given in warmup.inputs.items():
            tensor = declared[name]
            dims = list(given.dims)
            fits = len(dims) == len(tensor.dims) and all(
                d >= 1 and want in (-1, d) for d, want in zip(dims, tensor.dims, strict=True)
            )
            if given.data_type != tensor.data_type or not fits:
                raise InvalidInput(
                    f"{where}: model_warmup.inputs[{name}]",
                    f"{mc.DataType.Name(given.data_type)} {dims}",
                    f"{mc.DataType.Name(tensor.data_type)} {list(tensor.dims)} with every -1 made concrete",
                )


def _validate_version_policy(config: Any, where: str) -> None:
    policy = config.version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "latest" and policy.latest.num_versions < 1:
        raise InvalidInput(f"{where}: version_policy.latest.num_versions", policy.latest.num_versions, ">= 1")
    if kind == "specific" and (not policy.specific.versions or min(policy.specific.versions) < 1):
        raise InvalidInput(
            f"{where}: version_policy.specific.versions", list(policy.specific.versions), "versions >= 1"
        )


def _type_enum(dtype: str) -> int:
    value: int = mc.DataType.Value(f"TYPE_{dtype}")
    return value


def _dtype_name(enum_value: int) -> str:
    return str(mc.DataType.Name(enum_value)).removeprefix("TYPE_")


# --- export and checking the model against its config -------------------------------------------


def _outputs_of(result: Any, *, field: str) -> tuple[torch.Tensor, ...]:
    items = result if isinstance(result, tuple | list) else (result,)
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise InvalidInput(field, type(result).__name__, "a tensor or a tuple/list of tensors")
    return tuple(items)


def _described(tensors: Sequence[torch.Tensor]) -> list[str]:
    return [f"{_TRITON_NAME.get(t.dtype, t.dtype)}{list(t.shape)}" for t in tensors]


def _run(
    module: torch.nn.Module,
    inputs: Sequence[torch.Tensor],
    *,
    field: str,
    promise: str = "inputs the model's forward accepts",
) -> tuple[torch.Tensor, ...]:
    try:
        with torch.no_grad():
            result = module(*inputs)
    except Exception as error:
        raise InvalidInput(
            field, _described(inputs), f"{promise} ({type(error).__name__}: {error})"
        ) from None
    return _outputs_of(result, field=f"{field} (model output)")


@contextlib.contextmanager
def _eval_mode(model: object) -> Iterator[None]:
    """Export and save in eval mode (dropout off, batch norm frozen); the caller's module keeps its mode."""
    if not isinstance(model, torch.nn.Module):
        yield
        return
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    module: torch.jit.ScriptModule = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    return module


def export_torchscript(
    model: torch.nn.Module | Path, example_inputs: Sequence[torch.Tensor], export: Literal["trace", "script"]
) -> torch.jit.ScriptModule:
    """The TorchScript of ``model``: loaded from a file, given as is, or traced / scripted from a module."""
    if isinstance(model, Path | str):
        try:
            return load_torchscript(Path(model)).eval()
        except Exception as error:
            raise InvalidInput(
                "torchscript", str(model), f"a TorchScript file torch.jit.load reads ({error})"
            ) from None
    if not isinstance(model, torch.nn.Module):
        raise InvalidInput("model", type(model).__name__, "a torch.nn.Module or a TorchScript file path")
    if isinstance(model, torch.jit.ScriptModule):
        return model
    if export not in ("trace", "script"):
        raise InvalidInput("export", export, "trace or script")
    try:
        with torch.no_grad():
            if export == "trace":
                # check_trace=False: _probe compares the trace with the model on other inputs instead.
                exported = torch.jit.trace(model, tuple(example_inputs), check_trace=False)  # type: ignore[no-untyped-call]
            else:
                exported = torch.jit.script(model)
    except Exception as error:
        raise InvalidInput(
            "model",
            type(model).__name__,
            f"a module torch.jit.{export} can export ({type(error).__name__}: {error})",
        ) from None
    if not isinstance(exported, torch.jit.ScriptModule):
        raise InvalidInput(
            "model", type(model).__name__, f"a module torch.jit.{export} turns into a ScriptModule"
        )
    return exported


def _check_examples(example_inputs: Sequence[torch.Tensor], max_batch_size: int) -> tuple[torch.Tensor, ...]:
    if not example_inputs or not all(isinstance(t, torch.Tensor) for t in example_inputs):
        raise InvalidInput("example_inputs", example_inputs, "one or more torch tensors")
    examples = tuple(example_inputs)
    if max_batch_size > 0:
        batches = {t.shape[0] if t.dim() else 0 for t in examples}
        if len(batches) != 1 or not 1 <= min(batches) <= max_batch_size:
            raise InvalidInput(
                "example_inputs",
                [list(t.shape) for t in examples],
                f"tensors sharing one leading batch axis of 1..max_batch_size ({max_batch_size})",
            )
    return examples


def _spec_of(
    tensor: torch.Tensor, name: str, *, batched: bool, variable: Sequence[int], field: str, target: Target
) -> TensorSpec:
    if tensor.dtype not in _TRITON_NAME:
        supported = ", ".join(f"{dtype} ({name})" for name, dtype in DTYPES.items())
        raise InvalidInput(f"{field}.dtype", str(tensor.dtype), f"one of {supported}")
    dtype = _TRITON_NAME[tensor.dtype]
    if target == "python" and dtype not in PYTHON_TARGET_DTYPES:
        raise InvalidInput(
            f"{field}.dtype",
            dtype,
            f"for target python one of {', '.join(PYTHON_TARGET_DTYPES)} (numpy has no bfloat16); "
            "BF16 is served by target pytorch_libtorch",
        )
    shape = list(tensor.shape[1:] if batched else tensor.shape)
    if not shape:
        raise InvalidInput(f"{field}.shape", list(tensor.shape), "at least one axis besides the batch axis")
    for axis in variable:
        if isinstance(axis, bool) or not isinstance(axis, int) or not 0 <= axis < len(shape):
            raise InvalidInput(
                f"variable_axes[{name!r}]", list(variable), f"axes 0..{len(shape) - 1} (batch excluded)"
            )
        shape[axis] = -1
    return TensorSpec(name, dtype, tuple(shape))


def _names(given: Sequence[str] | None, count: int, prefix: str, field: str) -> list[str]:
    if given is None:
        return [f"{prefix}__{i}" for i in range(count)]  # libtorch's positional convention
    names = list(given)
    if len(names) != count:
        raise InvalidInput(field, names, f"{count} name(s), one per tensor")
    for i, name in enumerate(names):
        check_name(name, field=f"{field}[{i}]")
    return names


def libtorch_binding(names: Sequence[str], arguments: Sequence[str] | None) -> list[int]:
    """The position Triton's libtorch backend binds each config tensor to, in config order.

    Inputs (``arguments``: forward's parameter names): by parameter name when every name is one, else
    by the index in ``<name>__<index>`` when every name has that form, else in config order. Outputs
    (``arguments`` None): ``<name>__<index>`` or config order. Mirrors the backend's own rules.
    """
    if arguments is not None and all(name in arguments for name in names):
        return [list(arguments).index(name) for name in names]
    suffixes = [name.partition("__")[2] for name in names]
    if all(
        "__" in name and all(c in "0123456789" for c in suffix)
        for name, suffix in zip(names, suffixes, strict=True)
    ):
        return [int(suffix or 0) for suffix in suffixes]
    return list(range(len(names)))


def _check_libtorch_binding(
    module: torch.jit.ScriptModule,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    inputs_field: str,
    input_names_field: str,
    output_names_field: str,
) -> None:
    """Would Triton's libtorch backend feed each tensor where this config says it goes?

    The backend passes every argument of forward (no defaults), each a tensor, bound by the rules of
    ``libtorch_binding``; a config whose order disagrees would load and then compute on swapped inputs.
    """
    forward: Any = module.forward
    schema = forward.schema
    arguments = [a for a in schema.arguments if a.type.kind() != "ClassType"]
    signature = f"forward({', '.join(f'{a.name}: {a.type}' for a in arguments)})"
    if len(arguments) != len(inputs) or any(
        a.type.kind() not in ("TensorType", "ListType") for a in arguments
    ):
        raise InvalidInput(
            inputs_field,
            [s.name for s in inputs],
            f"for pytorch_libtorch one tensor for every parameter of {signature}: "
            "Triton's libtorch backend passes them all and nothing else",
        )
    names = [a.name for a in arguments]
    if libtorch_binding([s.name for s in inputs], names) != list(range(len(inputs))):
        raise InvalidInput(
            input_names_field,
            [s.name for s in inputs],
            f"names Triton's libtorch backend binds in order: {names}, INPUT__0.., or names that are neither",
        )
    if libtorch_binding([s.name for s in outputs], None) != list(range(len(outputs))):
        raise InvalidInput(
            output_names_field,
            [s.name for s in outputs],
            "names without '__', or <name>__<i> where i is the output's position",
        )


def _other_size(size: int) -> int:
    # Shorter where possible: a model with a maximum length (positional embeddings) takes it.
    return size - 1 if size > 1 else size + 1


def _resampled(
    tensors: Sequence[torch.Tensor],
    specs: Sequence[TensorSpec],
    *,
    batched: bool,
    new_batch: bool,
    new_lengths: bool,
    seed: int,
) -> list[torch.Tensor]:
    """Tensors shaped like ``tensors`` (batch and/or variable axes resized), with values drawn from each
    example's own values: an id stays a valid index, a positive input stays positive."""
    generator = torch.Generator().manual_seed(seed)
    offset = 1 if batched else 0
    resized = []
    for tensor, spec in zip(tensors, specs, strict=True):
        shape = list(tensor.shape)
        if new_batch:
            shape[0] = _other_size(shape[0])
        if new_lengths:
            for axis, dim in enumerate(spec.dims):
                if dim == -1:
                    shape[axis + offset] = _other_size(shape[axis + offset])
        values = tensor.detach().reshape(-1)
        if values.numel() == 0:
            resized.append(torch.zeros(shape, dtype=tensor.dtype))
        else:
            resized.append(values[torch.randint(0, values.numel(), tuple(shape), generator=generator)])
    return resized


def _agree(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        return torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-5, equal_nan=True)
    return torch.equal(a, b)


def _check_batch_axis(results: Sequence[torch.Tensor], batch: int, names: Sequence[str]) -> None:
    for result, name in zip(results, names, strict=True):
        if result.dim() < 2 or result.shape[0] != batch:
            raise InvalidInput(
                f"output {name}",
                list(result.shape),
                f"a leading batch axis of the inputs' batch size ({batch}) and at least one more axis; "
                "a model that does not batch its outputs takes max_batch_size 0",
            )


def _probe(
    module: torch.jit.ScriptModule,
    eager: torch.nn.Module | None,
    tensors: Sequence[torch.Tensor],
    inputs: Sequence[TensorSpec],
    results: Sequence[torch.Tensor],
    out_names: Sequence[str],
    *,
    batched: bool,
    variable_field: str,
) -> list[set[int]]:
    """Run the exported model where the config promises freedom, next to the eager model if there is one.

    A trace records the shapes and the branches it saw. These runs catch a config promising batch sizes
    or lengths the TorchScript cannot take, and a TorchScript whose answers differ from the model's.
    Returns, per output, the axes (batch excluded) whose length changed with the inputs'.
    """
    variable = any(-1 in spec.dims for spec in inputs)
    probes = []
    if batched:
        probes.append(
            ("max_batch_size", "0 for a model that only runs at its example batch size", True, False)
        )
    if variable:
        probes.append((variable_field, "axes the model accepts at other lengths", batched, True))
    if not probes:
        probes.append(("model", "a model that runs on other values of the example shapes", False, False))
    changed: list[set[int]] = [set() for _ in results]
    offset = 1 if batched else 0
    for seed, (field, promise, new_batch, new_lengths) in enumerate(probes, start=1):
        probe = _resampled(
            tensors, inputs, batched=batched, new_batch=new_batch, new_lengths=new_lengths, seed=seed
        )
        got = _run(module, probe, field=field, promise=promise)
        expected = got if eager is None else _run(eager, probe, field=field, promise=promise)
        if len(expected) != len(got) or not all(map(_agree, got, expected)):
            raise InvalidInput(
                "model",
                type(eager).__name__,
                f"a model whose TorchScript answers as the model does; on inputs {_described(probe)} they "
                "differ (a trace records one path through shape- or data-dependent control flow: "
                "try export='script')",
            )
        if len(got) != len(results) or any(
            g.dtype != r.dtype or g.dim() != r.dim() for g, r in zip(got, results, strict=True)
        ):
            raise InvalidInput(
                "model",
                _described(got),
                f"outputs of the same number, types and ranks for every input size ({_described(results)})",
            )
        if batched:
            _check_batch_axis(got, probe[0].shape[0], out_names)
        for axes, g, r in zip(changed, got, results, strict=True):
            axes.update(k for k in range(r.dim() - offset) if g.shape[k + offset] != r.shape[k + offset])
    return changed


def build_model(
    model: torch.nn.Module | Path,
    example_inputs: Sequence[torch.Tensor],
    *,
    name: str,
    repository: Path,
    target: Target = "python",
    options: ModelOptions = ModelOptions(),
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    variable_axes: Mapping[str, Sequence[int]] | None = None,
    version: int = 1,
    export: Literal["trace", "script"] = "trace",
    precision: PrecisionOptions = FULL_PRECISION,
) -> BuiltModel:
    """Export ``model`` and write ``<repository>/<name>/{config.pbtxt,<version>/model.pt}``.

    ``example_inputs`` include the batch axis when ``options.max_batch_size > 0``. ``variable_axes``
    maps input names to the axes (batch excluded) that vary, which become -1 in the config; an output
    axis whose length follows them becomes -1 too (declaring output axes is allowed, not needed).
    A reduced ``precision`` is compared with the FP32 model first and refused outside its tolerance.
    """
    check_name(name, field="name")
    check_options(options, target)
    check_precision(precision, instance_kind=options.instance_kind)
    _integer(version, "version", minimum=1)
    examples = _check_examples(example_inputs, options.max_batch_size)
    batched = options.max_batch_size > 0
    eager = (
        model
        if isinstance(model, torch.nn.Module) and not isinstance(model, torch.jit.ScriptModule)
        else None
    )
    with _eval_mode(model):
        if eager is not None:
            # The eager model first: a signature mismatch reads better from forward than from the tracer.
            _run(eager, examples, field="example_inputs")
        module = export_torchscript(model, examples, export)
        results = _run(module, examples, field="example_inputs")
        in_names = _names(input_names, len(examples), "INPUT", "input_names")
        out_names = _names(output_names, len(results), "OUTPUT", "output_names")
        shared = sorted(set(in_names) & set(out_names))
        if shared:
            raise InvalidInput("input_names/output_names", shared, "names unique across inputs and outputs")
        variable = dict(variable_axes or {})
        unknown = sorted(set(variable) - set(in_names) - set(out_names))
        if unknown:
            raise InvalidInput(
                "variable_axes", unknown, f"names of inputs or outputs: {[*in_names, *out_names]}"
            )
        inputs = tuple(
            _spec_of(
                t,
                n,
                batched=batched,
                variable=variable.get(n, ()),
                field=f"example_inputs[{i}]",
                target=target,
            )
            for i, (t, n) in enumerate(zip(examples, in_names, strict=True))
        )
        if batched:
            _check_batch_axis(results, examples[0].shape[0], out_names)
        followed = _probe(
            module,
            eager,
            examples,
            inputs,
            results,
            out_names,
            batched=batched,
            variable_field="variable_axes",
        )
        outputs = tuple(
            _spec_of(
                t,
                n,
                batched=batched,
                variable=sorted({*variable.get(n, ()), *axes}),
                field=f"output {n}",
                target=target,
            )
            for t, n, axes in zip(results, out_names, followed, strict=True)
        )
        if target == "pytorch_libtorch":
            _check_libtorch_binding(
                module,
                inputs,
                outputs,
                inputs_field="example_inputs",
                input_names_field="input_names",
                output_names_field="output_names",
            )
        module, report = _reduced(
            module,
            precision,
            inputs,
            out_names,
            options,
            eager=eager,
            export=lambda reduced, example: export_torchscript(reduced, example, export),
        )
        text = render_config(model_config(name, inputs, outputs, target=target, options=options))
        path = _write(repository, name, version, text, module, target, report)
    return BuiltModel(name, version, path, target, text, inputs, outputs, report)


def build_from_signature(
    torchscript: Path,
    *,
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    repository: Path,
    target: Target = "python",
    options: ModelOptions = ModelOptions(),
    version: int = 1,
    precision: PrecisionOptions = FULL_PRECISION,
) -> BuiltModel:
    """Package a TorchScript file whose signature is declared rather than discovered.

    The model runs on inputs generated from the declaration (batch 2 where it batches, variable axes
    at length 3) and on other sizes where the declaration lets them vary; its outputs are compared
    with the declared ones, so a wrong declaration fails here rather than in Triton. A reduced
    ``precision`` is compared with the FP32 model first and refused outside its tolerance.
    """
    check_name(name, field="name")
    check_options(options, target)
    check_precision(precision, instance_kind=options.instance_kind)
    _integer(version, "version", minimum=1)
    for field, specs in (("inputs", inputs), ("outputs", outputs)):
        if not specs or not all(isinstance(s, TensorSpec) for s in specs):
            raise InvalidInput(field, list(specs), "one or more NAME:DTYPE:DIMS")
        for spec in specs:
            if target == "python" and spec.dtype not in PYTHON_TARGET_DTYPES:
                raise InvalidInput(
                    f"{spec.name}.dtype",
                    spec.dtype,
                    f"for target python one of {', '.join(PYTHON_TARGET_DTYPES)}",
                )
    names = [s.name for s in [*inputs, *outputs]]
    if len(set(names)) != len(names):
        raise InvalidInput("inputs/outputs", names, "names unique across inputs and outputs")
    module = export_torchscript(torchscript, (), "trace")
    batched = options.max_batch_size > 0
    batch = min(2, options.max_batch_size) if batched else None
    generated = _sample_inputs(inputs, batch=batch, variable_length=3, seed=0)
    tensors = [_to_torch(generated[spec.name], spec) for spec in inputs]
    results = _run(module, tensors, field="inputs", promise="a declaration matching the model's forward")
    if len(results) != len(outputs):
        raise InvalidInput(
            "outputs", [s.name for s in outputs], f"{len(results)} output(s), as the model returns"
        )
    for spec, tensor in zip(outputs, results, strict=True):
        dtype = _TRITON_NAME.get(tensor.dtype, str(tensor.dtype))
        shape = list(tensor.shape[1:] if batched else tensor.shape)
        fits = len(shape) == len(spec.dims) and all(
            d in (-1, s) for d, s in zip(spec.dims, shape, strict=True)
        )
        if dtype != spec.dtype or not fits or (batched and tensor.shape[0] != batch):
            raise InvalidInput(
                f"output {spec.name}",
                f"{spec.dtype}:{','.join(map(str, spec.dims))}",
                f"what the model returns: {dtype}:{','.join(map(str, shape))}"
                + (f" after a batch axis of {batch}" if batched else "")
                + " (-1 allowed for variable axes)",
            )
    followed = _probe(
        module,
        None,
        tensors,
        inputs,
        results,
        [s.name for s in outputs],
        batched=batched,
        variable_field="inputs",
    )
    for spec, axes in zip(outputs, followed, strict=True):
        fixed = sorted(k for k in axes if spec.dims[k] != -1)
        if fixed:
            raise InvalidInput(
                f"output {spec.name}",
                f"{spec.dtype}:{','.join(map(str, spec.dims))}",
                f"-1 at axis {fixed[0]}: its length follows the inputs'",
            )
    if target == "pytorch_libtorch":
        _check_libtorch_binding(
            module,
            inputs,
            outputs,
            inputs_field="inputs",
            input_names_field="inputs",
            output_names_field="outputs",
        )
    module, report = _reduced(module, precision, inputs, [s.name for s in outputs], options)
    text = render_config(model_config(name, inputs, outputs, target=target, options=options))
    path = _write(repository, name, version, text, module, target, report)
    return BuiltModel(name, version, path, target, text, tuple(inputs), tuple(outputs), report)


def _calibration_batches(
    specs: Sequence[TensorSpec], arrays: Mapping[str, Array] | None, max_batch_size: int
) -> list[list[torch.Tensor]]:
    """The inputs a reduced build is compared on: the user's arrays split into batches, or generated."""
    batched = max_batch_size > 0
    if arrays is None:
        generated = [
            _sample_inputs(
                specs, batch=max_batch_size if batched else None, variable_length=2 + i % 4, seed=100 + i
            )
            for i in range(_CALIBRATION_BATCHES)
        ]
        return [[_to_torch(g[spec.name], spec) for spec in specs] for g in generated]
    names = [spec.name for spec in specs]
    if sorted(arrays) != sorted(names):
        raise InvalidInput("calibration", sorted(arrays), f"one array per input, named {names}")
    rows = set()
    for spec in specs:
        array = arrays[spec.name]
        shape = list(array.shape[1:] if batched else array.shape)
        wanted = np.dtype(NUMPY_DTYPES[spec.dtype])
        fits = len(shape) == len(spec.dims) and all(
            d in (-1, n) for d, n in zip(spec.dims, shape, strict=True)
        )
        if array.dtype != wanted or not fits or (batched and array.shape[0] == 0):
            raise InvalidInput(
                f"calibration[{spec.name}]",
                f"{array.dtype}{list(array.shape)}",
                f"{wanted} shaped {(['rows'] if batched else []) + list(spec.dims)} (-1: any length)",
            )
        rows.add(array.shape[0] if batched else 1)
    if len(rows) != 1:
        shapes = {name: list(arrays[name].shape) for name in names}
        raise InvalidInput("calibration", shapes, "the same number of rows in every input")
    if not batched:
        return [[_to_torch(arrays[spec.name], spec) for spec in specs]]
    return [
        [_to_torch(arrays[spec.name][start : start + max_batch_size], spec) for spec in specs]
        for start in range(0, rows.pop(), max_batch_size)
    ]


def _reduced(
    module: torch.jit.ScriptModule,
    precision: PrecisionOptions,
    inputs: Sequence[TensorSpec],
    output_names: Sequence[str],
    options: ModelOptions,
    *,
    eager: torch.nn.Module | None = None,
    export: Export | None = None,
) -> tuple[torch.jit.ScriptModule, PrecisionReport | None]:
    """``module`` at the requested precision with its report (None for FP32); ToleranceExceeded if too far."""
    if precision.precision == "fp32":
        return module, None
    batches = _calibration_batches(inputs, precision.calibration, options.max_batch_size)
    return reduce_checked(
        module,
        batches,
        output_names,
        precision,
        batched=options.max_batch_size > 0,
        eager=eager,
        export=export,
    )


def _write(
    repository: Path,
    name: str,
    version: int,
    config_text: str,
    module: torch.jit.ScriptModule,
    target: Target,
    report: PrecisionReport | None = None,
) -> Path:
    """Write one version: staged in a hidden temp folder, moved into place, then the config, atomically."""
    _check_other_versions(repository / name, version, config_text)
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-{version}-", dir=repository))
    try:
        version_dir = staging / str(version)
        version_dir.mkdir()
        module.save(str(version_dir / _MODEL_FILE))
        if target == "python":
            shutil.copyfile(_PYTHON_MODEL, version_dir / _PYTHON_MODEL_FILE)
        if report is not None:
            (version_dir / REPORT_FILE).write_text(report.to_json())
        (staging / "config.pbtxt").write_text(config_text)
        model_dir = repository / name
        model_dir.mkdir(exist_ok=True)
        final = model_dir / str(version)
        if final.exists():
            shutil.rmtree(final)
        os.replace(version_dir, final)
        os.replace(staging / "config.pbtxt", model_dir / "config.pbtxt")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir


def _check_other_versions(model_dir: Path, version: int, config_text: str) -> None:
    """One config.pbtxt serves every version: the other versions its policy serves must fit it too."""
    config_path = model_dir / "config.pbtxt"
    present = sorted(int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit())
    new_config = parse_config(config_text, folder=model_dir.name)
    others = sorted(set(_served_versions(new_config.version_policy, sorted({*present, version}))) - {version})
    if not others or not config_path.is_file():
        return

    def signature(config: Any) -> tuple[Any, ...]:
        tensors = (_specs(config.input), _specs(config.output))
        return (config.backend, config.platform, config.max_batch_size > 0, *tensors)

    old = signature(parse_config(config_path.read_text(), folder=model_dir.name))
    new = signature(new_config)
    if new != old:
        raise InvalidInput(
            f"{model_dir.name} version {version}",
            f"backend, batching, inputs, outputs: {new}",
            f"those of versions {others} ({old}), which its version policy also serves: one config.pbtxt "
            "serves them all (a new signature is a new model name, or a policy serving this version alone)",
        )


# --- reading a repository back ------------------------------------------------------------------------


def _specs(tensors: Any) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(t.name, _dtype_name(t.data_type), tuple(t.dims)) for t in tensors)


def _served_versions(policy: Any, versions: Sequence[int]) -> list[int]:
    """The versions Triton loads under ``policy`` (a ModelVersionPolicy) from the folders present."""
    kind = policy.WhichOneof("policy_choice")
    if kind == "specific":
        return sorted(policy.specific.versions)
    if kind == "all":
        return list(versions)
    count = policy.latest.num_versions if kind == "latest" else 1
    return list(versions[-count:]) if versions else []


def needed_files(config: Any) -> list[str]:
    """The files each version folder of a model with ``config`` must hold for its backend to load it."""
    return [_MODEL_FILE, _PYTHON_MODEL_FILE] if config.backend == "python" else [_MODEL_FILE]


def read_repository(path: Path) -> list[RepositoryModel]:
    """Every model of a local repository folder, each config parsed and validated, each version its
    policy serves holding the files its backend loads; ``version`` is the one Triton answers by default
    (the highest served)."""
    if not path.is_dir():
        raise InvalidInput("repository", str(path), "an existing folder holding <model>/config.pbtxt")
    models = []
    for config_path in sorted(path.glob("*/config.pbtxt")):
        folder = config_path.parent
        config = parse_config(config_path.read_text(), folder=folder.name)
        versions = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
        needed = needed_files(config)
        served = _served_versions(config.version_policy, versions)
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
                torchscript=newest / _MODEL_FILE,
                inputs=_specs(config.input),
                outputs=_specs(config.output),
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
            shutil.copyfile(_PYTHON_MODEL, version / _PYTHON_MODEL_FILE)
    return destination


def _sample_inputs(
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
            arrays[spec.name] = rng.integers(0, _INT_HIGH, size=shape).astype(numpy_type)
    return arrays


def _to_torch(array: Array, spec: TensorSpec) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=NUMPY_DTYPES[spec.dtype])).to(DTYPES[spec.dtype])


def _to_numpy(tensor: torch.Tensor) -> Array:
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


def generate_inputs(
    model: RepositoryModel, *, batch: int = 2, variable_length: int = 5, seed: int = 0
) -> dict[str, Array]:
    """Inputs of the model's declared shapes: variable axes at ``variable_length``, small integers for ids."""
    return _sample_inputs(
        model.inputs,
        batch=batch if model.max_batch_size > 0 else None,
        variable_length=variable_length,
        seed=seed,
    )


def run_reference(model: RepositoryModel, inputs: Mapping[str, Array]) -> dict[str, Array]:
    """The model's own TorchScript on ``inputs``, in-process: what Triton's answer is compared with."""
    module = load_torchscript(model.torchscript).eval()
    tensors = [_to_torch(inputs[spec.name], spec) for spec in model.inputs]
    results = _run(module, tensors, field=f"{model.name} inputs")
    return {spec.name: _to_numpy(t) for spec, t in zip(model.outputs, results, strict=True)}


def demo_model() -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """A small seeded network built in code (nothing downloaded), with a batch of example inputs."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4), torch.nn.Softmax(dim=-1)
    )
    return network.eval(), [torch.randn(2, 16)]
