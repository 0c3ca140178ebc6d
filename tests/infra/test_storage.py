"""BlockStorage: the EBS CSI driver add-on, pinned per Kubernetes minor, with a role only its controller can assume."""

from __future__ import annotations

import json

import pytest

from inferstack.infra.storage import (
    EBS_CSI_ADDON,
    EBS_CSI_POLICY,
    BlockStorage,
    BlockStorageArgs,
)
from inferstack.infra.versions import EBS_CSI_ADDON_VERSIONS, SUPPORTED_KUBERNETES_VERSIONS
from tests.harness import run_invalid, run_program

OIDC_ARN = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"
ISSUER = "https://oidc.eks.us-east-1.amazonaws.com/id/ABC"


def storage(version: str = "1.35") -> BlockStorage:
    return BlockStorage(
        "storage",
        BlockStorageArgs(
            cluster_name="prod",
            oidc_provider_arn=OIDC_ARN,
            oidc_issuer_url=ISSUER,
            kubernetes_version=version,
        ),
    )


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES_VERSIONS)
def test_the_addon_is_pinned_and_runs_with_its_own_role(version: str) -> None:
    recording, _ = run_program(lambda: storage(version))
    addon = recording.one("aws:eks/addon:Addon").inputs
    assert addon["addonName"] == EBS_CSI_ADDON
    assert addon["addonVersion"] == EBS_CSI_ADDON_VERSIONS[version]
    assert addon["addonVersion"].startswith("v") and "eksbuild" in addon["addonVersion"]
    role = recording.one("aws:iam/role:Role")
    assert addon["serviceAccountRoleArn"].endswith(role.name)
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"]
    assert "system:serviceaccount:kube-system:ebs-csi-controller-sa" in trust.values()
    attachment = recording.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert attachment.inputs["policyArn"] == f"arn:aws:iam::aws:{EBS_CSI_POLICY}"
    # The controller's first EC2 calls must find the policy attached.
    assert attachment.urn in recording.one("aws:eks/addon:Addon").dependencies


def test_an_unsupported_version_registers_nothing() -> None:
    recording, error = run_invalid(lambda: storage("1.29"))
    assert (error.field, error.value) == ("kubernetes_version", "1.29")
    assert list(recording) == []
