"""Block storage for the cluster: the EBS CSI driver as an EKS add-on, with its own IRSA role.

Kubernetes 1.35 provisions EBS volumes only through the CSI driver, and EKS does not install it:
without it every PersistentVolumeClaim (Prometheus's, for one) stays Pending. The driver's
controller calls EC2 with a role only its service account can assume, holding AWS's managed policy
for the driver and nothing else. The StorageClasses that use it are Kubernetes objects and live in
the components layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from inferstack.infra.children import child_options
from inferstack.infra.errors import InvalidInput
from inferstack.infra.irsa import service_account_role
from inferstack.infra.versions import EBS_CSI_ADDON_VERSIONS

EBS_CSI_ADDON = "aws-ebs-csi-driver"
EBS_CSI_PROVISIONER = "ebs.csi.aws.com"  # what a StorageClass names to use this driver
# The add-on's controller runs as this service account (fixed by the add-on).
EBS_CSI_NAMESPACE, EBS_CSI_SERVICE_ACCOUNT = "kube-system", "ebs-csi-controller-sa"
EBS_CSI_POLICY = "policy/service-role/AmazonEBSCSIDriverPolicy"  # AWS-managed, in every partition


@dataclass
class BlockStorageArgs:
    """What the EBS CSI driver add-on is given: the cluster, its OIDC provider, the Kubernetes version."""

    cluster_name: pulumi.Input[str]  # the cluster resource's output, so the add-on waits for it
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    kubernetes_version: str  # picks the add-on version pinned for this minor
    tags: dict[str, str] = field(default_factory=dict)


class BlockStorage(pulumi.ComponentResource):
    """The EBS CSI driver add-on; pass the node groups in ``depends_on``: its controller needs nodes."""

    addon: aws.eks.Addon
    role_arn: pulumi.Output[str]

    def __init__(self, name: str, args: BlockStorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        version = EBS_CSI_ADDON_VERSIONS.get(args.kubernetes_version)
        if version is None:
            raise InvalidInput(
                "kubernetes_version", args.kubernetes_version, f"one of {', '.join(EBS_CSI_ADDON_VERSIONS)}"
            )
        super().__init__("inferstack:storage:BlockStorage", name, None, opts)
        role = service_account_role(
            f"{name}-ebs-csi",
            oidc_provider_arn=args.oidc_provider_arn,
            oidc_issuer_url=args.oidc_issuer_url,
            namespace=EBS_CSI_NAMESPACE,
            service_account=EBS_CSI_SERVICE_ACCOUNT,
            tags=args.tags,
            opts=child_options(self, opts),
        )
        partition = aws.get_partition(opts=pulumi.InvokeOptions(parent=self)).partition
        attachment = aws.iam.RolePolicyAttachment(
            f"{name}-ebs-csi",
            role=role.name,
            policy_arn=f"arn:{partition}:iam::aws:{EBS_CSI_POLICY}",
            opts=child_options(self, opts),
        )
        self.addon = aws.eks.Addon(
            f"{name}-ebs-csi",
            cluster_name=args.cluster_name,
            addon_name=EBS_CSI_ADDON,
            addon_version=version,
            service_account_role_arn=role.arn,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=args.tags,
            # The controller starts with the role's policy in place, or its first calls are denied.
            opts=child_options(self, opts, after=[attachment]),
        )
        self.role_arn = role.arn
        self.register_outputs({"role_arn": self.role_arn, "addon": self.addon.addon_name})
