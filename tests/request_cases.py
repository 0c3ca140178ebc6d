"""Inference requests, hostile and valid, that both writings of the request rule must answer alike.

The rule is written twice: in Python (``serving/client/limits.py`` behind ``serving/local/gateway.py``'s
``check_body``, the local runtime's front) and in njs (``components/request_front.js``, the cluster's).
This one table drives both: ``tests/serving/test_limits.py`` runs it through ``check_body``, and
``tests/serving/test_request_front.py`` sends it through the real nginx and njs to the real Triton,
which serves these three models (``tests/serving/conftest.py``). A refused case names the field the
refusal names; a valid one is a complete request that Triton answers with 200.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from inferstack.serving.client.limits import InputLimit, ModelLimits

# As Triton reports the configs of tests/serving/conftest.py's models (a real-server test checks it).
LIMITS = {
    "demo": ModelLimits("demo", (InputLimit("features", "FP32", (16,)),), max_batch_size=8),
    "ranker": ModelLimits(
        "ranker", (InputLimit("features", "FP32", (6,)), InputLimit("ids", "INT64", (3,))), max_batch_size=16
    ),
    "sequence": ModelLimits("sequence", (InputLimit("tokens", "FP32", (-1, 4)),), max_batch_size=16),
}
HUGE = 2**40  # [8, 2**40] FP32 is the 32 TiB that aborts Triton 2.51


@dataclass(frozen=True)
class RequestCase:
    label: str
    model: str
    header: object  # the JSON request, or its header when ``binary`` follows it
    refused: str | None = None  # the field a refusal names; None: valid
    binary: bytes | None = None  # tensor data after the JSON header (binary-tensor extension)
    raw: bytes | None = None  # a body that is not JSON at all
    header_length: str | None = None  # Inference-Header-Content-Length, when not the header's own

    def body(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps(self.header).encode() + (self.binary or b"")

    def inference_header_length(self) -> str | None:
        if self.header_length is not None:
            return self.header_length
        return str(len(json.dumps(self.header).encode())) if self.binary is not None else None


def tensor(name: str, datatype: str, shape: list[object], data: list[object] | None = None) -> dict[str, Any]:
    declared: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    if data is not None:
        declared["data"] = data
    return declared


def binary_tensor(name: str, datatype: str, shape: list[int], size: int) -> dict[str, Any]:
    return {**tensor(name, datatype, list(shape)), "parameters": {"binary_data_size": size}}


def demo(shape: list[object], datatype: str = "FP32", data_len: int = 16) -> dict[str, Any]:
    return {"inputs": [tensor("features", datatype, shape, [0.25] * data_len)]}


def ranker(features: list[object], ids: list[object], ids_type: str = "INT64") -> dict[str, Any]:
    rows = features[0] if isinstance(features[0], int) and features[0] < 64 else 1
    return {
        "inputs": [
            tensor("features", "FP32", features, [0.5] * (6 * rows)),
            tensor("ids", ids_type, ids, [1, 2, 3] * rows),
        ]
    }


def sequence(shape: list[object]) -> dict[str, Any]:
    elements = 1
    for d in shape:
        elements *= d if isinstance(d, int) and d < 64 else 1
    return {"inputs": [tensor("tokens", "FP32", shape, [0.125] * elements)]}


def header_length(label: str, length: str) -> RequestCase:
    """A binary-tensor request for demo whose Inference-Header-Content-Length says ``length``."""
    header = demo([1, 16])
    return RequestCase(
        label, "demo", header, "Inference-Header-Content-Length", binary=b"", header_length=length
    )


VALID = [
    RequestCase("one row", "demo", demo([1, 16])),
    RequestCase("the largest batch", "demo", demo([8, 16], data_len=128)),
    RequestCase(
        "binary tensors",
        "demo",
        {"inputs": [binary_tensor("features", "FP32", [2, 16], 128)]},
        binary=b"\0" * 128,
    ),
    RequestCase("two inputs of two datatypes", "ranker", ranker([2, 6], [2, 3])),
    RequestCase("a variable axis", "sequence", sequence([1, 5, 4])),
    RequestCase(
        "a variable axis, binary",
        "sequence",
        {"inputs": [binary_tensor("tokens", "FP32", [2, 3, 4], 96)]},
        binary=b"\0" * 96,
    ),
]

REFUSED = [
    RequestCase("the crashing request", "demo", demo([8, HUGE]), "demo.features.shape"),
    RequestCase(
        "the crashing request, binary",
        "demo",
        {"inputs": [binary_tensor("features", "FP32", [8, HUGE], 64)]},
        "demo.features.shape",
        binary=b"\0" * 64,
    ),
    RequestCase("a batch over max_batch_size", "demo", demo([9, 16], data_len=144), "demo.features.shape"),
    RequestCase("an empty batch", "demo", demo([0, 16], data_len=0), "demo.features.shape"),
    RequestCase("a fixed dimension changed", "demo", demo([1, 17], data_len=17), "demo.features.shape"),
    RequestCase("an extra axis", "demo", demo([1, 16, 1]), "demo.features.shape"),
    RequestCase("no batch axis", "demo", demo([16]), "demo.features.shape"),
    RequestCase("a negative dimension", "demo", demo([-1, 16]), "demo.features.shape"),
    RequestCase("a shape that is a string", "demo", demo(["1,16"]), "demo.features.shape"),
    RequestCase("a boolean dimension", "demo", demo([True, 16]), "demo.features.shape"),
    RequestCase("another datatype", "demo", demo([1, 16], "FP64"), "demo.features.datatype"),
    RequestCase("no inputs", "demo", {"inputs": []}, "demo: inputs"),
    RequestCase(
        "an input the model lacks",
        "demo",
        {"inputs": [*demo([1, 16])["inputs"], tensor("extra", "FP32", [1, 1], [0.0])]},
        "demo: inputs",
    ),
    RequestCase("one input twice", "demo", {"inputs": demo([1, 16])["inputs"] * 2}, "inputs"),
    RequestCase("inputs that are not a list", "demo", {"inputs": 3}, "inputs"),
    RequestCase(
        "an input without a name", "demo", {"inputs": [{"datatype": "FP32", "shape": [1, 16]}]}, "inputs"
    ),
    RequestCase("a body that is not JSON", "demo", None, "request body", raw=b"x" * 100),
    RequestCase("a JSON body that is not an object", "demo", [1, 2], "request body"),
    header_length("a header length past the body", "99999"),
    header_length("a header length that is no number", "12a"),
    RequestCase("the second input hostile", "ranker", ranker([1, 6], [1, HUGE]), "ranker.ids.shape"),
    RequestCase(
        "the second input's datatype", "ranker", ranker([1, 6], [1, 3], "INT32"), "ranker.ids.datatype"
    ),
    RequestCase(
        "a variable axis past the byte limit", "sequence", sequence([1, HUGE, 4]), "sequence.tokens.shape"
    ),
    RequestCase(
        "a batch of variable axes past the byte limit",
        "sequence",
        sequence([16, 2**20, 4]),
        "sequence.tokens.shape",
    ),
]

CASES = VALID + REFUSED
