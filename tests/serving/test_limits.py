"""Request limits: what a request may declare, checked against the model's config before Triton sees it."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferstack.infra.errors import InvalidInput
from inferstack.serving.client.limits import (
    InputLimit,
    ModelLimits,
    check_request,
    limits_from_config,
    read_limits,
    write_limits,
)
from inferstack.serving.local.gateway import check_body
from tests.request_cases import CASES, LIMITS, RequestCase

RANKER = ModelLimits(
    "ranker",
    (InputLimit("features", "FP32", (6,)), InputLimit("ids", "INT64", (-1,))),
    max_batch_size=16,
    max_request_bytes=1 << 20,
)


def test_a_request_that_fits_returns_its_data_size() -> None:
    assert (
        check_request(RANKER, {"features": ("FP32", [4, 6]), "ids": ("INT64", [4, 3])})
        == 4 * 6 * 4 + 4 * 3 * 8
    )


@pytest.mark.parametrize(
    ("tensors", "field", "fragment"),
    [
        # the request that aborts Triton 2.51 over HTTP/JSON: 8 x 2**40 FP32 is 32 TiB
        ({"features": ("FP32", [8, 2**40]), "ids": ("INT64", [8, 1])}, "ranker.features.shape", "[1..16, 6]"),
        ({"features": ("FP32", [17, 6]), "ids": ("INT64", [17, 1])}, "ranker.features.shape", "1..16"),
        ({"features": ("FP32", [0, 6]), "ids": ("INT64", [0, 1])}, "ranker.features.shape", "1..16"),
        ({"features": ("FP32", [2, 6, 1]), "ids": ("INT64", [2, 1])}, "ranker.features.shape", "[1..16, 6]"),
        ({"features": ("FP32", [2, -6]), "ids": ("INT64", [2, 1])}, "ranker.features.shape", "[1..16, 6]"),
        ({"features": ("FP32", "2,6"), "ids": ("INT64", [2, 1])}, "ranker.features.shape", "[1..16, 6]"),
        ({"features": ("FP64", [2, 6]), "ids": ("INT64", [2, 1])}, "ranker.features.datatype", "FP32"),
        ({"features": ("FP32", [2, 6])}, "ranker: inputs", "'ids'"),
        (
            {"features": ("FP32", [2, 6]), "ids": ("INT64", [2, 1]), "x": ("FP32", [1])},
            "ranker: inputs",
            "exactly",
        ),
        # a variable axis is bounded only by the byte limit: 16 x 2**20 INT64 is 128 MiB
        ({"features": ("FP32", [16, 6]), "ids": ("INT64", [16, 2**20])}, "ranker.ids.shape", "1048576 bytes"),
    ],
)
def test_requests_that_do_not_fit_name_the_input(tensors: dict, field: str, fragment: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidInput) as caught:
        check_request(RANKER, tensors)
    assert caught.value.field == field and fragment in str(caught.value)


def test_a_model_without_a_batch_axis_takes_its_dims_as_they_are() -> None:
    flat = ModelLimits("flat", (InputLimit("x", "FP32", (3, -1)),), max_batch_size=0)
    assert check_request(flat, {"x": ("FP32", [3, 5])}) == 60
    with pytest.raises(InvalidInput, match=r"shape \[3, any\]"):
        check_request(flat, {"x": ("FP32", [1, 3, 5])})


def test_limits_from_the_config_triton_serves_and_back_through_a_file(tmp_path: Path) -> None:
    # As Triton's HTTP API returns it; gRPC's JSON has the int64 dims as strings.
    config = {
        "name": "ranker",
        "max_batch_size": 16,
        "input": [
            {"name": "features", "data_type": "TYPE_FP32", "dims": ["6"]},
            {"name": "ids", "data_type": "TYPE_INT64", "dims": [-1]},
            {"name": "mask", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
        ],
    }
    assert limits_from_config(config, max_request_bytes=1 << 20) == RANKER
    path = write_limits(tmp_path / "limits.json", [RANKER])
    assert read_limits(path) == {"ranker": RANKER}


def test_the_gateway_reads_json_and_binary_request_headers() -> None:
    header = (
        b'{"inputs":[{"name":"features","datatype":"FP32","shape":[8,1099511627776]},'
        b'{"name":"ids","datatype":"INT64","shape":[8,1]}]}'
    )
    for body, length in ((header, None), (header + b"\0" * 64, str(len(header)))):
        with pytest.raises(InvalidInput, match=r"ranker\.features\.shape"):
            check_body(RANKER, body, length)
    ok = (
        b'{"inputs":[{"name":"features","datatype":"FP32","shape":[1,6],"parameters":{"binary_data_size":24}},'
        b'{"name":"ids","datatype":"INT64","shape":[1,1],"parameters":{"binary_data_size":8}}]}'
    )
    check_body(RANKER, ok + b"\0" * 32, str(len(ok)))
    for body, length, field in (
        (b"not json", None, "request body"),
        (b"[1]", None, "request body"),
        (b'{"inputs": 3}', None, "inputs"),
        (ok, "999999", "Inference-Header-Content-Length"),
    ):
        with pytest.raises(InvalidInput) as caught:
            check_body(RANKER, body, length)
        assert caught.value.field == field


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.label)
def test_the_shared_request_cases_through_the_python_rule(case: RequestCase) -> None:
    """The table the cluster's njs front is tested with (tests/serving/test_request_front.py), here."""
    body, length = case.body(), case.inference_header_length()
    if case.refused is None:
        check_body(LIMITS[case.model], body, length)
        return
    with pytest.raises(InvalidInput) as caught:
        check_body(LIMITS[case.model], body, length)
    assert caught.value.field == case.refused
