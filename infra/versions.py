"""Versions inferstack deploys on the cluster side. Pinned: nothing floats.

Pure data: the policy pack and the tests read it.
"""

from __future__ import annotations

# EKS minor versions this release is tested against; the default matches cluster-autoscaler 1.35
# (chart 9.59.0), whose minor must equal the cluster's.
SUPPORTED_KUBERNETES_VERSIONS: tuple[str, ...] = ("1.33", "1.34", "1.35")
DEFAULT_KUBERNETES_VERSION = "1.35"
