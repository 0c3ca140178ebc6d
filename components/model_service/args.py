"""What a TritonModelService is given, and the failure-domain and drain arithmetic derived from it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pulumi

from inferstack.components.awaits import (
    create_timeout_s,
    image_pull_s,
    pod_start_s,
    rollout_timeout_s,
)
from inferstack.components.canary import CanaryRelease
from inferstack.components.model_repository import ServedModels
from inferstack.components.monitoring import prometheus_url
from inferstack.components.triton_telemetry import TraceSettings
from inferstack.infra.errors import InvalidInput
from inferstack.infra.model_store import ModelStore

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, as the local runtime
SPOT_NOTICE_S = 120
# The request front's memory. njs frees nothing before a request ends: a JSON body at the body limit
# (65 MiB of one-digit numbers) peaked at 1.1 GiB in the worker (njs 0.7.9, measured).
FRONT_MEMORY_GIB = 1.5
# The front's CPU per request: a base plus a cost per JSON body byte, measured by `inferstack bench
# --front` (nginx 1.22.1, njs 0.7.9, on a shared 2-core x86 machine: 0.19 ms at 1 KB, 11.8 ms at 1 MB,
# 145 ms at 10 MB; binary-tensor bodies of the same tensors 17-39x less). JSON is the dearer body, so
# the front is sized for it.
FRONT_CPU_MS_PER_REQUEST = 0.2
FRONT_CPU_NS_PER_BYTE = 14.5
FRONT_CPU_TARGET = 0.7  # the share of its CPU the front may use at the expected rate: room for bursts
FRONT_MIN_CPU = 0.25  # health probes, metrics and proxying the answers back
FRONT_MAX_CPU = 1.0  # nginx runs one worker (the times log's fold relies on it): one core at most
FRONT_CPU_STEP = 0.05
# Memory the kubelet, system daemons and DaemonSets (device plugin, DCGM, CNI) keep on a GPU node.
NODE_MEMORY_RESERVED_GIB = 4.0
NODE_CPU_RESERVED = 0.5
SCRATCH_GIB = 4  # /tmp and $HOME: python backend stubs, the AWS SDK's files
DEFAULT_MODEL_CACHE_GIB = 40.0  # models published out of band: their size is not known at deploy time
GIB = 1 << 30
# SIGKILL follows the grace period; leave Triton this long past its exit timeout to exit on its own.
EXIT_MARGIN_S = 5
FALLBACK_AFTER_FAILURES = 3  # KEDA polls that must fail before the fallback size applies
# Names go into "<name>-headless" (a Service: an RFC 1035 label, <= 63) and into the IRSA role
# "<name>-models-reader-<7 random>" (IAM role names: <= 64).
MAX_NAME_LENGTH = min(63 - len("-headless"), 64 - len("-models-reader-") - 7)

Environment = Literal["prod", "dev"]
Placement = Literal["on-demand", "spot", "spot-with-fallback"]


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
    # What the deploy ships into the prefix (a ModelRepository's ``served``): the pods wait for these
    # versions and the cache is sized from their bytes. None: models are published out of band.
    served: ServedModels | None = None
    shipped_by: pulumi.Resource | None = None  # the ModelRepository: the Deployment waits for it


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
    # The pod's own folder of its served versions (an emptyDir Triton loads, filled from the node
    # cache). None: derived from ``source.served`` (see
    # ``model_cache_gib``), DEFAULT_MODEL_CACHE_GIB when the models are published out of band.
    model_cache_gib: float | None = None
    # The node-local cache every service's pods on a node share (infra/model_cache.py), pruned to this size.
    node_cache_gib: float = 150.0
    manifest_wait_s: int = 600  # how long a pod's fill waits for a model's manifest (written last)
    placement: Placement = "spot-with-fallback"
    min_replicas: int = 3
    max_replicas: int = 12
    queue_time_target_ms: float = 50.0
    pending_requests_per_replica: float = 16.0
    gpu_utilization_target: float | None = None  # percent per replica; None: no GPU trigger
    # What sizes the request front's CPU: the usual JSON body and the requests per second one replica
    # takes at the busiest (binary-tensor bodies cost the front far less: see docs/operations/costs.md).
    expected_request_bytes: int = 16 << 10
    expected_requests_per_second: float = 100.0
    # Mean time a request spends in the front (reading and checking its body), in ms: a KEDA trigger
    # for fronts that saturate before Triton's queue grows; None: no front trigger.
    front_time_target_ms: float | None = None
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
    # The service registers a ServiceMonitor and PrometheusRules (CRDs of the Monitoring component) and a
    # ScaledObject (KEDA's, from Autoscaling): it must be told to wait for both (depends_on), unless the
    # cluster got those CRDs outside this program (then set True).
    cluster_has_crds: bool = False
    # Triton's --log-verbose: 0 writes nothing per successful request, 1 about 1.7 KB a request
    # (infra.log_volume): turn it on for one service while debugging it, not for the fleet.
    log_verbose: int = 0
    # The request front's JSON line per inference request with its request id (~186 B, infra.log_volume):
    # at log_verbose 0 the request's only log line. Off for a service whose rate makes it too dear.
    request_log: bool = True


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


def front_cpu_needed(args: TritonModelServiceArgs) -> float:
    """Cores the front spends at the expected rate and body size, over its target utilisation."""
    ms_per_request = FRONT_CPU_MS_PER_REQUEST + args.expected_request_bytes * FRONT_CPU_NS_PER_BYTE / 1e6
    return ms_per_request / 1000 * args.expected_requests_per_second / FRONT_CPU_TARGET


def front_cpu(args: TritonModelServiceArgs) -> float:
    """The front container's CPU request and limit: what it needs, in steps, at least the floor."""
    steps = math.ceil(round(front_cpu_needed(args) / FRONT_CPU_STEP, 6))
    return max(FRONT_MIN_CPU, round(steps * FRONT_CPU_STEP, 2))


def grace_period_s(args: TritonModelServiceArgs) -> int:
    """The pod's terminationGracePeriodSeconds: the preStop sleep, then Triton's exit timeout."""
    return args.drain_s + args.exit_timeout_s + EXIT_MARGIN_S


def needed_cache_gib(served_bytes: int) -> float:
    """What one pod's folder must hold: the fill places every served version's files in it."""
    return served_bytes / GIB


def derived_cache_gib(served_bytes: int) -> float:
    """The cache a service gets by default: twice what it downloads, in whole GiB. A release adds a
    version before the deploy removes the one it replaces, and a pod starting in between copies both."""
    return float(max(1, math.ceil(2 * served_bytes / GIB)))


def model_cache_gib(args: TritonModelServiceArgs) -> float:
    if args.model_cache_gib is not None:
        return args.model_cache_gib
    if args.source.served is not None:
        return derived_cache_gib(args.source.served.bytes)
    return DEFAULT_MODEL_CACHE_GIB


def progress_deadline_s(args: TritonModelServiceArgs) -> int:
    """One Triton pod ready on a node scaled up from zero: the node, the ~10 GB image, the fill (waiting
    for the manifests at most ``manifest_wait_s``), every model loaded (components/awaits.py).
    Kubernetes' deadline and Pulumi's waits both start from it."""
    return pod_start_s(
        image_pull=image_pull_s(args.image), startup=args.manifest_wait_s + args.model_load_timeout_s
    )


def await_timeouts_s(args: TritonModelServiceArgs) -> tuple[int, int]:
    """(create, update) for the Deployment's await: one pod start; an update at ``max_replicas``
    surges one pod at a time (maxSurge 1, maxUnavailable 0), so that many pod starts in a row."""
    start = progress_deadline_s(args)
    return create_timeout_s(start), rollout_timeout_s(
        start, max_replicas=args.max_replicas, grace_s=grace_period_s(args)
    )
