"""config.pbtxt: generated from a model's real inputs and outputs, parsed back into Triton's own
``ModelConfig`` protobuf and checked for what the schema cannot say."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from inferstack.infra.errors import InvalidInput
from inferstack.serving.models.specs import (
    DTYPES,
    MAX_BATCH_SIZE,
    PYTHON_TARGET_DTYPES,
    PYTHON_TORCH_THREADS,
    TARGETS,
    AllVersions,
    LatestVersions,
    ModelOptions,
    SpecificVersions,
    Target,
    TensorSpec,
    check_integer,
    check_name,
)
from inferstack.serving.models.tuning import default_instance_count


def check_options(options: ModelOptions, target: Target) -> None:
    """Options as the caller gave them, checked with the caller's field names."""
    if target not in TARGETS:
        raise InvalidInput("target", target, f"one of {', '.join(TARGETS)}")
    max_batch = check_integer(options.max_batch_size, "max_batch_size", minimum=0, note=" (0: no batch axis)")
    if max_batch > MAX_BATCH_SIZE:
        raise InvalidInput("max_batch_size", max_batch, f"0 to {MAX_BATCH_SIZE} (0: no batch axis)")
    if options.instance_kind not in ("KIND_GPU", "KIND_CPU"):
        raise InvalidInput("instance_kind", options.instance_kind, "KIND_GPU or KIND_CPU")
    if options.instance_count is not None:
        check_integer(options.instance_count, "instance_count", minimum=1, note=" or None")
    if options.torch_threads is not None:
        check_integer(options.torch_threads, "torch_threads", minimum=1, note=" or None")
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
        check_integer(batching.max_queue_delay_us, "dynamic_batching.max_queue_delay_us", minimum=0)
        if batching.max_queue_size is not None:
            check_integer(
                batching.max_queue_size, "dynamic_batching.max_queue_size", minimum=1, note=" or None"
            )
        if batching.queue_timeout_us is not None:
            check_integer(
                batching.queue_timeout_us, "dynamic_batching.queue_timeout_us", minimum=1, note=" or None"
            )
    match options.version_policy:
        case LatestVersions(count=count):
            check_integer(count, "version_policy.count", minimum=1)
        case SpecificVersions(versions=versions):
            if not versions:
                raise InvalidInput("version_policy.versions", list(versions), "one or more versions")
            for version in versions:
                check_integer(version, "version_policy.versions", minimum=1)
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
    count = options.instance_count
    if count is None:
        count = default_instance_count(options.instance_kind, target)
    config.instance_group.add(kind=mc.ModelInstanceGroup.Kind.Value(options.instance_kind), count=count)
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


def dtype_name(enum_value: int) -> str:
    return str(mc.DataType.Name(enum_value)).removeprefix("TYPE_")
