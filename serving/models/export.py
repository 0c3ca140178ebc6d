"""TorchScript export, and the model checked against its declared signature by running it (batch axis,
libtorch's argument binding, outputs that agree across batch sizes)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from inferstack.infra.errors import InvalidInput
from inferstack.serving.models.specs import (
    DTYPES,
    PYTHON_TARGET_DTYPES,
    TRITON_NAME,
    Target,
    TensorSpec,
    check_name,
)


def _outputs_of(result: Any, *, field: str) -> tuple[torch.Tensor, ...]:
    items = result if isinstance(result, tuple | list) else (result,)
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise InvalidInput(field, type(result).__name__, "a tensor or a tuple/list of tensors")
    return tuple(items)


def _described(tensors: Sequence[torch.Tensor]) -> list[str]:
    return [f"{TRITON_NAME.get(t.dtype, t.dtype)}{list(t.shape)}" for t in tensors]


def run_model(
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
def eval_mode(model: object) -> Iterator[None]:
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
                # check_trace=False: probe compares the trace with the model on other inputs instead.
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


def check_examples(example_inputs: Sequence[torch.Tensor], max_batch_size: int) -> tuple[torch.Tensor, ...]:
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


def spec_of(
    tensor: torch.Tensor, name: str, *, batched: bool, variable: Sequence[int], field: str, target: Target
) -> TensorSpec:
    if tensor.dtype not in TRITON_NAME:
        supported = ", ".join(f"{dtype} ({name})" for name, dtype in DTYPES.items())
        raise InvalidInput(f"{field}.dtype", str(tensor.dtype), f"one of {supported}")
    dtype = TRITON_NAME[tensor.dtype]
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


def tensor_names(given: Sequence[str] | None, count: int, prefix: str, field: str) -> list[str]:
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


def check_libtorch_binding(
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


def check_batch_axis(results: Sequence[torch.Tensor], batch: int, names: Sequence[str]) -> None:
    for result, name in zip(results, names, strict=True):
        if result.dim() < 2 or result.shape[0] != batch:
            raise InvalidInput(
                f"output {name}",
                list(result.shape),
                f"a leading batch axis of the inputs' batch size ({batch}) and at least one more axis; "
                "a model that does not batch its outputs takes max_batch_size 0",
            )


def probe(
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
        resampled = _resampled(
            tensors, inputs, batched=batched, new_batch=new_batch, new_lengths=new_lengths, seed=seed
        )
        got = run_model(module, resampled, field=field, promise=promise)
        expected = got if eager is None else run_model(eager, resampled, field=field, promise=promise)
        if len(expected) != len(got) or not all(map(_agree, got, expected)):
            raise InvalidInput(
                "model",
                type(eager).__name__,
                "a model whose TorchScript answers as the model does; on inputs "
                f"{_described(resampled)} they differ (a trace records one path through shape- or "
                "data-dependent control flow: try export='script')",
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
            check_batch_axis(got, resampled[0].shape[0], out_names)
        for axes, g, r in zip(changed, got, results, strict=True):
            axes.update(k for k in range(r.dim() - offset) if g.shape[k + offset] != r.shape[k + offset])
    return changed
