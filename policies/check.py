"""`inferstack policy check`: run a stack offline and put it before the policy pack's Analyzer.

Every resource goes through ``Analyze`` and the whole stack through ``AnalyzeStack``, after the
pack is configured with the stack's pack config, as ``pulumi preview --policy-pack policies
--policy-pack-config <file>`` would do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferstack.policies.analyzer import PolicyPackProcess, Violation
from inferstack.policies.offline import Recorded, run_stack
from inferstack.policies.pack_config import load, stack_config_path


@dataclass(frozen=True)
class Finding:
    violation: Violation
    resource: Recorded | None  # None: a stack policy blames the stack as a whole

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


def check_stack(
    stacks_dir: Path, stack: str, config: Path | None = None, settings: Mapping[str, str] | None = None
) -> Report:
    """Check ``stack`` (with deployer ``settings``) under the pack ``config`` (default: the pack
    config shipped for that stack, if any)."""
    config = config or stack_config_path(stack)
    given = load(config) if config else {}
    recording = run_stack(stacks_dir, stack, settings)
    by_urn = {r.urn: r for r in recording}
    with PolicyPackProcess() as pack:
        levels = pack.configure(given)
        violations = [v for r in recording for v in pack.analyze(r.type, r.inputs, name=r.name, urn=r.urn)]
        violations += pack.analyze_stack(recording)
    findings = [Finding(v, by_urn.get(v.urn)) for v in violations]
    return Report(stack, len(recording.resources), levels, config, findings)
