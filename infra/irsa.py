"""IAM Roles for Service Accounts: the trust policy that lets one Kubernetes service account assume a role,
and the role itself with its policies, which every component granting AWS access to a pod (model store
readers, the VPC CNI, the EBS CSI driver, the cluster autoscaler, Karpenter) makes the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pulumi
import pulumi_aws as aws

from inferstack.infra.roles import GrantedRole, attach_policies


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


class OidcIssuer(Protocol):
    """The cluster's IAM OIDC provider, as the args of components granting their pods AWS access carry it."""

    @property
    def oidc_provider_arn(self) -> pulumi.Input[str]: ...

    @property
    def oidc_issuer_url(self) -> pulumi.Input[str]: ...


@dataclass(frozen=True)
class Oidc:
    """An OidcIssuer from its two values."""

    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]


def irsa_role(
    resource_name: str,
    oidc: OidcIssuer,
    namespace: str,
    service_account: str,
    *,
    policies: Mapping[str, pulumi.Input[str]] | None = None,
    policy_arns: Mapping[str, pulumi.Input[str]] | None = None,
    tags: Mapping[str, str] | None = None,
    opts: pulumi.ResourceOptions | None = None,
    grants_under_role: bool = False,
) -> GrantedRole:
    """The role of ``namespace/service_account`` with its permissions: inline ``policies`` (logical name
    -> document) and managed ``policy_arns`` (logical name -> ARN). ``grants_under_role`` parents the
    grants to the role, where some callers' grants have always been: a new parent is a new URN."""
    role = service_account_role(
        resource_name,
        oidc_provider_arn=oidc.oidc_provider_arn,
        oidc_issuer_url=oidc.oidc_issuer_url,
        namespace=namespace,
        service_account=service_account,
        tags=tags,
        opts=opts,
    )
    grant_opts = (
        pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=role)) if grants_under_role else opts
    )
    inline = [
        aws.iam.RolePolicy(policy_name, role=role.id, policy=policy, opts=grant_opts)
        for policy_name, policy in (policies or {}).items()
    ]
    return GrantedRole(role, [*inline, *attach_policies(role, policy_arns or {}, grant_opts)])
