"""TritonModelService: one Triton model service on EKS as a typed Pulumi resource.

Defaults are the ones an operator would choose: the service reads its models from S3 through IRSA
(no keys), spreads over zones so losing one leaves it up, drains in-flight requests within the
two-minute spot notice, scales on Triton's queue time and pending requests through KEDA (falling
back to a fixed size when Prometheus cannot be read), and keeps a disruption budget that survives
a zone loss plus one voluntary disruption.

Every manifest is a pure function of the validated args; the component only turns them into resources.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from inferstack.components import promql
from inferstack.components.alerts import prometheus_rule, service_rule_group
from inferstack.components.manifests import custom_resource, namespace
from inferstack.components.monitoring import prometheus_url
from inferstack.infra.errors import InvalidInput
from inferstack.infra.instance_types import lookup
from inferstack.infra.model_store import ModelStore, check_prefix
from inferstack.infra.nodegroups import (
    CAPACITY_TYPE_LABEL,
    GPU_MODEL_LABEL,
    GPU_PRESENT_LABEL,
    GPU_RESOURCE,
    GPU_TAINT_KEY,
    ON_DEMAND,
    SPOT,
    ZONE_LABEL,
)

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, as the local runtime
SPOT_NOTICE_S = 120
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
TRITON_UID = 1000  # the image's triton-server user
# Memory the kubelet, system daemons and DaemonSets (device plugin, DCGM, CNI) keep on a GPU node.
NODE_MEMORY_RESERVED_GIB = 4.0
NODE_CPU_RESERVED = 0.5

Environment = Literal["prod", "dev"]
Placement = Literal["on-demand", "spot", "spot-with-fallback"]
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass
class ModelSource:
    """Where the models are and who may read them: a ModelStore prefix read through a new IRSA role,
    or an existing role ARN with the repository URI."""

    model_store: ModelStore | None = None
    prefix: str | None = None
    oidc_provider_arn: pulumi.Input[str] | None = None
    oidc_issuer_url: pulumi.Input[str] | None = None
    role_arn: pulumi.Input[str] | None = None
    repository_uri: pulumi.Input[str] | None = None


@dataclass
class TritonModelServiceArgs:
    models: Sequence[str]
    source: ModelSource
    namespace: str = "serving"
    create_namespace: bool = True
    environment: Environment = "prod"
    zones: int = 3
    region: str = "us-east-1"
    image: str = TRITON_IMAGE
    node_instance_type: str = "g5.xlarge"
    gpus_per_replica: int = 1
    cpu: float = 3.0
    memory_gib: float = 9.0
    shm_gib: float = 2.0
    placement: Placement = "spot-with-fallback"
    min_replicas: int = 3
    max_replicas: int = 12
    queue_time_target_ms: float = 50.0
    pending_requests_per_replica: float = 16.0
    gpu_utilization_target: float | None = None  # percent per replica; None: no GPU trigger
    model_load_timeout_s: int = 600
    drain_s: int = 20  # preStop: endpoints are removed before Triton stops taking requests
    exit_timeout_s: int = 80  # Triton finishes in-flight requests for at most this long
    polling_interval_s: int = 15
    cooldown_s: int = 300
    fallback_replicas: int | None = None  # None: min_replicas
    prometheus_namespace: str = "monitoring"
    service_monitor_labels: Mapping[str, str] = field(
        default_factory=lambda: {"release": "kube-prometheus-stack"}
    )
    internal_load_balancer: bool = False
    provider: k8s.Provider | None = None


# --- validation -----------------------------------------------------------------------------------------


def _dns_label(field_name: str, value: str) -> None:
    if not isinstance(value, str) or not _DNS_LABEL.match(value):
        raise InvalidInput(
            field_name,
            value,
            "a DNS-1123 label: 1-63 lowercase letters, digits or '-', alphanumeric at both ends",
        )


def pdb_min_available(zones: int) -> int:
    """The fewest ready pods from which losing the fullest zone still leaves one.

    With pods spread at maxSkew 1, M pods put at most ceil(M / zones) in one zone; the budget lets a
    voluntary disruption take the service down to M and no lower, so a zone lost then leaves
    M - ceil(M / zones) >= 1 pods serving.
    """
    minimum = 1
    while minimum - math.ceil(minimum / zones) < 1:
        minimum += 1
    return minimum


def grace_period_s(args: TritonModelServiceArgs) -> int:
    return args.drain_s + args.exit_timeout_s + 5


def validate(name: str, args: TritonModelServiceArgs) -> None:
    """Every check, before any resource is registered."""
    _dns_label("name", name)
    _dns_label("namespace", args.namespace)
    if not args.models:
        raise InvalidInput("models", list(args.models), "one or more model names")
    for i, model in enumerate(args.models):
        if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", model):
            raise InvalidInput(f"models[{i}]", model, "a Triton model name: letters, digits, _ . -")
    if args.environment not in ("prod", "dev"):
        raise InvalidInput("environment", args.environment, "prod or dev")
    if args.placement not in ("on-demand", "spot", "spot-with-fallback"):
        raise InvalidInput("placement", args.placement, "on-demand, spot or spot-with-fallback")
    image, _, tag = args.image.rpartition(":")
    if not image or "/" in tag or tag in ("", "latest"):
        raise InvalidInput("image", args.image, "an image with a pinned tag (not 'latest', not missing)")
    if args.zones < 1:
        raise InvalidInput("zones", args.zones, "an integer >= 1")
    if not 1 <= args.min_replicas <= args.max_replicas:
        raise InvalidInput(
            "min_replicas", args.min_replicas, f"1 <= min_replicas <= max_replicas ({args.max_replicas})"
        )
    if args.environment == "prod":
        needed = max(args.zones, pdb_min_available(args.zones) + 1)
        if args.min_replicas < needed:
            raise InvalidInput(
                "min_replicas",
                args.min_replicas,
                f"at least {needed} in prod: a replica per zone, and one voluntary disruption beyond the "
                f"disruption budget ({pdb_min_available(args.zones)}) that survives a zone loss",
            )
    node = lookup(args.node_instance_type, field="node_instance_type")
    if not node.is_gpu:
        raise InvalidInput("node_instance_type", args.node_instance_type, "a GPU instance type")
    if not 1 <= args.gpus_per_replica <= node.gpus:
        raise InvalidInput("gpus_per_replica", args.gpus_per_replica, f"1..{node.gpus} (GPUs of {node.name})")
    memory_free = node.memory_gib - NODE_MEMORY_RESERVED_GIB
    if not 0 < args.memory_gib + args.shm_gib <= memory_free:
        raise InvalidInput(
            "memory_gib",
            args.memory_gib,
            f"memory + /dev/shm ({args.shm_gib} GiB) within the {memory_free:g} GiB "
            f"{node.name} leaves for pods",
        )
    if not 0 < args.cpu <= node.vcpus - NODE_CPU_RESERVED:
        raise InvalidInput("cpu", args.cpu, f"0 < cpu <= {node.vcpus - NODE_CPU_RESERVED:g} on {node.name}")
    for field_name in ("queue_time_target_ms", "pending_requests_per_replica", "model_load_timeout_s"):
        if getattr(args, field_name) <= 0:
            raise InvalidInput(field_name, getattr(args, field_name), "a number > 0")
    if args.gpu_utilization_target is not None and not 0 < args.gpu_utilization_target <= 100:
        raise InvalidInput(
            "gpu_utilization_target", args.gpu_utilization_target, "None, or a percentage in (0, 100]"
        )
    if args.drain_s < 5 or args.exit_timeout_s < 10:
        raise InvalidInput(
            "drain_s/exit_timeout_s",
            (args.drain_s, args.exit_timeout_s),
            "drain_s >= 5 and exit_timeout_s >= 10",
        )
    if grace_period_s(args) >= SPOT_NOTICE_S:
        raise InvalidInput(
            "exit_timeout_s",
            args.exit_timeout_s,
            f"drain_s + exit_timeout_s + 5 < {SPOT_NOTICE_S} s, the spot interruption notice",
        )
    fallback = args.fallback_replicas
    if fallback is not None and not args.min_replicas <= fallback <= args.max_replicas:
        raise InvalidInput("fallback_replicas", fallback, "between min_replicas and max_replicas")
    source = args.source
    if source.role_arn is None and source.model_store is None:
        raise InvalidInput(
            "source",
            "neither",
            "a ModelStore with prefix and OIDC provider, or a role_arn with repository_uri",
        )
    if source.role_arn is not None and source.repository_uri is None:
        raise InvalidInput(
            "source.repository_uri", None, "the s3:// URI of the model repository the role can read"
        )
    if source.model_store is not None:
        check_prefix(source.prefix or "")
        if source.oidc_provider_arn is None or source.oidc_issuer_url is None:
            raise InvalidInput(
                "source.oidc_provider_arn", None, "the cluster's OIDC provider ARN and issuer URL"
            )


# --- manifests ----------------------------------------------------------------------------------------------


def labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": "triton",
        "app.kubernetes.io/part-of": "inferstack",
    }


def _metadata(name: str, namespace: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels(name), **extra}


def service_account(name: str, args: TritonModelServiceArgs, role_arn: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(name, args.namespace, annotations={"eks.amazonaws.com/role-arn": role_arn}),
    }


def node_affinity(args: TritonModelServiceArgs) -> dict[str, Any]:
    capacity = {"on-demand": [ON_DEMAND], "spot": [SPOT], "spot-with-fallback": [SPOT, ON_DEMAND]}[
        args.placement
    ]
    required = [
        {"key": GPU_PRESENT_LABEL, "operator": "In", "values": ["true"]},
        {"key": CAPACITY_TYPE_LABEL, "operator": "In", "values": capacity},
    ]
    if args.placement == "on-demand":
        # Spot groups mix GPU types and carry no model label; on demand, the model is known exactly.
        gpu_model = lookup(args.node_instance_type, field="node_instance_type").gpu_model
        required.append({"key": GPU_MODEL_LABEL, "operator": "In", "values": [gpu_model]})
    affinity: dict[str, Any] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": required}]
        }
    }
    if args.placement == "spot-with-fallback":
        affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {
                "weight": 100,
                "preference": {
                    "matchExpressions": [{"key": CAPACITY_TYPE_LABEL, "operator": "In", "values": [SPOT]}]
                },
            }
        ]
    return affinity


def triton_args(args: TritonModelServiceArgs, repository_uri: Any) -> list[Any]:
    return [
        pulumi.Output.concat("--model-repository=", repository_uri)
        if isinstance(repository_uri, pulumi.Output)
        else f"--model-repository={repository_uri}",
        "--model-control-mode=explicit",
        *(f"--load-model={m}" for m in args.models),
        f"--exit-timeout-secs={args.exit_timeout_s}",
        "--strict-readiness=true",
        "--allow-metrics=true",
        "--allow-gpu-metrics=true",
        f"--metrics-port={METRICS_PORT}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
    ]


def deployment(name: str, args: TritonModelServiceArgs, repository_uri: Any) -> dict[str, Any]:
    selector = labels(name)
    spread = "DoNotSchedule" if args.environment == "prod" else "ScheduleAnyway"
    probe_port = {"path": "/v2/health/ready", "port": "http"}
    container = {
        "name": "triton",
        "image": args.image,
        "command": ["tritonserver"],
        "args": triton_args(args, repository_uri),
        "env": [
            {"name": "AWS_DEFAULT_REGION", "value": args.region},
            {"name": "AWS_REGION", "value": args.region},
            {"name": "HOME", "value": "/tmp"},  # the python backend and the AWS SDK write under $HOME
        ],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "startupProbe": {
            "httpGet": probe_port,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(args.model_load_timeout_s / 10),
        },
        "readinessProbe": {
            "httpGet": probe_port,
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(args.drain_s)]}}},
        "resources": {
            "requests": {
                "cpu": f"{args.cpu:g}",
                "memory": f"{args.memory_gib:g}Gi",
                GPU_RESOURCE: str(args.gpus_per_replica),
            },
            "limits": {
                "cpu": f"{args.cpu:g}",
                "memory": f"{args.memory_gib:g}Gi",
                GPU_RESOURCE: str(args.gpus_per_replica),
            },
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRITON_UID,
            "runAsGroup": TRITON_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},  # the S3 repository is downloaded here
        ],
    }
    spread_selector = {"matchLabels": selector}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, args.namespace),
        "spec": {
            "replicas": args.min_replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "serviceAccountName": name,
                    "terminationGracePeriodSeconds": grace_period_s(args),
                    "securityContext": {
                        "fsGroup": TRITON_UID,
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "affinity": {"nodeAffinity": node_affinity(args)},
                    "tolerations": [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": ZONE_LABEL,
                            "whenUnsatisfiable": spread,
                            "labelSelector": spread_selector,
                            "matchLabelKeys": ["pod-template-hash"],
                        },
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": spread_selector,
                            "matchLabelKeys": ["pod-template-hash"],
                        },
                    ],
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "dshm",
                            "emptyDir": {"medium": "Memory", "sizeLimit": f"{args.shm_gib:g}Gi"},
                        },
                        {"name": "tmp", "emptyDir": {"sizeLimit": "50Gi"}},
                    ],
                },
            },
        },
    }


def _ports() -> list[dict[str, Any]]:
    return [
        {"name": port, "port": number, "targetPort": port, "protocol": "TCP"}
        for port, number in (("http", HTTP_PORT), ("grpc", GRPC_PORT), ("metrics", METRICS_PORT))
    ]


def service(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    annotations = (
        {
            "service.beta.kubernetes.io/aws-load-balancer-type": "external",
            "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
            "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
            "service.beta.kubernetes.io/aws-load-balancer-cross-zone-load-balancing-enabled": "true",
        }
        if args.internal_load_balancer
        else {}
    )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, args.namespace, annotations=annotations),
        "spec": {
            "type": "LoadBalancer" if args.internal_load_balancer else "ClusterIP",
            "selector": labels(name),
            "ports": _ports(),
        },
    }


def headless_service(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    """One DNS record per ready pod: gRPC clients balance across them (HTTP/2 would pin one pod)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(f"{name}-headless", args.namespace),
        "spec": {"clusterIP": "None", "selector": labels(name), "ports": _ports()},
    }


def service_monitor(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    metadata = _metadata(name, args.namespace)
    metadata["labels"] = {**metadata["labels"], **args.service_monitor_labels}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": labels(name)},
            "namespaceSelector": {"matchNames": [args.namespace]},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        },
    }


def keda_queries(name: str, args: TritonModelServiceArgs) -> dict[str, str]:
    """Trigger name -> PromQL, all from the shared module: what the ScaledObject carries."""
    queries: dict[str, str] = {}
    for model in args.models:
        queries[f"queue-time-{model}"] = promql.triton_queue_time_ms_times_replicas(
            model=model, namespace=args.namespace
        )
        queries[f"pending-{model}"] = promql.triton_pending_requests(model=model, namespace=args.namespace)
    if args.gpu_utilization_target is not None:
        queries["gpu-utilization"] = promql.gpu_utilization_total(
            namespace=args.namespace, pod_regex=f"{name}-.*"
        )
    return queries


def scaled_object(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    thresholds = {
        "queue-time": args.queue_time_target_ms,
        "pending": args.pending_requests_per_replica,
        "gpu-utilization": args.gpu_utilization_target,
    }
    triggers = [
        {
            "type": "prometheus",
            "name": trigger,
            # AverageValue everywhere: KEDA's fallback works only with it (see promql's queue-time note).
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": prometheus_url(args.prometheus_namespace),
                "query": query,
                "threshold": f"{next(v for k, v in thresholds.items() if trigger.startswith(k)):g}",
            },
        }
        for trigger, query in keda_queries(name, args).items()
    ]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(name, args.namespace),
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": args.min_replicas,
            "maxReplicaCount": args.max_replicas,
            "pollingInterval": args.polling_interval_s,
            "cooldownPeriod": args.cooldown_s,
            "fallback": {"failureThreshold": 3, "replicas": args.fallback_replicas or args.min_replicas},
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        # Up fast: queueing grows by the second. Down slowly: a brief lull must not
                        # give back GPUs that take minutes to come back.
                        "scaleUp": {
                            "stabilizationWindowSeconds": 0,
                            "selectPolicy": "Max",
                            "policies": [
                                {"type": "Percent", "value": 100, "periodSeconds": 15},
                                {"type": "Pods", "value": 4, "periodSeconds": 15},
                            ],
                        },
                        "scaleDown": {
                            "stabilizationWindowSeconds": 300,
                            "selectPolicy": "Min",
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                        },
                    }
                }
            },
            "triggers": triggers,
        },
    }


def pod_disruption_budget(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    minimum = pdb_min_available(args.zones) if args.environment == "prod" else max(args.min_replicas - 1, 0)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(name, args.namespace),
        "spec": {
            "minAvailable": minimum,
            "selector": {"matchLabels": labels(name)},
            # A pod that never became ready (bad rollout) must not block node drains.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


# --- the resource ---------------------------------------------------------------------------------


class TritonModelService(pulumi.ComponentResource):
    """One Triton deployment serving ``args.models`` from S3; see the module docstring."""

    namespace: str
    service_name: str
    http_endpoint: str
    grpc_endpoint: str
    role_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: TritonModelServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        validate(name, args)
        super().__init__("inferstack:model_service:TritonModelService", name, None, opts)
        in_cluster = pulumi.ResourceOptions(parent=self, provider=args.provider)
        source = args.source
        if source.model_store is not None:
            assert (
                source.prefix and source.oidc_provider_arn is not None and source.oidc_issuer_url is not None
            )
            role = source.model_store.reader_role(
                f"{name}-models",
                namespace=args.namespace,
                service_account=name,
                prefix=source.prefix,
                oidc_provider_arn=source.oidc_provider_arn,
                oidc_issuer_url=source.oidc_issuer_url,
                opts=pulumi.ResourceOptions(parent=self),
            )
            role_arn: pulumi.Input[str] = role.arn
            repository_uri: pulumi.Input[str] = source.model_store.uri(source.prefix)
        else:
            assert source.role_arn is not None and source.repository_uri is not None
            role_arn, repository_uri = source.role_arn, source.repository_uri

        dependencies: list[pulumi.Resource] = []
        if args.create_namespace:
            dependencies.append(namespace(f"{name}-ns", args.namespace, in_cluster))
        opts_ns = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=dependencies)

        account = service_account(name, args, role_arn)
        k8s.core.v1.ServiceAccount(f"{name}-sa", metadata=account["metadata"], opts=opts_ns)
        manifest = deployment(name, args, repository_uri)
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            # KEDA's HPA owns the replica count once the service runs.
            opts=pulumi.ResourceOptions.merge(
                opts_ns, pulumi.ResourceOptions(ignore_changes=["spec.replicas"])
            ),
        )
        for key, built in (("svc", service(name, args)), ("headless", headless_service(name, args))):
            k8s.core.v1.Service(f"{name}-{key}", metadata=built["metadata"], spec=built["spec"], opts=opts_ns)
        budget = pod_disruption_budget(name, args)
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb", metadata=budget["metadata"], spec=budget["spec"], opts=opts_ns
        )
        rules = prometheus_rule(
            f"{name}-alerts",
            args.namespace,
            [
                service_rule_group(
                    service=name,
                    namespace=args.namespace,
                    models=args.models,
                    queue_time_target_ms=args.queue_time_target_ms,
                )
            ],
        )
        for key, custom in (
            ("monitor", service_monitor(name, args)),
            ("scaler", scaled_object(name, args)),
            ("alerts", rules),
        ):
            custom_resource(f"{name}-{key}", custom, opts_ns)

        self.namespace = args.namespace
        self.service_name = name
        self.http_endpoint = f"http://{name}.{args.namespace}.svc:{HTTP_PORT}"
        self.grpc_endpoint = f"dns:///{name}-headless.{args.namespace}.svc:{GRPC_PORT}"
        self.role_arn = pulumi.Output.from_input(role_arn)
        self.register_outputs(
            {
                "http_endpoint": self.http_endpoint,
                "grpc_endpoint": self.grpc_endpoint,
                "role_arn": self.role_arn,
            }
        )
