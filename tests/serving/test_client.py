"""The Triton client against a real server: failover across endpoints, timeouts, request errors."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from inferstack.infra.errors import InvalidInput
from inferstack.serving.client import TritonClient, TritonRequestError, TritonUnavailable
from inferstack.serving.local import LocalRuntime, free_port

pytestmark = pytest.mark.real_server


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_dead_endpoint_is_skipped(served: LocalRuntime, protocol: str) -> None:
    live = served.http_url if protocol == "http" else served.grpc_url
    dead = f"127.0.0.1:{free_port()}"
    with TritonClient([dead, live], protocol=protocol, timeout_s=5) as client:  # type: ignore[arg-type]
        assert client.is_ready()
        answer = client.infer("demo", {"features": np.ones((1, 16), dtype=np.float32)})
    assert answer["probabilities"].shape == (1, 4)
    np.testing.assert_allclose(answer["probabilities"].sum(), 1.0, atol=1e-5)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_no_live_endpoint_fails_fast_and_names_them(protocol: str) -> None:
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    start = time.monotonic()
    with (
        TritonClient(dead, protocol=protocol, timeout_s=2) as client,
        pytest.raises(TritonUnavailable) as caught,
    ):  # type: ignore[arg-type]
        client.model_metadata("demo")
    assert time.monotonic() - start < 10
    assert all(d in str(caught.value) for d in dead)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_bad_request_is_not_retried_elsewhere(served: LocalRuntime, protocol: str) -> None:
    live = served.http_url if protocol == "http" else served.grpc_url
    with TritonClient([live, live], protocol=protocol) as client, pytest.raises(TritonRequestError) as caught:  # type: ignore[arg-type]
        client.infer("demo", {"wrong_name": np.ones((1, 16), dtype=np.float32)})
    assert "wrong_name" in str(caught.value) or "features" in str(caught.value)


def test_wait_until_ready_times_out_with_progress() -> None:
    seen: list[float] = []
    with TritonClient(f"127.0.0.1:{free_port()}", timeout_s=1) as client:
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="not ready after"):
            client.wait_until_ready(1.5, progress=seen.append, interval_s=0.2)
    assert time.monotonic() - start < 6
    assert seen and seen == sorted(seen)


def test_a_server_that_never_answers_hits_the_call_timeout() -> None:
    # A socket that accepts connections and never replies: only the client's timeout ends the call.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"127.0.0.1:{silent.getsockname()[1]}"
        for protocol in ("http", "grpc"):
            start = time.monotonic()
            with TritonClient(url, protocol=protocol, timeout_s=1.5) as client:  # type: ignore[arg-type]
                assert not client.is_ready()
            assert time.monotonic() - start < 8, protocol


def test_bad_arguments() -> None:
    for kwargs, field in (
        ({"urls": []}, "urls"),
        ({"urls": "x:1", "protocol": "ftp"}, "protocol"),
        ({"urls": "x:1", "timeout_s": 0}, "timeout_s"),
    ):
        with pytest.raises(InvalidInput) as caught:
            TritonClient(**kwargs)  # type: ignore[arg-type]
        assert caught.value.field == field
