"""Run the policy pack the way the Pulumi CLI does, and ask its Analyzer about resources.

The pack process is started as the CLI starts it (it prints its gRPC port on stdout), configured as
the CLI configures it (``Configure`` with every policy's level and properties from the pack config)
and queried over the Analyzer gRPC protocol: ``Analyze`` per resource, ``AnalyzeStack`` with all of
them. What this reports is what `pulumi preview --policy-pack` would.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from inferstack.infra.registered import RegisteredResource
from inferstack.policies.pack_config import PolicyDeclaration, reconcile

_LEVELS = {
    analyzer_pb2.ADVISORY: "advisory",
    analyzer_pb2.MANDATORY: "mandatory",
    analyzer_pb2.REMEDIATE: "remediate",
    analyzer_pb2.DISABLED: "disabled",
}
_LEVEL_CODES = {name: code for code, name in _LEVELS.items()}


@dataclass(frozen=True)
class Violation:
    """One policy violation as the Analyzer reports it."""

    policy: str
    mandatory: bool
    message: str
    urn: str  # "" when a stack policy blames the stack as a whole

    @property
    def reason(self) -> str:
        """The message without the policy's description, which pulumi-policy puts on its first line."""
        return self.message.split("\n", 1)[-1]


def _struct(properties: Mapping[str, Any]) -> struct_pb2.Struct:
    return json_format.ParseDict(dict(properties), struct_pb2.Struct())


def _violations(response: Any) -> list[Violation]:
    return [
        Violation(d.policyName, d.enforcementLevel == analyzer_pb2.MANDATORY, d.message, d.urn)
        for d in response.diagnostics
    ]


def _provider(reference: str) -> analyzer_pb2.AnalyzerProviderResource | None:
    """The resource's explicit provider, as the engine names it to the pack (None: a default one)."""
    if not reference:
        return None
    urn = reference.rsplit("::", 1)[0]
    return analyzer_pb2.AnalyzerProviderResource(
        type=urn.split("::")[-2].split("$")[-1], urn=urn, name=urn.rsplit("::", 1)[-1]
    )


class PolicyPackProcess:
    """``with PolicyPackProcess() as pack: pack.configure({...}); pack.analyze(...)``."""

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
        assert self._process.stdout is not None and self._process.stderr is not None
        port = self._process.stdout.readline().strip()
        if not port.isdigit():
            self._process.kill()
            error = self._process.stderr.read().strip().splitlines()[-1:] or [port]
            self.__exit__()
            raise RuntimeError(f"the policy pack did not start: {error[0]}")
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(self._channel).result(timeout=self.timeout_s)
        self._stub = analyzer_pb2_grpc.AnalyzerStub(self._channel)
        return self

    def declarations(self) -> list[PolicyDeclaration]:
        info = self._stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=self.timeout_s)
        return [
            PolicyDeclaration(
                p.name, _LEVELS[p.enforcementLevel], json_format.MessageToDict(p.configSchema.properties)
            )
            for p in info.policies
        ]

    def policy_names(self) -> list[str]:
        return [p.name for p in self.declarations()]

    def configure(self, config: Mapping[str, Any]) -> dict[str, str]:
        """Send the pack config of a `--policy-pack-config` file; returns each policy's level."""
        settings = reconcile(self.declarations(), config)
        request = analyzer_pb2.ConfigureAnalyzerRequest(
            policyConfig={
                name: analyzer_pb2.PolicyConfig(
                    enforcementLevel=_LEVEL_CODES[s.level], properties=_struct(s.properties)
                )
                for name, s in settings.items()
            }
        )
        self._stub.Configure(request, timeout=self.timeout_s)
        return {name: s.level for name, s in settings.items()}

    def analyze(
        self, resource_type: str, properties: Mapping[str, Any], *, name: str, urn: str = ""
    ) -> list[Violation]:
        urn = urn or f"urn:pulumi:stack::inferstack::{resource_type}::{name}"
        request = analyzer_pb2.AnalyzeRequest(
            type=resource_type, properties=_struct(properties), urn=urn, name=name
        )
        return [
            Violation(v.policy, v.mandatory, v.message, v.urn or urn)
            for v in _violations(self._stub.Analyze(request, timeout=self.timeout_s))
        ]

    def analyze_stack(self, resources: Iterable[RegisteredResource]) -> list[Violation]:
        """Every resource at once, with parents and dependencies, as the engine sends them after a preview."""
        request = analyzer_pb2.AnalyzeStackRequest(
            resources=[
                analyzer_pb2.AnalyzerResource(
                    type=r.type,
                    properties=_struct(r.inputs),
                    urn=r.urn,
                    name=r.name,
                    parent=r.parent_urn,
                    options=analyzer_pb2.AnalyzerResourceOptions(
                        parent=r.parent_urn,
                        customTimeouts=analyzer_pb2.AnalyzerResourceOptions.CustomTimeouts(
                            **dict(r.custom_timeouts)
                        ),
                    ),
                    dependencies=list(r.dependencies),
                    provider=_provider(r.provider),
                    propertyDependencies={
                        key: analyzer_pb2.AnalyzerPropertyDependencies(urns=list(urns))
                        for key, urns in r.property_dependencies.items()
                    },
                )
                for r in resources
            ]
        )
        return _violations(self._stub.AnalyzeStack(request, timeout=self.timeout_s))

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
