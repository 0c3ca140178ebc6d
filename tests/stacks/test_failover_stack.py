"""The prod-dr stack: prod's standby in a second region, run offline, planned and policy-checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from inferstack.cli.main import main
from inferstack.infra.errors import InvalidInput
from inferstack.stacks import offline
from tests.conftest import ROOT
from tests.harness import DEPLOYER, Recording
from tests.schemas import validate_k8s

STACKS = ROOT / "stacks"
# The deployer's own hosted zone (RFC 2606's documentation domain here), as CI passes it.
# Its clients' range and one ACM certificate per region of the pair (documentation values).
CLIENTS = "203.0.113.0/24"
CERTIFICATES = [
    f"arn:aws:acm:{region}:123456789012:certificate/0f0e0d0c-0b0a-0908-0706-05040302010{i}"
    for i, region in enumerate(("us-east-1", "us-west-2"))
]
ENDPOINTS = {
    "inferstack:failover.sourceRanges": json.dumps([CLIENTS]),
    "inferstack:failover.certificateArns": json.dumps(CERTIFICATES),
}
STANDBY = DEPLOYER | {"inferstack:failover.zone": "example.com"} | ENDPOINTS
STANDBY_ARGS = [arg for key, value in STANDBY.items() for arg in ("-c", f"{key}={value}")]


@pytest.fixture(scope="module")
def standby() -> Recording:
    return offline.run_stack(STACKS, "prod-dr", STANDBY)


def test_the_standby_is_a_whole_platform_in_its_own_region(standby: Recording) -> None:
    types = {r.type for r in standby}
    assert {"inferstack:cluster:Cluster", "inferstack:failover:RegionalFailover"} <= types
    kubeconfig = standby.one("pulumi:providers:kubernetes", "inferstack-prod-dr-k8s").inputs["kubeconfig"]
    assert "us-west-2" in json.dumps(kubeconfig)
    regions = {r.name: r.inputs["region"] for r in standby.of_type("pulumi:providers:aws")}
    assert regions == {"primary-region": "us-east-1", "standby-region": "us-west-2"}


def test_models_replicate_from_the_primary_stacks_bucket_into_this_ones(standby: Recording) -> None:
    replication = standby.one("aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    assert replication.inputs["bucket"] == "models-prod-offline"  # the prod stack's model_bucket output
    destination = replication.inputs["rules"][0]["destination"]["bucket"]
    assert (
        destination
        == f"arn:aws:s3:::{standby.one('aws:s3/bucket:Bucket', 'inferstack-prod-dr-models-bucket').name}"
    )
    # versioning on both sides: this stack's store, and prod's store (the same component)
    for recording in (standby, offline.run_stack(STACKS, "prod", DEPLOYER)):
        versioning = recording.one("aws:s3/bucketVersioning:BucketVersioning")
        assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"
    # S3 refuses a replication configuration before the destination is versioned
    assert standby.one("aws:s3/bucketVersioning:BucketVersioning").urn in replication.dependencies


def test_each_region_gets_a_load_balancer_that_route53_checks(standby: Recording) -> None:
    services = {r.name: r for r in standby.of_type("kubernetes:core/v1:Service") if "public" in r.name}
    assert set(services) == {"ranker-public-primary", "ranker-public-standby"}
    assert "primary-cluster" in services["ranker-public-primary"].provider
    assert "inferstack-prod-dr-k8s" in services["ranker-public-standby"].provider
    for key, service in services.items():
        spec, annotations = service.inputs["spec"], service.inputs["metadata"]["annotations"]
        assert spec["type"] == "LoadBalancer"
        # TLS only, with the region's own certificate; open to the clients and Route 53's checkers only.
        assert [p["port"] for p in spec["ports"]] == [443]
        prefix = "service.beta.kubernetes.io/aws-load-balancer"
        region = "us-east-1" if key.endswith("primary") else "us-west-2"
        assert annotations[f"{prefix}-ssl-cert"].startswith(f"arn:aws:acm:{region}:")
        assert annotations[f"{prefix}-ssl-ports"] == "https"
        assert (
            CLIENTS in spec["loadBalancerSourceRanges"]
            and "15.177.0.0/18" in spec["loadBalancerSourceRanges"]
        )
        assert "0.0.0.0/0" not in spec["loadBalancerSourceRanges"]
    for check in standby.of_type("aws:route53/healthCheck:HealthCheck"):
        assert (check.inputs["type"], check.inputs["port"], check.inputs["enableSni"]) == ("HTTPS", 443, True)
    checks = {r.name: r.inputs["fqdn"] for r in standby.of_type("aws:route53/healthCheck:HealthCheck")}
    assert checks == {
        "failover-primary": "ranker-public-primary-0123456789.elb.amazonaws.com",
        "failover-standby": "ranker-public-standby-0123456789.elb.amazonaws.com",
    }
    names = {r.inputs["name"] for r in standby.of_type("aws:route53/record:Record")}
    assert names == {"ranker.example.com"}


def test_plan_and_policy_check_run_the_standby(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--stack", "prod-dr", "--stacks-dir", str(STACKS), *STANDBY_ARGS]
    assert main(["plan", *common, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "inferstack:failover:RegionalFailover" in out
    # The NLB Service goes to both clusters: one file in each cluster's folder, and the plan says which.
    for cluster in ("primary-cluster", "inferstack-prod-dr-k8s"):
        assert f"(Kubernetes provider {cluster})" in out
        path = tmp_path / "prod-dr" / cluster / "ranker" / "Service-ranker-public.yaml"
        validate_k8s(yaml.safe_load(path.read_text()))
    assert not (tmp_path / "prod-dr" / "ranker").exists()
    assert main(["policy", "check", *common]) == 0
    out = capsys.readouterr().out
    assert "0 mandatory violation(s)" in out


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({}, "inferstack:failover.zone"),  # no hosted zone given
        ({"inferstack:failover.primaryRegion": "us-west-2"}, "aws:region"),  # the same region twice
        ({"inferstack:failover.ttl": "900"}, "inferstack:failover.ttl"),
        ({"inferstack:failover.healthCheckInterval": "5"}, "inferstack:failover.healthCheckInterval"),
        ({"inferstack:failover.service": "scorer"}, "inferstack:failover.service"),
        ({"inferstack:failover.recordName": "ranker.example.org"}, "inferstack:failover.recordName"),
        ({"inferstack:failover.regions": "[]"}, "inferstack:failover.regions"),
        ({"inferstack:failover.sourceRanges": "[]"}, "inferstack:failover.sourceRanges"),
        ({"inferstack:failover.sourceRanges": '["the office"]'}, "inferstack:failover.sourceRanges"),
        (
            {"inferstack:failover.certificateArns": json.dumps(CERTIFICATES[:1])},
            "inferstack:failover.certificateArns",
        ),
    ],
)
def test_bad_failover_settings_name_their_key(settings: dict[str, str], field: str) -> None:
    zone = {} if not settings else {"inferstack:failover.zone": "example.com"}
    with pytest.raises(InvalidInput) as caught:
        offline.run_stack(STACKS, "prod-dr", DEPLOYER | ENDPOINTS | zone | settings)
    assert caught.value.field == field


IDENTITY = {
    "aws:profile": "prod-admin",
    "aws:assumeRoles": '[{"roleArn": "arn:aws:iam::123456789012:role/deployer"}]',
    "aws:defaultTags": '{"tags": {"CostCenter": "ml"}}',
    "aws:allowedAccountIds": '["123456789012"]',
}


def test_both_regions_providers_and_the_kubeconfig_act_as_the_stacks_identity() -> None:
    """Explicit providers read no stack config: they are handed the stack's aws:* settings."""
    recording = offline.run_stack(STACKS, "prod-dr", STANDBY | IDENTITY)
    for provider in recording.of_type("pulumi:providers:aws"):
        # A provider's objects reach the engine as JSON text, as the stack's own config does.
        inputs = {k: json.loads(v) if v[:1] in "[{" else v for k, v in provider.inputs.items()}
        assert inputs["profile"] == "prod-admin", provider.name
        assert inputs["assumeRoles"] == [{"roleArn": "arn:aws:iam::123456789012:role/deployer"}]
        assert inputs["defaultTags"] == {"tags": {"CostCenter": "ml"}}
        assert inputs["allowedAccountIds"] == ["123456789012"]
    given = recording.one("pulumi:providers:kubernetes", "inferstack-prod-dr-k8s").inputs["kubeconfig"]
    args = yaml.safe_load(given["value"])["users"][0]["user"]["exec"]["args"]
    assert args[-4:] == ["--role-arn", "arn:aws:iam::123456789012:role/deployer", "--profile", "prod-admin"]


def test_an_identity_the_kubeconfig_cannot_repeat_registers_nothing() -> None:
    chained = '[{"roleArn": "arn:aws:iam::1:role/a"}, {"roleArn": "arn:aws:iam::1:role/b"}]'
    with pytest.raises(InvalidInput) as caught:
        offline.run_stack(STACKS, "prod-dr", STANDBY | {"aws:assumeRoles": chained})
    assert caught.value.field == "aws:assumeRoles"
