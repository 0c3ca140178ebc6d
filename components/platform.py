"""InferencePlatform: one environment of GPU model serving, as one Pulumi component.

network -> cluster -> node groups (system, GPU on demand, GPU spot) -> model store -> telemetry (traces
and logs), GPU operators, monitoring, autoscaling -> one TritonModelService per configured service,
traced to the telemetry's collector. The whole `PlatformConfig`
is checked before the first resource is registered, and every error names the stack config key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws
from pydantic.alias_generators import to_camel

from inferstack.components.autoscaling import Autoscaling, AutoscalingArgs
from inferstack.components.canary import CanaryRelease
from inferstack.components.gpu import GpuOperators, GpuOperatorsArgs
from inferstack.components.model_service import (
    ModelSource,
    TritonModelService,
    TritonModelServiceArgs,
    validate,
)
from inferstack.components.monitoring import Monitoring, MonitoringArgs
from inferstack.components.platform_config import NAMESPACE, PlatformConfig, ServiceConfig
from inferstack.components.storage import StorageClasses, StorageClassesArgs
from inferstack.components.telemetry import Telemetry, TelemetryArgs, collector_traces_url
from inferstack.components.telemetry import validate as validate_telemetry
from inferstack.components.triton_telemetry import TraceSettings
from inferstack.infra.cluster import Cluster, ClusterArgs, validate_cluster_args
from inferstack.infra.errors import InvalidInput
from inferstack.infra.model_store import ModelStore, ModelStoreArgs, check_prefix
from inferstack.infra.names import (
    EKS_NODEGROUP_NAME_MAX,
    IAM_ROLE_NAME_MAX,
    check_bucket_prefix,
    check_derived_name,
)
from inferstack.infra.network import (
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
from inferstack.infra.storage import BlockStorage, BlockStorageArgs

KEY = NAMESPACE  # the stack config namespace errors are named in
MONITORING_NAMESPACE = MonitoringArgs.namespace
TELEMETRY_NAMESPACE = TelemetryArgs.namespace
# Namespaces the platform or Kubernetes own: a service named after one would share (and, on
# deletion, take down) what lives there.
PLATFORM_NAMESPACES = frozenset(
    {
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        MONITORING_NAMESPACE,
        TELEMETRY_NAMESPACE,
        GpuOperatorsArgs.namespace,
        AutoscalingArgs.keda_namespace,
        AutoscalingArgs.autoscaler_namespace,
    }
)


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
            "(registry.k8s.io, nvcr.io, quay.io), which private nodes reach only through a NAT",
        )


def node_plans(config: PlatformConfig, zones: Sequence[str]) -> list[NodeGroupPlan]:
    gpu = config.gpu
    return [
        system_plan(zones, instance_types=config.nodes.system_instance_types),
        *gpu_plans(zones, instance_type=gpu.instance_type, max_size=gpu.max_per_zone),
        *gpu_spot_plans(zones, instance_types=gpu.spot_instance_types, max_size=gpu.spot_max_per_zone),
    ]


def service_args(
    config: PlatformConfig, service: ServiceConfig, source: ModelSource, zones: Sequence[str], **extra: Any
) -> TritonModelServiceArgs:
    return TritonModelServiceArgs(
        models=service.models,
        source=source,
        namespace=service.name,
        environment="prod" if config.environment == "prod" else "dev",
        zones=len(zones),
        node_instance_type=config.gpu.instance_type,
        min_replicas=service.min_replicas,
        max_replicas=service.max_replicas,
        placement=service.placement,
        queue_time_target_ms=service.queue_time_target_ms,
        pending_requests_per_replica=service.pending_requests_per_replica,
        gpu_utilization_target=service.gpu_utilization_target,
        canary=CanaryRelease(**service.canary.model_dump()) if service.canary else None,
        tracing=TraceSettings(collector_traces_url(TELEMETRY_NAMESPACE), config.telemetry.sample_rate)
        if config.telemetry.enabled
        else None,
        **extra,
    )


def telemetry_args(
    config: PlatformConfig,
    cluster_name: str,
    oidc_provider_arn: pulumi.Input[str],
    oidc_issuer_url: pulumi.Input[str],
    region: str | None = None,
) -> TelemetryArgs:
    return TelemetryArgs(
        cluster_name=cluster_name,
        oidc_provider_arn=oidc_provider_arn,
        oidc_issuer_url=oidc_issuer_url,
        region=region,
        log_retention_days=config.telemetry.log_retention_days,
        trace_retention_hours=config.telemetry.trace_retention_hours,
    )


def check_platform_name(name: str, zones: Sequence[str]) -> None:
    """The platform's name prefixes its children's names; the longest derived ones must fit AWS."""
    field = f"{KEY}:cluster.name"
    check_derived_name(field, name, suffix="-autoscaling-cluster-autoscaler", limit=IAM_ROLE_NAME_MAX)
    for zone in zones:
        check_derived_name(field, name, suffix=f"-nodes-gpu-spot-{zone}-ng", limit=EKS_NODEGROUP_NAME_MAX)


# A component's field (prefix) -> the stack key it comes from: errors name what the user wrote.
_STACK_KEYS: tuple[tuple[str, str], ...] = (
    ("name", "cluster.name"),
    ("version", "cluster.kubernetesVersion"),
    ("public_access_cidrs", "cluster.publicAccessCidrs"),
    ("admin_principal_arns", "cluster.adminPrincipalArns"),
    ("vpc_cidr", "network.vpcCidr"),
    ("private_prefix", "network.vpcCidr"),  # too small a VPC for the subnets
    ("public_prefix", "network.vpcCidr"),
    ("zones", "network.zones"),
    ("nat", "network.nat"),
    ("system.instance_types", "nodes.systemInstanceTypes"),
    ("gpu_spot.instance_types", "gpu.spotInstanceTypes"),
    ("gpu_spot.max_size", "gpu.spotMaxPerZone"),
    ("gpu.instance_types", "gpu.instanceType"),
    ("gpu.max_size", "gpu.maxPerZone"),
    ("instance_type", "gpu.instanceType"),
    ("min_surviving_gpu_share", "gpu.minSurvivingShare"),
    ("plans", "gpu.minSurvivingShare"),
    ("cluster_name", "cluster.name"),
    ("log_retention_days", "telemetry.logRetentionDays"),
    ("trace_retention_hours", "telemetry.traceRetentionHours"),
)


def stack_key(field: str) -> str:
    """The stack config key a component's field comes from, in Pulumi's spelling."""
    for prefix, key in _STACK_KEYS:
        if field == prefix or field.startswith((f"{prefix}[", f"{prefix}.")):
            rest = field[len(prefix) :]
            return f"{KEY}:{key}{rest if rest.startswith('[') else ''}"
    for plan in ("gpu-spot-", "gpu-"):  # a per-zone node group's own field
        if field.startswith(plan):
            return f"{KEY}:gpu.{'spotInstanceTypes' if plan == 'gpu-spot-' else 'instanceType'}"
    return f"{KEY}:{field}"


def check(config: PlatformConfig, cluster_name: str, zones: Sequence[str]) -> None:
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
        gpu_groups = [p for p in node_plans(config, zones) if p.gpus_per_node]
        check_zone_loss(gpu_groups, config.gpu.min_surviving_share)
        if config.telemetry.enabled:
            validate_telemetry(
                f"{cluster_name}-telemetry", telemetry_args(config, cluster_name, "oidc-provider", "issuer")
            )
    except InvalidInput as error:
        if error.field.startswith((f"{KEY}:", "aws:")):
            raise
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
    for i, service in enumerate(config.services):
        try:
            source = ModelSource(role_arn="irsa-role", repository_uri=f"s3://models/{service.prefix}")
            validate(service.name, service_args(config, service, source, zones))
            check_prefix(service.prefix)
        except InvalidInput as error:
            key = ".".join(to_camel(part) for part in error.field.split("."))  # as the stack file spells it
            raise InvalidInput(f"{KEY}:services[{i}].{key}", error.value, error.allowed) from None


class InferencePlatform(pulumi.ComponentResource):
    """The whole platform of one environment; ``name`` also names the EKS cluster unless the config does."""

    cluster: Cluster
    network: Network
    model_store: ModelStore
    services: dict[str, TritonModelService]
    telemetry: Telemetry | None
    zones: list[str]
    region: str
    cluster_name: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    oidc_issuer_url: pulumi.Output[str]
    vpc_id: pulumi.Output[str]
    private_subnet_ids: list[pulumi.Output[str]]
    model_bucket: pulumi.Output[str]
    grafana_admin_password: pulumi.Output[str]

    def __init__(self, name: str, config: PlatformConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        # Every invoke goes through the provider the caller gave this component (its region, account).
        invoke = pulumi.InvokeOptions(provider=opts.provider if opts else None)
        cluster_name = config.cluster.name or name
        gpu_types = sorted({config.gpu.instance_type, *config.gpu.spot_instance_types})
        zones = choose_zones(
            f"{KEY}:network.zones",
            config.network.zones,
            region_zones(invoke),
            instance_type_offerings(gpu_types, invoke),
            gpu_types,
        )
        check_platform_name(name, zones)
        check(config, cluster_name, zones)
        region = aws.get_region(opts=invoke).region
        super().__init__("inferstack:platform:InferencePlatform", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags: dict[str, str] = {"inferstack.io/environment": config.environment}

        network = Network(
            f"{name}-network",
            NetworkArgs(
                cluster_name=cluster_name,
                vpc_cidr=config.network.vpc_cidr,
                zones=zones,
                nat=config.network.nat,
                tags=tags,
            ),
            child,
        )
        cluster = Cluster(
            cluster_name,
            ClusterArgs(
                subnet_ids=network.private_subnet_ids,
                version=config.cluster.kubernetes_version,
                admin_principal_arns=config.cluster.admin_principal_arns,
                public_access_cidrs=config.cluster.public_access_cidrs,
                tags=tags,
            ),
            child,
        )
        nodes = NodeGroups(
            f"{name}-nodes",
            NodeGroupsArgs(
                cluster_name=cluster_name,
                eks_cluster_name=cluster.name,
                node_role_arn=cluster.node_role.arn,
                subnet_ids_by_zone=dict(zip(zones, network.private_subnet_ids, strict=True)),
                plans=node_plans(config, zones),
                kubernetes_version=config.cluster.kubernetes_version,
                min_surviving_gpu_share=config.gpu.min_surviving_share,
                tags=tags,
            ),
            pulumi.ResourceOptions(parent=self, depends_on=cluster.node_prerequisites),
        )
        cluster.install_coredns(after=[nodes.groups["system"]])
        store = ModelStore(f"{name}-models", ModelStoreArgs(tags=tags), child)
        # Components hand their depends_on to their children: PVCs wait for a class and its driver,
        # custom resources for the release that installs their CRD.
        block_storage = BlockStorage(
            f"{name}-storage",
            BlockStorageArgs(
                cluster_name=cluster.name,
                oidc_provider_arn=cluster.oidc_provider_arn,
                oidc_issuer_url=cluster.oidc_issuer_url,
                kubernetes_version=config.cluster.kubernetes_version,
                tags=tags,
            ),
            pulumi.ResourceOptions(parent=self, depends_on=[nodes]),
        )

        # The cluster's Kubernetes provider reaches every Kubernetes resource through the options.
        def in_cluster(*after: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, provider=cluster.provider, depends_on=list(after))

        storage_classes = StorageClasses(f"{name}-storage", StorageClassesArgs(), in_cluster(block_storage))
        self.telemetry = None
        if config.telemetry.enabled:
            self.telemetry = Telemetry(
                f"{name}-telemetry",
                telemetry_args(
                    config, cluster_name, cluster.oidc_provider_arn, cluster.oidc_issuer_url, region=region
                ),
                in_cluster(nodes, block_storage, storage_classes),
            )
        monitoring = Monitoring(
            f"{name}-monitoring",
            MonitoringArgs(
                storage_class=storage_classes.gp3,
                jaeger_url=self.telemetry.jaeger_url if self.telemetry else None,
            ),
            in_cluster(nodes, block_storage, storage_classes),
        )
        after_monitoring = in_cluster(nodes, monitoring)  # their custom resources' CRDs
        gpu_ami_types = sorted({p.ami_type for p in node_plans(config, zones) if p.gpus_per_node})
        GpuOperators(f"{name}-gpu", GpuOperatorsArgs(gpu_ami_types=gpu_ami_types), after_monitoring)
        autoscaling = Autoscaling(
            f"{name}-autoscaling",
            AutoscalingArgs(
                cluster_name=cluster_name,
                region=region,
                oidc_provider_arn=cluster.oidc_provider_arn,
                oidc_issuer_url=cluster.oidc_issuer_url,
            ),
            after_monitoring,
        )
        self.services = {}
        for service in config.services:
            source = ModelSource(
                model_store=store,
                prefix=service.prefix,
                oidc_provider_arn=cluster.oidc_provider_arn,
                oidc_issuer_url=cluster.oidc_issuer_url,
            )
            self.services[service.name] = TritonModelService(
                service.name,
                service_args(config, service, source, zones, region=region),
                in_cluster(monitoring, autoscaling),
            )

        self.cluster, self.network, self.model_store = cluster, network, store
        self.zones, self.region = zones, region
        self.cluster_name = cluster.name
        self.kubeconfig = cluster.kubeconfig
        self.oidc_provider_arn = cluster.oidc_provider_arn
        self.oidc_issuer_url = cluster.oidc_issuer_url
        self.vpc_id = network.vpc_id
        self.private_subnet_ids = network.private_subnet_ids
        self.model_bucket = store.bucket_name
        self.grafana_admin_password = monitoring.grafana_admin_password
        self.register_outputs(self.outputs())

    def outputs(self) -> dict[str, Any]:
        """What other stacks and people need: export these from the program (``pulumi.export``)."""
        return {
            "region": self.region,
            "zones": self.zones,
            "cluster_name": self.cluster_name,
            "kubeconfig": self.kubeconfig,
            "oidc_provider_arn": self.oidc_provider_arn,
            "oidc_issuer_url": self.oidc_issuer_url,
            "vpc_id": self.vpc_id,
            "private_subnet_ids": self.private_subnet_ids,
            "model_bucket": self.model_bucket,
            "grafana": {
                "reach": f"kubectl -n {MONITORING_NAMESPACE} port-forward "
                "svc/kube-prometheus-stack-grafana 3000:80",
                "admin_password": self.grafana_admin_password,
            },
            "services": {
                name: {
                    "http": service.http_endpoint,
                    "grpc": service.grpc_endpoint,
                    # Triton's admin APIs (load, unload) answer only this key: read it when needed.
                    "admin_key": f"kubectl -n {service.namespace} get secret {service.admin_key_secret} "
                    "-o jsonpath='{.data.admin-key}' | base64 -d",
                }
                for name, service in self.services.items()
            },
            "telemetry": None
            if self.telemetry is None
            else {
                "collector": self.telemetry.collector_url,
                "jaeger": f"kubectl -n {self.telemetry.namespace} port-forward svc/jaeger 16686",
                "log_group": self.telemetry.log_group_name,
            },
        }
