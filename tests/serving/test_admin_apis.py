"""Triton's admin APIs locked, for real: Triton 2.51 started with the very restriction flags that
TritonModelService gives its pods (the key put in as the kubelet expands ``$(VAR)`` from the
container's env), and the pod's request front (Debian's nginx and njs) in front of it.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from urllib.parse import urlparse

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from inferstack.components.model_service import (
    ADMIN_KEY_HEADER,
    GRPC_ADMIN_KEY_HEADER,
    ModelSource,
    TritonModelServiceArgs,
)
from inferstack.components.model_service.pod import ADMIN_KEY_ENV, triton_args
from inferstack.serving.local.demo import build_demo_repository
from inferstack.serving.local.request_front import running_front
from inferstack.serving.local.runtime import LocalRuntime
from tests.serving.test_faults import infer_ok, ready

pytestmark = pytest.mark.real_server

KEY = secrets.token_hex(16)  # letters and digits, as the service's generated key
POD = TritonModelServiceArgs(
    models=["demo"], source=ModelSource(role_arn="arn:aws:iam::1:role/r", repository_uri="s3://b/p"), zones=3
)
REFUSED_BY_TRITON = f"This API is restricted, expecting header '{ADMIN_KEY_HEADER}'"
REFUSED_OVER_GRPC = f"This protocol is restricted, expecting header '{GRPC_ADMIN_KEY_HEADER}'"
# (method, path) of every admin API over HTTP, as Triton 2.51 routes them.
ADMIN_HTTP = [
    ("POST", "/v2/repository/index"),
    ("POST", "/v2/repository/models/demo/unload"),
    ("POST", "/v2/repository/models/demo/load"),
    ("GET", "/v2/systemsharedmemory/status"),
    ("POST", "/v2/systemsharedmemory/region/r/register"),
    ("GET", "/v2/cudasharedmemory/status"),
    ("GET", "/v2/trace/setting"),
    ("POST", "/v2/models/demo/trace/setting"),
    ("GET", "/v2/logging"),
    ("POST", "/v2/logging"),
]


def kubelet_expand(arg: str, env: Mapping[str, str]) -> str:
    """``$(VAR)`` in a container's args as the kubelet expands it: names the env defines, others kept."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), arg)


def pod_restriction_flags() -> list[str]:
    built = [a for a in triton_args(POD, "s3://b/p") if isinstance(a, str) and "-restricted-" in a]
    assert [f.split("=", 1)[0] for f in built] == ["--http-restricted-api", "--grpc-restricted-protocol"]
    return [kubelet_expand(flag, {ADMIN_KEY_ENV: KEY}) for flag in built]


def call(url: str, method: str, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """One request with the path sent as written (no client-side normalisation)."""
    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=60)
    try:
        body = b"{}" if method == "POST" else None
        connection.request(
            method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory, triton_present: None) -> Iterator[LocalRuntime]:
    repository = build_demo_repository(tmp_path_factory.mktemp("repository"))
    # The local runtime locks its Tritons with the pod's very flags; here with this test's key.
    with LocalRuntime(repository, work_dir=tmp_path_factory.mktemp("locked"), admin_key=KEY) as runtime:
        argv = runtime.children[1].argv
        assert [a for a in argv if "-restricted-" in a] == pod_restriction_flags(), argv
        yield runtime


Metadata = Sequence[tuple[str, str]]


def grpc_admin_calls(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> dict[str, Callable[[Metadata], object]]:
    """Each admin RPC with an empty or harmless request: name -> bound call taking metadata."""
    return {
        "RepositoryIndex": lambda md: stub.RepositoryIndex(
            service_pb2.RepositoryIndexRequest(), metadata=md, timeout=30
        ),
        "RepositoryModelUnload": lambda md: stub.RepositoryModelUnload(
            service_pb2.RepositoryModelUnloadRequest(model_name="demo"), metadata=md, timeout=60
        ),
        "SystemSharedMemoryStatus": lambda md: stub.SystemSharedMemoryStatus(
            service_pb2.SystemSharedMemoryStatusRequest(), metadata=md, timeout=30
        ),
        "CudaSharedMemoryStatus": lambda md: stub.CudaSharedMemoryStatus(
            service_pb2.CudaSharedMemoryStatusRequest(), metadata=md, timeout=30
        ),
        "TraceSetting": lambda md: stub.TraceSetting(
            service_pb2.TraceSettingRequest(), metadata=md, timeout=30
        ),
        "LogSettings": lambda md: stub.LogSettings(service_pb2.LogSettingsRequest(), metadata=md, timeout=30),
    }


def test_without_the_key_every_admin_api_is_refused_on_both_protocols_and_the_model_serves(
    locked: LocalRuntime,
) -> None:
    for headers in ({}, {ADMIN_KEY_HEADER: "not-" + KEY}):
        for method, path in ADMIN_HTTP:
            status, body = call(locked.http_url, method, path, headers)
            assert (status, json.loads(body)["error"]) == (403, REFUSED_BY_TRITON), (method, path, headers)
    with grpc.insecure_channel(locked.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        # The HTTP header's name is not the gRPC one: the key under it opens nothing.
        for metadata in ((), ((GRPC_ADMIN_KEY_HEADER, "not-" + KEY),), ((ADMIN_KEY_HEADER, KEY),)):
            for name, rpc in grpc_admin_calls(stub).items():
                with pytest.raises(grpc.RpcError) as caught:
                    rpc(metadata)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, name
                assert caught.value.details() == REFUSED_OVER_GRPC, name
        # What is not admin stays open: readiness, metadata, statistics, inference.
        assert stub.ModelReady(service_pb2.ModelReadyRequest(name="demo"), timeout=10).ready
    assert call(locked.http_url, "GET", "/v2/models/demo/stats")[0] == 200
    assert ready(locked.http_url) and infer_ok(locked.http_url)
    assert locked.work_dir is not None and KEY not in (locked.work_dir / "triton-0.log").read_text()


def test_with_the_key_an_operator_unloads_and_loads_over_http_and_grpc(locked: LocalRuntime) -> None:
    header = {ADMIN_KEY_HEADER: KEY}
    assert call(locked.http_url, "POST", "/v2/repository/models/demo/unload", header)[0] == 200
    assert not ready(locked.http_url)
    assert call(locked.http_url, "POST", "/v2/repository/models/demo/load", header)[0] == 200
    assert ready(locked.http_url)
    with grpc.insecure_channel(locked.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        metadata = ((GRPC_ADMIN_KEY_HEADER, KEY),)
        stub.RepositoryModelUnload(
            service_pb2.RepositoryModelUnloadRequest(model_name="demo"), metadata=metadata, timeout=60
        )
        assert not ready(locked.http_url)
        stub.RepositoryModelLoad(
            service_pb2.RepositoryModelLoadRequest(model_name="demo"), metadata=metadata, timeout=120
        )
        index = stub.RepositoryIndex(
            service_pb2.RepositoryIndexRequest(ready=True), metadata=metadata, timeout=30
        )
        assert [m.name for m in index.models] == ["demo"]
    assert ready(locked.http_url) and infer_ok(locked.http_url)


def test_the_front_answers_the_admin_paths_itself_key_or_no_key(locked: LocalRuntime) -> None:
    with running_front(locked.http_url) as running:
        front = running.url
        # Triton routes the raw path: /v2/repository/../index is its repository index.
        raw = [("POST", "/v2/repository/../index"), ("GET", "/v2/logging?format=json")]
        for headers in ({}, {ADMIN_KEY_HEADER: KEY}):
            for method, path in [*ADMIN_HTTP, *raw]:
                status, body = call(front, method, path, headers)
                assert status == 403, (method, path, body)
                assert "not served through the request front" in json.loads(body)["error"]
        assert KEY not in (running.folder / "nginx.log").read_text()
        for path in ("/v2/models/demo/ready", "/v2/models/demo/config", "/v2/models/demo/stats"):
            assert call(front, "GET", path)[0] == 200, path
        assert infer_ok(front)
    assert ready(locked.http_url)
