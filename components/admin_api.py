"""Triton's admin APIs and the flags that lock them behind a key: one source for the cluster's pods
and the local runtime, which must behave alike. Pulumi-free, so the serving toolkit can import it.

Triton 2.51 answers a restricted API only to a request carrying ``ADMIN_KEY_HEADER`` (over gRPC the
metadata key ``GRPC_ADMIN_KEY_HEADER``) with the key; everything else (health, metadata, statistics,
inference) stays open.
"""

from __future__ import annotations

RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
ADMIN_KEY_HEADER = "inferstack-admin-key"
GRPC_ADMIN_KEY_HEADER = f"triton-grpc-protocol-{ADMIN_KEY_HEADER}"  # the metadata key 2.51 reads over gRPC


def restriction_flags(key: str) -> list[str]:
    """Triton 2.51's own restriction flags for ``key`` (a literal, or ``$(VAR)`` the kubelet expands).
    The separator before the header is ':' (its --help says ',', which 2.51 refuses with its usage)."""
    rule = f"{','.join(RESTRICTED_APIS)}:{ADMIN_KEY_HEADER}={key}"
    return [f"--http-restricted-api={rule}", f"--grpc-restricted-protocol={rule}"]
