"""`inferstack policy check`: run a stack offline and put every resource before the policy pack's Analyzer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from inferstack.policies.analyzer import PolicyPackProcess, Violation
from inferstack.policies.offline import Recorded, run_stack


@dataclass(frozen=True)
class Finding:
    resource: Recorded
    violation: Violation


@dataclass(frozen=True)
class Report:
    stack: str
    resources: int
    policies: list[str]
    findings: list[Finding]

    @property
    def mandatory(self) -> list[Finding]:
        return [f for f in self.findings if f.violation.mandatory]


def check_stack(stacks_dir: Path, stack: str, settings: Mapping[str, str] | None = None) -> Report:
    recording = run_stack(stacks_dir, stack, settings)
    findings = []
    with PolicyPackProcess() as pack:
        names = pack.policy_names()
        for resource in recording:
            urn = f"urn:pulumi:{stack}::inferstack::{resource.type}::{resource.name}"
            findings += [
                Finding(resource, v)
                for v in pack.analyze(resource.type, resource.inputs, name=resource.name, urn=urn)
            ]
    return Report(stack, len(recording.resources), names, findings)
