"""Everything the components would check, for the whole platform, before anything is registered;
every error names the stack key."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic.alias_generators import to_camel

from inferstack.components.config_keys import stack_key
from inferstack.components.model_service import (
    ModelSource,
    validate,
)
from inferstack.components.platform.args import (
    KEY,
    PLATFORM_NAMESPACES,
    node_plans,
    node_pool_plans,
    served,
    service_args,
    telemetry_args,
)
from inferstack.components.platform_config import PlatformConfig
from inferstack.components.telemetry import validate as validate_telemetry
from inferstack.infra.cluster import ClusterArgs, validate_cluster_args
from inferstack.infra.errors import InvalidInput
from inferstack.infra.model_store import check_prefix
from inferstack.infra.names import (
    EKS_NODEGROUP_NAME_MAX,
    IAM_ROLE_NAME_MAX,
    check_bucket_prefix,
    check_derived_name,
)
from inferstack.infra.network import (
    nat_zones,
    plan_subnets,
)
from inferstack.infra.node_plans import check_zone_loss


def check_reachable(config: PlatformConfig) -> None:
    """The platform installs Helm releases and Triton services through the API endpoint from wherever
    `pulumi up` runs, which is outside the VPC it creates: a private-only endpoint would time out."""
    if not config.cluster.public_access_cidrs:
        raise InvalidInput(
            f"{KEY}:cluster.publicAccessCidrs",
            [],
            "the CIDRs `pulumi up` runs from (e.g. your egress IP as a /32): the program deploys "
            "Kubernetes resources through the API endpoint from outside the VPC; set it with "
            f"`pulumi config set --path '{KEY}:cluster.publicAccessCidrs[0]' <cidr>`",
        )
    if config.network.nat == "none":
        raise InvalidInput(
            f"{KEY}:network.nat",
            config.network.nat,
            "per_zone or single: the platform's charts pull images from public registries "
            "(registry.k8s.io, nvcr.io, quay.io, ghcr.io, cr.fluentbit.io), which private nodes reach only "
            "through a NAT",
        )


def check_platform_name(name: str, zones: Sequence[str]) -> None:
    """The platform's name prefixes its children's names; the longest derived ones must fit AWS."""
    field = f"{KEY}:cluster.name"
    check_derived_name(field, name, suffix="-autoscaling-cluster-autoscaler", limit=IAM_ROLE_NAME_MAX)
    for zone in zones:
        check_derived_name(field, name, suffix=f"-nodes-gpu-spot-{zone}-ng", limit=EKS_NODEGROUP_NAME_MAX)


def check(
    config: PlatformConfig, cluster_name: str, zones: Sequence[str], stack_dir: Path | None = None
) -> None:
    """Everything the components would check, for the whole platform, before anything is registered.

    Subnet ids, role ARNs and bucket URIs exist only once resources do; the checks get stand-ins of
    the right shape (one private subnet per zone, an IRSA role), which is all they look at. A
    component's error is renamed to the stack key the value came from.
    """
    check_reachable(config)
    try:
        plan_subnets(config.network.vpc_cidr, zones, private_prefix=19, public_prefix=24)
        nat_zones(zones, config.network.nat)
        check_bucket_prefix("cluster_name", f"{cluster_name}-models")
        validate_cluster_args(
            cluster_name,
            ClusterArgs(
                subnet_ids=[f"private-{zone}" for zone in zones],
                version=config.cluster.kubernetes_version,
                admin_principal_arns=config.cluster.admin_principal_arns,
                public_access_cidrs=config.cluster.public_access_cidrs,
            ),
        )
        # Reserved capacity sits in one zone and a Capacity Block ends: the rest must stand without it.
        gpu_groups = [
            p for p in node_plans(config, zones) if p.gpus_per_node and not p.capacity_reservation_id
        ]
        # NodePools reach the same maximums as the groups would, so the same zone-loss check holds.
        check_zone_loss(gpu_groups, config.gpu.min_surviving_share)
        if config.capacity == "karpenter":
            node_pool_plans(config, zones)
        if config.telemetry.enabled:
            validate_telemetry(
                f"{cluster_name}-telemetry", telemetry_args(config, cluster_name, "oidc-provider", "issuer")
            )
    except InvalidInput as error:
        if error.field.startswith((f"{KEY}:", "aws:")):
            raise
        if error.field.startswith("reserved."):  # as the stack file spells it
            key = ".".join(to_camel(part) for part in error.field.split("."))
            raise InvalidInput(f"{KEY}:gpu.{key}", error.value, error.allowed) from None
        raise InvalidInput(stack_key(error.field), error.value, error.allowed) from None
    names = [s.name for s in config.services]
    if len(set(names)) != len(names):
        raise InvalidInput(f"{KEY}:services", names, "unique service names")
    for i, name in enumerate(names):
        if name in PLATFORM_NAMESPACES:
            raise InvalidInput(
                f"{KEY}:services[{i}].name",
                name,
                f"a name of its own: it becomes the service's namespace, and {sorted(PLATFORM_NAMESPACES)} "
                "are the platform's or Kubernetes' own",
            )
    shipped = served(config, stack_dir or Path.cwd())
    for i, service in enumerate(config.services):
        try:
            source = ModelSource(
                role_arn="irsa-role",
                repository_uri=f"s3://models/{service.prefix}",
                served=shipped[service.name],
            )
            validate(service.name, service_args(config, service, source, zones))
            check_prefix(service.prefix)
        except InvalidInput as error:
            key = ".".join(to_camel(part) for part in error.field.split("."))  # as the stack file spells it
            raise InvalidInput(f"{KEY}:services[{i}].{key}", error.value, error.allowed) from None
