"""The gp3 StorageClass: valid, encrypted, zone-aware binding, on the EBS CSI driver."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from inferstack.components.storage import GP3, StorageClasses, StorageClassesArgs, gp3_storage_class
from inferstack.infra.storage import EBS_CSI_PROVISIONER
from inferstack.policies.rules import EBS_CSI
from tests.harness import run_program
from tests.schemas import validate_k8s


def test_gp3_class_validates_and_binds_where_the_pod_lands() -> None:
    manifest = gp3_storage_class(default=True)
    validate_k8s(manifest)
    assert manifest["metadata"]["name"] == GP3
    assert manifest["provisioner"] == EBS_CSI_PROVISIONER
    assert manifest["parameters"]["encrypted"] == "true"
    assert manifest["volumeBindingMode"] == "WaitForFirstConsumer"
    assert manifest["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "true"}
    assert gp3_storage_class(default=False)["metadata"]["annotations"] == {}


def test_the_class_waits_for_what_its_component_waits_for() -> None:
    def program() -> None:
        provider = k8s.Provider("k8s", kubeconfig="{}")
        driver = k8s.core.v1.ConfigMap(
            "stand-in-for-the-driver", opts=pulumi.ResourceOptions(provider=provider)
        )
        StorageClasses("storage", StorageClassesArgs(), pulumi.ResourceOptions(depends_on=[driver]))

    recording, _ = run_program(program)
    storage_class = recording.one("kubernetes:storage.k8s.io/v1:StorageClass")
    assert recording.named("stand-in-for-the-driver").urn in storage_class.dependencies
    assert storage_class.inputs["provisioner"] == EBS_CSI_PROVISIONER


def test_the_policy_pack_knows_the_drivers_provisioner() -> None:
    assert EBS_CSI == EBS_CSI_PROVISIONER
