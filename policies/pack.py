"""The CrossGuard policy pack: each rule of ``policies/rules.py`` as a pulumi-policy resource policy."""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from inferstack.policies.rules import RULES, Rule
from inferstack.policies.rules_failover import FAILOVER_RULES

PACK_NAME = "inferstack"


def _policy(rule: Rule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in rule.check(args.resource_type, args.props):
            report_violation(message, None)

    return ResourceValidationPolicy(
        name=rule.name,
        description=rule.description,
        enforcement_level=EnforcementLevel.MANDATORY if rule.mandatory else EnforcementLevel.ADVISORY,
        validate=validate,
    )


def policies() -> list[ResourceValidationPolicy]:
    return [_policy(rule) for rule in (*RULES, *FAILOVER_RULES)]


def serve() -> None:
    """Start the Analyzer gRPC server (prints its port, as the Pulumi CLI expects) and block."""
    PolicyPack(name=PACK_NAME, policies=list(policies()))
