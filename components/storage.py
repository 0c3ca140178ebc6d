"""StorageClasses: gp3 volumes from the EBS CSI driver (infra.storage installs the driver).

Encrypted with the cluster's volume key (infra.storage.VolumeKey) when given, and bound only once a
pod is scheduled (WaitForFirstConsumer): an EBS volume lives in
one zone, and a volume made before the scheduler picks a node can strand its pod in the wrong zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from inferstack.components.manifests import PART_OF
from inferstack.infra.children import child_options
from inferstack.infra.storage import CLUSTER_TAG, EBS_CSI_PROVISIONER

GP3 = "gp3"


def gp3_storage_class(*, default: bool, cluster_name: pulumi.Input[str] | None = None) -> dict[str, Any]:
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    parameters: dict[str, Any] = {"type": "gp3", "encrypted": "true", "csi.storage.k8s.io/fstype": "ext4"}
    if cluster_name is not None:
        # The driver tags the volume with it at creation, whichever driver install made it (the
        # platform's add-on tags it too; a bring-your-own driver may not).
        parameters["tagSpecification_1"] = pulumi.Output.concat(CLUSTER_TAG, "=", cluster_name)
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": GP3, "labels": PART_OF, "annotations": annotations},
        "provisioner": EBS_CSI_PROVISIONER,
        "parameters": parameters,
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": True,
        "reclaimPolicy": "Delete",
    }


@dataclass
class StorageClassesArgs:
    """Whether the gp3 class is the cluster's default."""

    default: bool = True  # claims that name no class get gp3
    kms_key_arn: pulumi.Input[str] | None = None  # the cluster's volume key; None: the account default
    cluster_name: pulumi.Input[str] | None = None  # tags every volume with it; None: no cluster tag


class StorageClasses(pulumi.ComponentResource):
    """The cluster's StorageClasses; pass the CSI driver in ``depends_on``."""

    gp3: str

    def __init__(
        self, name: str, args: StorageClassesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("inferstack:storage:StorageClasses", name, None, opts)
        # The driver hands kmsKeyId (a key ARN) to EC2 CreateVolume; without it EBS uses the default key.
        key = {} if args.kms_key_arn is None else {"kmsKeyId": args.kms_key_arn}
        manifest = gp3_storage_class(default=args.default, cluster_name=args.cluster_name)
        k8s.storage.v1.StorageClass(
            f"{name}-gp3",
            metadata=manifest["metadata"],
            provisioner=manifest["provisioner"],
            parameters={**manifest["parameters"], **key},
            volume_binding_mode=manifest["volumeBindingMode"],
            allow_volume_expansion=manifest["allowVolumeExpansion"],
            reclaim_policy=manifest["reclaimPolicy"],
            opts=child_options(self, opts),
        )
        self.gp3 = GP3
        self.register_outputs({"gp3": self.gp3})
