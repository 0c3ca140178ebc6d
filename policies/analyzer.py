"""Run the policy pack the way the Pulumi CLI does, and ask its Analyzer about resources.

The pack process is started as the CLI starts it (it prints its gRPC port on stdout) and queried
over the Analyzer gRPC protocol, so what this reports is what `pulumi preview --policy-pack` would.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

MANDATORY = analyzer_pb2.MANDATORY


@dataclass(frozen=True)
class Violation:
    policy: str
    mandatory: bool
    message: str
    urn: str


class PolicyPackProcess:
    """``with PolicyPackProcess() as pack: pack.analyze(type, props, name=...)``."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self._process: subprocess.Popen[str] | None = None
        self._channel: grpc.Channel | None = None
        self._stub: Any = None

    def __enter__(self) -> PolicyPackProcess:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "inferstack.policies"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        port = self._process.stdout.readline().strip()
        if not port.isdigit():
            self.__exit__()
            raise RuntimeError(f"the policy pack did not start: {port!r}")
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(self._channel).result(timeout=self.timeout_s)
        self._stub = analyzer_pb2_grpc.AnalyzerStub(self._channel)
        return self

    def policy_names(self) -> list[str]:
        from google.protobuf import empty_pb2

        info = self._stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=self.timeout_s)
        return [policy.name for policy in info.policies]

    def analyze(
        self, resource_type: str, properties: Mapping[str, Any], *, name: str, urn: str = ""
    ) -> list[Violation]:
        props = json_format.ParseDict(dict(properties), struct_pb2.Struct())
        urn = urn or f"urn:pulumi:stack::inferstack::{resource_type}::{name}"
        request = analyzer_pb2.AnalyzeRequest(type=resource_type, properties=props, urn=urn, name=name)
        response = self._stub.Analyze(request, timeout=self.timeout_s)
        return [
            Violation(d.policyName, d.enforcementLevel == MANDATORY, d.message, d.urn or urn)
            for d in response.diagnostics
        ]

    def __exit__(self, *exc: object) -> None:
        if self._channel is not None:
            self._channel.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None
