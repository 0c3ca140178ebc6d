"""The validating HTTP front of the local runtime: inference requests are checked, then proxied.

Traffic that does not come through ``TritonClient`` (curl, another language's client) reaches
Triton here, and it behaves as the cluster's request front (``components/request_front.py``) does:

- Only Triton's serving API passes (health, metadata, config, statistics, inference), on a plain path:
  the admin APIs (model repository, shared memory, trace and log settings) are answered 403, and a
  path with percent-escapes, dot segments or doubled slashes (which Triton routes raw, so
  ``/v2/models/../../v2/repository/...`` is its repository API) is answered 400, never normalised.
- Every ``POST /v2/models/<model>[/versions/<v>]/infer`` is read whole (bounded by the model's byte
  limit; a gzip or deflate body, as Triton accepts, is inflated within the same bound), its JSON
  header parsed strictly (no ``NaN``/``Infinity``, bounded nesting) and its declared shapes checked
  with ``limits.check_request``, then its JSON data against the shapes and the datatypes' ranges: a
  request Triton 2.51 would abort on, or turn into NaN, gets a 400 in Triton's own error format
  (``{"error": ...}``) and the server keeps serving. Bodies over the limit get a 413 without being read.
- Answers are passed back as Triton gives them, compressed only when the client asked
  (``Accept-Encoding``).

Run as a child process of the local runtime:
``python -m inferstack.serving.local.gateway --port P --upstream http://127.0.0.1:Q --limits limits.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

from inferstack.components.request_front import ADMIN_PATHS, HEADER_ALLOWANCE
from inferstack.infra.errors import InvalidInput
from inferstack.serving.client.limits import ModelLimits, check_request, read_limits

_INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/[0-9]+)?/infer$")
# Triton's serving API, the only paths passed on (model names: no '/', never '.' or '..').
_SERVED = re.compile(
    r"^/v2(?:/health/(?:live|ready)|/models/stats"
    r"|/models/(?!\.\.?(?:/|$))[^/]+(?:/versions/[0-9]+)?(?:/(?:ready|config|stats|infer))?)?$"
)
_ADMIN = re.compile(ADMIN_PATHS)
_PLAIN_PATH = "a path without percent-escapes, '.' or '..' segments or doubled slashes"
# Per-hop headers (RFC 9110 7.6.1) are the proxy's own, never forwarded; the body's encoding and
# length are the gateway's once it has inflated a compressed request.
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
    "content-encoding",
}
# Request encodings Triton 2.51 inflates (its DataCompressor): gzip, and deflate in zlib's format.
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
# Finite bounds of the float datatypes: a larger JSON number would reach the model as inf.
_FLOAT_MAX = {"FP16": 65504.0, "BF16": 3.3895313892515355e38, "FP32": 3.4028234663852886e38, "FP64": math.inf}
_INT_RANGE = {
    f"{kind}{bits}": (0, 2**bits - 1) if kind == "UINT" else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    for kind in ("INT", "UINT")
    for bits in (8, 16, 32, 64)
}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def path_refusal(raw_path: str) -> tuple[int, str] | None:
    """(status, message) for a path the gateway does not pass to Triton; None for the serving API.

    Decided on the raw path, as Triton routes it: admin APIs 403, unplain paths 400, others 404.
    """
    path = raw_path.split("?", 1)[0]
    segments = path.split("/")[1:]
    if _ADMIN.search(raw_path):
        return 403, (
            "refused before reaching Triton: its admin APIs (model repository, shared memory, trace and "
            "log settings) are not served through the gateway; the local runtime's admin key opens them "
            "on a replica's own port"
        )
    if (
        "%" in path
        or "\\" in path
        or any(s in ("", ".", "..") for s in segments[:-1])
        or segments[-1:]
        in (
            ["."],
            [".."],
        )
    ):
        return 400, f"refused before reaching Triton: {InvalidInput('path', path, _PLAIN_PATH)}"
    if not _SERVED.match(path):
        return 404, (
            f"refused before reaching Triton: {path!r} is not one of Triton's serving paths "
            "(/v2, /v2/health/live|ready, /v2/models/stats, /v2/models/MODEL[/versions/N][/ready|config|"
            "stats|infer])"
        )
    return None


def inflate(body: bytes, encoding: str | None, cap: int) -> bytes:
    """The request body without its Content-Encoding, at most ``cap`` bytes (a bomb is refused)."""
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    if name not in _WBITS:
        raise InvalidInput("Content-Encoding", encoding, "gzip, deflate or identity, as Triton accepts")
    inflater = zlib.decompressobj(_WBITS[name])
    try:
        plain = inflater.decompress(body, cap + 1)
    except zlib.error as error:
        raise InvalidInput("request body", f"{len(body)} bytes", f"valid {name} data ({error})") from None
    if len(plain) > cap or inflater.unconsumed_tail:
        raise OverflowError(f"the {name} body inflates past this model's {cap} byte limit")
    if not inflater.eof:
        raise InvalidInput("request body", f"{len(body)} bytes", f"complete {name} data")
    return plain


def _not_json_number(literal: str) -> float:
    raise InvalidInput("request body", literal, "JSON numbers only (NaN and Infinity are not JSON)")


def parse_header(text: bytes) -> dict[str, Any]:
    """The request's JSON header, parsed strictly."""
    try:
        header = json.loads(text, parse_constant=_not_json_number)
    except RecursionError:
        raise InvalidInput("request body", f"{len(text)} bytes", "JSON nested at most a few levels") from None
    except (ValueError, UnicodeDecodeError) as error:
        if isinstance(error, InvalidInput):
            raise
        raise InvalidInput("request body", f"{len(text)} bytes", "a JSON inference request header") from None
    if not isinstance(header, dict):
        raise InvalidInput("request body", type(header).__name__, "a JSON object")
    return header


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


def _element_refusal(datatype: str, value: object) -> str | None:
    """What ``value`` should be as an element of ``datatype``; None when it is one."""
    if datatype == "BOOL":
        return None if isinstance(value, bool) else "true or false"
    if datatype == "BYTES":
        return None if isinstance(value, str) else "a string"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "a number"
    if datatype in _INT_RANGE:
        low, high = _INT_RANGE[datatype]
        return None if isinstance(value, int) and low <= value <= high else f"an integer from {low} to {high}"
    bound = _FLOAT_MAX.get(datatype, math.inf)
    if isinstance(value, int):
        return None if abs(value) <= bound else f"a number within +-{bound:.7g}"
    return None if math.isfinite(value) and abs(value) <= bound else f"a finite number within +-{bound:.7g}"


def check_data(model: str, tensor: Mapping[str, Any], shape: Sequence[int]) -> None:
    """An input's JSON ``data``: as many elements as its shape holds, flat or nested no deeper than the
    shape, each one its datatype can hold. Inputs whose data follow in binary are Triton's to check."""
    parameters = tensor.get("parameters")
    if isinstance(parameters, dict) and "binary_data_size" in parameters:
        return
    field = f"{model}.{tensor['name']}.data"
    datatype, data = str(tensor["datatype"]), tensor.get("data")
    if not isinstance(data, list):
        raise InvalidInput(field, type(data).__name__, "a JSON array of the tensor's elements")
    count, stack = 0, [(data, 1)]
    while stack:  # iterative: a hostile nesting costs no recursion
        items, depth = stack.pop()
        if depth > max(len(shape), 1):
            raise InvalidInput(
                field, f"nested {depth} deep", f"nested at most {len(shape)} deep (shape {shape})"
            )
        for item in items:
            if isinstance(item, list):
                stack.append((item, depth + 1))
                continue
            refusal = _element_refusal(datatype, item)
            if refusal is not None:
                raise InvalidInput(field, item, f"{datatype} elements: {refusal}")
            count += 1
    if count != math.prod(shape):
        raise InvalidInput(field, f"{count} elements", f"{math.prod(shape)} elements for shape {list(shape)}")


def check_body(limits: ModelLimits, body: bytes, header_length: str | None) -> None:
    """Raise InvalidInput unless ``body`` (JSON, or JSON header + binary tensors) fits ``limits``."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidInput("Inference-Header-Content-Length", header_length, f"0..{len(body)}")
        text = body[: int(header_length)]
    else:
        text = body
    header = parse_header(text)
    declared = declared_tensors(header)
    check_request(limits, declared)
    for tensor in header["inputs"]:
        check_data(limits.model, tensor, declared[tensor["name"]][1])


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
        refusal = path_refusal(request.raw_path)
        if refusal is not None:
            return _error(*refusal)
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
            try:
                body = await request.content.readexactly(request.content_length)
                body = inflate(body, request.headers.get("Content-Encoding"), cap)
                check_body(limits, body, request.headers.get("Inference-Header-Content-Length"))
            except InvalidInput as error:
                return _error(400, f"refused before reaching Triton: {error}")
            except OverflowError as error:
                return _error(413, f"refused before reaching Triton: {error}")
            except EOFError:  # asyncio.IncompleteReadError: the client sent less than it declared
                return _error(400, f"the body ended before its Content-Length of {request.content_length}")
        elif request.can_read_body:
            body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        # Compressed answers only for clients that ask; aiohttp would otherwise ask for gzip itself.
        if "Accept-Encoding" not in request.headers:
            headers["Accept-Encoding"] = "identity"
        session = await self._session()
        try:
            async with session.request(
                request.method, self.upstream + request.raw_path, headers=headers, data=body or None
            ) as answer:
                content = await answer.read()
                reply = {
                    k: v
                    for k, v in answer.headers.items()
                    if k.lower() not in _HOP_BY_HOP - {"content-encoding"}
                }
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
        # The body as sent: the gateway inflates it itself, within the model's byte limit.
        auto_decompress=False,
    )


if __name__ == "__main__":
    main()
