"""The Triton client against a real server: failover across endpoints, timeouts, request errors."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import pytest

from inferstack.infra.errors import InvalidInput
from inferstack.serving.client.client import (
    Protocol,
    TritonClient,
    TritonRequestError,
    TritonUnavailable,
)
from inferstack.serving.local.processes import free_port
from inferstack.serving.local.runtime import LocalRuntime

pytestmark = pytest.mark.real_server


PeerKind = Literal["refuses", "closes", "garbage", "silent", "unready"]


@contextlib.contextmanager
def peer(kind: PeerKind) -> Iterator[str]:
    """A loopback endpoint that is not a working Triton: what a dead, restarting or wrong replica looks like.

    refuses: nothing listens; closes: accepts and hangs up; garbage: answers with bytes that are not
    HTTP/2 or HTTP/1.1; silent: accepts and never answers; unready: an HTTP server answering 503.
    """
    if kind == "refuses":
        yield f"127.0.0.1:{free_port()}"
        return
    stop = threading.Event()

    def handle(connection: socket.socket) -> None:
        with connection:
            connection.settimeout(0.2)
            while not stop.is_set():
                if kind == "closes":
                    return
                try:
                    request = connection.recv(65536)
                except TimeoutError:
                    continue
                if not request:
                    return
                if kind == "garbage":
                    connection.sendall(b"garbage garbage\r\n\r\n")
                    return
                connection.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")

    def accept(server: socket.socket) -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(connection,), daemon=True).start()

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        server.settimeout(0.2)
        thread = threading.Thread(target=accept, args=(server,), daemon=True)
        if kind != "silent":  # silent: the kernel completes the handshake, nobody ever reads
            thread.start()
        try:
            yield f"127.0.0.1:{server.getsockname()[1]}"
        finally:
            stop.set()
            if thread.is_alive():
                thread.join(timeout=5)


def live_url(runtime: LocalRuntime, protocol: Protocol) -> str:
    return runtime.http_url if protocol == "http" else runtime.grpc_url


@contextlib.contextmanager
def broken_first(
    kind: PeerKind, runtime: LocalRuntime, protocol: Protocol, timeout_s: float = 10.0
) -> Iterator[tuple[str, TritonClient]]:
    """A client given a broken endpoint of ``kind`` first and ``runtime`` second; yields both."""
    with (
        peer(kind) as broken,
        TritonClient([broken, live_url(runtime, protocol)], protocol=protocol, timeout_s=timeout_s) as client,
    ):
        yield broken, client


def demo_inputs() -> dict[str, np.ndarray[Any, np.dtype[np.float32]]]:
    return {"features": np.ones((1, 16), dtype=np.float32)}


@pytest.mark.parametrize(
    ("protocol", "kind"),
    [
        *((p, k) for p in ("http", "grpc") for k in ("refuses", "closes", "garbage")),
        ("http", "unready"),
    ],
)
def test_a_broken_endpoint_is_skipped(served: LocalRuntime, protocol: Protocol, kind: PeerKind) -> None:
    with broken_first(kind, served, protocol) as (_, client):
        assert client.is_ready() and client.is_ready("demo")
        answer = client.infer("demo", demo_inputs())
    assert answer["probabilities"].shape == (1, 4)
    np.testing.assert_allclose(answer["probabilities"].sum(), 1.0, atol=1e-5)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_after_a_failover_calls_start_at_the_endpoint_that_answered(
    served: LocalRuntime, protocol: Protocol
) -> None:
    inputs = demo_inputs()
    with broken_first("silent", served, protocol, timeout_s=1.5) as (_, client):
        start = time.monotonic()
        client.infer("demo", inputs)
        first = time.monotonic() - start
        start = time.monotonic()
        for _ in range(3):
            client.infer("demo", inputs)
        later = time.monotonic() - start
    assert first >= 1.4, "the silent endpoint should have cost one timeout"
    assert later < 1.4, f"three calls took {later:.1f} s: the silent endpoint was tried again"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_one_round_trip_per_infer_the_config_read_once_per_model(
    served: LocalRuntime, protocol: Protocol, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TritonClient(live_url(served, protocol), protocol=protocol) as client:
        calls: list[str] = []
        real = client._call
        monkeypatch.setattr(
            client, "_call", lambda what, call, **kw: calls.append(what) or real(what, call, **kw)
        )
        for batch in (1, 2, 3):
            answer = client.infer("demo", {"features": np.ones((batch, 16), dtype=np.float32)})
            assert answer["probabilities"].shape == (batch, 4)
    assert calls == ["config of demo"] + ["inference on demo"] * 3


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_no_live_endpoint_fails_fast_and_names_them(protocol: Protocol) -> None:
    with contextlib.ExitStack() as peers:
        broken = [peers.enter_context(peer(kind)) for kind in ("refuses", "closes", "garbage")]
        start = time.monotonic()
        with (
            TritonClient(broken, protocol=protocol, timeout_s=2) as client,
            pytest.raises(TritonUnavailable) as caught,
        ):
            client.model_metadata("demo")
        assert not client.is_ready()
    assert time.monotonic() - start < 10
    assert all(endpoint in str(caught.value) for endpoint in broken)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_bad_request_is_not_retried_elsewhere(served: LocalRuntime, protocol: Protocol) -> None:
    live = live_url(served, protocol)
    with TritonClient([live, live], protocol=protocol) as client:
        with pytest.raises(TritonRequestError) as caught:  # the server's own refusal
            client.infer("no-such-model", demo_inputs())
        assert "no-such-model" in str(caught.value) and client.retries == 0
        with pytest.raises(InvalidInput) as refused:  # refused before sending: the config says so
            client.infer("demo", {"wrong_name": np.ones((1, 16), dtype=np.float32)})
        assert "wrong_name" in str(refused.value) and "features" in refused.value.allowed


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


@pytest.mark.parametrize(
    "url",
    [
        "",
        "localhost",
        "http://",
        "ftp://h:1",
        "h:0",
        "h:99999",
        "h:port",
        "http://h:1/v2",
        "http://u@h:1",
        "h:1?x",
    ],
)
def test_endpoints_are_parsed_as_urls(url: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        TritonClient(["127.0.0.1:8000", url])
    assert caught.value.field == "urls" and repr(url) in str(caught.value)


def test_endpoint_forms() -> None:
    client = TritonClient(["127.0.0.1:8000", "http://localhost:8001/", "[::1]:8002"])
    assert client.endpoints == ["127.0.0.1:8000", "localhost:8001", "[::1]:8002"]
    assert TritonClient(["127.0.0.1:8001", "grpc://[::1]:8002"], protocol="grpc").endpoints[1] == "[::1]:8002"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_failed_endpoint_is_tried_last_until_its_back_off_ends(
    served: LocalRuntime, protocol: Protocol
) -> None:
    inputs = demo_inputs()
    with broken_first("refuses", served, protocol) as (dead, client):
        for _ in range(6):
            client.infer("demo", inputs)
        assert client.retries == 1, "the dead endpoint was tried again inside its back-off"
        client._down[dead] = (0.0, client._down[dead][1])  # its back-off is over: probed, still dead
        client.infer("demo", inputs)
        client.infer("demo", inputs)
        assert client.retries == 1, "a failed readiness probe should spare the request"
        assert client._down[dead][1] == 4.0, "the back-off doubles"


def test_the_urls_scheme_picks_the_protocol() -> None:
    assert TritonClient("grpc://127.0.0.1:8001").protocol == "grpc"
    assert TritonClient(["grpc://a:1", "grpc://b:1"]).protocol == "grpc"
    assert TritonClient("http://127.0.0.1:8000").protocol == "http"
    assert TritonClient("127.0.0.1:8001", protocol="grpc").protocol == "grpc"
    for urls, protocol in ((["grpc://127.0.0.1:8001"], "http"), (["http://a:1", "grpc://b:1"], None)):
        with pytest.raises(InvalidInput) as caught:
            TritonClient(urls, protocol=protocol)  # type: ignore[arg-type]
        assert caught.value.field == "urls"
