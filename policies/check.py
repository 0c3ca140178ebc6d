"""`inferstack policy check`: put a stack's registered resources before the policy pack's Analyzer.

The resources come from the stack program run offline (``inferstack.stacks.offline``, by the CLI):
the policy side never runs a program. Every resource goes through ``Analyze`` and the whole stack
through ``AnalyzeStack``, after the pack is configured with the stack's pack config, as ``pulumi
preview --policy-pack policies --policy-pack-config <file>`` would do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferstack.infra.registered import RegisteredResource
from inferstack.policies.analyzer import PolicyPackProcess, Violation
from inferstack.policies.pack_config import load, stack_config_path


@dataclass(frozen=True)
class Finding:
    """A violation with the resource it names."""

    violation: Violation
    resource: RegisteredResource | None  # None: a stack policy blames the stack as a whole

    @property
    def level(self) -> str:
        return "mandatory" if self.violation.mandatory else "advisory"

    @property
    def where(self) -> str:
        return f"{self.resource.type.rsplit(':', 1)[-1]} {self.resource.name}" if self.resource else "(stack)"

    def to_json(self) -> dict[str, Any]:
        resource = self.resource
        return {
            "policy": self.violation.policy,
            "level": self.level,
            "message": self.violation.reason,
            "urn": self.violation.urn,
            "resource": {"type": resource.type, "name": resource.name} if resource else None,
        }


@dataclass(frozen=True)
class Report:
    """The outcome of ``inferstack policy check`` on one stack."""

    stack: str
    resources: int
    levels: dict[str, str]  # policy -> the enforcement level it ran at
    config: Path | None
    findings: list[Finding]

    @property
    def mandatory(self) -> list[Finding]:
        return [f for f in self.findings if f.violation.mandatory]

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "resources": self.resources,
            "policyConfig": str(self.config) if self.config else None,
            "policies": self.levels,
            "violations": [f.to_json() for f in self.findings],
            "mandatory": len(self.mandatory),
            "advisory": len(self.findings) - len(self.mandatory),
        }


def check_stack(resources: Sequence[RegisteredResource], stack: str, config: Path | None = None) -> Report:
    """Check the ``resources`` ``stack`` registers under the pack ``config`` (default: the pack
    config shipped for that stack, if any)."""
    config = config or stack_config_path(stack)
    given = load(config) if config else {}
    by_urn = {r.urn: r for r in resources}
    with PolicyPackProcess() as pack:
        levels = pack.configure(given)
        violations = [v for r in resources for v in pack.analyze(r.type, r.inputs, name=r.name, urn=r.urn)]
        violations += pack.analyze_stack(resources)
    findings = [Finding(v, by_urn.get(v.urn)) for v in violations]
    return Report(stack, len(resources), levels, config, findings)
