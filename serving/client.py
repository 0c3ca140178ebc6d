"""A small typed client for Triton over HTTP or gRPC.

Every call has a timeout. Given several endpoints (the replicas behind a headless Service, say), a
call that cannot reach one endpoint moves on to the next, and later calls start at the endpoint that
last answered, so a dead replica costs one timeout, not one per call. An answer from the server that
says the request itself is wrong is raised at once, since another replica would say the same.

An HTTP client belongs to the thread that first used it (tritonclient.http runs on gevent): use one
``TritonClient`` per thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from inferstack.infra.errors import InvalidInput

Array = npt.NDArray[Any]

Protocol = Literal["http", "grpc"]
# Statuses that say "this endpoint cannot serve now" (down, overloaded, too slow), not "bad request":
# another replica may well answer. gRPC reports a refused connection as UNAVAILABLE too.
_UNREACHABLE_STATUS = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "503")


class TritonUnavailable(RuntimeError):
    """No endpoint answered."""


class TritonRequestError(RuntimeError):
    """The server answered, and refused or failed the request."""


class _NotReady(Exception):
    """An endpoint answered a readiness check with "not yet": ask the next one."""


def _strip_scheme(url: str) -> str:
    for scheme in ("http://", "https://", "grpc://"):
        url = url.removeprefix(scheme)
    return url.rstrip("/")


class TritonClient:
    """Triton's HTTP or gRPC API, over one or more endpoints, with a timeout on every call."""

    def __init__(
        self, urls: str | Sequence[str], *, protocol: Protocol = "http", timeout_s: float = 10.0
    ) -> None:
        endpoints = [urls] if isinstance(urls, str) else list(urls)
        if not endpoints:
            raise InvalidInput("urls", endpoints, "one or more host:port endpoints")
        if protocol not in ("http", "grpc"):
            raise InvalidInput("protocol", protocol, "http or grpc")
        if timeout_s <= 0:
            raise InvalidInput("timeout_s", timeout_s, "a number of seconds > 0")
        self.endpoints = [_strip_scheme(u) for u in endpoints]
        self.protocol = protocol
        self.timeout_s = timeout_s
        self._clients: dict[str, Any] = {}
        self._first = 0  # index of the endpoint that answered last
        self._outputs: dict[str, list[str]] = {}  # output names per model, read once from its metadata

    def _client(self, endpoint: str) -> Any:
        if endpoint not in self._clients:
            if self.protocol == "http":
                import tritonclient.http as httpclient

                self._clients[endpoint] = httpclient.InferenceServerClient(
                    endpoint, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
                )
            else:
                import tritonclient.grpc as grpcclient

                self._clients[endpoint] = grpcclient.InferenceServerClient(endpoint)
        return self._clients[endpoint]

    def _call(self, what: str, call: Callable[[Any], Any]) -> Any:
        """Run ``call`` against each endpoint in turn, starting at the last one that answered."""
        from http.client import HTTPException

        from tritonclient.utils import InferenceServerException

        failures = []
        count = len(self.endpoints)
        for index in (self._first + step for step in range(count)):
            endpoint = self.endpoints[index % count]
            try:
                result = call(self._client(endpoint))
            except InferenceServerException as error:
                if str(error.status()) not in _UNREACHABLE_STATUS:
                    raise TritonRequestError(f"{what} at {endpoint}: {error.message()}") from None
                failures.append(f"{endpoint}: {error.message()}")
                continue
            # Refused, reset or timed-out connections (OSError), peers that close the connection or do
            # not speak HTTP (geventhttpclient's parse errors are HTTPExceptions), replicas not ready.
            except (OSError, HTTPException, _NotReady) as error:
                failures.append(f"{endpoint}: {type(error).__name__}: {error}")
                continue
            self._first = index % count
            return result
        raise TritonUnavailable(f"{what}: no endpoint answered ({'; '.join(failures)})")

    def _kwargs(self) -> dict[str, Any]:
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}

    def is_ready(self, model: str | None = None) -> bool:
        """Whether some endpoint reports the server (or ``model``) ready; later calls start there."""

        def check(client: Any) -> bool:
            if model is None:
                ready = client.is_server_ready(**self._kwargs())
            else:
                ready = client.is_model_ready(model, **self._kwargs())
            if not ready:
                raise _NotReady("not ready")
            return True

        try:
            return bool(self._call("server ready" if model is None else f"model {model} ready", check))
        except (TritonUnavailable, TritonRequestError):
            return False

    def wait_until_ready(
        self,
        timeout_s: float = 60.0,
        *,
        models: Sequence[str] = (),
        progress: Callable[[float], None] | None = None,
        interval_s: float = 0.5,
    ) -> None:
        """Block until the server and ``models`` are ready; TimeoutError after ``timeout_s``.

        Each poll is itself bounded by the client's ``timeout_s``, so against an endpoint that never
        answers the wait can overrun ``timeout_s`` by up to one call timeout.
        """
        start = time.monotonic()
        while True:
            if self.is_ready() and all(self.is_ready(m) for m in models):
                return
            elapsed = time.monotonic() - start
            if elapsed > timeout_s:
                what = ", ".join(["server", *models])
                raise TimeoutError(
                    f"Triton at {', '.join(self.endpoints)} not ready after {timeout_s:.0f} s ({what})"
                )
            if progress:
                progress(elapsed)
            time.sleep(interval_s)

    def model_metadata(self, model: str) -> dict[str, Any]:
        def call(client: Any) -> Any:
            if self.protocol == "grpc":
                return client.get_model_metadata(model, as_json=True, client_timeout=self.timeout_s)
            return client.get_model_metadata(model)

        metadata: dict[str, Any] = self._call(f"metadata of {model}", call)
        return metadata

    def model_config(self, model: str) -> dict[str, Any]:
        def call(client: Any) -> Any:
            if self.protocol == "grpc":
                return client.get_model_config(model, as_json=True, client_timeout=self.timeout_s)["config"]
            return client.get_model_config(model)

        config: dict[str, Any] = self._call(f"config of {model}", call)
        return config

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Array],
        *,
        request_id: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Array]:
        """Run ``model`` on named arrays; returns every output the model declares, by name.

        ``request_id`` appears in Triton's log lines about the request; ``headers`` go with it, e.g. a
        W3C ``traceparent`` (`inferstack.serving.tracing.traceparent`) that makes Triton's spans part
        of the caller's trace.

        The output names come from the model's metadata, read on the first call for that model only,
        so a steady stream of requests costs one round trip each.
        """
        from tritonclient.utils import np_to_triton_dtype

        if self.protocol == "http":
            import tritonclient.http as api
        else:
            import tritonclient.grpc as api

        if model not in self._outputs:
            self._outputs[model] = [o["name"] for o in self.model_metadata(model)["outputs"]]
        outputs = self._outputs[model]

        def call(client: Any) -> dict[str, Array]:
            request = []
            for name, array in inputs.items():
                tensor = api.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
                tensor.set_data_from_numpy(np.ascontiguousarray(array))
                request.append(tensor)
            wanted = [api.InferRequestedOutput(name) for name in outputs]
            kwargs: dict[str, Any] = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
            result = client.infer(
                model, request, outputs=wanted, request_id=request_id, headers=dict(headers or {}), **kwargs
            )
            return {name: result.as_numpy(name) for name in outputs}

        answer: dict[str, Array] = self._call(f"inference on {model}", call)
        return answer

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
