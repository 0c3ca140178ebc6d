"""InferencePlatform: one environment of GPU model serving, as one Pulumi component.

network -> cluster -> node groups (system, GPU on demand, GPU spot) -> model store -> telemetry (traces
and logs), GPU operators, monitoring, autoscaling -> one TritonModelService per configured service,
traced to the telemetry's collector. The whole `PlatformConfig`
is checked before the first resource is registered, and every error names the stack config key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
from pydantic.alias_generators import to_camel

from inferstack.components.autoscaling import Autoscaling, AutoscalingArgs
from inferstack.components.canary import CanaryRelease
from inferstack.components.gpu import GpuOperators, GpuOperatorsArgs
from inferstack.components.karpenter import Karpenter, KarpenterArgs, NodePoolPlan, gpu_pool_plans
from inferstack.components.model_repository import (
    ModelRepository,
    ModelRepositoryArgs,
    ServedModels,
    plan_objects,
    served_models,
)
from inferstack.components.model_service import (
    ModelSource,
    TritonModelService,
    TritonModelServiceArgs,
    validate,
)
from inferstack.components.monitoring import Monitoring, MonitoringArgs
from inferstack.components.platform_config import NAMESPACE, PlatformConfig, ServiceConfig, stack_key
from inferstack.components.storage import StorageClasses, StorageClassesArgs
from inferstack.components.telemetry import JAEGER_SERVICE, Telemetry, TelemetryArgs, collector_traces_url
from inferstack.components.telemetry import validate as validate_telemetry
from inferstack.components.triton_telemetry import TraceSettings
from inferstack.infra.aws_identity import AwsIdentity
from inferstack.infra.cluster import Cluster, ClusterArgs, validate_cluster_args
from inferstack.infra.errors import InvalidInput
from inferstack.infra.karpenter import KarpenterAws, KarpenterAwsArgs, instance_profile_name
from inferstack.infra.karpenter import validate_names as validate_karpenter_names
from inferstack.infra.model_store import ModelStore, ModelStoreArgs, check_prefix
from inferstack.infra.names import EKS_NODEGROUP_NAME_MAX, IAM_ROLE_NAME_MAX, check_derived_name
from inferstack.infra.network import (
    Network,
    NetworkArgs,
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
from inferstack.infra.reserved import ReservedCapacity, reserved_plans
from inferstack.infra.storage import BlockStorage, BlockStorageArgs, VolumeKey
from inferstack.infra.zones import choose_zones

KEY = NAMESPACE  # the stack config namespace errors are named in
MONITORING_NAMESPACE = MonitoringArgs.namespace
TELEMETRY_NAMESPACE = TelemetryArgs.namespace


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


def node_plans(config: PlatformConfig, zones: Sequence[str]) -> list[NodeGroupPlan]:
    gpu = config.gpu
    reserved = reserved_capacity(config)
    return [
        system_plan(zones, instance_types=config.nodes.system_instance_types),
        *gpu_plans(zones, instance_type=gpu.instance_type, max_size=gpu.max_per_zone),
        *gpu_spot_plans(zones, instance_types=gpu.spot_instance_types, max_size=gpu.spot_max_per_zone),
        # Karpenter reads a reservation's zone itself; managed groups must be put there.
        *(reserved_plans(reserved, zones) if reserved and config.capacity == "managed-node-groups" else []),
    ]


def reserved_capacity(config: PlatformConfig) -> ReservedCapacity | None:
    given = config.gpu.reserved
    if given is None:
        return None
    return ReservedCapacity(
        given.kind, given.reservation_ids, given.instance_type, given.instances, given.zone
    )


def node_pool_plans(config: PlatformConfig, zones: Sequence[str]) -> list[NodePoolPlan]:
    """With ``capacity: karpenter``: the GPU NodePools, bounded by the same maximums as the groups."""
    gpu = config.gpu
    return gpu_pool_plans(
        zones,
        instance_type=gpu.instance_type,
        max_per_zone=gpu.max_per_zone,
        spot_instance_types=gpu.spot_instance_types,
        spot_max_per_zone=gpu.spot_max_per_zone,
        reserved=reserved_capacity(config),
    )


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
        model_cache_gib=service.model_cache_gib,
        queue_time_target_ms=service.queue_time_target_ms,
        pending_requests_per_replica=service.pending_requests_per_replica,
        gpu_utilization_target=service.gpu_utilization_target,
        expected_request_bytes=service.expected_request_bytes,
        expected_requests_per_second=service.expected_requests_per_second,
        front_time_target_ms=service.front_time_target_ms,
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


def repository_path(service: ServiceConfig, stack_dir: Path) -> Path | None:
    """The service's built repository, a path in the stack file read relative to the stack files."""
    return None if service.repository is None else stack_dir / service.repository


def served(config: PlatformConfig, stack_dir: Path) -> dict[str, ServedModels | None]:
    """Service -> what the deploy ships into its prefix (None: published out of band); errors name
    ``services[i].repository``."""
    found: dict[str, ServedModels | None] = {}
    for i, service in enumerate(config.services):
        path = repository_path(service, stack_dir)
        try:
            found[service.name] = None if path is None else served_models(plan_objects(path, service.models))
        except InvalidInput as error:
            key = "models" if error.field == "models" else "repository"
            raise InvalidInput(f"{KEY}:services[{i}].{key}", error.value, error.allowed) from None
    return found


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


class InferencePlatform(pulumi.ComponentResource):
    """The whole platform of one environment; ``name`` also names the EKS cluster unless the config does."""

    cluster: Cluster
    network: Network
    model_store: ModelStore
    services: dict[str, TritonModelService]
    model_repositories: dict[str, ModelRepository]  # the services whose models ship with the deploy
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

    def __init__(
        self,
        name: str,
        config: PlatformConfig,
        opts: pulumi.ResourceOptions | None = None,
        *,
        identity: AwsIdentity | None = None,  # the stack's aws:profile and role, for the kubeconfig
        stack_dir: Path | None = None,  # where the stack files are: relative repository paths start there
    ) -> None:
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
        stack_dir = stack_dir or Path.cwd()
        check(config, cluster_name, zones, stack_dir)
        karpenter_mode = config.capacity == "karpenter"
        if karpenter_mode:
            try:
                validate_karpenter_names(f"{name}-karpenter", cluster_name)
            except InvalidInput as error:
                raise InvalidInput(f"{KEY}:cluster.name", error.value, error.allowed) from None
        prod = config.environment == "prod"
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
                identity=identity or AwsIdentity(),
                tags=tags,
            ),
            child,
        )
        volume_key = VolumeKey(cluster_name, tags, child)
        nodes = NodeGroups(
            f"{name}-nodes",
            NodeGroupsArgs(
                cluster_name=cluster_name,
                eks_cluster_name=cluster.name,
                node_role_arn=cluster.node_role.arn,
                subnet_ids_by_zone=dict(zip(zones, network.private_subnet_ids, strict=True)),
                # With Karpenter, the managed groups are the system group alone.
                plans=[p for p in node_plans(config, zones) if not (karpenter_mode and p.gpus_per_node)],
                kubernetes_version=config.cluster.kubernetes_version,
                min_surviving_gpu_share=config.gpu.min_surviving_share,
                volume_kms_key_arn=volume_key.arn,
                tags=tags,
                node_repair=prod,
            ),
            pulumi.ResourceOptions(parent=self, depends_on=cluster.node_prerequisites),
        )
        cluster.install_coredns(after=[nodes.groups["system"]])
        cluster.install_node_monitoring_agent(after=[nodes])
        karpenter_aws = (
            KarpenterAws(
                f"{name}-karpenter",
                KarpenterAwsArgs(
                    cluster_name=cluster_name,
                    eks_cluster_name=cluster.name,
                    oidc_provider_arn=cluster.oidc_provider_arn,
                    oidc_issuer_url=cluster.oidc_issuer_url,
                    cluster_security_group_id=cluster.security_group_id,
                    tags=tags,
                ),
                child,
            )
            if karpenter_mode
            else None
        )
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
                kms_key_arn=volume_key.arn,
                tags=tags,
            ),
            pulumi.ResourceOptions(parent=self, depends_on=[nodes]),
        )

        # The cluster's Kubernetes provider reaches every Kubernetes resource through the options.
        def in_cluster(*after: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, provider=cluster.provider, depends_on=list(after))

        storage_classes = StorageClasses(
            f"{name}-storage",
            StorageClassesArgs(kms_key_arn=volume_key.arn, cluster_name=cluster.name),
            in_cluster(block_storage),
        )
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
                cluster_autoscaler=not karpenter_mode,
            ),
            after_monitoring,
        )
        capacity: list[pulumi.Resource] = []
        if karpenter_aws is not None:
            # On the system group, its ServiceMonitor after Prometheus's CRDs, its nodes after their
            # role, profile and access entry, its controller after its IAM policy.
            capacity.append(
                Karpenter(
                    f"{name}-karpenter",
                    KarpenterArgs(
                        cluster_name=cluster_name,
                        kubernetes_version=config.cluster.kubernetes_version,
                        cluster_endpoint=cluster.endpoint,
                        controller_role_arn=karpenter_aws.controller_role_arn,
                        interruption_queue=karpenter_aws.queue_name,
                        instance_profile=instance_profile_name(cluster_name),
                        pools=node_pool_plans(config, zones),
                        prod=prod,
                        node_repair=prod,
                        reserved=reserved_capacity(config),
                        tags=tags,
                    ),
                    in_cluster(nodes, monitoring, karpenter_aws),
                )
            )
        self.services = {}
        self.model_repositories = {}
        for service in config.services:
            path = repository_path(service, stack_dir)
            shipped = None
            if path is not None:
                # The bucket and its settings (encryption, TLS-only policy) before the first object.
                shipped = ModelRepository(
                    f"{service.name}-models",
                    ModelRepositoryArgs(
                        bucket=store.bucket_name,
                        prefix=service.prefix,
                        repository=path,
                        models=service.models,
                    ),
                    pulumi.ResourceOptions(parent=self, depends_on=[store]),
                )
                self.model_repositories[service.name] = shipped
            source = ModelSource(
                model_store=store,
                prefix=service.prefix,
                oidc_provider_arn=cluster.oidc_provider_arn,
                oidc_issuer_url=cluster.oidc_issuer_url,
                served=shipped.served if shipped else None,
                shipped_by=shipped,
            )
            self.services[service.name] = TritonModelService(
                service.name,
                service_args(config, service, source, zones, region=region),
                in_cluster(monitoring, autoscaling, *capacity),
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
                "jaeger": f"kubectl -n {self.telemetry.namespace} port-forward svc/{JAEGER_SERVICE} 16686",
                "log_group": self.telemetry.log_group_name,
            },
        }
