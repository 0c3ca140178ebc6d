"""A small typed client for Triton over HTTP or gRPC.

Every call has a timeout. Given several endpoints (the replicas behind a headless Service, say),
calls go round those that are up, and a call that cannot reach one endpoint moves on to the next.
An endpoint that failed or timed out is marked down and tried only after the others,
for a back-off that doubles while it keeps failing (up to ``MAX_DOWN_S``), so a dead or hung replica
costs one timeout now and then, not one per call. Every transport error is wrapped and retried on
the next endpoint; an answer from the server that says the request itself is wrong is raised at
once, since another replica would say the same.

``infer`` is one round trip: the model's config is read once per model (output names, and the
limits every request is checked against before it is sent; see ``limits.py``). Inference is
idempotent, so when no endpoint could serve it (a replica killed mid-request answers UNAVAILABLE,
even behind a balancer that has another) it is sent again, ``INFER_ROUNDS`` times at most, after
``RETRY_PAUSE_S`` and twice that: a replica's death costs a retry, not the request.

The protocol is the URLs' scheme (``grpc://host:port``), else ``protocol`` (HTTP by default).

An HTTP client belongs to the thread that first used it (tritonclient.http runs on gevent): use one
``TritonClient`` per thread.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

from inferstack.infra.errors import InvalidInput
from inferstack.serving.client.limits import (
    DEFAULT_MAX_REQUEST_BYTES,
    ModelLimits,
    check_request,
    limits_from_config,
)

Array = npt.NDArray[Any]

Protocol = Literal["http", "grpc"]
# Statuses that say "this endpoint cannot serve now" (down, overloaded, too slow), not "bad request":
# another replica may well answer. gRPC reports a refused connection as UNAVAILABLE too.
# A gateway's 502 and 504 say the same of what is behind it.
_UNREACHABLE_STATUS = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "502", "503", "504")
FIRST_DOWN_S = 2.0
MAX_DOWN_S = 30.0
PROBE_TIMEOUT_S = 0.5  # a readiness check, before a down endpoint gets real requests again
INFER_ROUNDS = 3  # passes over the endpoints an inference gets when none could serve it
RETRY_PAUSE_S = 0.2  # before the second pass; doubled before each later one
# Which endpoints are down, shared by every client in the process: one thread's timeout spares the
# others theirs. endpoint -> (down until, last back-off).
_DOWN: dict[str, tuple[float, float]] = {}
_DOWN_LOCK = threading.Lock()


class TritonUnavailable(RuntimeError):
    """No endpoint answered."""


class TritonRequestError(RuntimeError):
    """The server answered, and refused or failed the request."""


class _NotReady(Exception):
    """An endpoint answered a readiness check with "not yet": ask the next one."""


def parse_endpoint(url: object, *, field: str = "urls") -> str:
    """``host:port``, ``http://host:port`` or ``grpc://host:port`` -> ``host:port``, or InvalidInput."""
    allowed = "HOST:PORT, http://HOST:PORT or grpc://HOST:PORT (port 1-65535, no path)"
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(field, url, allowed)
    parsed = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parsed.port
    except ValueError:
        raise InvalidInput(field, url, allowed) from None
    if (
        parsed.scheme not in ("http", "grpc")
        or not parsed.hostname
        or not port  # None (absent) or 0
        or parsed.path.strip("/")
        or parsed.query
        or parsed.username
    ):
        raise InvalidInput(field, url, allowed)
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{host}:{port}"


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Refused, reset or timed-out connections (OSError, gevent's Timeout), peers that close the
    connection or do not speak HTTP (geventhttpclient's HTTPConnectionClosed and parse errors are
    HTTPExceptions)."""
    from http.client import HTTPException

    from gevent import Timeout as GeventTimeout  # type: ignore[import-untyped]

    errors: tuple[type[BaseException], ...] = (OSError, HTTPException, GeventTimeout)
    return errors


class TritonClient:
    """Triton's HTTP or gRPC API, over one or more endpoints, with a timeout on every call."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        protocol: Protocol | None = None,
        timeout_s: float = 10.0,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        endpoints = [urls] if isinstance(urls, str) else list(urls)
        if not endpoints:
            raise InvalidInput("urls", endpoints, "one or more host:port endpoints")
        schemes = {str(u).split("://", 1)[0] for u in endpoints if "://" in str(u)}
        if protocol is None:
            protocol = "grpc" if schemes == {"grpc"} else "http"
        if protocol not in ("http", "grpc"):
            raise InvalidInput("protocol", protocol, "http or grpc")
        if schemes - {protocol}:
            raise InvalidInput(
                "urls", endpoints, f"{protocol}:// or HOST:PORT endpoints for protocol {protocol}"
            )
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not 0 < timeout_s <= 600:
            raise InvalidInput("timeout_s", timeout_s, "a number of seconds > 0 and <= 600")
        self.endpoints = [parse_endpoint(u) for u in endpoints]
        self.protocol = protocol
        self.timeout_s = float(timeout_s)
        self.max_request_bytes = max_request_bytes
        self._clients: dict[str, Any] = {}
        self._first = 0  # index of the endpoint the next call starts at
        self._down = _DOWN
        self._probes: dict[str, Any] = {}  # short-timeout HTTP clients for readiness probes
        self._models: dict[str, tuple[list[str], ModelLimits]] = {}  # outputs and limits, from the config
        self.retries = 0  # calls that moved on to another endpoint after a transport failure

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

    def _order(self) -> list[str]:
        """Endpoints up, from the next in turn; then those down, soonest back first.

        An endpoint whose back-off is over must first pass a quick readiness probe: a hung replica
        then costs ``PROBE_TIMEOUT_S`` now and then instead of a whole call timeout.
        """
        now = time.monotonic()
        count = len(self.endpoints)
        rotated = [self.endpoints[(self._first + step) % count] for step in range(count)]
        up = [e for e in rotated if e not in self._down or (self._down[e][0] <= now and self._probe(e))]
        down = sorted((e for e in rotated if e not in up), key=lambda e: self._down.get(e, (now, 0.0))[0])
        return up + down

    def _probe(self, endpoint: str) -> bool:
        from tritonclient.utils import InferenceServerException

        unreachable = (*_transport_errors(), InferenceServerException)
        try:
            if self.protocol == "grpc":
                ready = self._client(endpoint).is_server_ready(client_timeout=PROBE_TIMEOUT_S)
            else:
                if endpoint not in self._probes:
                    import tritonclient.http as httpclient

                    self._probes[endpoint] = httpclient.InferenceServerClient(
                        endpoint, connection_timeout=PROBE_TIMEOUT_S, network_timeout=PROBE_TIMEOUT_S
                    )
                ready = self._probes[endpoint].is_server_ready()
        except unreachable:
            ready = False
        if ready:
            self._down.pop(endpoint, None)
        else:
            self._mark_down(endpoint)
        return bool(ready)

    def _mark_down(self, endpoint: str) -> None:
        with _DOWN_LOCK:
            _, last = self._down.get(endpoint, (0.0, 0.0))
            backoff = min(MAX_DOWN_S, last * 2) if last else FIRST_DOWN_S
            self._down[endpoint] = (time.monotonic() + backoff, backoff)
        # A connection that failed mid-call may be half-used: the next call gets a fresh one.
        for clients in (self._clients, self._probes):
            client = clients.pop(endpoint, None)
            if client is not None:
                with contextlib.suppress(Exception):  # closing a broken connection may fail too
                    client.close()

    def _call(self, what: str, call: Callable[[Any], Any], *, rounds: int = 1) -> Any:
        """Run ``call`` against each endpoint in turn: those up first; the next call starts one further.
        When none could serve it, up to ``rounds`` passes in all, pausing between them."""
        from tritonclient.utils import InferenceServerException

        retryable: tuple[type[BaseException], ...] = (*_transport_errors(), _NotReady)
        failures = []
        attempt = 0
        for number in range(rounds):
            if number:
                time.sleep(RETRY_PAUSE_S * 2 ** (number - 1))
            for endpoint in self._order():
                if attempt:
                    self.retries += 1
                attempt += 1
                try:
                    result = call(self._client(endpoint))
                except InferenceServerException as error:
                    if str(error.status()) not in _UNREACHABLE_STATUS:
                        raise TritonRequestError(f"{what} at {endpoint}: {error.message()}") from None
                    failures.append(f"{endpoint}: {error.message()}")
                    self._mark_down(endpoint)
                    continue
                except retryable as error:
                    failures.append(f"{endpoint}: {type(error).__name__}: {error}")
                    self._mark_down(endpoint)
                    continue
                self._first = (self.endpoints.index(endpoint) + 1) % len(self.endpoints)
                self._down.pop(endpoint, None)
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

    def _model(self, model: str) -> tuple[list[str], ModelLimits]:
        if model not in self._models:
            config = self.model_config(model)
            outputs = [str(o["name"]) for o in config.get("output", [])]
            self._models[model] = (
                outputs,
                limits_from_config(config, max_request_bytes=self.max_request_bytes),
            )
        return self._models[model]

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Array],
        *,
        version: int | None = None,
        request_id: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Array]:
        """Run ``model`` on named arrays; returns every output the model declares, by name.

        ``version`` picks one of the versions Triton serves (None: Triton's choice, the newest).
        ``request_id`` appears in Triton's log lines about the request; ``headers`` go with it, e.g. a
        W3C ``traceparent`` (`inferstack.serving.local.tracing.traceparent`) that makes Triton's spans part
        of the caller's trace.

        The request is checked against the model's config before it is sent (InvalidInput names
        the input, the shape and what the config allows); the config is read on the first call
        for a model only, so a steady stream of requests costs one round trip each.
        """
        from tritonclient.utils import np_to_triton_dtype

        if self.protocol == "http":
            import tritonclient.http as api
        else:
            import tritonclient.grpc as api

        outputs, limits = self._model(model)
        datatypes = {name: np_to_triton_dtype(array.dtype) for name, array in inputs.items()}
        check_request(limits, {name: (datatypes[name], list(a.shape)) for name, a in inputs.items()})
        arrays = {name: np.ascontiguousarray(array) for name, array in inputs.items()}

        def call(client: Any) -> dict[str, Array]:
            request = []
            for name, array in arrays.items():
                tensor = api.InferInput(name, list(array.shape), datatypes[name])
                tensor.set_data_from_numpy(array)
                request.append(tensor)
            wanted = [api.InferRequestedOutput(name) for name in outputs]
            kwargs = self._kwargs()
            if version is not None:
                kwargs["model_version"] = str(version)
            result = client.infer(
                model, request, outputs=wanted, request_id=request_id, headers=dict(headers or {}), **kwargs
            )
            return {name: result.as_numpy(name) for name in outputs}

        answer: dict[str, Array] = self._call(f"inference on {model}", call, rounds=INFER_ROUNDS)
        return answer

    def close(self) -> None:
        for clients in (self._clients, self._probes):
            for client in clients.values():
                client.close()
            clients.clear()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
