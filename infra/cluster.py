"""The EKS control plane and what everything else needs from it.

Pinned Kubernetes version, secrets encrypted with a rotating KMS key, every control-plane log type
(kept for a bounded time), a private endpoint (the public one only for the CIDRs given), API
authentication with access entries for named admins (no aws-auth ConfigMap), an OIDC provider for
IRSA, the core add-ons pinned, and a ``pulumi_kubernetes.Provider`` built from the cluster's outputs.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from inferstack.infra.errors import InvalidInput
from inferstack.infra.versions import (
    DEFAULT_KUBERNETES_VERSION,
    EKS_ADDON_VERSIONS,
    SUPPORTED_KUBERNETES_VERSIONS,
)

LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")
_PRINCIPAL = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+$")
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
# Add-ons that must exist before nodes join (networking, identity); coredns waits for nodes.
PRE_NODE_ADDONS = ("vpc-cni", "kube-proxy", "eks-pod-identity-agent")
# The retention periods CloudWatch Logs accepts.
# fmt: off
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)
# fmt: on


@dataclass
class ClusterArgs:
    subnet_ids: Sequence[pulumi.Input[str]]
    version: str = DEFAULT_KUBERNETES_VERSION
    # The only cluster admins (IAM role or user ARNs): the identity that runs Pulumi must be among
    # them, or the Kubernetes provider cannot deploy anything.
    admin_principal_arns: Sequence[str] = ()
    public_access_cidrs: Sequence[str] = ()  # empty: no public endpoint at all
    log_types: Sequence[str] = LOG_TYPES
    log_retention_days: int = 90
    tags: dict[str, str] = field(default_factory=dict)


def validate_cluster_args(name: str, args: ClusterArgs) -> None:
    if not _CLUSTER_NAME.match(name):
        raise InvalidInput(
            "name", name, "1-100 characters of letters, digits, - and _, starting alphanumeric"
        )
    if args.version not in SUPPORTED_KUBERNETES_VERSIONS:
        raise InvalidInput("version", args.version, f"one of {', '.join(SUPPORTED_KUBERNETES_VERSIONS)}")
    if len(args.subnet_ids) < 2:
        raise InvalidInput(
            "subnet_ids", len(args.subnet_ids), "subnets in at least 2 zones (EKS requires it)"
        )
    for i, cidr in enumerate(args.public_access_cidrs):
        try:
            network = ipaddress.ip_network(cidr)
        except ValueError:
            raise InvalidInput(f"public_access_cidrs[{i}]", cidr, "a CIDR such as 203.0.113.0/24") from None
        if network.prefixlen == 0:
            raise InvalidInput(
                f"public_access_cidrs[{i}]", cidr, "a restricted range, not the whole internet"
            )
    for i, arn in enumerate(args.admin_principal_arns):
        if not _PRINCIPAL.match(arn):
            raise InvalidInput(f"admin_principal_arns[{i}]", arn, "an IAM role or user ARN")
    if len(set(args.admin_principal_arns)) != len(args.admin_principal_arns):
        raise InvalidInput("admin_principal_arns", list(args.admin_principal_arns), "distinct ARNs")
    unknown = sorted(set(args.log_types) - set(LOG_TYPES))
    if unknown:
        raise InvalidInput("log_types", unknown, f"a subset of {', '.join(LOG_TYPES)}")
    if args.log_retention_days not in LOG_RETENTION_DAYS:
        raise InvalidInput(
            "log_retention_days", args.log_retention_days, f"one of {', '.join(map(str, LOG_RETENTION_DAYS))}"
        )


def kubeconfig(cluster_name: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig that gets its token from ``aws eks get-token``: no long-lived credential in it."""
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


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def assume_role_policy(service: str) -> str:
    return _policy({"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"})


def kms_key_policy(account_id: str) -> str:
    """The account administers the key, so IAM policies (the cluster role's below) decide who uses it."""
    return _policy(
        {
            "Sid": "AccountAdministers",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    )


def secrets_key_usage_policy(key_arn: str) -> str:
    """What the cluster role needs to encrypt and decrypt secrets with its own key, and no other key."""
    return _policy(
        {
            "Sid": "UseSecretsKey",
            "Effect": "Allow",
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"],
            "Resource": key_arn,
        }
    )


class Cluster(pulumi.ComponentResource):
    name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    oidc_issuer_url: pulumi.Output[str]
    security_group_id: pulumi.Output[str]  # the cluster security group EKS creates; nodes join it
    node_role: aws.iam.Role
    provider: k8s.Provider
    version: str

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        validate_cluster_args(name, args)
        super().__init__("inferstack:cluster:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {"inferstack.io/cluster": name, **args.tags}
        account_id = aws.get_caller_identity().account_id
        region = aws.get_region().region
        self.version = args.version

        role = aws.iam.Role(
            f"{name}-cluster",
            assume_role_policy=assume_role_policy("eks.amazonaws.com"),
            tags=tags,
            opts=child,
        )
        cluster_policy = aws.iam.RolePolicyAttachment(
            f"{name}-cluster-policy",
            role=role.name,
            policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy",
            opts=child,
        )
        key = aws.kms.Key(
            f"{name}-secrets",
            description=f"EKS secrets encryption for {name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=kms_key_policy(account_id),
            tags=tags,
            opts=child,
        )
        aws.kms.Alias(
            f"{name}-secrets", name=f"alias/eks/{name}-secrets", target_key_id=key.key_id, opts=child
        )
        key_usage = aws.iam.RolePolicy(
            f"{name}-cluster-secrets-key",
            role=role.id,
            policy=key.arn.apply(secrets_key_usage_policy),
            opts=child,
        )
        # EKS would create this group itself on first log, with logs kept forever; owning it bounds them.
        logs = aws.cloudwatch.LogGroup(
            f"{name}-control-plane",
            name=f"/aws/eks/{name}/cluster",
            retention_in_days=args.log_retention_days,
            tags=tags,
            opts=child,
        )
        cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=name,
            version=args.version,
            role_arn=role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=list(args.subnet_ids),
                endpoint_private_access=True,
                endpoint_public_access=bool(args.public_access_cidrs),
                public_access_cidrs=list(args.public_access_cidrs) or None,
            ),
            enabled_cluster_log_types=list(args.log_types),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                resources=["secrets"], provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=key.arn)
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                # No implicit admin for whoever happened to create the cluster; the setting cannot
                # change later without replacing the cluster, so it never depends on the input.
                authentication_mode="API",
                bootstrap_cluster_creator_admin_permissions=False,
            ),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster_policy, key_usage, logs]),
        )
        issuer: pulumi.Output[str] = cluster.identities.apply(
            lambda ids: (ids[0].oidcs[0].issuer or "") if ids and ids[0].oidcs else ""
        )
        oidc = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc", url=issuer, client_id_lists=["sts.amazonaws.com"], tags=tags, opts=child
        )
        for i, arn in enumerate(args.admin_principal_arns):
            entry = aws.eks.AccessEntry(
                f"{name}-admin-{i}", cluster_name=cluster.name, principal_arn=arn, opts=child
            )
            aws.eks.AccessPolicyAssociation(
                f"{name}-admin-{i}",
                cluster_name=cluster.name,
                principal_arn=arn,
                policy_arn=ADMIN_POLICY,
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]),
            )
        self._addons: dict[str, aws.eks.Addon] = {}
        self._cluster = cluster
        self._resource_name = name
        for addon in PRE_NODE_ADDONS:
            self._add_addon(addon, [])

        self.node_role = aws.iam.Role(
            f"{name}-node", assume_role_policy=assume_role_policy("ec2.amazonaws.com"), tags=tags, opts=child
        )
        for policy in (
            "AmazonEKSWorkerNodePolicy",
            "AmazonEC2ContainerRegistryReadOnly",
            "AmazonEKS_CNI_Policy",
        ):
            aws.iam.RolePolicyAttachment(
                f"{name}-node-{policy}",
                role=self.node_role.name,
                policy_arn=f"arn:aws:iam::aws:policy/{policy}",
                opts=child,
            )

        self.name = cluster.name
        self.endpoint = cluster.endpoint
        self.oidc_provider_arn = oidc.arn
        self.oidc_issuer_url = issuer
        self.security_group_id = cluster.vpc_config.apply(lambda vpc: vpc.cluster_security_group_id or "")
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(cluster.name, cluster.endpoint, cluster.certificate_authority.data).apply(
                lambda values: kubeconfig(values[0], values[1], values[2], region)
            )
        )
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(self._addons.values())),
        )
        self.register_outputs(
            {
                "name": self.name,
                "endpoint": self.endpoint,
                "kubeconfig": self.kubeconfig,
                "oidc_provider_arn": self.oidc_provider_arn,
                "oidc_issuer_url": self.oidc_issuer_url,
                "security_group_id": self.security_group_id,
            }
        )

    def _add_addon(self, addon: str, depends_on: Sequence[pulumi.Resource]) -> aws.eks.Addon:
        resource = aws.eks.Addon(
            f"{self._resource_name}-{addon}",
            cluster_name=self._cluster.name,
            addon_name=addon,
            addon_version=EKS_ADDON_VERSIONS[self.version][addon],
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
        )
        self._addons[addon] = resource
        return resource

    def install_coredns(self, after: Sequence[pulumi.Resource]) -> aws.eks.Addon:
        """CoreDNS only becomes ACTIVE once nodes can run it: install it after the system node group."""
        return self._add_addon("coredns", after)
