"""The InferencePlatform component: network -> cluster -> node groups -> model store -> the cluster's
layers -> one TritonModelService per configured service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from inferstack.components.autoscaling import Autoscaling, AutoscalingArgs
from inferstack.components.gpu import GpuOperators, GpuOperatorsArgs
from inferstack.components.karpenter import Karpenter, KarpenterArgs
from inferstack.components.model_repository import (
    ModelRepository,
    ModelRepositoryArgs,
)
from inferstack.components.model_service import (
    ModelSource,
    TritonModelService,
)
from inferstack.components.monitoring import Monitoring, MonitoringArgs
from inferstack.components.platform.args import (
    KEY,
    MONITORING_NAMESPACE,
    node_plans,
    node_pool_plans,
    repository_path,
    reserved_capacity,
    service_args,
    telemetry_args,
)
from inferstack.components.platform.checks import check, check_platform_name
from inferstack.components.platform_config import PlatformConfig
from inferstack.components.storage import StorageClasses, StorageClassesArgs
from inferstack.components.telemetry import JAEGER_SERVICE, Telemetry
from inferstack.infra.aws_identity import AwsIdentity
from inferstack.infra.cluster import Cluster, ClusterArgs
from inferstack.infra.errors import InvalidInput
from inferstack.infra.karpenter import KarpenterAws, KarpenterAwsArgs, instance_profile_name
from inferstack.infra.karpenter import validate_names as validate_karpenter_names
from inferstack.infra.model_store import ModelStore, ModelStoreArgs
from inferstack.infra.names import EKS_NODEGROUP_NAME_MAX, check_derived_name
from inferstack.infra.network import (
    Network,
    NetworkArgs,
    instance_type_offerings,
    region_zones,
)
from inferstack.infra.nodegroups import NodeGroups, NodeGroupsArgs
from inferstack.infra.storage import BlockStorage, BlockStorageArgs, VolumeKey
from inferstack.infra.zones import choose_zones


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
        for plan in node_plans(config, zones):  # reserved groups are named by their reservation
            check_derived_name(
                f"{KEY}:cluster.name", name, suffix=f"-nodes-{plan.name}-ng", limit=EKS_NODEGROUP_NAME_MAX
            )
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
        cluster.install_coredns(after=[nodes.groups[f"system-{zone}"] for zone in zones])
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
                    volume_kms_key_arn=volume_key.arn,
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
                alerts=config.alerts.routing(),
                oidc_provider_arn=cluster.oidc_provider_arn,
                oidc_issuer_url=cluster.oidc_issuer_url,
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
                        volume_kms_key_arn=volume_key.arn,
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
