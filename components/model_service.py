"""TritonModelService: one Triton model service on EKS as a typed Pulumi resource.

Defaults are the ones an operator would choose: the service reads its models from S3 through IRSA
(no keys), spreads over zones so losing one leaves it up, drains in-flight requests within the
two-minute spot notice, scales on Triton's queue time and pending requests through KEDA (falling
back to a fixed size when Prometheus cannot be read), and keeps a disruption budget that survives
a zone loss on top of voluntary disruptions. Triton's HTTP port is on loopback behind a request front
(``request_front.py``) that refuses what would crash Triton before Triton sees it, and Triton's admin
APIs (model repository, shared memory, trace, logging) answer only callers with the service's key.

Every manifest is a pure function of the validated args; the component only turns them into resources.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

from inferstack.components import promql
from inferstack.components.alerts import prometheus_rule, service_rule_group
from inferstack.components.canary import CanaryRelease, canary_rule_group, check_canary, traffic_config_map
from inferstack.components.manifests import custom_resource, namespace, restricted_security_context
from inferstack.components.monitoring import prometheus_url
from inferstack.components.request_front import (
    CONFIG_DIR,
    FRONT_IMAGE,
    FRONT_UID,
    LIVE_PATH,
    TEMP_DIR,
    FrontPaths,
    config_files,
    nginx_command,
)
from inferstack.components.triton_telemetry import TraceSettings, traced_triton_args
from inferstack.infra.children import child_options
from inferstack.infra.errors import InvalidInput
from inferstack.infra.fields import check_field_types
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
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002  # HTTP_PORT: the request front's
# Triton's own HTTP server, on loopback only: HTTP reaches it through the request front.
TRITON_HTTP_PORT = 8080
# The request front's share of the pod. njs frees nothing before a request ends: a JSON body at the
# body limit (65 MiB of one-digit numbers) peaked at 1.1 GiB in the worker (njs 0.7.9, measured).
FRONT_CPU, FRONT_MEMORY_GIB = 0.5, 1.5
POD_FRONT = FrontPaths(listen_port=HTTP_PORT, triton_port=TRITON_HTTP_PORT)
TRITON_UID = 1000  # the image's triton-server user
HEALTH_READY = "/v2/health/ready"
STARTUP_PERIOD_S = 10
# Memory the kubelet, system daemons and DaemonSets (device plugin, DCGM, CNI) keep on a GPU node.
NODE_MEMORY_RESERVED_GIB = 4.0
NODE_CPU_RESERVED = 0.5
# Triton copies the S3 repository here (TRITON_AWS_MOUNT_DIRECTORY); the root filesystem is read-only.
MODEL_CACHE_DIR = "/var/cache/triton"
SCRATCH_GIB = 4  # /tmp and $HOME: python backend stubs, the AWS SDK's files
# Before a new pod counts as progressing: a GPU node scaled up from zero and the ~10 GB Triton image
# pulled take this long on top of the models' own load time.
NODE_AND_IMAGE_S = 900
# SIGKILL follows the grace period; leave Triton this long past its exit timeout to exit on its own.
EXIT_MARGIN_S = 5
FALLBACK_AFTER_FAILURES = 3  # KEDA polls that must fail before the fallback size applies
# Names go into "<name>-headless" (a Service: an RFC 1035 label, <= 63) and into the IRSA role
# "<name>-models-reader-<7 random>" (IAM role names: <= 64).
MAX_NAME_LENGTH = min(63 - len("-headless"), 64 - len("-models-reader-") - 7)
# Triton's admin APIs (explicit model control lets anyone who reaches them unload a model) answer only
# requests carrying this header with the service's key, on HTTP and gRPC alike. The key lives in a
# Secret and reaches the args through the container's env ($(VAR) expansion), never the pod spec.
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
ADMIN_KEY_HEADER = "inferstack-admin-key"
GRPC_ADMIN_KEY_HEADER = f"triton-grpc-protocol-{ADMIN_KEY_HEADER}"  # the metadata key 2.51 reads over gRPC
ADMIN_KEY_ENV = "INFERSTACK_ADMIN_KEY"
ADMIN_KEY_FIELD = "admin-key"  # the Secret's data key
ADMIN_KEY_LENGTH = 32  # letters and digits only: the value sits in a flag after ':' and '='

Environment = Literal["prod", "dev"]
Placement = Literal["on-demand", "spot", "spot-with-fallback"]
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_RFC1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]$")
_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


@dataclass
class ModelSource:
    """Where the models are and who may read them: a ModelStore prefix read through a new IRSA role
    (with the cluster's OIDC provider ARN and issuer URL), or an existing role ARN with the repository URI."""

    model_store: ModelStore | None = None
    prefix: str | None = None
    oidc_provider_arn: pulumi.Input[str] | None = None
    oidc_issuer_url: pulumi.Input[str] | None = None
    role_arn: pulumi.Input[str] | None = None
    repository_uri: pulumi.Input[str] | None = None


@dataclass
class TritonModelServiceArgs:
    """The Kubernetes provider comes through ``ResourceOptions(provider=...)``."""

    models: Sequence[str]
    source: ModelSource
    zones: int  # the zones the cluster's GPU nodes span: replicas spread over them
    namespace: str | None = None  # None: the service's own namespace, named after it
    create_namespace: bool = True
    environment: Environment = "prod"
    region: str | None = None  # the model bucket's region; None: that of this component's AWS provider
    image: str = TRITON_IMAGE
    node_instance_type: str = "g5.xlarge"
    gpus_per_replica: int = 1
    cpu: float = 3.0
    memory_gib: float = 10.0
    shm_gib: float = 2.0  # /dev/shm, part of memory_gib: tmpfs pages count against the memory limit
    model_cache_gib: float = 40.0  # node disk for the local copy of the S3 repository
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
    prometheus_server_address: str = prometheus_url("monitoring")  # kube-prometheus-stack's
    service_monitor_labels: Mapping[str, str] = field(
        default_factory=lambda: {"release": "kube-prometheus-stack"}
    )
    # Two versions of one model in these pods, split per request by the clients (components/canary.py).
    canary: CanaryRelease | None = None
    # Spans to an OpenTelemetry Collector (components/telemetry.py) and log lines with request ids.
    tracing: TraceSettings | None = None


def namespace_of(name: str, args: TritonModelServiceArgs) -> str:
    return args.namespace if args.namespace is not None else name


# --- failure-domain and drain arithmetic -----------------------------------------------------------------


def fullest_zone(replicas: int, zones: int) -> int:
    """The most of ``replicas`` pods one zone holds when spread over ``zones`` at maxSkew 1."""
    return math.ceil(replicas / zones)


def prod_min_replicas(zones: int) -> int:
    """The fewest replicas that stay up through one voluntary disruption and then the loss of any zone.

    The budget lets one pod go at a time (drains, node consolidation); the pods left must outnumber
    the fullest zone, so at least one is outside whichever zone fails next. ``replicas - 1 -
    fullest_zone(replicas)`` never falls as replicas grow, so the first count that fits is the
    threshold. With one zone there is none: a zone loss takes everything.
    """
    if zones < 2:
        raise InvalidInput("zones", zones, "at least 2 in prod: one zone cannot survive its own loss")
    replicas = zones
    while replicas - 1 <= fullest_zone(replicas, zones):
        replicas += 1
    return replicas


def grace_period_s(args: TritonModelServiceArgs) -> int:
    """The pod's terminationGracePeriodSeconds: the preStop sleep, then Triton's exit timeout."""
    return args.drain_s + args.exit_timeout_s + EXIT_MARGIN_S


def progress_deadline_s(args: TritonModelServiceArgs) -> int:
    return NODE_AND_IMAGE_S + args.model_load_timeout_s


# --- validation -----------------------------------------------------------------------------------------


def _dns_label(field_name: str, value: str) -> None:
    if not isinstance(value, str) or not _DNS_LABEL.match(value):
        raise InvalidInput(
            field_name,
            value,
            "a DNS-1123 label: 1-63 lowercase letters, digits or '-', alphanumeric at both ends",
        )


def _validate_source(source: ModelSource) -> None:
    if source.role_arn is None and source.model_store is None:
        raise InvalidInput(
            "source",
            "neither",
            "a ModelStore with prefix and OIDC provider, or a role_arn with repository_uri",
        )
    if source.role_arn is not None and source.model_store is not None:
        raise InvalidInput("source", "both", "either a ModelStore or a role_arn, not both")
    if source.role_arn is not None and source.repository_uri is None:
        raise InvalidInput(
            "source.repository_uri", None, "the s3:// URI of the model repository the role can read"
        )
    if isinstance(source.repository_uri, str) and not source.repository_uri.startswith("s3://"):
        raise InvalidInput("source.repository_uri", source.repository_uri, "an s3:// URI")
    if source.model_store is not None:
        if source.prefix is None:
            raise InvalidInput("source.prefix", None, "the key prefix of the service's model repository")
        try:
            check_prefix(source.prefix)
        except InvalidInput as error:
            raise InvalidInput("source.prefix", error.value, error.allowed) from None
        if source.oidc_provider_arn is None or source.oidc_issuer_url is None:
            raise InvalidInput(
                "source.oidc_provider_arn", None, "the cluster's OIDC provider ARN and issuer URL"
            )


def validate(name: str, args: TritonModelServiceArgs) -> None:
    """Every check, before any resource is registered."""
    check_field_types(args)
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _RFC1035_LABEL.match(name):
        raise InvalidInput(
            "name",
            name,
            f"an RFC 1035 label of at most {MAX_NAME_LENGTH} characters (it names Services and the IAM "
            "role): lowercase letters, digits or '-', starting with a letter",
        )
    _dns_label("namespace", namespace_of(name, args))
    if not args.models:
        raise InvalidInput("models", list(args.models), "one or more model names")
    for i, model in enumerate(args.models):
        if not _MODEL_NAME.match(model):
            raise InvalidInput(f"models[{i}]", model, "a Triton model name: letters, digits, _ . -")
    if len(set(args.models)) != len(args.models):
        raise InvalidInput("models", list(args.models), "each model once")
    if args.environment not in ("prod", "dev"):
        raise InvalidInput("environment", args.environment, "prod or dev")
    if args.placement not in ("on-demand", "spot", "spot-with-fallback"):
        raise InvalidInput("placement", args.placement, "on-demand, spot or spot-with-fallback")
    if args.region is not None and not _REGION.match(args.region):
        raise InvalidInput("region", args.region, "an AWS region such as us-east-1")
    image, _, tag = args.image.rpartition(":")
    if not image or "/" in tag or tag in ("", "latest"):
        raise InvalidInput("image", args.image, "an image with a pinned tag (not 'latest', not missing)")
    if args.zones < 1:
        raise InvalidInput("zones", args.zones, "an integer >= 1")
    if not 1 <= args.min_replicas <= args.max_replicas:
        raise InvalidInput(
            "min_replicas", args.min_replicas, f"1 <= min_replicas <= max_replicas ({args.max_replicas})"
        )
    if args.environment == "prod" and args.min_replicas < (needed := prod_min_replicas(args.zones)):
        raise InvalidInput(
            "min_replicas",
            args.min_replicas,
            f"at least {needed} in prod over {args.zones} zones: a replica per zone, and one voluntary "
            "disruption beyond the disruption budget that survives a zone loss",
        )
    node = lookup(args.node_instance_type, field="node_instance_type")
    if not node.is_gpu:
        raise InvalidInput("node_instance_type", args.node_instance_type, "a GPU instance type")
    if not 1 <= args.gpus_per_replica <= node.gpus:
        raise InvalidInput("gpus_per_replica", args.gpus_per_replica, f"1..{node.gpus} (GPUs of {node.name})")
    memory_free = node.memory_gib - NODE_MEMORY_RESERVED_GIB - FRONT_MEMORY_GIB
    if not 0 < args.memory_gib <= memory_free:
        raise InvalidInput(
            "memory_gib",
            args.memory_gib,
            f"0 < memory_gib <= {memory_free:g}: what {node.name} leaves for pods after system pods "
            f"and the request front's {FRONT_MEMORY_GIB:g} GiB",
        )
    if not 0 < args.shm_gib < args.memory_gib:
        raise InvalidInput(
            "shm_gib", args.shm_gib, f"0 < shm_gib < memory_gib ({args.memory_gib:g}): /dev/shm is part of it"
        )
    cpu_free = node.vcpus - NODE_CPU_RESERVED - FRONT_CPU
    if not 0 < args.cpu <= cpu_free:
        raise InvalidInput(
            "cpu",
            args.cpu,
            f"0 < cpu <= {cpu_free:g} on {node.name}, beside the request front's {FRONT_CPU:g}",
        )
    for field_name in (
        "queue_time_target_ms",
        "pending_requests_per_replica",
        "model_load_timeout_s",
        "model_cache_gib",
        "polling_interval_s",
    ):
        if getattr(args, field_name) <= 0:
            raise InvalidInput(field_name, getattr(args, field_name), "a number > 0")
    if args.cooldown_s < 0:
        raise InvalidInput("cooldown_s", args.cooldown_s, "a number of seconds >= 0")
    if args.gpu_utilization_target is not None and not 0 < args.gpu_utilization_target <= 100:
        raise InvalidInput(
            "gpu_utilization_target", args.gpu_utilization_target, "None, or a percentage in (0, 100]"
        )
    # Endpoint removal propagates to kube-proxy and load balancers in seconds; Triton needs time to finish.
    if args.drain_s < 5:
        raise InvalidInput("drain_s", args.drain_s, "at least 5 s for endpoints to be removed everywhere")
    if args.exit_timeout_s < 10:
        raise InvalidInput("exit_timeout_s", args.exit_timeout_s, "at least 10 s for in-flight requests")
    if grace_period_s(args) >= SPOT_NOTICE_S:
        raise InvalidInput(
            "exit_timeout_s",
            args.exit_timeout_s,
            f"drain_s ({args.drain_s}) + exit_timeout_s + {EXIT_MARGIN_S} < {SPOT_NOTICE_S} s, "
            "the spot interruption notice",
        )
    fallback = args.fallback_replicas
    if fallback is not None and not args.min_replicas <= fallback <= args.max_replicas:
        raise InvalidInput("fallback_replicas", fallback, "between min_replicas and max_replicas")
    if not _URL.match(args.prometheus_server_address):
        raise InvalidInput(
            "prometheus_server_address", args.prometheus_server_address, "an http:// or https:// URL"
        )
    for key, value in args.service_monitor_labels.items():
        if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise InvalidInput(
                "service_monitor_labels", {key: value}, "Kubernetes label keys and values (<= 63 characters)"
            )
    _validate_source(args.source)
    if args.canary is not None:
        check_canary(args.canary, args.models)
    if args.tracing is not None:
        try:
            check_field_types(args.tracing)
            tracing_args(name, args)
        except InvalidInput as error:
            raise InvalidInput(f"tracing.{error.field}", error.value, error.allowed) from None


# --- manifests ----------------------------------------------------------------------------------------------


def labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": "triton",
        "app.kubernetes.io/part-of": "inferstack",
    }


def _metadata(name: str, args: TritonModelServiceArgs, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace_of(name, args), "labels": labels(name), **extra}


def service_account(name: str, args: TritonModelServiceArgs, role_arn: pulumi.Input[str]) -> dict[str, Any]:
    """IRSA: EKS injects a web-identity token for this role; the AWS SDK in Triton picks it up."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(name, args, annotations={"eks.amazonaws.com/role-arn": role_arn}),
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


def admin_key_secret_name(name: str) -> str:
    return f"{name}-admin-key"


def restricted_api_args() -> list[str]:
    """Triton 2.51's own restriction flags. The separator before the header is ':' (its --help says
    ',', which 2.51 refuses with its usage text)."""
    rule = f"{','.join(RESTRICTED_APIS)}:{ADMIN_KEY_HEADER}=$({ADMIN_KEY_ENV})"
    return [f"--http-restricted-api={rule}", f"--grpc-restricted-protocol={rule}"]


def admin_key_secret(name: str, args: TritonModelServiceArgs, key: pulumi.Input[str]) -> dict[str, Any]:
    """What operators read to call the admin APIs by hand; the pods read it into ``ADMIN_KEY_ENV``."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {**_metadata(name, args), "name": admin_key_secret_name(name)},
        "type": "Opaque",
        "stringData": {ADMIN_KEY_FIELD: key},
    }


def triton_args(args: TritonModelServiceArgs, repository_uri: pulumi.Input[str]) -> list[pulumi.Input[str]]:
    return [
        pulumi.Output.concat("--model-repository=", repository_uri)
        if isinstance(repository_uri, pulumi.Output)
        else f"--model-repository={repository_uri}",
        "--model-control-mode=explicit",
        *restricted_api_args(),
        *(f"--load-model={m}" for m in args.models),
        f"--exit-timeout-secs={args.exit_timeout_s}",
        "--strict-readiness=true",
        "--allow-metrics=true",
        "--allow-gpu-metrics=true",
        # Latency quantiles per model version: what a canary's p99 is compared on.
        "--metrics-config=summary_latencies=true",
        f"--metrics-port={METRICS_PORT}",
        # Loopback only, behind the request front; metrics would follow --http-address, Prometheus needs them.
        "--http-address=127.0.0.1",
        "--metrics-address=0.0.0.0",
        f"--http-port={TRITON_HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
    ]


def tracing_args(name: str, args: TritonModelServiceArgs) -> list[str]:
    """Triton's spans (service.name = the service) and request-id log lines, when tracing is on."""
    return [] if args.tracing is None else traced_triton_args(args.tracing, service_name=name)


def _spread(topology_key: str, when_unsatisfiable: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "maxSkew": 1,
        "topologyKey": topology_key,
        "whenUnsatisfiable": when_unsatisfiable,
        "labelSelector": {"matchLabels": selector},
        # Count only the current revision: a rollout's old pods must not skew where new ones go.
        "matchLabelKeys": ["pod-template-hash"],
    }


def topology_spread(name: str, args: TritonModelServiceArgs) -> list[dict[str, Any]]:
    if args.environment == "prod":
        zone = _spread(ZONE_LABEL, "DoNotSchedule", labels(name))
        # GPU groups scale from zero: without minDomains a zone with no node yet would not count, pods
        # would pile into the others and the autoscaler would never add the missing zone's node.
        zone["minDomains"] = args.zones
    else:
        zone = _spread(ZONE_LABEL, "ScheduleAnyway", labels(name))
    return [zone, _spread("kubernetes.io/hostname", "ScheduleAnyway", labels(name))]


def front_config_map(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    """The request front's nginx.conf and njs script."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {**_metadata(name, args), "name": f"{name}-request-front"},
        "data": config_files(POD_FRONT),
    }


def front_digest(name: str, args: TritonModelServiceArgs) -> str:
    return hashlib.sha256(
        json.dumps(front_config_map(name, args)["data"], sort_keys=True).encode()
    ).hexdigest()


def front_container(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    """The request front as a native sidecar (an init container that keeps running): it starts before
    Triton and the kubelet stops it only once Triton has exited, so requests in flight through it during
    Triton's drain (preStop sleep, then --exit-timeout-secs) are answered."""
    sized = {"cpu": f"{FRONT_CPU:g}", "memory": f"{FRONT_MEMORY_GIB * 1024:g}Mi"}
    return {
        "name": "request-front",
        "image": FRONT_IMAGE,
        "restartPolicy": "Always",
        "command": nginx_command(POD_FRONT),
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        # Ready when Triton is ready through it: the Service sends HTTP here.
        "readinessProbe": {
            "httpGet": {"path": HEALTH_READY, "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        # Alive on its own answer: a slow Triton must not restart the front.
        "livenessProbe": {
            "httpGet": {"path": LIVE_PATH, "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        # Requests equal limits: the pod stays in the Guaranteed QoS class.
        "resources": {"requests": dict(sized), "limits": dict(sized)},
        "securityContext": restricted_security_context(FRONT_UID),
        "volumeMounts": [
            {"name": "request-front-config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "request-front-tmp", "mountPath": TEMP_DIR},
        ],
    }


def deployment(name: str, args: TritonModelServiceArgs, repository_uri: pulumi.Input[str]) -> dict[str, Any]:
    # Triton's HTTP is on loopback: the kubelet reaches it through the request front, by port number
    # (a probe's port name means one of its own container's ports).
    ready = {"path": HEALTH_READY, "port": HTTP_PORT}
    # Requests equal limits for cpu and memory: Guaranteed QoS, the last class evicted under node pressure.
    sized = {
        "cpu": f"{args.cpu:g}",
        "memory": f"{args.memory_gib:g}Gi",
        GPU_RESOURCE: str(args.gpus_per_replica),
    }
    container = {
        "name": "triton",
        "image": args.image,
        "command": ["tritonserver"],
        "args": [*triton_args(args, repository_uri), *tracing_args(name, args)],
        "env": [
            # Triton's S3 client needs the region; IRSA supplies the credentials, nothing else does.
            {"name": "AWS_DEFAULT_REGION", "value": args.region},
            {"name": "AWS_REGION", "value": args.region},
            {"name": "TRITON_AWS_MOUNT_DIRECTORY", "value": MODEL_CACHE_DIR},
            {"name": "HOME", "value": "/tmp"},  # the root filesystem is read-only
            {
                "name": ADMIN_KEY_ENV,
                "valueFrom": {"secretKeyRef": {"name": admin_key_secret_name(name), "key": ADMIN_KEY_FIELD}},
            },
        ],
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        # Ready only once every model is loaded; liveness waits until then, so a slow load is not a restart.
        "startupProbe": {
            "httpGet": ready,
            "periodSeconds": STARTUP_PERIOD_S,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(args.model_load_timeout_s / STARTUP_PERIOD_S),
        },
        "readinessProbe": {"httpGet": ready, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 2},
        # Straight at Triton over the gRPC health protocol (SERVING while the server lives, on 2.51):
        # the front restarting is no reason to restart Triton and reload its models.
        "livenessProbe": {
            "grpc": {"port": GRPC_PORT},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        # Deletion removes the pod from Service endpoints while this sleep runs, so no new requests
        # arrive by the time Triton gets SIGTERM and finishes what it has (--exit-timeout-secs).
        "lifecycle": {"preStop": {"sleep": {"seconds": args.drain_s}}},
        "resources": {
            "requests": {**sized, "ephemeral-storage": f"{args.model_cache_gib + SCRATCH_GIB:g}Gi"},
            "limits": dict(sized),
        },
        "securityContext": restricted_security_context(TRITON_UID),
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "model-cache", "mountPath": MODEL_CACHE_DIR},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, args),
        "spec": {
            "replicas": args.min_replicas,
            "selector": {"matchLabels": labels(name)},
            # Surge one pod at a time and remove none first: capacity never dips during a rollout.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "progressDeadlineSeconds": progress_deadline_s(args),
            "template": {
                "metadata": {
                    "labels": labels(name),
                    # nginx reads its files once: a changed front rolls the pods.
                    "annotations": {"inferstack.io/request-front-sha256": front_digest(name, args)},
                },
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
                    "topologySpreadConstraints": topology_spread(name, args),
                    "initContainers": [front_container(name, args)],
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "dshm",
                            "emptyDir": {"medium": "Memory", "sizeLimit": f"{args.shm_gib:g}Gi"},
                        },
                        {"name": "tmp", "emptyDir": {"sizeLimit": f"{SCRATCH_GIB}Gi"}},
                        {"name": "model-cache", "emptyDir": {"sizeLimit": f"{args.model_cache_gib:g}Gi"}},
                        {"name": "request-front-config", "configMap": {"name": f"{name}-request-front"}},
                        # pid file and the model-config cache (8 MiB at most); bodies stay in memory
                        {"name": "request-front-tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def _ports(*names: str) -> list[dict[str, Any]]:
    numbers = {"http": HTTP_PORT, "grpc": GRPC_PORT, "metrics": METRICS_PORT}
    return [{"name": n, "port": numbers[n], "targetPort": n, "protocol": "TCP"} for n in names]


def service(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, args),
        "spec": {
            "type": "ClusterIP",
            "selector": labels(name),
            "ports": _ports("http", "grpc", "metrics"),
        },
    }


def headless_service(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    """One DNS record per ready pod: gRPC clients balance across them (HTTP/2 would pin one pod)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {**_metadata(name, args), "name": f"{name}-headless"},
        # No metrics port: the ServiceMonitor would otherwise scrape every pod a second time through
        # this Service, doubling every sum the autoscaler reads.
        "spec": {"clusterIP": "None", "selector": labels(name), "ports": _ports("http", "grpc")},
    }


def service_monitor(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    metadata = _metadata(name, args)
    metadata["labels"] = {**metadata["labels"], **args.service_monitor_labels}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": labels(name)},
            "namespaceSelector": {"matchNames": [namespace_of(name, args)]},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        },
    }


# Trigger name prefix -> KEDA metric type. KEDA >= 2.18 falls back for Value triggers too (it divides
# the fallback by the target's ready replicas), so each signal takes its plain form: a per-request
# time and a utilisation are already per replica (Value: the HPA multiplies by the ready pods), and
# pending requests are a total (AverageValue: the HPA divides by the replicas).
METRIC_TYPES = {"queue-time": "Value", "pending": "AverageValue", "gpu-utilization": "Value"}


def keda_queries(name: str, args: TritonModelServiceArgs) -> dict[str, str]:
    """Trigger name -> PromQL, all from the shared module: what the ScaledObject carries."""
    namespace = namespace_of(name, args)
    queries: dict[str, str] = {}
    for model in args.models:
        queries[f"queue-time-{model}"] = promql.triton_queue_time_per_request_ms(
            model=model, namespace=namespace
        )
        queries[f"pending-{model}"] = promql.triton_pending_requests(model=model, namespace=namespace)
    if args.gpu_utilization_target is not None:
        queries["gpu-utilization"] = promql.gpu_utilization(
            namespace=namespace, pod_regex=promql.deployment_pod_regex(service=name)
        )
    return queries


def _kind(trigger: str) -> str:
    return next(kind for kind in METRIC_TYPES if trigger.startswith(kind))


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
            "metricType": METRIC_TYPES[_kind(trigger)],
            "metadata": {
                "serverAddress": args.prometheus_server_address,
                "query": query,
                "threshold": f"{thresholds[_kind(trigger)]:g}",
                # Every series exists while the service is scraped; an empty answer means the scrape
                # or the labels broke, and must count as a failure (towards the fallback), not as 0.
                "ignoreNullValues": "false",
            },
        }
        for trigger, query in keda_queries(name, args).items()
    ]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(name, args),
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": args.min_replicas,
            "maxReplicaCount": args.max_replicas,
            "pollingInterval": args.polling_interval_s,
            "cooldownPeriod": args.cooldown_s,
            "fallback": {
                "failureThreshold": FALLBACK_AFTER_FAILURES,
                "replicas": args.fallback_replicas or args.min_replicas,
            },
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
    """One pod at a time, however far KEDA scaled out: a fixed minAvailable sized for the minimum would
    let a drain take every replica above it at once. validate() keeps the minimum large enough that
    the pods left during one disruption still span more than one zone."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(name, args),
        "spec": {
            "maxUnavailable": 1,
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
    admin_key_secret: str  # the Secret (in ``namespace``) whose ``admin-key`` opens Triton's admin APIs

    def __init__(
        self, name: str, args: TritonModelServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        validate(name, args)
        super().__init__("inferstack:model_service:TritonModelService", name, None, opts)
        if args.region is None:
            region = aws.get_region(opts=pulumi.InvokeOptions(parent=self)).region
            args = dataclasses.replace(args, region=region)
        ns = namespace_of(name, args)
        source = args.source
        if source.model_store is not None:
            assert (
                source.prefix and source.oidc_provider_arn is not None and source.oidc_issuer_url is not None
            )
            role = source.model_store.reader_role(
                f"{name}-models",
                namespace=ns,
                service_account=name,
                prefix=source.prefix,
                oidc_provider_arn=source.oidc_provider_arn,
                oidc_issuer_url=source.oidc_issuer_url,
                opts=child_options(self, opts),
            )
            role_arn: pulumi.Input[str] = role.arn
            repository_uri: pulumi.Input[str] = source.model_store.uri(source.prefix)
        else:
            assert source.role_arn is not None and source.repository_uri is not None
            role_arn, repository_uri = source.role_arn, source.repository_uri

        dependencies: list[pulumi.Resource] = []
        if args.create_namespace:
            ns_opts = child_options(self, opts)
            dependencies.append(namespace(f"{name}-ns", ns, ns_opts))
        # Whatever the service was told to wait for (the releases that install the ServiceMonitor,
        # PrometheusRule and ScaledObject CRDs), its children wait for too.
        in_namespace = child_options(self, opts, after=dependencies)

        front = front_config_map(name, args)
        front_files = k8s.core.v1.ConfigMap(
            f"{name}-request-front", metadata=front["metadata"], data=front["data"], opts=in_namespace
        )
        password = random.RandomPassword(
            f"{name}-admin-key",
            length=ADMIN_KEY_LENGTH,
            special=False,
            opts=child_options(self, opts),
        )
        secret = admin_key_secret(name, args, pulumi.Output.secret(password.result))
        admin_key = k8s.core.v1.Secret(
            f"{name}-admin-key",
            metadata=secret["metadata"],
            type=secret["type"],
            string_data=secret["stringData"],
            opts=in_namespace,
        )
        account = service_account(name, args, role_arn)
        k8s.core.v1.ServiceAccount(f"{name}-sa", metadata=account["metadata"], opts=in_namespace)
        manifest = deployment(name, args, repository_uri)
        # Pulumi waits for the rollout as long as Kubernetes itself gives it, not its default 10 minutes.
        rollout = f"{progress_deadline_s(args) + 60}s"
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions.merge(
                in_namespace,
                pulumi.ResourceOptions(
                    # Pods mount the front's files and read the admin key: without either they
                    # would not start.
                    depends_on=[front_files, admin_key],
                    # KEDA's HPA owns the replica count once the service runs.
                    ignore_changes=["spec.replicas"],
                    custom_timeouts=pulumi.CustomTimeouts(create=rollout, update=rollout),
                ),
            ),
        )
        for key, built in (("svc", service(name, args)), ("headless", headless_service(name, args))):
            k8s.core.v1.Service(
                f"{name}-{key}", metadata=built["metadata"], spec=built["spec"], opts=in_namespace
            )
        budget = pod_disruption_budget(name, args)
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb", metadata=budget["metadata"], spec=budget["spec"], opts=in_namespace
        )
        rules = prometheus_rule(
            f"{name}-alerts",
            ns,
            [
                service_rule_group(
                    service=name,
                    namespace=ns,
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
            custom_resource(f"{name}-{key}", custom, in_namespace)
        if args.canary is not None:
            split = traffic_config_map(service=name, namespace=ns, canary=args.canary)
            k8s.core.v1.ConfigMap(
                f"{name}-traffic", metadata=split["metadata"], data=split["data"], opts=in_namespace
            )
            group = canary_rule_group(service=name, namespace=ns, canary=args.canary)
            custom_resource(
                f"{name}-canary-alerts", prometheus_rule(f"{name}-canary", ns, [group]), in_namespace
            )

        self.namespace = ns
        self.service_name = name
        self.http_endpoint = f"http://{name}.{ns}.svc:{HTTP_PORT}"
        self.grpc_endpoint = f"dns:///{name}-headless.{ns}.svc:{GRPC_PORT}"
        self.role_arn = pulumi.Output.from_input(role_arn)
        self.admin_key_secret = admin_key_secret_name(name)
        self.register_outputs(
            {
                "namespace": self.namespace,
                "admin_key_secret": self.admin_key_secret,
                "http_endpoint": self.http_endpoint,
                "grpc_endpoint": self.grpc_endpoint,
                "role_arn": self.role_arn,
            }
        )
