"""A Triton model repository built from a PyTorch model.

torch module (or TorchScript file) + example inputs -> TorchScript ``model.pt`` -> ``config.pbtxt``
(``config.py``) -> files on disk. Everything is validated before anything is written, so bad input
leaves the repository untouched.

Two targets: ``pytorch_libtorch`` (what the cluster's GPU Triton image serves) and ``python`` (the
same TorchScript run by Triton's python backend through ``model.py``: what the CPU Triton of the
local runtime serves).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from inferstack.infra.errors import InvalidInput
from inferstack.serving.models.config import check_options, model_config, parse_config, render_config
from inferstack.serving.models.export import (
    check_batch_axis,
    check_examples,
    check_libtorch_binding,
    eval_mode,
    export_torchscript,
    probe,
    run_model,
    spec_of,
    tensor_names,
)
from inferstack.serving.models.precision import (
    FULL_PRECISION,
    REPORT_FILE,
    Export,
    PrecisionOptions,
    PrecisionReport,
    check_precision,
    reduce_checked,
)
from inferstack.serving.models.repository import sample_inputs, specs_of, to_torch, versions_served_by
from inferstack.serving.models.specs import (
    CALIBRATION_BATCHES,
    MODEL_FILE,
    NUMPY_DTYPES,
    PYTHON_MODEL_FILE,
    PYTHON_MODEL_SOURCE,
    PYTHON_TARGET_DTYPES,
    TRITON_NAME,
    Array,
    BuiltModel,
    ModelOptions,
    Target,
    TensorSpec,
    check_integer,
    check_name,
)


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
    check_integer(version, "version", minimum=1)
    examples = check_examples(example_inputs, options.max_batch_size)
    batched = options.max_batch_size > 0
    eager = (
        model
        if isinstance(model, torch.nn.Module) and not isinstance(model, torch.jit.ScriptModule)
        else None
    )
    with eval_mode(model):
        if eager is not None:
            # The eager model first: a signature mismatch reads better from forward than from the tracer.
            run_model(eager, examples, field="example_inputs")
        module = export_torchscript(model, examples, export)
        results = run_model(module, examples, field="example_inputs")
        in_names = tensor_names(input_names, len(examples), "INPUT", "input_names")
        out_names = tensor_names(output_names, len(results), "OUTPUT", "output_names")
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
            spec_of(
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
            check_batch_axis(results, examples[0].shape[0], out_names)
        followed = probe(
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
            spec_of(
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
            check_libtorch_binding(
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
    check_integer(version, "version", minimum=1)
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
    generated = sample_inputs(inputs, batch=batch, variable_length=3, seed=0)
    tensors = [to_torch(generated[spec.name], spec) for spec in inputs]
    results = run_model(module, tensors, field="inputs", promise="a declaration matching the model's forward")
    if len(results) != len(outputs):
        raise InvalidInput(
            "outputs", [s.name for s in outputs], f"{len(results)} output(s), as the model returns"
        )
    for spec, tensor in zip(outputs, results, strict=True):
        dtype = TRITON_NAME.get(tensor.dtype, str(tensor.dtype))
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
    followed = probe(
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
        check_libtorch_binding(
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
            sample_inputs(
                specs, batch=max_batch_size if batched else None, variable_length=2 + i % 4, seed=100 + i
            )
            for i in range(CALIBRATION_BATCHES)
        ]
        return [[to_torch(g[spec.name], spec) for spec in specs] for g in generated]
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
        return [[to_torch(arrays[spec.name], spec) for spec in specs]]
    return [
        [to_torch(arrays[spec.name][start : start + max_batch_size], spec) for spec in specs]
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
        module.save(str(version_dir / MODEL_FILE))
        if target == "python":
            shutil.copyfile(PYTHON_MODEL_SOURCE, version_dir / PYTHON_MODEL_FILE)
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
    others = sorted(
        set(versions_served_by(new_config.version_policy, sorted({*present, version}))) - {version}
    )
    if not others or not config_path.is_file():
        return

    def signature(config: Any) -> tuple[Any, ...]:
        tensors = (specs_of(config.input), specs_of(config.output))
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
