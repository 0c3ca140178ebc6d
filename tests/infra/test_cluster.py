"""Cluster: the EKS control plane's settings as the engine would receive them."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from inferstack.infra.cluster import LOG_TYPES, Cluster, ClusterArgs, kubeconfig
from inferstack.infra.versions import DEFAULT_KUBERNETES_VERSION, EKS_ADDON_VERSIONS
from tests.harness import run_invalid, run_program

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


def test_access_entries_oidc_and_pinned_addons() -> None:
    recording, outputs = run_program(lambda: {"issuer": build().oidc_issuer_url})
    entry = recording.one("aws:eks/accessEntry:AccessEntry").inputs
    assert entry["principalArn"] == ADMIN
    association = recording.one("aws:eks/accessPolicyAssociation:AccessPolicyAssociation").inputs
    assert association["policyArn"].endswith("AmazonEKSClusterAdminPolicy")
    assert association["accessScope"] == {"type": "cluster"}
    oidc = recording.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider").inputs
    assert oidc["clientIdLists"] == ["sts.amazonaws.com"] and oidc["url"] == outputs["issuer"]
    addons = {
        r.inputs["addonName"]: r.inputs["addonVersion"] for r in recording.of_type("aws:eks/addon:Addon")
    }
    pinned = EKS_ADDON_VERSIONS[DEFAULT_KUBERNETES_VERSION]
    assert addons == {k: v for k, v in pinned.items() if k != "coredns"}  # coredns waits for nodes


def test_coredns_after_nodes() -> None:
    recording, _ = run_program(lambda: build().install_coredns(after=[]))
    addon = recording.one("aws:eks/addon:Addon", "prod-coredns").inputs
    assert addon["addonVersion"] == EKS_ADDON_VERSIONS[DEFAULT_KUBERNETES_VERSION]["coredns"]


def test_kubeconfig_uses_the_exec_plugin_and_is_secret() -> None:
    text = kubeconfig("prod", "https://x.eks", "Y2E=", "eu-west-1")
    config = yaml.safe_load(text)
    user = config["users"][0]["user"]
    assert "token" not in user
    assert user["exec"]["command"] == "aws"
    assert user["exec"]["args"][:4] == ["eks", "get-token", "--cluster-name", "prod"]
    assert "eu-west-1" in user["exec"]["args"]
    recording, _ = run_program(build)
    provider = recording.one("pulumi:providers:kubernetes")
    assert "prod" in json.dumps(provider.inputs)


def test_cluster_and_node_roles_trust_the_right_services() -> None:
    recording, _ = run_program(build)
    roles = {r.name: json.loads(r.inputs["assumeRolePolicy"]) for r in recording.of_type("aws:iam/role:Role")}
    assert roles["prod-cluster"]["Statement"][0]["Principal"] == {"Service": "eks.amazonaws.com"}
    assert roles["prod-node"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"version": "1.20"}, "version"),
        ({"public_access_cidrs": ["0.0.0.0/0"]}, "public_access_cidrs[0]"),
        ({"public_access_cidrs": ["nope"]}, "public_access_cidrs[0]"),
        ({"admin_principal_arns": ["root"]}, "admin_principal_arns[0]"),
        ({"log_types": ["api", "everything"]}, "log_types"),
        ({"subnet_ids": ["one"]}, "subnet_ids"),
    ],
)
def test_bad_input_names_the_field_and_registers_nothing(overrides: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"subnet_ids": ["a", "b"], **overrides}
    recording, error = run_invalid(lambda: Cluster("prod", ClusterArgs(**args)))
    assert error.field == field
    assert recording.resources == []
