"""The plain PyTorch HTTP app Triton is compared with: FastAPI on uvicorn, one forward pass per request.

It is what a team writes before it adopts a model server: load the TorchScript, call it in the request
handler, no batching across requests. To be driven by the same load generator as Triton (perf_analyzer),
it speaks the part of the KServe v2 HTTP protocol perf_analyzer and tritonclient use: health, model
metadata and config, and ``infer`` with JSON or binary tensors. It has no statistics endpoint, so
perf_analyzer measures it from the client side only (as it does Triton: latency and throughput are
the client's numbers for every contender).

The handler is ``async`` and runs the model inline, one request at a time on the event loop, as most
such apps do: with torch's intra-op threads already using every core, a thread per request only adds
contention. Runs as its own process (``python -m inferstack.serving.bench.baseline_server``), like a
deployment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype

from inferstack.serving.local.processes import ChildProcess, RuntimeFailure, free_port, start_child
from inferstack.serving.models.export import load_torchscript
from inferstack.serving.models.repository import read_repository
from inferstack.serving.models.specs import RepositoryModel

Array = npt.NDArray[Any]
_HEADER_LENGTH = "Inference-Header-Content-Length"


class BadRequest(ValueError):
    """A request the plain app refuses with a 400."""

    pass


def decode_request(body: bytes, header_length: int | None) -> tuple[dict[str, Any], dict[str, Array]]:
    """The request's JSON header and its input arrays (binary after the header, or JSON ``data``)."""
    header = json.loads(body[:header_length] if header_length is not None else body)
    arrays: dict[str, Array] = {}
    offset = header_length or 0
    for tensor in header.get("inputs", []):
        dtype = np.dtype(triton_to_np_dtype(tensor["datatype"]))
        if dtype.kind in "OSU":
            raise BadRequest(f"input {tensor['name']}: {tensor['datatype']} is not served by this app")
        shape = [int(d) for d in tensor["shape"]]
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            array = np.frombuffer(body, dtype=dtype, count=int(np.prod(shape)), offset=offset)
            offset += int(size)
        else:
            array = np.asarray(tensor["data"], dtype=dtype)
        arrays[tensor["name"]] = array.reshape(shape)
    return header, arrays


def encode_response(
    model: str, version: int, outputs: dict[str, Array], header: dict[str, Any]
) -> tuple[bytes, int | None]:
    """Outputs as the request asked for them: binary after a JSON header, or JSON ``data``."""
    requested = {o["name"]: o for o in header.get("outputs", [])}
    wanted = [name for name in outputs if not requested or name in requested]
    binary_default = bool((header.get("parameters") or {}).get("binary_data_output", False))
    described, payload = [], []
    for name in wanted:
        array = np.ascontiguousarray(outputs[name])
        entry: dict[str, Any] = {
            "name": name,
            "datatype": np_to_triton_dtype(array.dtype),
            "shape": list(array.shape),
        }
        if (requested.get(name, {}).get("parameters") or {}).get("binary_data", binary_default):
            data = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            payload.append(data)
        else:
            entry["data"] = array.reshape(-1).tolist()
        described.append(entry)
    text = json.dumps({"model_name": model, "model_version": str(version), "outputs": described}).encode()
    if not payload:
        return text, None
    return text + b"".join(payload), len(text)


def config_json(model: RepositoryModel) -> dict[str, Any]:
    """The parts of Triton's config JSON perf_analyzer reads, with integer dims as Triton sends them."""

    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [{"name": s.name, "data_type": f"TYPE_{s.dtype}", "dims": list(s.dims)} for s in specs]

    return {
        "name": model.name,
        "platform": "pytorch_libtorch",
        "max_batch_size": model.max_batch_size,
        "input": tensors(model.inputs),
        "output": tensors(model.outputs),
    }


def metadata_json(model: RepositoryModel) -> dict[str, Any]:
    batch = [-1] if model.max_batch_size > 0 else []

    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": s.dtype, "shape": batch + list(s.dims)} for s in specs]

    return {
        "name": model.name,
        "versions": [str(model.version)],
        "platform": "pytorch_libtorch",
        "inputs": tensors(model.inputs),
        "outputs": tensors(model.outputs),
    }


def create_app(model: RepositoryModel) -> FastAPI:
    module = load_torchscript(model.torchscript).eval()
    app = FastAPI()

    def forward(arrays: dict[str, Array]) -> dict[str, Array]:
        # np.array: frombuffer views of the request body are read-only, torch wants writable memory.
        tensors = [torch.from_numpy(np.array(arrays[spec.name])) for spec in model.inputs]
        with torch.inference_mode():
            result = module(*tensors)
        results = result if isinstance(result, tuple | list) else (result,)
        return {spec.name: t.numpy() for spec, t in zip(model.outputs, results, strict=True)}

    def known(name: str) -> None:
        if name != model.name:
            raise HTTPException(404, f"model {name!r} is not served here (only {model.name!r})")

    @app.get("/v2/health/ready")
    @app.get("/v2/health/live")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/v2")
    async def server_metadata() -> JSONResponse:
        return JSONResponse({"name": "inferstack-baseline", "version": "1", "extensions": []})

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def ready(name: str, version: str = "") -> Response:
        known(name)
        return Response(status_code=200)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def metadata(name: str, version: str = "") -> JSONResponse:
        known(name)
        return JSONResponse(metadata_json(model))

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def config(name: str, version: str = "") -> JSONResponse:
        known(name)
        return JSONResponse(config_json(model))

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str = "") -> Response:
        known(name)
        length = request.headers.get(_HEADER_LENGTH)
        try:
            header, arrays = decode_request(await request.body(), int(length) if length else None)
            missing = sorted({s.name for s in model.inputs} - set(arrays))
            if missing:
                raise BadRequest(f"missing inputs {missing}")
            outputs = forward(arrays)
        except (BadRequest, ValueError, KeyError, RuntimeError) as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        body, header_length = encode_response(model.name, model.version, outputs, header)
        if header_length is None:
            return Response(body, media_type="application/json")
        return Response(
            body, media_type="application/octet-stream", headers={_HEADER_LENGTH: str(header_length)}
        )

    return app


@dataclass
class BaselineServer:
    """The app in its own process on 127.0.0.1, stopped on exit; ``with BaselineServer(...) as s: s.url``."""

    repository: Path
    model: str
    log: Path
    startup_timeout_s: float = 120.0
    url: str = field(default="", init=False)
    child: ChildProcess | None = field(default=None, init=False)

    def __enter__(self) -> BaselineServer:
        port = free_port()
        argv = [sys.executable, "-m", "inferstack.serving.bench.baseline_server"]
        argv += ["--repository", str(self.repository), "--model", self.model, "--port", str(port)]
        self.child = start_child("baseline", argv, log=self.log, env=dict(os.environ))
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if not self.child.alive():
                self.__exit__()
                raise RuntimeFailure("baseline server exited:\n" + "\n".join(self.child.tail()))
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeFailure(f"baseline server not ready after {self.startup_timeout_s:.0f} s ({self.log})")

    def __exit__(self, *exc: object) -> None:
        if self.child is not None:
            self.child.stop()


def serve(repository: Path, model_name: str, port: int) -> None:
    import uvicorn

    models = {m.name: m for m in read_repository(repository)}
    if model_name not in models:
        raise SystemExit(f"baseline server: no model {model_name!r} in {repository} (has {sorted(models)})")
    started = time.monotonic()
    app = create_app(models[model_name])
    print(f"baseline server: {model_name} loaded in {time.monotonic() - started:.1f} s", flush=True)
    # One worker, as the plain app is usually run; access logs off, they would cost more than the model.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.repository, args.model, args.port)


if __name__ == "__main__":
    main()
