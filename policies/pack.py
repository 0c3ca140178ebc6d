"""The CrossGuard policy pack: every rule of ``rules.py`` and ``stack_rules.py`` as a pulumi-policy policy.

pulumi-policy hands validations read-only proxies; each rule gets plain data (``plain``) and its
config (schema defaults overlaid with what ``--policy-pack-config`` set for the stack).
"""

from __future__ import annotations

from typing import Any, TypedDict

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    PolicyPack,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from inferstack.policies.plain import plain
from inferstack.policies.rule_base import Rule, RuleBase
from inferstack.policies.rules import RULES
from inferstack.policies.rules_exposure import EXPOSURE_RULES
from inferstack.policies.rules_failover import FAILOVER_RULES
from inferstack.policies.rules_registries import REGISTRY_RULES
from inferstack.policies.stack import Stack, StackResource, ordered_after
from inferstack.policies.stack_rules import STACK_RULES, StackRule

PACK_NAME = "inferstack"
LEVELS = {
    "mandatory": EnforcementLevel.MANDATORY,
    "advisory": EnforcementLevel.ADVISORY,
    "disabled": EnforcementLevel.DISABLED,
}


class _Declared(TypedDict):
    """What a policy of either kind declares of its rule, beside its validation."""

    name: str
    description: str
    enforcement_level: EnforcementLevel
    config_schema: PolicyConfigSchema | None


def _declared(rule: RuleBase) -> _Declared:
    properties = {key: dict(schema) for key, schema in rule.config_schema.items()}
    return _Declared(
        name=rule.name,
        description=rule.description,
        enforcement_level=LEVELS[rule.level],
        config_schema=PolicyConfigSchema(properties=properties) if properties else None,
    )


def _config(rule: RuleBase, given: Any) -> dict[str, Any]:
    return {**rule.defaults, **(plain(given) or {})}


def _resource_policy(rule: Rule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        config = _config(rule, args.get_config())
        for message in rule.check(args.resource_type, plain(args.props), config):
            report_violation(message, None)

    return ResourceValidationPolicy(validate=validate, **_declared(rule))


def stack_resource(resource: PolicyResource) -> StackResource:
    """A pulumi-policy stack resource as plain data, with every URN it is ordered after."""
    by_property = {
        key: tuple(d.urn for d in deps) for key, deps in (resource.property_dependencies or {}).items()
    }
    return StackResource(
        type=resource.resource_type,
        name=resource.name,
        urn=resource.urn,
        props=plain(resource.props),
        dependencies=ordered_after((d.urn for d in resource.dependencies or []), by_property),
        property_dependencies=by_property,
        custom_timeouts=_timeouts(resource),
        provider=resource.provider.urn if resource.provider else "",
    )


def _timeouts(resource: PolicyResource) -> dict[str, float]:
    """The engine sends 0 for an operation without a custom timeout."""
    given = resource.opts.custom_timeouts if resource.opts else None
    if given is None:
        return {}
    seconds = {"create": given.create_seconds, "update": given.update_seconds, "delete": given.delete_seconds}
    return {op: float(s) for op, s in seconds.items() if s}


def _stack_policy(rule: StackRule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        stack = Stack(stack_resource(r) for r in args.resources)
        for message, urn in rule.check(stack, _config(rule, args.get_config())):
            report_violation(message, urn or None)

    return StackValidationPolicy(validate=validate, **_declared(rule))


def policies() -> list[Policy]:
    resource_rules = (*RULES, *FAILOVER_RULES, *REGISTRY_RULES, *EXPOSURE_RULES)
    return [*map(_resource_policy, resource_rules), *map(_stack_policy, STACK_RULES)]


def serve() -> None:
    """Start the Analyzer gRPC server (prints its port, as the Pulumi CLI expects) and block."""
    PolicyPack(name=PACK_NAME, policies=policies())
