"""Versions inferstack deploys on the cluster side. Pinned: nothing floats.

Pure data: the policy pack and the tests read it. Each pin says where it was read; bump them
together with ``aws eks describe-addon-versions --kubernetes-version <minor>`` and
the SSM parameter ``/aws/service/eks/optimized-ami/<minor>/amazon-linux-2023/x86_64/nvidia/
recommended/release_version``.
"""

from __future__ import annotations

# EKS minor versions this release is tested against; the default matches cluster-autoscaler 1.35
# (chart 9.59.0), whose minor must equal the cluster's.
SUPPORTED_KUBERNETES_VERSIONS: tuple[str, ...] = ("1.33", "1.34", "1.35")
DEFAULT_KUBERNETES_VERSION = "1.35"

# EKS managed add-ons per Kubernetes minor. kube-proxy follows the control plane's minor; coredns
# moved to 1.13 for 1.35. Sources: the EKS user guide's "latest version" tables (coredns on
# 1.33/1.34, vpc-cni, kube-proxy), and for 1.35 the versions that public 1.35 deployments pin
# (coredns v1.13.1-eksbuild.1, kube-proxy v1.35.0-eksbuild.2, ebs-csi v1.55.0-eksbuild.1).
_COMMON_ADDONS = {
    "vpc-cni": "v1.21.1-eksbuild.1",
    "eks-pod-identity-agent": "v1.3.10-eksbuild.2",
}
EKS_ADDON_VERSIONS: dict[str, dict[str, str]] = {
    "1.33": {**_COMMON_ADDONS, "coredns": "v1.12.4-eksbuild.1", "kube-proxy": "v1.33.7-eksbuild.2"},
    "1.34": {**_COMMON_ADDONS, "coredns": "v1.12.4-eksbuild.1", "kube-proxy": "v1.34.6-eksbuild.2"},
    "1.35": {**_COMMON_ADDONS, "coredns": "v1.13.1-eksbuild.1", "kube-proxy": "v1.35.0-eksbuild.2"},
}

# The EBS CSI driver add-on (installed with the storage it serves, infra/storage.py). Public
# deployments on 1.33, 1.34 and 1.35 pin this same build.
EBS_CSI_ADDON_VERSIONS: dict[str, str] = dict.fromkeys(SUPPORTED_KUBERNETES_VERSIONS, "v1.55.0-eksbuild.1")

# The EKS-optimized Amazon Linux 2023 AMI release (standard and NVIDIA share it) that managed node
# groups run, per minor: the 2026-03-04 release, as `describe-nodegroup` reports it on live clusters.
# Bottlerocket releases follow their own numbering: a Bottlerocket group names its release itself.
AL2023_RELEASE_VERSIONS: dict[str, str] = {
    "1.33": "1.33.8-20260304",
    "1.34": "1.34.4-20260304",
    "1.35": "1.35.2-20260304",
}

# The EKS node monitoring agent add-on: it reports GPU (XID, NVLink, DCGM), kernel, network, storage
# and container-runtime faults as node conditions, which node repair acts on. v1.7.0 (2026-08), the
# build public deployments plan with, the same on every minor this release supports; its
# configuration schema takes dcgmAgent.tolerations (see infra/cluster.py).
NODE_MONITORING_AGENT_ADDON_VERSIONS: dict[str, str] = dict.fromkeys(
    SUPPORTED_KUBERNETES_VERSIONS, "v1.7.0-eksbuild.1"
)


def al2023_alias(kubernetes_version: str) -> str:
    """Karpenter's pin of the AL2023 AMI: the release managed node groups run (its date), so both
    capacity modes boot the same image; Karpenter picks the NVIDIA variant for GPU types itself."""
    return f"al2023@v{AL2023_RELEASE_VERSIONS[kubernetes_version].rsplit('-', 1)[1]}"
