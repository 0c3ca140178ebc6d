"""The EKS control plane and what everything else needs from it.

Pinned Kubernetes version, secrets encrypted with a rotating KMS key, every control-plane log type
(kept for a bounded time), a private endpoint plus a public one for the given CIDRs only, API
authentication with access entries (the identity running Pulumi, and named admins; no aws-auth
ConfigMap), an OIDC provider for IRSA, the core add-ons pinned (the VPC CNI with its own IRSA role,
not the node role's), and a pulumi_kubernetes.Provider that waits for the deployer's access.

The kubeconfig's token comes from aws eks get-token run as the stack's AWS identity (its profile
and role, see infra/aws_identity.py), so it belongs to the principal the access entry names
(cluster_access).
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

from inferstack.infra import irsa
from inferstack.infra.aws_identity import AwsIdentity
from inferstack.infra.cluster_access import (
    admin_principals,
    after_access_settles,
    deployer_arn,
    kms_key_policy,
    kubeconfig,
    node_monitoring_agent_configuration,
    secrets_key_usage_policy,
)
from inferstack.infra.errors import InvalidInput
from inferstack.infra.names import IAM_ROLE_NAME_MAX, check_derived_name
from inferstack.infra.roles import aws_managed_policy_arn, node_role, service_role
from inferstack.infra.versions import (
    DEFAULT_KUBERNETES_VERSION,
    EKS_ADDON_VERSIONS,
    NODE_MONITORING_AGENT_ADDON_VERSIONS,
    SUPPORTED_KUBERNETES_VERSIONS,
)

LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")
_PRINCIPAL = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+$")
# IAM roles named after the cluster: the longest suffix bounds the cluster name.
_ROLE_SUFFIXES = ("-cluster", "-node", "-vpc-cni")
# Sources a public endpoint never sees: traffic from these reaches the private endpoint instead.
_NON_PUBLIC = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
    )
)
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
ADMIN_POLICY = "cluster-access-policy/AmazonEKSClusterAdminPolicy"  # arn:<partition>:eks::aws:...
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
    """What the EKS control plane is given: its subnets, version, admins, public CIDRs and logs."""

    subnet_ids: Sequence[pulumi.Input[str]]
    version: str = DEFAULT_KUBERNETES_VERSION
    # Cluster admins besides the identity that runs Pulumi, which is always one: without it the
    # Kubernetes provider could not deploy anything (IAM role or user ARNs).
    admin_principal_arns: Sequence[str] = ()
    # Where `pulumi up` (and kubectl) reach the API from; empty: a private endpoint only, reachable
    # only from inside the VPC.
    public_access_cidrs: Sequence[str] = ()
    log_types: Sequence[str] = LOG_TYPES
    log_retention_days: int = 90
    # Who `pulumi up` runs as (the stack's aws:profile and aws:assumeRoles): the kubeconfig's token
    # must belong to the same principal, the one the deployer's access entry names.
    identity: AwsIdentity = field(default_factory=AwsIdentity)
    tags: dict[str, str] = field(default_factory=dict)


def validate_cluster_args(name: str, args: ClusterArgs) -> None:
    if not _CLUSTER_NAME.match(name):
        raise InvalidInput(
            "name", name, "1-100 characters of letters, digits, - and _, starting alphanumeric"
        )
    for suffix in _ROLE_SUFFIXES:
        check_derived_name("name", name, suffix=suffix, limit=IAM_ROLE_NAME_MAX)
    if args.version not in SUPPORTED_KUBERNETES_VERSIONS:
        raise InvalidInput("version", args.version, f"one of {', '.join(SUPPORTED_KUBERNETES_VERSIONS)}")
    if len(args.subnet_ids) < 2:
        raise InvalidInput(
            "subnet_ids", len(args.subnet_ids), "subnets in at least 2 zones (EKS requires it)"
        )
    for i, cidr in enumerate(args.public_access_cidrs):
        try:
            if "/" not in str(cidr):  # an address alone: ip_network would read it as a /32 silently
                raise ValueError(cidr)
            network = ipaddress.ip_network(cidr)
        except ValueError:
            raise InvalidInput(f"public_access_cidrs[{i}]", cidr, "a CIDR such as 198.51.100.7/32") from None
        if network.version != 4:
            raise InvalidInput(f"public_access_cidrs[{i}]", cidr, "an IPv4 CIDR (EKS takes no IPv6 here)")
        if network.prefixlen == 0:
            raise InvalidInput(
                f"public_access_cidrs[{i}]", cidr, "a restricted range, not the whole internet"
            )
        if any(network.subnet_of(private) for private in _NON_PUBLIC):  # type: ignore[arg-type]
            raise InvalidInput(
                f"public_access_cidrs[{i}]",
                cidr,
                "a public range: the public endpoint never sees private addresses (those reach the "
                "private endpoint, from inside the VPC)",
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


class Cluster(pulumi.ComponentResource):
    """The EKS control plane: pinned version, KMS-encrypted secrets, audit logs, the OIDC provider for
    IRSA, access entries, and the Kubernetes provider every cluster-side component runs on."""

    name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    oidc_issuer_url: pulumi.Output[str]
    security_group_id: pulumi.Output[str]  # the cluster security group EKS creates; nodes join it
    node_role: aws.iam.Role
    # What a node group must wait for: the node role's policies, and the add-ons that make a node
    # Ready (networking, kube-proxy, pod identity). Destroy runs in reverse, so nodes go first.
    node_prerequisites: list[pulumi.Resource]
    admins: dict[str, str]  # logical suffix -> principal ARN with cluster-admin access
    provider: k8s.Provider
    version: str

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        validate_cluster_args(name, args)
        super().__init__("inferstack:cluster:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOptions(parent=self)  # the cluster's own provider, not the default
        tags = {"inferstack.io/cluster": name, **args.tags}
        caller = aws.get_caller_identity(opts=invoke)
        session = aws.iam.get_session_context(arn=caller.arn, opts=invoke)
        partition = aws.get_partition(opts=invoke).partition
        region = aws.get_region(opts=invoke).region
        self.version = args.version
        self.admins = admin_principals(
            deployer_arn(caller.arn, session.issuer_arn), args.admin_principal_arns
        )

        cluster_role = service_role(
            f"{name}-cluster",
            "eks.amazonaws.com",
            {f"{name}-cluster-policy": aws_managed_policy_arn(partition, "AmazonEKSClusterPolicy")},
            tags=tags,
            opts=child,
        )
        role = cluster_role.role
        key = aws.kms.Key(
            f"{name}-secrets",
            description=f"EKS secrets encryption for {name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=kms_key_policy(caller.account_id, partition),
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
                # The deployer gets its access from an access entry below, which Pulumi owns and can
                # change; the implicit creator admin could never be removed or moved to another role.
                authentication_mode="API",
                bootstrap_cluster_creator_admin_permissions=False,
            ),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*cluster_role.grants, key_usage, logs]),
        )
        issuer: pulumi.Output[str] = cluster.identities.apply(
            lambda ids: (ids[0].oidcs[0].issuer or "") if ids and ids[0].oidcs else ""
        )
        oidc = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc", url=issuer, client_id_lists=["sts.amazonaws.com"], tags=tags, opts=child
        )
        admin_access: dict[str, aws.eks.AccessPolicyAssociation] = {}
        for suffix, arn in self.admins.items():
            entry = aws.eks.AccessEntry(
                f"{name}-{suffix}", cluster_name=cluster.name, principal_arn=arn, opts=child
            )
            admin_access[suffix] = aws.eks.AccessPolicyAssociation(
                f"{name}-{suffix}",
                cluster_name=cluster.name,
                principal_arn=arn,
                policy_arn=f"arn:{partition}:eks::aws:{ADMIN_POLICY}",
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]),
            )

        # The VPC CNI manages every pod's network interfaces; its permissions belong to its own
        # service account, not to the node role that every pod on the host could borrow.
        cni = irsa.irsa_role(
            f"{name}-vpc-cni",
            irsa.Oidc(oidc.arn, issuer),
            "kube-system",
            "aws-node",
            policy_arns={f"{name}-vpc-cni": aws_managed_policy_arn(partition, "AmazonEKS_CNI_Policy")},
            tags=tags,
            opts=child,
        )
        self._addons: dict[str, aws.eks.Addon] = {}
        self._cluster = cluster
        self._resource_name = name
        for addon in PRE_NODE_ADDONS:
            role_arn = cni.role.arn if addon == "vpc-cni" else None
            self._add_addon(addon, cni.grants if role_arn else [], role_arn)

        nodes = node_role(name, partition, tags=tags, opts=child)
        self.node_role = nodes.role
        self.node_prerequisites = [*nodes.grants, *self._addons.values()]

        self.name = cluster.name
        self.endpoint = cluster.endpoint
        self.oidc_provider_arn = oidc.arn
        self.oidc_issuer_url = issuer
        self.security_group_id = cluster.vpc_config.apply(lambda vpc: vpc.cluster_security_group_id or "")
        # Every Kubernetes call is refused until the deployer's access policy is associated, and may
        # still be for a while after: the kubeconfig comes out once that while is over.
        access: pulumi.Output[str] = admin_access["deployer"].associated_at.apply(after_access_settles)
        identity = args.identity
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(
                cluster.name, cluster.endpoint, cluster.certificate_authority.data, access
            ).apply(lambda values: kubeconfig(values[0], values[1], values[2], region, identity))
        )
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*self._addons.values(), *admin_access.values()]
            ),
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

    def _add_addon(
        self,
        addon: str,
        depends_on: Sequence[pulumi.Resource],
        service_account_role_arn: pulumi.Input[str] | None = None,
        version: str | None = None,
        configuration: dict[str, Any] | None = None,
    ) -> aws.eks.Addon:
        resource = aws.eks.Addon(
            f"{self._resource_name}-{addon}",
            cluster_name=self._cluster.name,
            addon_name=addon,
            addon_version=version or EKS_ADDON_VERSIONS[self.version][addon],
            service_account_role_arn=service_account_role_arn,
            configuration_values=json.dumps(configuration) if configuration else None,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
        )
        self._addons[addon] = resource
        return resource

    def install_coredns(self, after: Sequence[pulumi.Resource]) -> aws.eks.Addon:
        """CoreDNS only becomes ACTIVE once nodes can run it: install it after the system node groups."""
        return self._add_addon("coredns", after)

    def install_node_monitoring_agent(self, after: Sequence[pulumi.Resource]) -> aws.eks.Addon:
        """The agent that turns GPU, kernel, network and storage faults into node conditions, which
        node repair (EKS's for managed groups, Karpenter's for its nodes) acts on. A DaemonSet: it
        becomes ACTIVE once the nodes it runs on exist."""
        return self._add_addon(
            "eks-node-monitoring-agent",
            after,
            version=NODE_MONITORING_AGENT_ADDON_VERSIONS[self.version],
            configuration=node_monitoring_agent_configuration(),
        )
