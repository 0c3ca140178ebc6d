"""What an inference request may ask of a model, checked before Triton sees the request.

Triton 2.51 (the version in nvidia-pytriton 0.7.0 and in the cluster image) parses an HTTP/JSON
request's ``data`` into a buffer sized from the request's *declared* shape before it compares that
shape with the model's config: a request declaring ``[8, 2**40]`` FP32 makes it allocate 32 TiB,
throw ``std::bad_alloc`` and abort (signal 6), taking every model on that server down with it.
Binary-tensor HTTP requests and gRPC requests are shape-checked first and get a 400. Triton 2.51
has no request-size flag of its own (``--http-max-input-size`` came in a later release), so the
serving path checks the declared shapes against the model's config itself: in the client, and in
the gateway in front of the local runtime (``serving/local/gateway.py``).

A request fits when it names exactly the model's inputs, with the configured datatypes, a batch
axis of 1..max_batch_size (where the model batches), every fixed dimension as configured, and in
total at most ``max_request_bytes`` of tensor data (variable axes are bounded by that alone).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferstack.components.request_front import MAX_REQUEST_BYTES
from inferstack.infra.errors import InvalidInput

# The cluster front's cap, so the client, the local gateway and the pods refuse the same requests.
DEFAULT_MAX_REQUEST_BYTES = MAX_REQUEST_BYTES

# Bytes per element of each Triton datatype; BYTES elements are at least their 4-byte length prefix.
ELEMENT_BYTES: Mapping[str, int] = {
    "BOOL": 1,
    "UINT8": 1,
    "INT8": 1,
    "UINT16": 2,
    "INT16": 2,
    "FP16": 2,
    "BF16": 2,
    "UINT32": 4,
    "INT32": 4,
    "FP32": 4,
    "UINT64": 8,
    "INT64": 8,
    "FP64": 8,
    "BYTES": 4,
}


@dataclass(frozen=True)
class InputLimit:
    """One input as the model's config declares it: name, datatype and dims."""

    name: str
    datatype: str  # Triton's name, without TYPE_: FP32
    dims: tuple[int, ...]  # without the batch axis; -1 is variable


@dataclass(frozen=True)
class ModelLimits:
    """What a request to one model may ask: its inputs, batch size and request size."""

    model: str
    inputs: tuple[InputLimit, ...]
    max_batch_size: int  # 0: no batch axis
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "max_batch_size": self.max_batch_size,
            "max_request_bytes": self.max_request_bytes,
            "inputs": [[i.name, i.datatype, list(i.dims)] for i in self.inputs],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelLimits:
        return cls(
            model=str(data["model"]),
            inputs=tuple(
                InputLimit(str(n), str(t), tuple(int(d) for d in dims)) for n, t, dims in data["inputs"]
            ),
            max_batch_size=int(data["max_batch_size"]),
            max_request_bytes=int(data["max_request_bytes"]),
        )


def limits_from_config(
    config: Mapping[str, Any], *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
) -> ModelLimits:
    """Limits from a model config as Triton's HTTP or gRPC API returns it (JSON; dims may be strings)."""
    inputs = tuple(
        InputLimit(
            str(tensor["name"]),
            str(tensor["data_type"]).removeprefix("TYPE_"),
            tuple(int(d) for d in tensor.get("dims", [])),
        )
        for tensor in config.get("input", [])
        if not tensor.get("optional", False)
    )
    return ModelLimits(str(config["name"]), inputs, int(config.get("max_batch_size", 0)), max_request_bytes)


def _shape(value: object) -> list[int] | None:
    if not isinstance(value, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        return None
    return list(value)


def check_request(limits: ModelLimits, tensors: Mapping[str, tuple[str, Sequence[int]]]) -> int:
    """Raise InvalidInput unless ``tensors`` (name -> (datatype, shape)) fit the model; the data bytes.

    The field names the model and input, the value is what the request declared, and ``allowed``
    says what the model's config accepts.
    """
    declared = {i.name: i for i in limits.inputs}
    unknown = sorted(set(tensors) - set(declared))
    missing = sorted(set(declared) - set(tensors))
    if unknown or missing:
        raise InvalidInput(
            f"{limits.model}: inputs", sorted(tensors), f"exactly the inputs {sorted(declared)}"
        )
    total = 0
    for name, (datatype, given_shape) in tensors.items():
        want = declared[name]
        field = f"{limits.model}.{name}"
        if datatype != want.datatype:
            raise InvalidInput(f"{field}.datatype", datatype, want.datatype)
        batched = limits.max_batch_size > 0
        expected = (["1.." + str(limits.max_batch_size)] if batched else []) + [
            "any" if d == -1 else str(d) for d in want.dims
        ]
        allowed = f"shape [{', '.join(expected)}]"
        shape = _shape(given_shape)
        if shape is None or len(shape) != len(want.dims) + batched:
            raise InvalidInput(f"{field}.shape", given_shape, allowed)
        if batched and not 1 <= shape[0] <= limits.max_batch_size:
            raise InvalidInput(f"{field}.shape", shape, allowed)
        if any(d != -1 and d != s for d, s in zip(want.dims, shape[batched:], strict=True)):
            raise InvalidInput(f"{field}.shape", shape, allowed)
        total += math.prod(shape) * ELEMENT_BYTES.get(datatype, 8)
        if total > limits.max_request_bytes:
            raise InvalidInput(
                f"{field}.shape",
                shape,
                f"{allowed} with at most {limits.max_request_bytes} bytes of tensor data per request",
            )
    return total


def write_limits(path: Path, limits: Sequence[ModelLimits]) -> Path:
    path.write_text(json.dumps([m.to_json() for m in limits], indent=1))
    return path


def read_limits(path: Path) -> dict[str, ModelLimits]:
    return {m.model: m for m in (ModelLimits.from_json(item) for item in json.loads(path.read_text()))}
