"""prod's plan, as `inferstack plan --json` prints it: S3 traffic skips the NAT, and every EBS volume
(node disks, gp3 claims) is encrypted with the cluster's own key, usable by whoever makes the volume."""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import pytest

from inferstack.cli.main import main
from inferstack.infra.storage import AUTOSCALING_ROLE_PATH
from tests.conftest import ROOT
from tests.harness import ACCOUNT_ID, DEPLOYER_ARGS
from tests.infra.iam import allowed

KEY = "aws:kms/key:Key"


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """prod's `plan --json`: each resource's newState by URN."""
    out = tmp_path_factory.mktemp("plan")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(
            [
                "plan",
                "-s",
                "prod",
                "--json",
                "--stacks-dir",
                str(ROOT / "stacks"),
                "--out",
                str(out),
                *DEPLOYER_ARGS,
            ]
        )
    assert code == 0
    return {step["urn"]: step["newState"] for step in json.loads(printed.getvalue())["steps"]}


def of_type(plan: dict[str, dict[str, Any]], token: str) -> list[dict[str, Any]]:
    return [state for state in plan.values() if state["type"] == token]


def named(plan: dict[str, dict[str, Any]], token: str, suffix: str) -> dict[str, Any]:
    (found,) = [s for urn, s in plan.items() if s["type"] == token and urn.endswith(f"::{suffix}")]
    return found


def test_the_s3_gateway_endpoint_serves_every_private_route_table(plan: dict[str, dict[str, Any]]) -> None:
    (endpoint,) = of_type(plan, "aws:ec2/vpcEndpoint:VpcEndpoint")
    assert endpoint["inputs"]["serviceName"] == "com.amazonaws.us-east-1.s3"
    assert endpoint["inputs"]["vpcEndpointType"] == "Gateway"
    private = {
        u for u, s in plan.items() if s["type"] == "aws:ec2/routeTable:RouteTable" and "-private-" in u
    }
    assert len(private) == 3 and set(endpoint["propertyDependencies"]["routeTableIds"]) == private


def test_node_volumes_use_the_volume_key_the_autoscaling_role_may_use(
    plan: dict[str, dict[str, Any]],
) -> None:
    key_urn, key = next((u, s) for u, s in plan.items() if s["type"] == KEY and u.endswith("-volumes"))
    key_arn = f"arn:aws:kms:us-east-1:{ACCOUNT_ID}:{key_urn.rsplit('::', 1)[-1]}"  # the mocks' ARN
    templates = of_type(plan, "aws:ec2/launchTemplate:LaunchTemplate")
    assert len(templates) == 9  # system, on-demand and spot GPU: one of each per zone
    for template in templates:
        for mapping in template["inputs"]["blockDeviceMappings"]:
            assert mapping["ebs"]["encrypted"] == "true"
            assert mapping["ebs"]["kmsKeyId"] == key_arn
        assert key_urn in template["propertyDependencies"]["blockDeviceMappings"]  # made after the key
    policy = json.loads(key["inputs"]["policy"])
    autoscaling = f"arn:aws:iam::{ACCOUNT_ID}:{AUTOSCALING_ROLE_PATH}"
    # The key policy's statements for the service-linked role (no IAM policy can be attached to it).
    its_own = {"Statement": [s for s in policy["Statement"] if s["Principal"] == {"AWS": autoscaling}]}
    for action in ("kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:GenerateDataKeyWithoutPlaintext"):
        assert allowed(its_own, action, "*"), action
    # A grant only for AWS resources: EC2 attaching the volume, not anyone the role could name.
    assert allowed(its_own, "kms:CreateGrant", "*", {"kms:GrantIsForAWSResource": "true"})
    assert not allowed(its_own, "kms:CreateGrant", "*")
    assert not allowed(its_own, "kms:ScheduleKeyDeletion", "*")
    assert key["inputs"]["enableKeyRotation"] is True


def test_gp3_claims_use_the_volume_key_the_csi_role_may_use(plan: dict[str, dict[str, Any]]) -> None:
    key_urn = next(u for u, s in plan.items() if s["type"] == KEY and u.endswith("-volumes"))
    key_arn = f"arn:aws:kms:us-east-1:{ACCOUNT_ID}:{key_urn.rsplit('::', 1)[-1]}"
    (gp3,) = of_type(plan, "kubernetes:storage.k8s.io/v1:StorageClass")
    assert gp3["inputs"]["parameters"]["kmsKeyId"] == key_arn
    csi_key = named(plan, "aws:iam/rolePolicy:RolePolicy", "inferstack-prod-storage-ebs-csi-key")
    policy = json.loads(csi_key["inputs"]["policy"])
    for action in ("kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKeyWithoutPlaintext", "kms:DescribeKey"):
        assert allowed(policy, action, key_arn), action
    assert not allowed(policy, "kms:Decrypt", "arn:aws:kms:us-east-1:123456789012:key/another")
    assert not allowed(policy, "kms:ScheduleKeyDeletion", key_arn)
    assert allowed(policy, "kms:CreateGrant", key_arn, {"kms:GrantIsForAWSResource": "true"})
    assert not allowed(policy, "kms:CreateGrant", key_arn)
    # The driver starts with its key policy in place: its first CreateVolume would be denied otherwise.
    addon = named(plan, "aws:eks/addon:Addon", "inferstack-prod-storage-ebs-csi")
    csi_key_urn = next(u for u in plan if u.endswith("::inferstack-prod-storage-ebs-csi-key"))
    assert csi_key_urn in addon["dependencies"]
