"""Versions inferstack deploys on the cluster side. Pinned: nothing floats.

Pure data: the policy pack and the tests read it.
"""

from __future__ import annotations

# EKS minor versions this release is tested against; the default matches cluster-autoscaler 1.35
# (chart 9.59.0), whose minor must equal the cluster's.
SUPPORTED_KUBERNETES_VERSIONS: tuple[str, ...] = ("1.33", "1.34", "1.35")
DEFAULT_KUBERNETES_VERSION = "1.35"

# EKS managed add-ons, pinned per Kubernetes minor (as `aws eks describe-addon-versions` lists them).
# kube-proxy must match the control plane's minor; the others are compatible across these minors.
EKS_ADDON_VERSIONS: dict[str, dict[str, str]] = {
    minor: {
        "vpc-cni": "v1.20.4-eksbuild.2",
        "coredns": "v1.12.4-eksbuild.1",
        "kube-proxy": f"v{minor}.0-eksbuild.2",
        "eks-pod-identity-agent": "v1.3.9-eksbuild.3",
    }
    for minor in SUPPORTED_KUBERNETES_VERSIONS
}
