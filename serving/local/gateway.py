"""The validating HTTP front of the local runtime: inference requests are checked, then proxied.

Traffic that does not come through ``TritonClient`` (curl, another language's client) reaches
Triton here. Every ``POST /v2/models/<model>[/versions/<v>]/infer`` is read whole (bounded by the
model's byte limit), its JSON header parsed and its declared shapes checked with
``limits.check_request`` before a byte goes upstream: a request Triton 2.51 would abort on gets a 400
in Triton's own error format and the server keeps serving. Bodies over the limit get a 413 without
being read. Everything else (health, metadata, config, repository index) passes through unchanged.

Run as a child process of the local runtime:
``python -m inferstack.serving.local.gateway --port P --upstream http://127.0.0.1:Q --limits limits.json``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

from inferstack.components.request_front import HEADER_ALLOWANCE
from inferstack.infra.errors import InvalidInput
from inferstack.serving.client.limits import ModelLimits, check_request, read_limits

_INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/[0-9]+)?/infer$")
# Per-hop headers (RFC 9110 7.6.1) are the proxy's own, never forwarded.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def declared_tensors(header: Mapping[str, Any]) -> dict[str, tuple[str, Sequence[int]]]:
    """name -> (datatype, shape) of a KServe v2 inference request's JSON header."""
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise InvalidInput("inputs", inputs, "a list of {name, datatype, shape} objects")
    declared: dict[str, tuple[str, Sequence[int]]] = {}
    for tensor in inputs:
        name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str) or name in declared:
            raise InvalidInput(
                "inputs", [tensor.get("name") for tensor in inputs], "unique input names and datatypes"
            )
        declared[name] = (datatype, shape if isinstance(shape, list) else [])
    return declared


def check_body(limits: ModelLimits, body: bytes, header_length: str | None) -> None:
    """Raise InvalidInput unless ``body`` (JSON, or JSON header + binary tensors) fits ``limits``."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidInput("Inference-Header-Content-Length", header_length, f"0..{len(body)}")
        text = body[: int(header_length)]
    else:
        text = body
    try:
        header = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("request body", f"{len(text)} bytes", "a JSON inference request header") from None
    if not isinstance(header, dict):
        raise InvalidInput("request body", type(header).__name__, "a JSON object")
    check_request(limits, declared_tensors(header))


class Gateway:
    """The local runtime's validating front: checks each request against the model's limits before
    Triton sees it, as the cluster's request front does."""

    def __init__(self, upstream: str, limits: Mapping[str, ModelLimits], *, timeout_s: float = 60.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.limits = dict(limits)
        self.timeout = ClientTimeout(total=timeout_s)
        self.session: ClientSession | None = None

    async def _session(self) -> ClientSession:
        if self.session is None:
            self.session = ClientSession(
                connector=TCPConnector(limit=256), timeout=self.timeout, auto_decompress=False
            )
        return self.session

    async def handle(self, request: web.Request) -> web.StreamResponse:
        match = _INFER.match(request.path) if request.method == "POST" else None
        body = b""
        if match:
            limits = self.limits.get(match.group(1))
            if limits is None:
                return _error(
                    400, f"model {match.group(1)!r} is not served here; known: {sorted(self.limits)}"
                )
            cap = limits.max_request_bytes + HEADER_ALLOWANCE
            if request.content_length is None:
                return _error(411, "an inference request needs a Content-Length")
            if request.content_length > cap:
                return _error(413, f"{request.content_length} bytes is over this model's {cap} byte limit")
            body = await request.content.readexactly(request.content_length)
            try:
                check_body(limits, body, request.headers.get("Inference-Header-Content-Length"))
            except InvalidInput as error:
                return _error(400, f"refused before reaching Triton: {error}")
        elif request.can_read_body:
            body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        session = await self._session()
        try:
            async with session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=body or None
            ) as answer:
                content = await answer.read()
                reply = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
                return web.Response(status=answer.status, body=content, headers=reply)
        except (TimeoutError, ClientError) as error:
            return _error(502, f"upstream {self.upstream}: {type(error).__name__}: {error}")

    async def close(self, _app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()


def application(gateway: Gateway, *, max_body: int) -> web.Application:
    app = web.Application(client_max_size=max_body)
    app.router.add_route("*", "/{tail:.*}", gateway.handle)
    app.on_cleanup.append(gateway.close)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="inferstack-gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT of Triton or its balancer")
    parser.add_argument(
        "--limits", type=Path, required=True, help="the models' limits, as write_limits writes them"
    )
    args = parser.parse_args(argv)
    limits = read_limits(args.limits)
    cap = max(m.max_request_bytes for m in limits.values()) + HEADER_ALLOWANCE
    web.run_app(
        application(Gateway(args.upstream, limits), max_body=cap),
        host="127.0.0.1",
        port=args.port,
        print=lambda message: print(message, flush=True),
        reuse_address=True,
    )


if __name__ == "__main__":
    main()
