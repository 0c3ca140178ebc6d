"""Cluster: the EKS control plane's settings as the engine would receive them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from pulumi.runtime import rpc

from inferstack.infra.aws_identity import AwsIdentity
from inferstack.infra.cluster import LOG_TYPES, Cluster, ClusterArgs
from inferstack.infra.cluster_access import ACCESS_SETTLE_S, access_settle_s, admin_principals, kubeconfig
from inferstack.infra.versions import DEFAULT_KUBERNETES_VERSION, EKS_ADDON_VERSIONS
from tests.harness import ACCOUNT_ID, answering, run_invalid, run_program
from tests.infra.iam import allowed

ADMIN = "arn:aws:iam::123456789012:role/platform-admins"


def build(**overrides: Any) -> Cluster:
    args = ClusterArgs(
        subnet_ids=["subnet-a", "subnet-b", "subnet-c"], admin_principal_arns=[ADMIN], **overrides
    )
    return Cluster("prod", args)


def test_control_plane_settings() -> None:
    recording, _ = run_program(lambda: build(public_access_cidrs=["203.0.113.0/24"]))
    eks = recording.one("aws:eks/cluster:Cluster").inputs
    assert eks["version"] == DEFAULT_KUBERNETES_VERSION
    assert eks["enabledClusterLogTypes"] == list(LOG_TYPES)
    assert eks["vpcConfig"]["endpointPrivateAccess"] is True
    assert eks["vpcConfig"]["endpointPublicAccess"] is True
    assert eks["vpcConfig"]["publicAccessCidrs"] == ["203.0.113.0/24"]
    assert eks["encryptionConfig"]["resources"] == ["secrets"]
    assert eks["encryptionConfig"]["provider"]["keyArn"].endswith("prod-secrets")
    assert eks["accessConfig"] == {
        "authenticationMode": "API",
        "bootstrapClusterCreatorAdminPermissions": False,
    }
    key = recording.one("aws:kms/key:Key").inputs
    assert key["enableKeyRotation"] is True


def test_private_only_by_default() -> None:
    recording, _ = run_program(build)
    vpc = recording.one("aws:eks/cluster:Cluster").inputs["vpcConfig"]
    assert vpc["endpointPublicAccess"] is False and "publicAccessCidrs" not in vpc


def test_the_deployer_and_named_admins_are_cluster_admins() -> None:
    recording, outputs = run_program(lambda: {"issuer": build().oidc_issuer_url})
    entries = {r.inputs["principalArn"] for r in recording.of_type("aws:eks/accessEntry:AccessEntry")}
    # The offline caller (tests/harness) is the IAM user that runs Pulumi.
    assert entries == {ADMIN, f"arn:aws:iam::{ACCOUNT_ID}:user/ci"}
    associations = recording.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert {a.inputs["principalArn"] for a in associations} == entries
    for association in associations:
        assert association.inputs["policyArn"] == (
            "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
        )
        assert association.inputs["accessScope"] == {"type": "cluster"}
    # Every Kubernetes call waits until the deployer may make it.
    provider = recording.one("pulumi:providers:kubernetes")
    assert {a.urn for a in associations} <= set(provider.dependencies)
    oidc = recording.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider").inputs
    assert oidc["clientIdLists"] == ["sts.amazonaws.com"] and oidc["url"] == outputs["issuer"]

    addons = {
        r.inputs["addonName"]: r.inputs["addonVersion"] for r in recording.of_type("aws:eks/addon:Addon")
    }
    pinned = EKS_ADDON_VERSIONS[DEFAULT_KUBERNETES_VERSION]
    assert addons == {k: v for k, v in pinned.items() if k != "coredns"}  # coredns waits for nodes


def test_an_assumed_role_is_admitted_by_its_role_arn_with_path() -> None:
    session = "arn:aws:sts::123456789012:assumed-role/deployers/ci-run-17"
    role = "arn:aws:iam::123456789012:role/platform/deployers"
    invokes = {
        "aws:index/getCallerIdentity:getCallerIdentity": lambda _: {
            "accountId": "123456789012",
            "arn": session,
            "userId": "AROA:ci-run-17",
            "id": "123456789012",
        },
        "aws:iam/getSessionContext:getSessionContext": lambda args: {
            "arn": args["arn"],
            "issuerArn": role,
            "issuerName": "deployers",
            "id": args["arn"],
        },
    }
    recording, _ = run_program(lambda: Cluster("prod", ClusterArgs(subnet_ids=["a", "b"])), invokes=invokes)
    entry = recording.one("aws:eks/accessEntry:AccessEntry", "prod-deployer")
    assert entry.inputs["principalArn"] == role


def test_admin_entries_are_named_by_principal_not_position() -> None:
    other = "arn:aws:iam::123456789012:role/oncall"
    before = admin_principals("arn:aws:iam::1:user/ci", [ADMIN, other])
    after = admin_principals("arn:aws:iam::1:user/ci", [other])
    assert {k: v for k, v in before.items() if v == other} == {k: v for k, v in after.items() if v == other}
    # The deployer listed again among the admins gets one entry, not a second that EKS would refuse.
    assert list(admin_principals(ADMIN, [ADMIN]).values()) == [ADMIN]


def test_vpc_cni_uses_its_own_role_and_the_node_role_does_not_carry_it() -> None:
    recording, _ = run_program(build)
    cni = recording.one("aws:eks/addon:Addon", "prod-vpc-cni").inputs
    role = recording.one("aws:iam/role:Role", "prod-vpc-cni")
    assert cni["serviceAccountRoleArn"].endswith("prod-vpc-cni")
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
    assert (
        trust["Condition"]["StringEquals"]["oidc.eks.us-east-1.amazonaws.com/id/PROD-EKS:sub"]
        == "system:serviceaccount:kube-system:aws-node"
    )
    node_policies = [
        r.inputs["policyArn"]
        for r in recording.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if r.name.startswith("prod-node-")
    ]
    assert node_policies and not any("CNI" in arn for arn in node_policies)


def test_arns_follow_the_partition() -> None:
    invokes = answering(
        "aws:index/getPartition:getPartition", partition="aws-cn", dnsSuffix="amazonaws.com.cn", id="aws-cn"
    )
    recording, _ = run_program(build, invokes=invokes)
    arns = [
        r.inputs["policyArn"] for r in recording.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    ]
    arns += [
        r.inputs["policyArn"]
        for r in recording.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    ]
    assert arns and all(arn.startswith("arn:aws-cn:") for arn in arns)
    key_policy = json.loads(recording.one("aws:kms/key:Key").inputs["policy"])
    assert key_policy["Statement"][0]["Principal"]["AWS"].startswith("arn:aws-cn:iam::")


def test_coredns_after_nodes() -> None:
    recording, _ = run_program(lambda: build().install_coredns(after=[]))
    addon = recording.one("aws:eks/addon:Addon", "prod-coredns").inputs
    assert addon["addonVersion"] == EKS_ADDON_VERSIONS[DEFAULT_KUBERNETES_VERSION]["coredns"]


def test_kubeconfig_uses_the_exec_plugin_and_is_secret() -> None:
    text = kubeconfig("prod", "https://x.eks", "Y2E=", "eu-west-1")
    config = yaml.safe_load(text)
    user = config["users"][0]["user"]
    assert "token" not in user
    assert user["exec"]["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert user["exec"]["command"] == "aws"
    assert user["exec"]["args"][:6] == ["eks", "get-token", "--cluster-name", "prod", "--region", "eu-west-1"]
    assert config["clusters"][0]["cluster"] == {
        "server": "https://x.eks",
        "certificate-authority-data": "Y2E=",
    }
    recording, _ = run_program(build)
    given = recording.one("pulumi:providers:kubernetes").inputs["kubeconfig"]
    # The engine receives the kubeconfig wrapped as a secret, so it is encrypted in the state.
    assert given[rpc._special_sig_key] == rpc._special_secret_sig
    built = yaml.safe_load(given["value"])
    assert built["clusters"][0]["cluster"]["server"] == "https://prod-eks.eks.us-east-1.amazonaws.com"
    assert built["users"][0]["user"]["exec"]["args"][3] == "prod"


def test_the_token_is_got_as_the_stacks_own_identity() -> None:
    """The provider's profile and role go on get-token's command line, where ambient credentials
    cannot override them: the token's principal is the one the deployer's access entry names."""
    role = "arn:aws:iam::123456789012:role/deployer"
    recording, _ = run_program(lambda: build(identity=AwsIdentity(profile="prod-admin", role_arn=role)))
    given = recording.one("pulumi:providers:kubernetes").inputs["kubeconfig"]["value"]
    exec_ = yaml.safe_load(given)["users"][0]["user"]["exec"]
    assert exec_["args"][8:] == ["--role-arn", role, "--profile", "prod-admin"]
    assert "env" not in exec_
    plain = yaml.safe_load(kubeconfig("prod", "https://x.eks", "Y2E=", "eu-west-1"))
    assert plain["users"][0]["user"]["exec"]["args"][-2:] == ["--output", "json"]


def test_the_kubeconfig_comes_out_only_after_the_deployers_access_settles() -> None:
    recording, _ = run_program(build)
    provider = recording.one("pulumi:providers:kubernetes")
    deployer = recording.one("aws:eks/accessPolicyAssociation:AccessPolicyAssociation", "prod-deployer")
    # The kubeconfig is computed from the association's time, so its first call waits for it.
    assert deployer.urn in provider.property_dependencies["kubeconfig"]


def test_the_access_settle_wait_is_bounded_and_once() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    just = (now - timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    assert access_settle_s(just, now) == ACCESS_SETTLE_S - 5
    assert access_settle_s((now - timedelta(minutes=5)).isoformat(), now) == 0  # a later `up`
    assert access_settle_s(None, now) == 0
    assert access_settle_s(now.isoformat(), now) <= ACCESS_SETTLE_S


def test_cluster_and_node_roles_trust_the_right_services() -> None:
    recording, _ = run_program(build)
    roles = {r.name: json.loads(r.inputs["assumeRolePolicy"]) for r in recording.of_type("aws:iam/role:Role")}
    assert roles["prod-cluster"]["Statement"][0]["Principal"] == {"Service": "eks.amazonaws.com"}
    assert roles["prod-node"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}


def test_cluster_role_may_use_its_secrets_key_and_no_other() -> None:
    recording, _ = run_program(build)
    grant = recording.one("aws:iam/rolePolicy:RolePolicy", "prod-cluster-secrets-key")
    assert grant.inputs["role"] == "prod-cluster-id"
    policy = json.loads(grant.inputs["policy"])
    key = "arn:aws:kms:us-east-1:123456789012:prod-secrets"
    for action in ("kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"):
        assert allowed(policy, action, key)
    assert not allowed(policy, "kms:Decrypt", "arn:aws:kms:us-east-1:123456789012:key/another")
    for action in (
        "kms:ScheduleKeyDeletion",
        "kms:PutKeyPolicy",
        "kms:DisableKeyRotation",
        "kms:CreateGrant",
    ):
        assert not allowed(policy, action, key)


def test_control_plane_logs_are_kept_for_a_bounded_time() -> None:
    recording, _ = run_program(lambda: build(log_retention_days=30))
    group = recording.one("aws:cloudwatch/logGroup:LogGroup").inputs
    # The very name EKS writes to, so the cluster uses this group instead of making one that never expires.
    assert group["name"] == "/aws/eks/prod/cluster"
    assert group["retentionInDays"] == 30


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"version": "1.20"}, "version"),
        ({"public_access_cidrs": ["0.0.0.0/0"]}, "public_access_cidrs[0]"),
        ({"public_access_cidrs": ["nope"]}, "public_access_cidrs[0]"),
        # The public endpoint never sees private sources: a VPN's 10/8 there locks everyone out.
        ({"public_access_cidrs": ["10.0.0.0/8"]}, "public_access_cidrs[0]"),
        ({"public_access_cidrs": ["198.51.100.7/32", "192.168.1.0/24"]}, "public_access_cidrs[1]"),
        ({"admin_principal_arns": ["root"]}, "admin_principal_arns[0]"),
        ({"admin_principal_arns": [ADMIN, ADMIN]}, "admin_principal_arns"),
        ({"log_types": ["api", "everything"]}, "log_types"),
        ({"log_retention_days": 42}, "log_retention_days"),
        ({"subnet_ids": ["one"]}, "subnet_ids"),
    ],
)
def test_bad_input_names_the_field_and_registers_nothing(overrides: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"subnet_ids": ["a", "b"], **overrides}
    recording, error = run_invalid(lambda: Cluster("prod", ClusterArgs(**args)))
    assert error.field == field
    assert recording.resources == []
