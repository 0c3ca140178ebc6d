"""RegionalFailover: validation, the RTO/RPO arithmetic, the replication role's reach, the resources."""

from __future__ import annotations

import json
from typing import Any

import pulumi_aws as aws
import pytest

from inferstack.infra.errors import InvalidInput
from inferstack.infra.failover import RegionalFailover, RegionalFailoverArgs, replication_policy
from inferstack.infra.failover_timing import check_timing, rpo_s
from tests.harness import Recording, run_invalid, run_program
from tests.infra.iam import allowed

SOURCE, DEST = "arn:aws:s3:::models-east", "arn:aws:s3:::models-west"
SOURCE_KEY = "arn:aws:kms:us-east-1:123456789012:key/east"
DEST_KEY = "arn:aws:kms:us-west-2:123456789012:key/west"


def args(**overrides: Any) -> RegionalFailoverArgs:
    values: dict[str, Any] = {
        "primary_region": "us-east-1",
        "standby_region": "us-west-2",
        "primary_bucket": "models-east",
        "standby_bucket": "models-west",
        "primary_endpoint": "east-123.elb.us-east-1.amazonaws.com",
        "standby_endpoint": "west-456.elb.us-west-2.amazonaws.com",
        "zone_id": "Z123",
        "record_name": "ranker.example.com",
    } | overrides
    return RegionalFailoverArgs(**values)


def build(failover_args: RegionalFailoverArgs) -> RegionalFailover:
    east = aws.Provider("east", region=failover_args.primary_region)
    west = aws.Provider("west", region=failover_args.standby_region)
    return RegionalFailover("failover", failover_args, primary=east, standby=west)


def test_rto_is_interval_times_threshold_plus_ttl() -> None:
    # By hand: a 30 s check, 3 failures in a row, a 60 s TTL: 30 x 3 + 60 = 150 s.
    timing = check_timing(30, 3, 60)
    assert (timing.detection_s, timing.rto_s) == (90, 150)
    assert check_timing(10, 1, 5).rto_s == 15
    assert rpo_s(True) == 900 and rpo_s(False) is None


@pytest.mark.parametrize(
    ("interval", "threshold", "ttl", "field"),
    [
        (15, 3, 60, "health_check_interval_s"),  # Route 53 checks every 10 or 30 s only
        (10, 0, 60, "failure_threshold"),
        (10, 11, 60, "failure_threshold"),
        (10, 3, 4, "ttl_s"),
        (10, 3, 301, "ttl_s"),
    ],
)
def test_timing_out_of_range(interval: int, threshold: int, ttl: int, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_timing(interval, threshold, ttl)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"standby_region": "us-east-1"}, "standby_region"),
        ({"primary_region": "east"}, "primary_region"),
        ({"primary_endpoint": ""}, "primary_endpoint"),
        ({"standby_endpoint": None}, "standby_endpoint"),
        ({"standby_endpoint": "http://west/"}, "standby_endpoint"),
        ({"record_name": "not a name"}, "record_name"),
        ({"failure_threshold": 20}, "failure_threshold"),
    ],
)
def test_bad_arguments_register_nothing(overrides: dict[str, Any], field: str) -> None:
    recording, error = run_invalid(lambda: build(args(**overrides)))
    assert error.field == field
    assert not [r for r in recording if not r.type.startswith("pulumi:providers:")]


@pytest.mark.parametrize(
    ("action", "resource", "context", "expected"),
    [
        ("s3:GetObjectVersionForReplication", f"{SOURCE}/ranker/1/model.pt", {}, True),
        ("s3:ReplicateObject", f"{DEST}/ranker/1/model.pt", {}, True),
        ("s3:ReplicateObject", f"{SOURCE}/ranker/1/model.pt", {}, False),  # never writes the source
        ("s3:GetObjectVersionForReplication", f"{DEST}/x", {}, False),
        ("s3:DeleteObject", f"{DEST}/ranker/1/model.pt", {}, False),
        ("s3:PutObject", f"{DEST}/ranker/1/model.pt", {}, False),
        ("kms:Decrypt", SOURCE_KEY, {"kms:ViaService": "s3.us-east-1.amazonaws.com",
                                     "kms:EncryptionContext:aws:s3:arn": SOURCE}, True),
        ("kms:Decrypt", SOURCE_KEY, {"kms:ViaService": "kms.us-east-1.amazonaws.com",
                                     "kms:EncryptionContext:aws:s3:arn": SOURCE}, False),  # only through S3
        ("kms:Decrypt", SOURCE_KEY, {"kms:ViaService": "s3.us-east-1.amazonaws.com",
                                     "kms:EncryptionContext:aws:s3:arn": "arn:aws:s3:::other"}, False),
        ("kms:Encrypt", DEST_KEY, {"kms:ViaService": "s3.us-west-2.amazonaws.com",
                                   "kms:EncryptionContext:aws:s3:arn": f"{DEST}/ranker/1/model.pt"}, True),
        ("kms:Decrypt", DEST_KEY, {"kms:ViaService": "s3.us-west-2.amazonaws.com",
                                   "kms:EncryptionContext:aws:s3:arn": DEST}, False),
    ],
)  # fmt: skip
def test_the_replication_role_reaches_the_two_buckets_and_keys_only(
    action: str, resource: str, context: dict[str, str], expected: bool
) -> None:
    policy = replication_policy(
        source_arn=SOURCE,
        destination_arn=DEST,
        source_key_arn=SOURCE_KEY,
        destination_key_arn=DEST_KEY,
        source_region="us-east-1",
        destination_region="us-west-2",
    )
    assert allowed(policy, action, resource, context) is expected


def recorded(**overrides: Any) -> tuple[Recording, Any]:
    def program() -> dict[str, Any]:
        pair = build(args(**overrides))
        return {"rto_s": pair.rto_s, "rpo_s": pair.rpo_s}

    return run_program(program)


def test_replication_runs_in_the_primary_with_kms_objects_and_rtc() -> None:
    recording, outputs = recorded()
    assert outputs == {"rto_s": 10 * 3 + 60, "rpo_s": 900}
    replication = recording.one("aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    assert "::east::" in replication.provider  # the primary's region owns the source bucket
    assert replication.inputs["bucket"] == "models-east"
    (rule,) = replication.inputs["rules"]
    assert rule["status"] == "Enabled"
    assert rule["sourceSelectionCriteria"] == {"sseKmsEncryptedObjects": {"status": "Enabled"}}
    assert rule["deleteMarkerReplication"] == {"status": "Enabled"}
    destination = rule["destination"]
    assert destination["bucket"] == DEST
    # the standby's own key (the getKey answer of the west provider), not the primary's
    assert destination["encryptionConfiguration"]["replicaKmsKeyId"].startswith("arn:aws:kms:us-west-2:")
    assert destination["replicationTime"] == {"status": "Enabled", "time": {"minutes": 15}}
    role = recording.one("aws:iam/role:Role")
    assert json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"] == {
        "Service": "s3.amazonaws.com"
    }
    policy = json.loads(recording.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    keys = {s["Sid"]: s["Resource"] for s in policy["Statement"]}
    assert keys["DecryptSource"].startswith("arn:aws:kms:us-east-1:")
    assert keys["EncryptReplicas"].startswith("arn:aws:kms:us-west-2:")
    # the replication waits for its role's permissions
    grant = recording.one("aws:iam/rolePolicy:RolePolicy")
    assert grant.urn in replication.dependencies


def test_health_checks_and_failover_records() -> None:
    recording, _ = recorded(ttl_s=30, health_check_interval_s=30, failure_threshold=2)
    checks = {r.name: r.inputs for r in recording.of_type("aws:route53/healthCheck:HealthCheck")}
    assert checks["failover-primary"]["fqdn"] == "east-123.elb.us-east-1.amazonaws.com"
    assert checks["failover-standby"]["fqdn"] == "west-456.elb.us-west-2.amazonaws.com"
    for check in checks.values():
        assert (check["type"], check["port"], check["resourcePath"]) == ("HTTP", 8000, "/v2/health/ready")
        assert (check["requestInterval"], check["failureThreshold"]) == (30, 2)
    records = {r.name: r.inputs for r in recording.of_type("aws:route53/record:Record")}
    assert records["failover-primary"]["failoverRoutingPolicies"] == [{"type": "PRIMARY"}]
    assert records["failover-standby"]["failoverRoutingPolicies"] == [{"type": "SECONDARY"}]
    for key, record in records.items():
        assert record["name"] == "ranker.example.com" and record["ttl"] == 30 and record["type"] == "CNAME"
        assert record["healthCheckId"] == f"{key}-id"  # each record checked by its own region's check
    assert records["failover-primary"]["records"] == ["east-123.elb.us-east-1.amazonaws.com"]
