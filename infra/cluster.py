"""The EKS control plane and what everything else needs from it.

Pinned Kubernetes version, secrets encrypted with a rotating KMS key, every control-plane log type,
a private endpoint (the public one only for the CIDRs given), API authentication with access entries
for named admins (no aws-auth ConfigMap, no implicit creator admin), an OIDC provider for IRSA, the
core add-ons pinned, and a ``pulumi_kubernetes.Provider`` built from the cluster's outputs.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

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


@dataclass
class ClusterArgs:
    subnet_ids: Sequence[pulumi.Input[str]]
    version: str = DEFAULT_KUBERNETES_VERSION
    admin_principal_arns: Sequence[str] = ()
    public_access_cidrs: Sequence[str] = ()  # empty: no public endpoint at all
    log_types: Sequence[str] = LOG_TYPES
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
    unknown = sorted(set(args.log_types) - set(LOG_TYPES))
    if unknown:
        raise InvalidInput("log_types", unknown, f"a subset of {', '.join(LOG_TYPES)}")


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


def assume_role_policy(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


def kms_key_policy(account_id: str) -> str:
    """The account administers the key; EKS uses it through the cluster role's grant."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AccountAdministers",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        }
    )


class Cluster(pulumi.ComponentResource):
    name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    oidc_issuer_url: pulumi.Output[str]
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
                authentication_mode="API", bootstrap_cluster_creator_admin_permissions=False
            ),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster_policy]),
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
