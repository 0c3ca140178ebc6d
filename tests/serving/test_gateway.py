"""The local gateway against the real Triton: transparent encodings, strict JSON, the admin APIs shut.

Every refusal is a 400/403/404/413 in Triton's own format (``{"error": "..."}``), never a 500, and the
server keeps serving after each one.
"""

from __future__ import annotations

import gzip
import http.client
import json
import subprocess
import zlib
from collections.abc import Mapping
from urllib.parse import urlparse

import pytest

from inferstack.infra.errors import InvalidInput
from inferstack.serving.local.gateway import check_body, inflate, path_refusal
from inferstack.serving.local.runtime import LocalRuntime
from tests.request_cases import LIMITS, demo, tensor
from tests.serving.test_admin_apis import ADMIN_HTTP
from tests.serving.test_faults import infer_ok, ready

pytestmark = pytest.mark.real_server

DEMO = json.dumps(demo([1, 16])).encode()


def call(
    url: str, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request, the path sent as written; status, headers (lower-cased), body."""
    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=60)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        every = {"Content-Type": "application/json", **(headers or {})}
        if body is not None:
            every["Content-Length"] = str(len(body))
        for name, value in every.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def infer(
    url: str, body: bytes, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return call(url, "POST", "/v2/models/demo/infer", body, headers)


def test_curl_gets_plain_json_and_gzip_only_when_it_asks(served: LocalRuntime) -> None:
    for path in ("/v2/models/demo", "/v2/models/demo/config"):
        status, headers, body = call(served.front_url, "GET", path)
        assert status == 200 and "content-encoding" not in headers and json.loads(body)["name"] == "demo"
    plain = infer(served.front_url, DEMO)
    assert plain[0] == 200 and "content-encoding" not in plain[1], plain[1]
    outputs = json.loads(plain[2])["outputs"]
    zipped = infer(served.front_url, DEMO, {"Accept-Encoding": "gzip"})
    assert zipped[1]["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(zipped[2]))["outputs"] == outputs
    # curl itself, as the getting-started page shows it.
    printed = subprocess.run(
        ["curl", "-sS", "-d", DEMO.decode(), f"{served.front_url}/v2/models/demo/infer"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert json.loads(printed)["outputs"] == outputs


def test_compressed_requests_are_served_as_triton_serves_them(served: LocalRuntime) -> None:
    expected = json.loads(infer(served.http_url, DEMO)[2])["outputs"]
    for encoding, packed in (("gzip", gzip.compress(DEMO)), ("deflate", zlib.compress(DEMO))):
        direct = infer(served.http_url, packed, {"Content-Encoding": encoding})
        through = infer(served.front_url, packed, {"Content-Encoding": encoding})
        assert direct[0] == through[0] == 200, (encoding, direct, through)
        assert json.loads(through[2])["outputs"] == json.loads(direct[2])["outputs"] == expected
    # What the gateway cannot inflate, or what inflates past the model's limit, never reaches Triton.
    bomb = gzip.compress(b" " * (80 << 20))
    for headers, body, status in (
        ({"Content-Encoding": "br"}, DEMO, 400),
        ({"Content-Encoding": "gzip"}, b"not gzip at all", 400),
        ({"Content-Encoding": "gzip"}, gzip.compress(DEMO)[:-12], 400),
        ({"Content-Encoding": "gzip"}, bomb, 413),
    ):
        answer = infer(served.front_url, body, headers)
        assert answer[0] == status and json.loads(answer[2])["error"].startswith("refused"), answer
    assert infer_ok(served.front_url)


def nested(depth: int) -> bytes:
    return (
        b'{"inputs":[{"name":"features","datatype":"FP32","shape":[1,16],"data":'
        + b"[" * depth
        + b"]" * depth
        + b"}]}"
    )


def with_data(data: object, datatype: str = "FP32", shape: list[int] | None = None) -> bytes:
    return json.dumps({"inputs": [tensor("features", datatype, shape or [1, 16], data)]}).encode()  # type: ignore[arg-type]


BAD_BODIES = {
    "NaN": DEMO.replace(b"0.25", b"NaN", 1),
    "Infinity": DEMO.replace(b"0.25", b"Infinity", 1),
    "-Infinity": DEMO.replace(b"0.25", b"-Infinity", 1),
    "a number past double": DEMO.replace(b"0.25", b"1e400", 1),
    "a number past FP32": DEMO.replace(b"0.25", b"3.5e38", 1),
    "an integer past FP32": DEMO.replace(b"0.25", b"9" * 40, 1),
    "100,000 levels of nesting": nested(100_000),
    "nesting deeper than the shape": with_data([[[0.25] * 16]]),
    "fewer elements than the shape": with_data([0.25] * 15),
    "more elements than the shape": with_data([0.25] * 17),
    "a string element": with_data(["0.25"] * 16),
    "a boolean element": with_data([True] * 16),
    "a null element": with_data([None] * 16),
    "data that is no list": with_data(0.25),
    "no data": json.dumps({"inputs": [tensor("features", "FP32", [1, 16])]}).encode(),
    "a header that is truncated JSON": DEMO[:-3],
    "JSON that is not UTF-8": b'{"inputs": "\xff"}',
}


@pytest.mark.parametrize("label", BAD_BODIES)
def test_bad_bodies_get_a_400_in_tritons_format_and_triton_keeps_serving(
    served: LocalRuntime, label: str
) -> None:
    status, _, body = infer(served.front_url, BAD_BODIES[label])
    assert status == 400, (status, body[:300])
    message = json.loads(body)["error"]
    assert (
        message.startswith("refused before reaching Triton: ") and "\n" not in message and len(message) < 400
    )
    assert ready(served.http_url)


def test_data_checks_name_the_input_and_what_it_holds() -> None:
    with pytest.raises(
        InvalidInput,
        match=r"'15 elements': not valid for demo.features.data: 16 elements for shape \[1, 16\]",
    ):
        check_body(LIMITS["demo"], with_data([0.25] * 15), None)
    with pytest.raises(InvalidInput, match=r"FP32 elements: a finite number within"):
        check_body(LIMITS["demo"], BAD_BODIES["a number past FP32"], None)
    # Integer types by their own range; a nested form that follows the shape is valid.
    int_limits = LIMITS["ranker"]
    ranker = {
        "inputs": [
            tensor("features", "FP32", [1, 6], [[0.5] * 6]),
            tensor("ids", "INT64", [1, 3], [[1, 2, 3]]),
        ]
    }
    check_body(int_limits, json.dumps(ranker).encode(), None)
    ranker["inputs"][1]["data"] = [[1, 2, 2**63]]
    with pytest.raises(InvalidInput, match=r"INT64 elements: an integer from"):
        check_body(int_limits, json.dumps(ranker).encode(), None)
    assert inflate(zlib.compress(b"x" * 10), "deflate", 10) == b"x" * 10
    with pytest.raises(OverflowError):
        inflate(zlib.compress(b"x" * 11), "deflate", 10)


RAW_TRICKS = [
    ("POST", "/v2/models/../../v2/repository/models/demo/unload"),
    ("POST", "/v2/models/demo/../../repository/models/demo/unload"),
    ("POST", "/v2/%72epository/models/demo/unload"),
    ("POST", "/v2/models/%2e%2e/%2e%2e/v2/repository/models/demo/unload"),
    ("POST", "//v2/repository/models/demo/unload"),
    ("POST", "/v2//repository/models/demo/unload"),
    ("POST", "/v2/./repository/models/demo/unload"),
    ("POST", "/v2/repository/../repository/models/demo/unload"),
    ("GET", "/v2/logging?format=json"),
    ("POST", "/v2/models/demo/versions/1/trace/setting"),
    ("POST", "/v2/models/demo\\..\\..\\repository/models/demo/unload"),
]


def test_the_gateway_refuses_every_admin_path_raw_tricks_included(served: LocalRuntime) -> None:
    for headers in ({}, served.admin_headers):
        for method, path in [*ADMIN_HTTP, *RAW_TRICKS]:
            status, _, body = call(
                served.front_url, method, path, b"{}" if method == "POST" else None, headers
            )
            assert status in (400, 403), (method, path, status, body)
            assert json.loads(body)["error"].startswith("refused before reaching Triton"), body
    assert ready(served.http_url) and infer_ok(served.front_url)
    # Not served, yet not admin: a 404 in the same format. The serving API passes.
    assert path_refusal("/v2/models/demo/generate_stream_raw") is not None
    assert call(served.front_url, "GET", "/metrics")[0] == 404
    for path in ("/v2", "/v2/health/live", "/v2/models/stats", "/v2/models/demo/versions/1/ready"):
        assert call(served.front_url, "GET", path)[0] == 200, path


def test_the_replicas_own_port_keeps_the_admin_apis_locked_to_the_printed_key(served: LocalRuntime) -> None:
    assert call(served.http_url, "GET", "/v2/logging")[0] == 403
    status, _, body = call(served.http_url, "GET", "/v2/logging", None, served.admin_headers)
    assert status == 200 and "log_info" in json.loads(body)
