"""Preflight's checks against moto's AWS (in-process, no network).

moto answers STS, EC2 zones and instance type offerings, EC2's encryption-by-default flag, KMS keys,
IAM roles, Route 53 zones and SSM (which holds none of EKS's public AMI parameters: the "missing
release" case is moto's own answer). It does not implement four calls, which a test answers instead,
one call each: Service Quotas for EC2 (moto knows only VPC quotas), EKS DescribeAddonVersions (404),
EC2 GetEbsDefaultKmsKeyId (NotImplementedError), and SSM GetParameter for a release that exists.
KMS DescribeKey is moto's except where a key must be AWS-managed (moto makes every key CUSTOMER).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from inferstack.infra import preflight
from inferstack.infra.node_plans import CapacityType, NodeGroupPlan
from inferstack.infra.preflight import Check, Target, ami_parameter, quota_verdict, vcpu_needs
from inferstack.infra.versions import AL2023_RELEASE_VERSIONS, EBS_CSI_ADDON_VERSIONS, EKS_ADDON_VERSIONS

REGION = "us-east-1"
ADDONS = {**EKS_ADDON_VERSIONS["1.35"], "aws-ebs-csi-driver": EBS_CSI_ADDON_VERSIONS["1.35"]}


def _error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, operation)


class Stubbed:
    """A moto client with the named calls answered by the test instead."""

    def __init__(self, client: Any, **calls: Callable[..., Any]) -> None:
        self._client, self._calls = client, calls

    def __getattr__(self, name: str) -> Any:
        return self._calls.get(name) or getattr(self._client, name)


@dataclass
class Account:
    """The AWS account as preflight sees it: moto, plus the answers moto cannot give."""

    applied_quotas: dict[str, float] = field(default_factory=dict)
    default_quotas: dict[str, float] = field(default_factory=dict)
    offered_addons: Mapping[str, list[str]] = field(
        default_factory=lambda: {a: [v] for a, v in ADDONS.items()}
    )
    default_key: str = "alias/aws/ebs"
    aws_managed_default_key: bool = True
    published_amis: set[str] = field(default_factory=set)

    def _quota(self, ServiceCode: str, QuotaCode: str, applied: bool) -> dict[str, Any]:
        found = (self.applied_quotas if applied else self.default_quotas).get(QuotaCode)
        if found is None:
            raise _error("NoSuchResourceException", "GetServiceQuota")
        return {"Quota": {"ServiceCode": ServiceCode, "QuotaCode": QuotaCode, "Value": found}}

    def clients(self, region: str = REGION) -> preflight.Clients:
        def make(service: str) -> Any:
            client = boto3.client(service, region_name=region)  # type: ignore[call-overload]
            if service == "service-quotas":
                return Stubbed(
                    client,
                    get_service_quota=lambda **kw: self._quota(**kw, applied=True),
                    get_aws_default_service_quota=lambda **kw: self._quota(**kw, applied=False),
                )
            if service == "eks":
                return Stubbed(
                    client,
                    describe_addon_versions=lambda kubernetesVersion, addonName: {
                        "addons": [
                            {
                                "addonName": addonName,
                                "addonVersions": [
                                    {"addonVersion": v} for v in self.offered_addons[addonName]
                                ],
                            }
                        ]
                    },
                )
            if service == "ec2":
                return Stubbed(client, get_ebs_default_kms_key_id=lambda: {"KmsKeyId": self.default_key})
            if service == "kms" and self.aws_managed_default_key:
                return Stubbed(
                    client,
                    describe_key=lambda KeyId: {
                        "KeyMetadata": {"Arn": KeyId, "KeyManager": "AWS", "KeyState": "Enabled"}
                    },
                )
            if service == "ssm":

                def get_parameter(Name: str) -> dict[str, Any]:
                    if Name in self.published_amis:
                        return {"Parameter": {"Name": Name, "Value": "ami-0123456789abcdef0"}}
                    return client.get_parameter(Name=Name)  # moto: ParameterNotFound

                return Stubbed(client, get_parameter=get_parameter)
            return client

        return make


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


def ready_account() -> Account:
    """An account where the prod stack's first `up` goes through."""
    boto3.client("iam").create_service_linked_role(AWSServiceName="autoscaling.amazonaws.com")
    boto3.client("route53").create_hosted_zone(Name="example.com", CallerReference="preflight")
    release = AL2023_RELEASE_VERSIONS["1.35"]
    return Account(
        applied_quotas={"L-DB2E81BA": 64, "L-3819A6DF": 96},
        default_quotas={"L-1216C47A": 64},
        published_amis={ami_parameter("1.35", release, f) for f in ("nvidia", "standard")},
    )


def group(name: str, capacity: CapacityType, types: tuple[str, ...], start: int, most: int) -> NodeGroupPlan:
    return NodeGroupPlan(name, ("us-east-1a",), capacity, types, "AL2023_x86_64_NVIDIA", 0, start, most)


def per_zone(count: int) -> list[NodeGroupPlan]:
    """prod's groups: system across zones, a g5 group and a spot group per zone, and a Capacity Block."""
    spot = ("g5.xlarge", "g6.xlarge", "g4dn.xlarge")
    return [
        group("system", "ON_DEMAND", ("m7i.xlarge", "m6i.xlarge"), 3, 6),
        *(group(f"gpu-{i}", "ON_DEMAND", ("g5.xlarge",), 1, 4) for i in range(count)),
        *(group(f"gpu-spot-{i}", "SPOT", spot, 0, 6) for i in range(count)),
        group("gpu-reserved", "CAPACITY_BLOCK", ("p5.48xlarge",), 2, 2),
    ]


def target(**overrides: Any) -> Target:
    values: dict[str, Any] = {
        "region": REGION,
        "kubernetes_version": "1.35",
        "zones": 3,
        "gpu_types": ("g4dn.xlarge", "g5.xlarge", "g6.xlarge"),
        "groups": per_zone,
        "addons": ADDONS,
        "ami_release": AL2023_RELEASE_VERSIONS["1.35"],
        "ami_flavours": ("nvidia", "standard"),
        "hosted_zone": "example.com",
    }
    return Target(**(values | overrides))


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_a_ready_account_passes_every_check(aws: None) -> None:
    checks = by_name(preflight.run(target(), ready_account().clients()))
    assert {c.verdict for c in checks.values()} == {"pass"}, [
        c for c in checks.values() if c.verdict != "pass"
    ]
    assert checks["identity"].reason.startswith("arn:aws:")
    assert set(checks) >= {"zones", "quota L-DB2E81BA", "quota L-3819A6DF", "quota L-1216C47A"}
    assert {f"add-on {a}" for a in ADDONS} <= set(checks)
    assert checks["hosted zone example.com"].verdict == "pass"


def test_vcpus_are_counted_per_quota_at_start_and_at_full_scale() -> None:
    needs = vcpu_needs(per_zone(3))
    assert needs[("G", "ON_DEMAND")] == (3 * 1 * 4, 3 * 4 * 4)  # 1 g5.xlarge per zone now, 4 at most
    assert needs[("G", "SPOT")] == (0, 3 * 6 * 4)  # spot starts from zero
    assert needs[("Standard", "ON_DEMAND")] == (3 * 4, 6 * 4)
    assert not any(quota_class == "P" for quota_class, _ in needs)  # a Capacity Block is bought whole


def test_a_quota_below_the_start_fails_and_below_full_scale_warns(aws: None) -> None:
    account = ready_account()
    account.applied_quotas = {"L-DB2E81BA": 8, "L-3819A6DF": 32}  # G on demand < 12 to start; spot < 72
    checks = by_name(preflight.run(target(), account.clients()))
    assert checks["quota L-DB2E81BA"].verdict == "fail"
    assert "--quota-code L-DB2E81BA --desired-value 48" in checks["quota L-DB2E81BA"].fix
    assert checks["quota L-3819A6DF"].verdict == "warn"
    assert "72" in checks["quota L-3819A6DF"].reason
    assert quota_verdict("q", "L-X", REGION, 48, 12, 48).verdict == "pass"


def test_the_quota_follows_the_number_of_zones_the_stack_can_use(aws: None) -> None:
    account = ready_account()
    account.applied_quotas["L-DB2E81BA"] = 32  # enough for 2 zones' 32 vCPUs, not for 3 zones' 48
    assert by_name(preflight.run(target(zones=2), account.clients()))["quota L-DB2E81BA"].verdict == "pass"
    assert by_name(preflight.run(target(), account.clients()))["quota L-DB2E81BA"].verdict == "warn"


def test_a_customer_managed_default_key_warns_and_a_disabled_one_fails(aws: None) -> None:
    kms, ec2 = boto3.client("kms", region_name=REGION), boto3.client("ec2", region_name=REGION)
    made = kms.create_key(Description="the account's own EBS default")["KeyMetadata"]
    key = made["Arn"]
    account = ready_account()
    account.default_key, account.aws_managed_default_key = key, False
    ec2.enable_ebs_encryption_by_default()
    check = preflight.check_default_ebs_key(account.clients())
    assert check.verdict == "warn" and "AWSServiceRoleForAutoScaling" in check.fix
    ec2.disable_ebs_encryption_by_default()
    assert preflight.check_default_ebs_key(account.clients()).verdict == "pass"
    kms.disable_key(KeyId=made["KeyId"])  # moto disables by id only
    ec2.enable_ebs_encryption_by_default()
    check = preflight.check_default_ebs_key(account.clients())
    assert check.verdict == "fail" and "Disabled" in check.reason


def test_a_missing_autoscaling_role_fails_with_the_command_that_makes_it(aws: None) -> None:
    account = Account()  # moto's IAM: no AWSServiceRoleForAutoScaling yet
    check = preflight.check_autoscaling_role(account.clients())
    assert check.verdict == "fail"
    assert check.fix == "aws iam create-service-linked-role --aws-service-name autoscaling.amazonaws.com"


def test_an_addon_version_not_offered_fails(aws: None) -> None:
    account = ready_account()
    account.offered_addons = {**account.offered_addons, "coredns": ["v1.13.2-eksbuild.1"]}
    checks = by_name(preflight.run(target(), account.clients()))
    assert checks["add-on coredns"].verdict == "fail"
    assert "v1.13.2-eksbuild.1" in checks["add-on coredns"].reason
    assert checks["add-on vpc-cni"].verdict == "pass"


def test_an_unpublished_ami_release_fails_on_motos_own_answer(aws: None) -> None:
    account = ready_account()
    account.published_amis = set()  # moto's SSM answers ParameterNotFound itself
    checks = preflight.check_ami_release(target(), account.clients())
    assert [c.verdict for c in checks] == ["fail", "fail"]
    assert "amazon-eks-node-al2023-x86_64-nvidia-1.35-v20260304/image_id" in checks[0].reason
    assert "recommended/release_version" in checks[0].fix


def test_zones_that_cannot_host_the_stack_fail_with_the_reason(aws: None) -> None:
    # moto's us-east-1e is use1-az3, where EKS refuses control-plane subnets.
    zones = {
        z["ZoneName"]: z["ZoneId"]
        for z in boto3.client("ec2", region_name=REGION).describe_availability_zones()["AvailabilityZones"]
    }
    unsupported = next(name for name, zone_id in zones.items() if zone_id == "use1-az3")
    check, count = preflight.check_zones(target(zones=("us-east-1a", unsupported)), Account().clients())
    assert check.verdict == "fail" and "does not support EKS" in check.reason and count == 2
    check, _ = preflight.check_zones(target(zones=20), Account().clients())
    assert check.verdict == "fail" and "usable zones" in check.reason


def test_a_missing_hosted_zone_fails(aws: None) -> None:
    check = preflight.check_hosted_zone("example.org", Account().clients())
    assert check.verdict == "fail" and "example.org." in check.reason
