"""The stack config turned into each component's args: node group and NodePool plans, reserved capacity,
a service's TritonModelServiceArgs, the telemetry's args, the models a service ships."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pulumi

from inferstack.components.autoscaling import AutoscalingArgs
from inferstack.components.canary import CanaryRelease
from inferstack.components.gpu import GpuOperatorsArgs
from inferstack.components.karpenter import NodePoolPlan, gpu_pool_plans
from inferstack.components.model_repository import (
    ServedModels,
    plan_objects,
    served_models,
)
from inferstack.components.model_service import (
    ModelSource,
    TritonModelServiceArgs,
)
from inferstack.components.monitoring import MonitoringArgs
from inferstack.components.platform_config import NAMESPACE, PlatformConfig, ServiceConfig
from inferstack.components.telemetry import TelemetryArgs, collector_traces_url
from inferstack.components.triton_telemetry import TraceSettings
from inferstack.infra.errors import InvalidInput
from inferstack.infra.node_plans import NodeGroupPlan, gpu_plans, gpu_spot_plans, system_plans
from inferstack.infra.reserved import ReservedCapacity, reserved_plans

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


def node_plans(config: PlatformConfig, zones: Sequence[str]) -> list[NodeGroupPlan]:
    gpu = config.gpu
    reserved = reserved_capacity(config)
    return [
        *system_plans(zones, instance_types=config.nodes.system_instance_types),
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


# The service settings a TritonModelService takes as they are, under the same name; the others it shares
# with the stack file (canary) are converted below. tests/components/test_components.py holds the two apart.
SERVICE_SETTINGS_AS_GIVEN = (
    "models",
    "min_replicas",
    "max_replicas",
    "placement",
    "model_cache_gib",
    "queue_time_target_ms",
    "pending_requests_per_replica",
    "gpu_utilization_target",
    "expected_request_bytes",
    "expected_requests_per_second",
    "front_time_target_ms",
    "log_verbose",
    "request_log",
)


def service_args(
    config: PlatformConfig, service: ServiceConfig, source: ModelSource, zones: Sequence[str], **extra: Any
) -> TritonModelServiceArgs:
    return TritonModelServiceArgs(
        **{name: getattr(service, name) for name in SERVICE_SETTINGS_AS_GIVEN},
        source=source,
        namespace=service.name,
        environment="prod" if config.environment == "prod" else "dev",
        zones=len(zones),
        node_instance_type=config.gpu.instance_type,
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
