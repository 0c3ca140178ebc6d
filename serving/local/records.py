"""What the local runtime is given and records: its ports, each replica's start, the smoke inferences."""

from __future__ import annotations

from dataclasses import dataclass

from inferstack.infra.errors import InvalidInput
from inferstack.serving.client.client import Protocol


@dataclass(frozen=True)
class Ports:
    """Ports on 127.0.0.1; None picks a free one. Whether a given port is free is checked at start."""

    http: int | None = None
    grpc: int | None = None
    metrics: int | None = None
    s3: int | None = None

    def __post_init__(self) -> None:
        given = {name: port for name, port in self.items() if port is not None}
        for name, port in given.items():
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise InvalidInput(f"{name}_port", port, "a port number from 1 to 65535")
        if len(set(given.values())) != len(given):
            raise InvalidInput("ports", given, "a different port for each of http, grpc, metrics and s3")

    def items(self) -> list[tuple[str, int | None]]:
        return [("http", self.http), ("grpc", self.grpc), ("metrics", self.metrics), ("s3", self.s3)]


@dataclass(frozen=True)
class ReplicaStart:
    """How long one replica took to serve: the cache fill (0 without the cache), then Triton's own start."""

    name: str
    fill_s: float
    ready_s: float  # from the start of the fill (of Triton, without the cache) to /v2/health/ready
    downloaded_bytes: int


@dataclass(frozen=True)
class SmokeResult:
    """One smoke inference: the model, the protocol, whether Triton agreed with PyTorch, how fast."""

    model: str
    protocol: Protocol
    ok: bool
    max_abs_diff: float
    latency_ms: float
    error: str = ""
