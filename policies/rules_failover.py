"""Policy rules for regional failover, as pure functions over engine-form properties (see rules.py).

A replication rule that is off, or that leaves out KMS-encrypted objects (every object of the model
store), leaves the standby with no models; a failover record without a health check never fails over.
"""

from __future__ import annotations

from inferstack.policies.rule_base import Config, Props, Rule

REPLICATION = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
RECORD = "aws:route53/record:Record"


def replication_on(resource_type: str, props: Props, config: Config) -> list[str]:
    """Every replication rule is on, takes KMS-encrypted objects and says how to encrypt the replicas."""
    if resource_type != REPLICATION:
        return []
    rules = props.get("rules") or []
    if not rules:
        return ["the replication configuration has no rules"]
    problems = []
    for rule in rules:
        label = f"replication rule {rule.get('id', '?')!r}"
        if rule.get("status") != "Enabled":
            problems.append(f"{label} is {rule.get('status')!r}, not 'Enabled'")
        kms = ((rule.get("sourceSelectionCriteria") or {}).get("sseKmsEncryptedObjects") or {}).get("status")
        if kms != "Enabled":
            problems.append(f"{label} skips KMS-encrypted objects (sseKmsEncryptedObjects is not Enabled)")
        destination = rule.get("destination") or {}
        if not (destination.get("encryptionConfiguration") or {}).get("replicaKmsKeyId"):
            problems.append(f"{label} names no KMS key for the replicas")
    return problems


def failover_health_checked(resource_type: str, props: Props, config: Config) -> list[str]:
    """A failover record carries a health check: Route 53 never fails over from an unchecked primary."""
    if resource_type != RECORD:
        return []
    policies = props.get("failoverRoutingPolicies") or []
    if not policies:
        return []
    role = policies[0].get("type")
    alias_checked = any(a.get("evaluateTargetHealth") for a in props.get("aliases") or [])
    if not props.get("healthCheckId") and not alias_checked:
        return [f"{role} failover record {props.get('name')!r} has no health check"]
    return []


FAILOVER_RULES: tuple[Rule, ...] = (
    Rule(
        "model-replication-on",
        "Model replication is enabled and includes KMS-encrypted objects.",
        "mandatory",
        replication_on,
    ),
    Rule(
        "failover-health-checked",
        "Route 53 failover records carry a health check.",
        "mandatory",
        failover_health_checked,
    ),
)
