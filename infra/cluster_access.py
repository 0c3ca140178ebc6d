"""Who reaches the EKS cluster and how (pure): the kubeconfig whose token is got as the stack's identity,
the wait after the deployer's access is granted, the admins and the deployer's principal, and the key
and role policies the control plane uses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pulumi

from inferstack.infra.aws_identity import AwsIdentity
from inferstack.infra.node_plans import GPU_TAINT_KEY

# After an access policy is associated, EKS may still answer the principal's first Kubernetes calls
# with 401 for a short while (AWS publishes no bound). The kubeconfig is handed out only this long
# after the deployer's association: once, on the `up` that creates it, and never in a preview.
ACCESS_SETTLE_S = 60


def node_monitoring_agent_configuration() -> dict[str, Any]:
    """The agent itself tolerates every taint; its DCGM host engine, which checks the GPUs, tolerates
    none by default and would never run on GPU nodes, which all carry the ``nvidia.com/gpu`` taint."""
    return {
        "dcgmAgent": {"tolerations": [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]}
    }


def kubeconfig(
    cluster_name: str, endpoint: str, ca_data: str, region: str, identity: AwsIdentity | None = None
) -> str:
    """A kubeconfig that gets its token from ``aws eks get-token``: no long-lived credential in it.

    ``--profile`` and ``--role-arn`` rather than ``AWS_PROFILE`` in the exec's environment: the AWS
    CLI lets ambient credentials (``AWS_ACCESS_KEY_ID``) override that variable, not its arguments.
    """
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "aws",
            "args": [
                "eks",
                "get-token",
                "--cluster-name",
                cluster_name,
                "--region",
                region,
                "--output",
                "json",
                *(identity or AwsIdentity()).get_token_args(),
            ],
            "interactiveMode": "Never",
        }
    }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}
        ],
        "users": [{"name": cluster_name, "user": user}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
        "current-context": cluster_name,
    }
    return json.dumps(config, indent=2)


def access_settle_s(associated_at: str | None, now: datetime, settle_s: float = ACCESS_SETTLE_S) -> float:
    """How much longer the first Kubernetes call must wait after an access policy association made at
    ``associated_at`` (RFC 3339); 0 once the window is past, and for an unknown time."""
    if not associated_at:
        return 0.0
    made = datetime.fromisoformat(associated_at)
    if made.tzinfo is None:
        made = made.replace(tzinfo=UTC)
    return max(0.0, settle_s - (now - made).total_seconds())


async def after_access_settles(associated_at: str) -> str:
    if not pulumi.runtime.is_dry_run():
        await asyncio.sleep(access_settle_s(associated_at, datetime.now(UTC)))
    return associated_at


def policy_document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def assume_role_policy(service: str) -> str:
    return policy_document({"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"})


def kms_key_policy(account_id: str, partition: str = "aws", *, also: Sequence[dict[str, Any]] = ()) -> str:
    """The account administers the key, so IAM policies (the cluster role's below) decide who uses it;
    ``also``: statements for principals no IAM policy can be attached to (service-linked roles)."""
    return policy_document(
        {
            "Sid": "AccountAdministers",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
            "Action": "kms:*",
            "Resource": "*",
        },
        *also,
    )


def secrets_key_usage_policy(key_arn: str) -> str:
    """What the cluster role needs to encrypt and decrypt secrets with its own key, and no other key."""
    return policy_document(
        {
            "Sid": "UseSecretsKey",
            "Effect": "Allow",
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"],
            "Resource": key_arn,
        }
    )


def admin_principals(deployer_arn: str, admin_principal_arns: Sequence[str]) -> dict[str, str]:
    """Logical name suffix -> principal ARN: the deployer, then every other named admin.

    Names come from the ARN, not the list position, so adding or removing an admin never
    replaces the access entries of the others.
    """
    admins = {"deployer": deployer_arn}
    for arn in admin_principal_arns:
        if arn != deployer_arn:
            admins[f"admin-{hashlib.sha256(arn.encode()).hexdigest()[:8]}"] = arn
    return admins


def deployer_arn(caller_arn: str, issuer_arn: str | None) -> str:
    """The IAM principal an access entry must name for the caller.

    An assumed role's caller ARN (``arn:aws:sts::…:assumed-role/Name/session``) is not what EKS takes;
    the role's own ARN, with its path, is the session's issuer.
    """
    return issuer_arn or caller_arn
