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

import inspect
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from inferstack.infra.errors import InvalidInput

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
# numpy has no bfloat16, and the python backend hands tensors over as numpy arrays.
_NUMPY: Mapping[str, type[np.generic]] = {
    "FP32": np.float32,
    "FP16": np.float16,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_MODEL_FILE = "model.pt"
_PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")


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
        if not self.dims or any(d == 0 or d < -1 for d in self.dims):
            raise InvalidInput(f"{self.name}.dims", list(self.dims), "one or more sizes, each positive or -1")


def check_name(name: str, *, field: str) -> str:
    """Model and tensor names: a folder name Triton accepts, never a path."""
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 128:
        raise InvalidInput(
            field, name, "1-128 characters from A-Z a-z 0-9 _ . -, not starting with '.' (no path separators)"
        )
    return name


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
class VersionPolicy:
    """Which versions Triton serves: the newest ``latest``, ``all``, or the ``specific`` ones."""

    kind: Literal["latest", "all", "specific"] = "latest"
    latest: int = 1
    versions: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelOptions:
    max_batch_size: int = 8  # 0: the model has no batch axis
    dynamic_batching: DynamicBatching | None = field(default_factory=DynamicBatching)
    instance_kind: InstanceKind = "KIND_CPU"
    instance_count: int = 1
    warmup: bool = False
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)


@dataclass(frozen=True)
class BuiltModel:
    name: str
    version: int
    path: Path
    target: Target
    config_text: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


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


# --- config.pbtxt ------------------------------------------------------------------------------


def check_options(options: ModelOptions, target: Target) -> None:
    if target not in TARGETS:
        raise InvalidInput("target", target, f"one of {', '.join(TARGETS)}")
    if not isinstance(options.max_batch_size, int) or options.max_batch_size < 0:
        raise InvalidInput("max_batch_size", options.max_batch_size, "an integer >= 0 (0: no batch axis)")
    if options.instance_kind not in ("KIND_GPU", "KIND_CPU"):
        raise InvalidInput("instance_kind", options.instance_kind, "KIND_GPU or KIND_CPU")
    if options.instance_count < 1:
        raise InvalidInput("instance_count", options.instance_count, "an integer >= 1")
    batching = options.dynamic_batching
    if batching is not None:
        if options.max_batch_size == 0:
            raise InvalidInput("dynamic_batching", batching, "None when max_batch_size is 0")
        for size in batching.preferred_batch_sizes:
            if not 1 <= size <= options.max_batch_size:
                raise InvalidInput(
                    "dynamic_batching.preferred_batch_sizes",
                    list(batching.preferred_batch_sizes),
                    f"sizes from 1 to max_batch_size ({options.max_batch_size})",
                )
        if batching.max_queue_delay_us < 0:
            raise InvalidInput(
                "dynamic_batching.max_queue_delay_us", batching.max_queue_delay_us, "an integer >= 0"
            )
        if batching.max_queue_size is not None and batching.max_queue_size < 1:
            raise InvalidInput("dynamic_batching.max_queue_size", batching.max_queue_size, "None or >= 1")
        if batching.queue_timeout_us is not None and batching.queue_timeout_us < 1:
            raise InvalidInput("dynamic_batching.queue_timeout_us", batching.queue_timeout_us, "None or >= 1")
    policy = options.version_policy
    if policy.kind not in ("latest", "all", "specific"):
        raise InvalidInput("version_policy.kind", policy.kind, "latest, all or specific")
    if policy.kind == "latest" and policy.latest < 1:
        raise InvalidInput("version_policy.latest", policy.latest, "an integer >= 1")
    if policy.kind == "specific" and (not policy.versions or min(policy.versions) < 1):
        raise InvalidInput("version_policy.versions", list(policy.versions), "one or more versions >= 1")


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
            queue.max_queue_size = batching.max_queue_size or 0
            queue.default_timeout_microseconds = batching.queue_timeout_us or 0
    policy = options.version_policy
    if policy.kind == "latest":
        config.version_policy.latest.num_versions = policy.latest
    elif policy.kind == "all":
        config.version_policy.all.SetInParent()
    else:
        config.version_policy.specific.versions.extend(policy.versions)
    if options.warmup:
        warmup = config.model_warmup.add(
            name=f"{name}-warmup", batch_size=max(options.max_batch_size, 1), count=1
        )
        for spec in inputs:
            # Variable axes get length 1: warmup must work for every model, whatever its real lengths.
            warmup.inputs[spec.name].CopyFrom(
                mc.ModelWarmup.Input(
                    data_type=_type_enum(spec.dtype), dims=[max(d, 1) for d in spec.dims], zero_data=True
                )
            )
    validate_config(config, folder=name)
    return config


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
    if (config.backend == "python") == (config.platform == "pytorch_libtorch"):
        raise InvalidInput(
            f"{where}: backend/platform",
            (config.backend, config.platform),
            'backend "python" or platform "pytorch_libtorch"',
        )
    if config.max_batch_size < 0:
        raise InvalidInput(f"{where}: max_batch_size", config.max_batch_size, "an integer >= 0")
    if not config.input or not config.output:
        raise InvalidInput(
            f"{where}: input/output", (len(config.input), len(config.output)), "at least one of each"
        )
    names = [t.name for t in [*config.input, *config.output]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInput(f"{where}: tensor names", duplicates, "names unique across inputs and outputs")
    supported = {_type_enum(name) for name in DTYPES}
    for tensor in [*config.input, *config.output]:
        if tensor.data_type not in supported:
            raise InvalidInput(
                f"{where}: {tensor.name}.data_type",
                mc.DataType.Name(tensor.data_type),
                f"one of {', '.join('TYPE_' + n for n in DTYPES)}",
            )
        if config.backend == "python" and tensor.data_type == mc.TYPE_BF16:
            raise InvalidInput(
                f"{where}: {tensor.name}.data_type",
                "TYPE_BF16",
                "a type with a numpy equivalent for the python target",
            )
        if not tensor.dims or any(d == 0 or d < -1 for d in tensor.dims):
            raise InvalidInput(
                f"{where}: {tensor.name}.dims", list(tensor.dims), "one or more sizes, positive or -1"
            )
    batching_sizes = list(config.dynamic_batching.preferred_batch_size)
    if config.HasField("dynamic_batching") and config.max_batch_size == 0:
        raise InvalidInput(f"{where}: dynamic_batching", "set", "absent when max_batch_size is 0")
    if any(not 1 <= s <= config.max_batch_size for s in batching_sizes):
        raise InvalidInput(
            f"{where}: dynamic_batching.preferred_batch_size", batching_sizes, f"1..{config.max_batch_size}"
        )
    for warmup in config.model_warmup:
        if not 1 <= warmup.batch_size <= max(config.max_batch_size, 1):
            raise InvalidInput(
                f"{where}: model_warmup.batch_size", warmup.batch_size, f"1..{max(config.max_batch_size, 1)}"
            )
    for group in config.instance_group:
        if group.count < 1:
            raise InvalidInput(f"{where}: instance_group.count", group.count, "an integer >= 1")


def _type_enum(dtype: str) -> int:
    value: int = mc.DataType.Value(f"TYPE_{dtype}")
    return value


def _dtype_name(enum_value: int) -> str:
    return str(mc.DataType.Name(enum_value)).removeprefix("TYPE_")


# --- export ---------------------------------------------------------------------------------------


def _outputs_of(result: Any, *, field: str) -> tuple[torch.Tensor, ...]:
    items = result if isinstance(result, tuple | list) else (result,)
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise InvalidInput(field, type(result).__name__, "a tensor or a tuple/list of tensors")
    return tuple(items)


def _check_signature(model: torch.nn.Module, count: int) -> None:
    """Compare the number of example inputs with ``forward``'s positional parameters."""
    if isinstance(model, torch.jit.ScriptModule):
        return  # TorchScript modules report no Python signature; running them below catches mismatches.
    params = list(inspect.signature(model.forward).parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if not len(required) <= count <= len(positional):
        names = ", ".join(p.name for p in positional)
        raise InvalidInput(
            "example_inputs",
            f"{count} tensor(s)",
            f"{len(required)}..{len(positional)} tensors for forward({names})",
        )


def _run(module: torch.nn.Module, inputs: Sequence[torch.Tensor], *, field: str) -> tuple[torch.Tensor, ...]:
    try:
        with torch.no_grad():
            result = module(*inputs)
    except Exception as error:
        shapes = [f"{_TRITON_NAME.get(t.dtype, t.dtype)}{list(t.shape)}" for t in inputs]
        raise InvalidInput(
            field, shapes, f"inputs the model's forward accepts ({type(error).__name__}: {error})"
        ) from None
    return _outputs_of(result, field=f"{field} (model output)")


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    module: torch.jit.ScriptModule = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    return module


def export_torchscript(
    model: torch.nn.Module | Path, example_inputs: Sequence[torch.Tensor], export: Literal["trace", "script"]
) -> torch.jit.ScriptModule:
    """The TorchScript of ``model``: loaded from a file, or traced / scripted from a module."""
    if isinstance(model, Path | str):
        try:
            return load_torchscript(Path(model))
        except Exception as error:
            raise InvalidInput(
                "torchscript", str(model), f"a TorchScript file torch.jit.load reads ({error})"
            ) from None
    if not isinstance(model, torch.nn.Module):
        raise InvalidInput("model", type(model).__name__, "a torch.nn.Module or a TorchScript file path")
    if export not in ("trace", "script"):
        raise InvalidInput("export", export, "trace or script")
    model = model.eval()
    if isinstance(model, torch.jit.ScriptModule):
        return model
    _check_signature(model, len(example_inputs))
    _run(model, example_inputs, field="example_inputs")
    try:
        with torch.no_grad():
            if export == "trace":
                exported = torch.jit.trace(  # type: ignore[no-untyped-call]
                    model, tuple(example_inputs), check_trace=False
                )
            else:
                exported = torch.jit.script(model)
    except Exception as error:
        raise InvalidInput(
            "model", type(model).__name__, f"a module torch.jit.{export} can export ({error})"
        ) from None
    if not isinstance(exported, torch.jit.ScriptModule):
        raise InvalidInput(
            "model", type(model).__name__, f"a module torch.jit.{export} turns into a ScriptModule"
        )
    return exported


def _spec_of(
    tensor: torch.Tensor, name: str, *, batched: bool, variable: Sequence[int], field: str, target: Target
) -> TensorSpec:
    if tensor.dtype not in _TRITON_NAME:
        raise InvalidInput(
            f"{field}.dtype", str(tensor.dtype), f"one of {', '.join(map(str, DTYPES.values()))}"
        )
    dtype = _TRITON_NAME[tensor.dtype]
    if target == "python" and dtype not in _NUMPY:
        raise InvalidInput(
            f"{field}.dtype", dtype, f"for target python one of {', '.join(_NUMPY)} (numpy types)"
        )
    shape = list(tensor.shape[1:] if batched else tensor.shape)
    if not shape:
        # Triton needs at least one dim; a per-item scalar is served as [1].
        raise InvalidInput(f"{field}.shape", list(tensor.shape), "at least one axis besides the batch axis")
    for axis in variable:
        if not 0 <= axis < len(shape):
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


def _check_variable(
    module: torch.nn.Module,
    example_inputs: Sequence[torch.Tensor],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    batched: bool,
) -> None:
    """Run the exported model on other batch sizes and lengths, where the config says they may vary.

    A trace bakes in shapes it saw; this catches a config that promises what the TorchScript can't do.
    """
    offset = 1 if batched else 0
    changed = []
    for tensor, spec in zip(example_inputs, inputs, strict=True):
        shape = list(tensor.shape)
        if batched:
            shape[0] = shape[0] + 1
        for axis, dim in enumerate(spec.dims):
            if dim == -1:
                shape[axis + offset] += 1
        changed.append(_random(shape, tensor.dtype, seed=1))
    if all(c.shape == t.shape for c, t in zip(changed, example_inputs, strict=True)):
        return
    results = _run(module, changed, field="variable_axes / batch axis (the exported model on other sizes)")
    if len(results) != len(outputs):
        raise InvalidInput(
            "model", len(results), f"the same number of outputs ({len(outputs)}) for every input size"
        )


def _random(shape: Sequence[int], dtype: torch.dtype, *, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.randn(*shape, generator=generator).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, tuple(shape), generator=generator).bool()
    return torch.randint(0, 10, tuple(shape), generator=generator).to(dtype)


def build_model(
    model: torch.nn.Module | Path,
    example_inputs: Sequence[torch.Tensor],
    *,
    name: str,
    repository: Path,
    target: Target = "python",
    options: ModelOptions | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    variable_axes: Mapping[str, Sequence[int]] | None = None,
    version: int = 1,
    export: Literal["trace", "script"] = "trace",
) -> BuiltModel:
    """Export ``model`` and write ``<repository>/<name>/{config.pbtxt,<version>/model.pt}``.

    ``example_inputs`` include the batch axis when ``options.max_batch_size > 0``. ``variable_axes``
    maps tensor names to the axes (batch excluded) that vary, which become -1 in the config.
    """
    options = options or ModelOptions()
    check_name(name, field="name")
    check_options(options, target)
    if not isinstance(version, int) or version < 1:
        raise InvalidInput("version", version, "an integer >= 1")
    if not example_inputs or not all(isinstance(t, torch.Tensor) for t in example_inputs):
        raise InvalidInput("example_inputs", example_inputs, "one or more torch tensors")
    batched = options.max_batch_size > 0
    if batched:
        for i, tensor in enumerate(example_inputs):
            if tensor.dim() == 0 or not 1 <= tensor.shape[0] <= options.max_batch_size:
                raise InvalidInput(
                    f"example_inputs[{i}].shape",
                    list(tensor.shape),
                    f"a leading batch axis of 1..max_batch_size ({options.max_batch_size})",
                )
    module = export_torchscript(model, example_inputs, export)
    results = _run(module, example_inputs, field="example_inputs")
    in_names = _names(input_names, len(example_inputs), "INPUT", "input_names")
    out_names = _names(output_names, len(results), "OUTPUT", "output_names")
    variable = dict(variable_axes or {})
    unknown = sorted(set(variable) - set(in_names) - set(out_names))
    if unknown:
        raise InvalidInput("variable_axes", unknown, f"names of inputs or outputs: {[*in_names, *out_names]}")
    inputs = tuple(
        _spec_of(
            t, n, batched=batched, variable=variable.get(n, ()), field=f"example_inputs[{i}]", target=target
        )
        for i, (t, n) in enumerate(zip(example_inputs, in_names, strict=True))
    )
    outputs = tuple(
        _spec_of(t, n, batched=batched, variable=variable.get(n, ()), field=f"output[{i}]", target=target)
        for i, (t, n) in enumerate(zip(results, out_names, strict=True))
    )
    _check_variable(module, example_inputs, inputs, outputs, batched=batched)
    config = model_config(name, inputs, outputs, target=target, options=options)
    text = render_config(config)
    path = _write(repository, name, version, text, module, target)
    return BuiltModel(name, version, path, target, text, inputs, outputs)


def build_from_signature(
    torchscript: Path,
    *,
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    repository: Path,
    target: Target = "python",
    options: ModelOptions | None = None,
    version: int = 1,
) -> BuiltModel:
    """Package a TorchScript file whose signature is declared rather than discovered.

    The model runs once on inputs generated from the declaration (variable axes at length 3, batch 2)
    and its outputs are compared with the declared ones, so a wrong declaration fails here.
    """
    options = options or ModelOptions()
    check_name(name, field="name")
    check_options(options, target)
    if not inputs:
        raise InvalidInput("inputs", [], "one or more NAME:DTYPE:DIMS")
    if not outputs:
        raise InvalidInput("outputs", [], "one or more NAME:DTYPE:DIMS")
    module = export_torchscript(torchscript, (), "trace")
    batched = options.max_batch_size > 0
    batch = [min(2, options.max_batch_size)] if batched else []
    generated = [
        _random([*batch, *(3 if d == -1 else d for d in spec.dims)], DTYPES[spec.dtype], seed=0)
        for spec in inputs
    ]
    results = _run(module, generated, field="inputs (the declared signature)")
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
        if dtype != spec.dtype or not fits:
            raise InvalidInput(
                f"output {spec.name}",
                f"{spec.dtype}:{','.join(map(str, spec.dims))}",
                f"what the model returns: {dtype}:{','.join(map(str, shape))} (-1 allowed for variable axes)",
            )
    for spec in [*inputs, *outputs]:
        if target == "python" and spec.dtype not in _NUMPY:
            raise InvalidInput(
                f"{spec.name}.dtype", spec.dtype, f"for target python one of {', '.join(_NUMPY)}"
            )
    _check_variable(module, generated, inputs, outputs, batched=batched)
    config = model_config(name, inputs, outputs, target=target, options=options)
    text = render_config(config)
    path = _write(repository, name, version, text, module, target)
    return BuiltModel(name, version, path, target, text, tuple(inputs), tuple(outputs))


def _write(
    repository: Path,
    name: str,
    version: int,
    config_text: str,
    module: torch.jit.ScriptModule,
    target: Target,
) -> Path:
    """Write one version: staged in a sibling temp folder, moved into place, config written last."""
    model_dir = repository / name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=model_dir))
    try:
        module.save(str(staging / _MODEL_FILE))
        if target == "python":
            shutil.copyfile(_PYTHON_MODEL, staging / "model.py")
        final = model_dir / str(version)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (model_dir / "config.pbtxt").write_text(config_text)
    return model_dir


# --- reading a repository back ------------------------------------------------------------------------


def read_repository(path: Path) -> list[RepositoryModel]:
    """Every model of a local repository folder, each config parsed and validated."""
    if not path.is_dir():
        raise InvalidInput("repository", str(path), "an existing folder holding <model>/config.pbtxt")
    models = []
    for config_path in sorted(path.glob("*/config.pbtxt")):
        folder = config_path.parent
        config = parse_config(config_path.read_text(), folder=folder.name)
        versions = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
        if not versions or not (folder / str(versions[-1]) / _MODEL_FILE).is_file():
            raise InvalidInput(
                f"{folder.name}", [str(v) for v in versions], f"a version folder holding {_MODEL_FILE}"
            )

        def specs(tensors: Any) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(t.name, _dtype_name(t.data_type), tuple(t.dims)) for t in tensors)

        models.append(
            RepositoryModel(
                name=config.name,
                version=versions[-1],
                config=config,
                torchscript=folder / str(versions[-1]) / _MODEL_FILE,
                inputs=specs(config.input),
                outputs=specs(config.output),
                max_batch_size=config.max_batch_size,
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
        folder = destination / model.name
        (folder / "config.pbtxt").write_text(render_config(config))
        for version in (p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()):
            shutil.copyfile(_PYTHON_MODEL, version / "model.py")
    return destination


def generate_inputs(
    model: RepositoryModel, *, batch: int = 2, variable_length: int = 5, seed: int = 0
) -> dict[str, Array]:
    """Inputs of the model's declared shapes: variable axes at ``variable_length``, small integers for ids."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, Array] = {}
    for spec in model.inputs:
        shape = ([batch] if model.max_batch_size > 0 else []) + [
            variable_length if d == -1 else d for d in spec.dims
        ]
        dtype = _NUMPY.get(spec.dtype, np.float32)
        if spec.dtype == "BOOL":
            arrays[spec.name] = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.floating):
            arrays[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            arrays[spec.name] = rng.integers(0, 10, size=shape).astype(dtype)
    return arrays


def run_reference(model: RepositoryModel, inputs: Mapping[str, Array]) -> dict[str, Array]:
    """The model's own TorchScript on ``inputs``, in-process: what Triton's answer is compared with."""
    module = load_torchscript(model.torchscript).eval()
    tensors = [torch.from_numpy(np.array(inputs[spec.name])) for spec in model.inputs]
    results = _run(module, tensors, field=f"{model.name} inputs")
    return {spec.name: t.numpy() for spec, t in zip(model.outputs, results, strict=True)}


def demo_model() -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """A small seeded network built in code (nothing downloaded), with a batch of example inputs."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4), torch.nn.Softmax(dim=-1)
    )
    return network.eval(), [torch.randn(2, 16)]
