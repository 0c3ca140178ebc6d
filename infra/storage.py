"""Block storage for the cluster: the EBS CSI driver as an EKS add-on, with its own IRSA role.

Kubernetes 1.35 provisions EBS volumes only through the CSI driver, and EKS does not install it:
without it every PersistentVolumeClaim (Prometheus's, for one) stays Pending. The driver's
controller calls EC2 with a role only its service account can assume, holding AWS's managed policy
for the driver and nothing else. The StorageClasses that use it are Kubernetes objects and live in
the components layer.

Every EBS volume of the cluster (node disks and gp3 claims) is encrypted with the cluster's own KMS
key, named explicitly: never the account's default EBS key, which may be a customer-managed key
that neither the Auto Scaling service-linked role (which launches the nodes) nor the CSI driver may
use, and then instances fail to launch and claims stay Pending. AWS's key policy for Auto Scaling
names its service-linked role, which must exist first (`inferstack preflight` checks it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from inferstack.infra.children import child_options
from inferstack.infra.cluster_access import kms_key_policy, policy_document
from inferstack.infra.errors import InvalidInput
from inferstack.infra.irsa import irsa_role
from inferstack.infra.versions import EBS_CSI_ADDON_VERSIONS

EBS_CSI_ADDON = "aws-ebs-csi-driver"
EBS_CSI_PROVISIONER = "ebs.csi.aws.com"  # what a StorageClass names to use this driver
# The add-on's controller runs as this service account (fixed by the add-on).
EBS_CSI_NAMESPACE, EBS_CSI_SERVICE_ACCOUNT = "kube-system", "ebs-csi-controller-sa"
EBS_CSI_POLICY = "policy/service-role/AmazonEBSCSIDriverPolicy"  # AWS-managed, in every partition
# Launches every Auto Scaling group's instances, managed node groups' included.
AUTOSCALING_ROLE_PATH = "role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
# What a principal needs to encrypt a volume with a key, and to let EC2 attach it (a grant for AWS
# resources only): the two statements of AWS's "Required AWS KMS key policy for use with encrypted
# volumes" (EC2 Auto Scaling user guide) and of the EBS CSI driver's KMS policy.
KEY_USE = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
FOR_AWS_RESOURCES = {"Bool": {"kms:GrantIsForAWSResource": "true"}}


def volume_key_policy(account_id: str, partition: str = "aws") -> str:
    """The account administers the key (so IAM policies decide who else uses it, the CSI role for one);
    the Auto Scaling service-linked role, which no IAM policy can be attached to, is named here."""
    autoscaling = f"arn:{partition}:iam::{account_id}:{AUTOSCALING_ROLE_PATH}"
    return kms_key_policy(
        account_id,
        partition,
        also=[
            {
                "Sid": "AutoScalingUsesKey",
                "Effect": "Allow",
                "Principal": {"AWS": autoscaling},
                "Action": KEY_USE,
                "Resource": "*",
            },
            {
                "Sid": "AutoScalingAttachesVolumes",
                "Effect": "Allow",
                "Principal": {"AWS": autoscaling},
                "Action": "kms:CreateGrant",
                "Resource": "*",
                "Condition": FOR_AWS_RESOURCES,
            },
        ],
    )


def key_user_policy(key_arn: str) -> str:
    """What a role that makes or attaches volumes encrypted with the key needs (the EBS CSI controller,
    Karpenter's controller launching nodes), and no other key."""
    return policy_document(
        {
            "Sid": "GrantForVolumes",
            "Effect": "Allow",
            "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
            "Resource": key_arn,
            "Condition": FOR_AWS_RESOURCES,
        },
        {"Sid": "UseVolumeKey", "Effect": "Allow", "Action": KEY_USE, "Resource": key_arn},
    )


class VolumeKey(pulumi.ComponentResource):
    """The KMS key of the cluster's EBS volumes: node disks (launch templates) and gp3 claims."""

    arn: pulumi.Output[str]

    def __init__(
        self, name: str, tags: dict[str, str] | None = None, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("inferstack:storage:VolumeKey", name, None, opts)
        invoke = pulumi.InvokeOptions(parent=self)
        account = aws.get_caller_identity(opts=invoke).account_id
        partition = aws.get_partition(opts=invoke).partition
        key = aws.kms.Key(
            f"{name}-volumes",
            description=f"EBS volumes of {name}: node disks and gp3 claims",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=volume_key_policy(account, partition),
            tags=tags,
            opts=child_options(self, opts),
        )
        aws.kms.Alias(
            f"{name}-volumes",
            name=f"alias/{name}-volumes",
            target_key_id=key.key_id,
            opts=child_options(self, opts),
        )
        self.arn = key.arn
        self.register_outputs({"arn": self.arn})


# On every volume the platform's claims create, and on what else it tags by cluster: what lists the
# leftovers after a destroy (docs/operations/teardown.md).
CLUSTER_TAG = "inferstack.io/cluster"


def addon_configuration(cluster_name: str, tags: Mapping[str, str]) -> dict[str, Any]:
    """The add-on's configuration values (its chart's): every volume and snapshot the controller
    creates carries the platform's tags, the cluster tag, and ``kubernetes.io/cluster/<name>: owned``."""
    return {
        "controller": {
            "k8sTagClusterId": cluster_name,
            "extraVolumeTags": {**tags, CLUSTER_TAG: cluster_name},
        }
    }


@dataclass
class BlockStorageArgs:
    """What the EBS CSI driver add-on is given: the cluster, its OIDC provider, the Kubernetes version."""

    cluster_name: pulumi.Input[str]  # the cluster resource's output, so the add-on waits for it
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    kubernetes_version: str  # picks the add-on version pinned for this minor
    # The key gp3 volumes are encrypted with (VolumeKey): the driver's role may use it; None: the
    # account's default EBS key, which must then be AWS-managed or granted to the role.
    kms_key_arn: pulumi.Input[str] | None = None
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
        partition = aws.get_partition(opts=pulumi.InvokeOptions(parent=self)).partition
        csi = irsa_role(
            f"{name}-ebs-csi",
            args,
            EBS_CSI_NAMESPACE,
            EBS_CSI_SERVICE_ACCOUNT,
            policy_arns={f"{name}-ebs-csi": f"arn:{partition}:iam::aws:{EBS_CSI_POLICY}"},
            tags=args.tags,
            opts=child_options(self, opts),
        )
        role = csi.role
        ready: list[pulumi.Resource] = list(csi.grants)
        if args.kms_key_arn is not None:
            ready.append(
                aws.iam.RolePolicy(
                    f"{name}-ebs-csi-key",
                    role=role.id,
                    policy=pulumi.Output.from_input(args.kms_key_arn).apply(key_user_policy),
                    opts=child_options(self, opts),
                )
            )
        self.addon = aws.eks.Addon(
            f"{name}-ebs-csi",
            cluster_name=args.cluster_name,
            addon_name=EBS_CSI_ADDON,
            addon_version=version,
            service_account_role_arn=role.arn,
            configuration_values=pulumi.Output.from_input(args.cluster_name).apply(
                lambda cluster: json.dumps(addon_configuration(cluster, args.tags), sort_keys=True)
            ),
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=args.tags,
            # The controller starts with the role's policies in place, or its first calls are denied.
            opts=child_options(self, opts, after=ready),
        )
        self.role_arn = role.arn
        self.register_outputs({"role_arn": self.role_arn, "addon": self.addon.addon_name})
