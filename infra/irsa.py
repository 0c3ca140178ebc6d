"""IAM Roles for Service Accounts: the trust policy that lets one Kubernetes service account assume a role,
and the role itself, which every component granting AWS access to a pod (model store readers, the VPC CNI,
the EBS CSI driver, the cluster autoscaler) makes the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_aws as aws


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


def service_account_role(
    resource_name: str,
    *,
    oidc_provider_arn: pulumi.Input[str],
    oidc_issuer_url: pulumi.Input[str],
    namespace: str,
    service_account: str,
    tags: Mapping[str, str] | None = None,
    opts: pulumi.ResourceOptions | None = None,
) -> aws.iam.Role:
    """A role that ``namespace/service_account`` alone can assume; the caller attaches its permissions."""
    trust = pulumi.Output.all(oidc_provider_arn, oidc_issuer_url).apply(
        lambda v: json.dumps(trust_policy(v[0], v[1], namespace, service_account))
    )
    return aws.iam.Role(
        resource_name, assume_role_policy=trust, tags=dict(tags) if tags is not None else None, opts=opts
    )
