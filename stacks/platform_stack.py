"""One environment of inferstack: stack config -> typed, validated PlatformConfig -> the whole platform.

network -> cluster -> node groups (system, GPU on demand, GPU spot) -> model store -> GPU operators,
monitoring, autoscaling -> one TritonModelService per configured service. Everything in the config
is checked before the first resource is registered; an error names the config key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pulumi
import pulumi_aws as aws

from inferstack.components.autoscaling import Autoscaling, AutoscalingArgs
from inferstack.components.gpu import GpuOperators, GpuOperatorsArgs
from inferstack.components.monitoring import Monitoring, MonitoringArgs
from inferstack.infra.cluster import Cluster, ClusterArgs, validate_cluster_args
from inferstack.infra.errors import InvalidInput
from inferstack.infra.model_store import ModelStore, ModelStoreArgs, check_prefix
from inferstack.infra.network import (
    NatMode,
    Network,
    NetworkArgs,
    choose_zones,
    instance_type_offerings,
    nat_zones,
    plan_subnets,
    region_zones,
)
from inferstack.infra.nodegroups import (
    NodeGroupPlan,
    NodeGroups,
    NodeGroupsArgs,
    check_zone_loss,
    gpu_plans,
    gpu_spot_plans,
    system_plan,
)
from inferstack.serving.model_service import (
    ModelSource,
    Placement,
    TritonModelService,
    TritonModelServiceArgs,
    validate,
)


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    models: tuple[str, ...]
    prefix: str
    min_replicas: int = 3
    max_replicas: int = 12
    placement: Placement = "spot-with-fallback"
    queue_time_target_ms: float = 50.0
    pending_requests_per_replica: float = 16.0
    gpu_utilization_target: float | None = None


@dataclass(frozen=True)
class PlatformConfig:
    environment: str
    cluster_name: str
    kubernetes_version: str
    admin_principal_arns: tuple[str, ...]
    public_access_cidrs: tuple[str, ...]
    vpc_cidr: str
    zones: int | tuple[str, ...]  # how many (the first usable ones), or exactly which
    nat: NatMode
    system_instance_types: tuple[str, ...]
    gpu_instance_type: str
    gpu_max_per_zone: int
    spot_instance_types: tuple[str, ...]
    spot_max_per_zone: int
    min_surviving_gpu_share: float
    services: tuple[ServiceConfig, ...] = field(default_factory=tuple)


_SECTIONS: dict[str, dict[str, Any]] = {
    "cluster": {"name": None, "kubernetesVersion": "1.35", "adminPrincipalArns": [], "publicAccessCidrs": []},
    "network": {"vpcCidr": "10.0.0.0/16", "zones": 3, "nat": "per_zone"},
    "nodes": {"systemInstanceTypes": ["m7i.xlarge", "m6i.xlarge"]},
    "gpu": {
        "instanceType": "g5.xlarge",
        "maxPerZone": 4,
        "spotInstanceTypes": ["g5.xlarge", "g6.xlarge", "g4dn.xlarge"],
        "spotMaxPerZone": 6,
        "minSurvivingShare": 0.5,
    },
}
_SERVICE_KEYS = {
    "name": "name",
    "models": "models",
    "prefix": "prefix",
    "minReplicas": "min_replicas",
    "maxReplicas": "max_replicas",
    "placement": "placement",
    "queueTimeTargetMs": "queue_time_target_ms",
    "pendingRequestsPerReplica": "pending_requests_per_replica",
    "gpuUtilizationTarget": "gpu_utilization_target",
}


def _section(raw: Mapping[str, Any], name: str) -> dict[str, Any]:
    given = raw.get(name) or {}
    if not isinstance(given, Mapping):
        raise InvalidInput(f"inferstack:{name}", given, "a mapping of settings")
    unknown = sorted(set(given) - set(_SECTIONS[name]))
    if unknown:
        raise InvalidInput(f"inferstack:{name}", unknown, f"keys among {', '.join(_SECTIONS[name])}")
    return {**_SECTIONS[name], **given}


def parse_config(raw: Mapping[str, Any], *, stack: str) -> PlatformConfig:
    """The ``inferstack:*`` keys of a stack file, typed; unknown keys and bad values name their key."""
    unknown = sorted(set(raw) - {"environment", "services", *_SECTIONS})
    if unknown:
        raise InvalidInput("inferstack", unknown, f"keys among environment, services, {', '.join(_SECTIONS)}")
    environment = raw.get("environment", "dev")
    if environment not in ("dev", "staging", "prod"):
        raise InvalidInput("inferstack:environment", environment, "dev, staging or prod")
    cluster, network, nodes, gpu = (_section(raw, s) for s in ("cluster", "network", "nodes", "gpu"))
    services = []
    for i, entry in enumerate(raw.get("services") or []):
        bad = sorted(set(entry) - set(_SERVICE_KEYS))
        if bad:
            raise InvalidInput(f"inferstack:services[{i}]", bad, f"keys among {', '.join(_SERVICE_KEYS)}")
        missing = sorted({"name", "models", "prefix"} - set(entry))
        if missing:
            raise InvalidInput(f"inferstack:services[{i}]", missing, "name, models and prefix are required")
        values = {_SERVICE_KEYS[k]: v for k, v in entry.items()}
        values["models"] = tuple(values["models"])
        services.append(ServiceConfig(**values))
    return PlatformConfig(
        environment=environment,
        cluster_name=cluster["name"] or f"inferstack-{stack}",
        kubernetes_version=str(cluster["kubernetesVersion"]),
        admin_principal_arns=tuple(cluster["adminPrincipalArns"]),
        public_access_cidrs=tuple(cluster["publicAccessCidrs"]),
        vpc_cidr=network["vpcCidr"],
        zones=_zones(network["zones"]),
        nat=cast(NatMode, network["nat"]),  # checked with the rest in check()
        system_instance_types=tuple(nodes["systemInstanceTypes"]),
        gpu_instance_type=gpu["instanceType"],
        gpu_max_per_zone=int(gpu["maxPerZone"]),
        spot_instance_types=tuple(gpu["spotInstanceTypes"]),
        spot_max_per_zone=int(gpu["spotMaxPerZone"]),
        min_surviving_gpu_share=float(gpu["minSurvivingShare"]),
        services=tuple(services),
    )


def _zones(value: Any) -> int | tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidInput(
            "inferstack:network.zones", value, "a number of zones (such as 3) or a list of zone names"
        ) from None


def check_reachable(config: PlatformConfig) -> None:
    """The program installs Helm releases and Triton services through the API endpoint from wherever
    `pulumi up` runs, which is outside the VPC it creates: a private-only endpoint would time out."""
    if not config.public_access_cidrs:
        raise InvalidInput(
            "inferstack:cluster.publicAccessCidrs",
            [],
            "the CIDRs `pulumi up` runs from (e.g. your egress IP as a /32): the program deploys "
            "Kubernetes resources through the API endpoint from outside the VPC; set it with "
            "`pulumi config set --path 'inferstack:cluster.publicAccessCidrs[0]' <cidr>`",
        )
    if config.nat == "none":
        raise InvalidInput(
            "inferstack:network.nat",
            config.nat,
            "per_zone or single: the platform's charts pull images from public registries "
            "(registry.k8s.io, nvcr.io, quay.io), which private nodes reach only through a NAT",
        )


def node_plans(config: PlatformConfig, zones: Sequence[str]) -> list[NodeGroupPlan]:
    return [
        system_plan(zones, instance_types=config.system_instance_types),
        *gpu_plans(zones, instance_type=config.gpu_instance_type, max_size=config.gpu_max_per_zone),
        *gpu_spot_plans(zones, instance_types=config.spot_instance_types, max_size=config.spot_max_per_zone),
    ]


def service_args(
    config: PlatformConfig, service: ServiceConfig, source: ModelSource, **extra: Any
) -> TritonModelServiceArgs:
    return TritonModelServiceArgs(
        models=service.models,
        source=source,
        namespace=service.name,
        environment="prod" if config.environment == "prod" else "dev",
        zones=len(config.zones) if isinstance(config.zones, tuple) else config.zones,
        node_instance_type=config.gpu_instance_type,
        min_replicas=service.min_replicas,
        max_replicas=service.max_replicas,
        placement=service.placement,
        queue_time_target_ms=service.queue_time_target_ms,
        pending_requests_per_replica=service.pending_requests_per_replica,
        gpu_utilization_target=service.gpu_utilization_target,
        **extra,
    )


def check(config: PlatformConfig, zones: Sequence[str]) -> None:
    """Everything the components would check, for the whole stack, before anything is registered.

    Subnet ids, role ARNs and bucket URIs exist only once resources do; the checks get stand-ins of
    the right shape (one private subnet per zone, an IRSA role), which is all they look at.
    """
    check_reachable(config)
    plan_subnets(config.vpc_cidr, zones, private_prefix=19, public_prefix=24)
    nat_zones(zones, config.nat)
    validate_cluster_args(
        config.cluster_name,
        ClusterArgs(
            subnet_ids=[f"private-{zone}" for zone in zones],
            version=config.kubernetes_version,
            admin_principal_arns=config.admin_principal_arns,
            public_access_cidrs=config.public_access_cidrs,
        ),
    )
    check_zone_loss([p for p in node_plans(config, zones) if p.gpus_per_node], config.min_surviving_gpu_share)
    names = [s.name for s in config.services]
    if len(set(names)) != len(names):
        raise InvalidInput("inferstack:services", names, "unique service names")
    for i, service in enumerate(config.services):
        try:
            validate(
                service.name,
                service_args(
                    config,
                    service,
                    ModelSource(role_arn="irsa-role", repository_uri=f"s3://models/{service.prefix}"),
                ),
            )
            check_prefix(service.prefix)
        except InvalidInput as error:
            raise InvalidInput(
                f"inferstack:services[{i}].{error.field}", error.value, error.allowed
            ) from None


def build(config: PlatformConfig) -> dict[str, Any]:
    """Register the whole platform; returns the stack outputs."""
    gpu_types = sorted({config.gpu_instance_type, *config.spot_instance_types})
    zones = choose_zones(
        "inferstack:network.zones",
        config.zones,
        region_zones(),
        instance_type_offerings(gpu_types),
        gpu_types,
    )
    check(config, zones)
    region = aws.get_region().region
    tags = {"inferstack.io/environment": config.environment}

    network = Network(
        "network",
        NetworkArgs(
            cluster_name=config.cluster_name, vpc_cidr=config.vpc_cidr, zones=zones, nat=config.nat, tags=tags
        ),
    )
    cluster = Cluster(
        config.cluster_name,
        ClusterArgs(
            subnet_ids=network.private_subnet_ids,
            version=config.kubernetes_version,
            admin_principal_arns=config.admin_principal_arns,
            public_access_cidrs=config.public_access_cidrs,
            tags=tags,
        ),
    )
    nodes = NodeGroups(
        "nodes",
        NodeGroupsArgs(
            cluster_name=config.cluster_name,
            eks_cluster_name=cluster.name,
            node_role_arn=cluster.node_role.arn,
            subnet_ids_by_zone=dict(zip(zones, network.private_subnet_ids, strict=True)),
            plans=node_plans(config, zones),
            kubernetes_version=config.kubernetes_version,
            min_surviving_gpu_share=config.min_surviving_gpu_share,
            tags=tags,
        ),
        pulumi.ResourceOptions(depends_on=cluster.node_prerequisites),
    )
    cluster.install_coredns(after=[nodes.groups["system"]])
    store = ModelStore("models", ModelStoreArgs(tags=tags))
    after_nodes = pulumi.ResourceOptions(depends_on=[nodes])
    GpuOperators("gpu", GpuOperatorsArgs(provider=cluster.provider), after_nodes)
    monitoring = Monitoring("monitoring", MonitoringArgs(provider=cluster.provider), after_nodes)
    Autoscaling(
        "autoscaling",
        AutoscalingArgs(
            provider=cluster.provider,
            cluster_name=config.cluster_name,
            region=region,
            oidc_provider_arn=cluster.oidc_provider_arn,
            oidc_issuer_url=cluster.oidc_issuer_url,
        ),
        after_nodes,
    )
    endpoints = {}
    for service in config.services:
        source = ModelSource(
            model_store=store,
            prefix=service.prefix,
            oidc_provider_arn=cluster.oidc_provider_arn,
            oidc_issuer_url=cluster.oidc_issuer_url,
        )
        triton = TritonModelService(
            service.name,
            service_args(config, service, source, region=region, provider=cluster.provider),
            pulumi.ResourceOptions(depends_on=[monitoring]),
        )
        endpoints[service.name] = {"http": triton.http_endpoint, "grpc": triton.grpc_endpoint}
    return {
        "cluster_name": cluster.name,
        "kubeconfig": cluster.kubeconfig,
        "model_bucket": store.bucket_name,
        "grafana_admin_password": monitoring.grafana_admin_password,
        "services": endpoints,
    }
