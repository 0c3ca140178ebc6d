"""IAM Roles for Service Accounts: the trust policy that lets one Kubernetes service account assume a role.

Pure: returns the policy document; the components that make roles (model store readers, the cluster
autoscaler) wrap it in an ``aws.iam.Role``.
"""

from __future__ import annotations

from typing import Any


def issuer_host(issuer_url: str) -> str:
    """The OIDC issuer without its scheme, as IAM condition keys spell it."""
    return issuer_url.removeprefix("https://")


def trust_policy(
    oidc_provider_arn: str, issuer_url: str, namespace: str, service_account: str
) -> dict[str, Any]:
    """A trust policy allowing exactly ``system:serviceaccount:<namespace>:<service_account>``.

    Both ``sub`` and ``aud`` are pinned with StringEquals: a wildcard ``sub`` would let every
    service account in the cluster assume the role.
    """
    host = issuer_host(issuer_url)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": oidc_provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{host}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                        f"{host}:aud": "sts.amazonaws.com",
                    }
                },
            }
        ],
    }
