"""The pod of a TritonModelService: Triton's container and arguments, the request front beside it, the
model-cache init container that fills Triton's repository from the node cache, where it may run (node
affinity, zone spread), the ServiceAccount and the admin key it reads."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pulumi

from inferstack.components.admin_api import restriction_flags
from inferstack.components.manifests import restricted_security_context
from inferstack.components.model_service.args import (
    FRONT_MEMORY_GIB,
    SCRATCH_GIB,
    TritonModelServiceArgs,
    front_cpu,
    grace_period_s,
    model_cache_gib,
    namespace_of,
    progress_deadline_s,
)
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
from inferstack.components.triton_telemetry import traced_triton_args, triton_log_args
from inferstack.infra import model_cache
from inferstack.infra.instance_types import lookup
from inferstack.infra.node_plans import (
    CAPACITY_TYPE_LABEL,
    GPU_MODEL_LABEL,
    GPU_PRESENT_LABEL,
    GPU_RESOURCE,
    GPU_TAINT_KEY,
    NODE_MODEL_CACHE_PATH,
    ON_DEMAND,
    SPOT,
    ZONE_LABEL,
)

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002  # HTTP_PORT: the request front's
FRONT_METRICS_PORT = 8003  # the request front's own metrics: the time requests spend in it
# Triton's own HTTP server, on loopback only: HTTP reaches it through the request front.
TRITON_HTTP_PORT = 8080
POD_FRONT = FrontPaths(listen_port=HTTP_PORT, triton_port=TRITON_HTTP_PORT, metrics_port=FRONT_METRICS_PORT)
TRITON_UID = 1000  # the image's triton-server user
HEALTH_READY = "/v2/health/ready"
STARTUP_PERIOD_S = 10
# Triton loads from here (an emptyDir), filled by the model-cache init container; it never reads S3.
MODEL_REPOSITORY_DIR = "/models"
NODE_CACHE_MOUNT = "/node-model-cache"  # the node's cache (hostPath), mounted in the init container only
CACHE_SCRIPT_DIR = "/opt/inferstack"
CACHE_SCRIPT = "model_cache.py"
# The fill is I/O: a core for hashing and TLS, memory for its buffers (the page cache is the kernel's).
FILL_CPU, FILL_MEMORY_GIB = 1.0, 1.0
# Triton's admin APIs (explicit model control lets anyone who reaches them unload a model) answer only
# requests carrying admin_api's header with the service's key, on HTTP and gRPC alike. The key lives in a
# Secret and reaches the args through the container's env ($(VAR) expansion), never the pod spec.
ADMIN_KEY_ENV = "INFERSTACK_ADMIN_KEY"
ADMIN_KEY_FIELD = "admin-key"  # the Secret's data key
ADMIN_KEY_LENGTH = 32  # letters and digits only: the value sits in a flag after ':' and '='


def labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": "triton",
        "app.kubernetes.io/part-of": "inferstack",
    }


def object_metadata(name: str, args: TritonModelServiceArgs, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace_of(name, args), "labels": labels(name), **extra}


def service_account(name: str, args: TritonModelServiceArgs, role_arn: pulumi.Input[str]) -> dict[str, Any]:
    """IRSA: EKS injects a web-identity token for this role; the AWS SDK in Triton picks it up."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_metadata(name, args, annotations={"eks.amazonaws.com/role-arn": role_arn}),
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
    """The admin lock's flags, the key expanded by the kubelet from the container's env."""
    return restriction_flags(f"$({ADMIN_KEY_ENV})")


def admin_key_secret(name: str, args: TritonModelServiceArgs, key: pulumi.Input[str]) -> dict[str, Any]:
    """What operators read to call the admin APIs by hand; the pods read it into ``ADMIN_KEY_ENV``."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {**object_metadata(name, args), "name": admin_key_secret_name(name)},
        "type": "Opaque",
        "stringData": {ADMIN_KEY_FIELD: key},
    }


def _repository_flag(repository_uri: pulumi.Input[str]) -> pulumi.Input[str]:
    return (
        pulumi.Output.concat("--model-repository=", repository_uri)
        if isinstance(repository_uri, pulumi.Output)
        else f"--model-repository={repository_uri}"
    )


def triton_args(args: TritonModelServiceArgs, repository_uri: pulumi.Input[str]) -> list[pulumi.Input[str]]:
    return [
        _repository_flag(repository_uri),
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
    """Triton's spans (service.name = the service) when tracing is on, and its log level."""
    if args.tracing is None:
        return triton_log_args(args.log_verbose)
    return traced_triton_args(args.tracing, service_name=name, log_verbose=args.log_verbose)


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
        # Which zones count is what decides zone loss (docs/concepts/zone-loss.md). A zone counts when
        # it has a node this pod tolerates, whatever its affinity: every live zone keeps a system node
        # (one group per zone), so a zone whose GPU group is at zero still counts and draws its share
        # (the autoscaler adds the node). A cordoned, unreachable or NotReady node carries a NoSchedule
        # taint the pod does not tolerate, so with Honor a lost zone stops counting and the surviving
        # zones take every replica. No minDomains: below it the scheduler takes the minimum as 0, which
        # is what capped a service at one replica per surviving zone.
        zone["nodeAffinityPolicy"] = "Ignore"
        zone["nodeTaintsPolicy"] = "Honor"
    else:
        zone = _spread(ZONE_LABEL, "ScheduleAnyway", labels(name))
    return [zone, _spread("kubernetes.io/hostname", "ScheduleAnyway", labels(name))]


def front_config_map(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    """The request front's nginx.conf and njs script."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {**object_metadata(name, args), "name": f"{name}-request-front"},
        "data": config_files(POD_FRONT, request_log=args.request_log),
    }


def front_digest(name: str, args: TritonModelServiceArgs) -> str:
    return hashlib.sha256(
        json.dumps(front_config_map(name, args)["data"], sort_keys=True).encode()
    ).hexdigest()


SERVED_VERSIONS_ANNOTATION = "inferstack.io/served-versions"


def served_versions(args: TritonModelServiceArgs) -> dict[str, list[int]]:
    """Model -> the versions every pod must serve, where nothing else in the pod template names them:
    a canary's stable and canary versions when the models are published out of band. A shipped
    repository's versions are in the fill's arguments already (``fill_models``), and a canary's
    must be among them (checks.py)."""
    if args.canary is None or args.source.served is not None:
        return {}
    return {args.canary.model: sorted({args.canary.stable_version, args.canary.canary_version})}


def served_versions_annotation(args: TritonModelServiceArgs) -> dict[str, str]:
    """Triton loads a model's versions once, at start (explicit mode, --load-model): a change of the
    versions served must start new pods, which the Deployment surges in one at a time (maxUnavailable
    0) while the old ones keep serving. Weights and margins are not in it: they change no pod."""
    served = json.dumps(served_versions(args), sort_keys=True, separators=(",", ":"))
    return {SERVED_VERSIONS_ANNOTATION: served}


def front_container(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    """The request front as a native sidecar (an init container that keeps running): it starts before
    Triton and the kubelet stops it only once Triton has exited, so requests in flight through it during
    Triton's drain (preStop sleep, then --exit-timeout-secs) are answered."""
    sized = {"cpu": f"{front_cpu(args):g}", "memory": f"{FRONT_MEMORY_GIB * 1024:g}Mi"}
    return {
        "name": "request-front",
        "image": FRONT_IMAGE,
        "restartPolicy": "Always",
        "command": nginx_command(POD_FRONT),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "front-metrics", "containerPort": FRONT_METRICS_PORT, "protocol": "TCP"},
        ],
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


def model_cache_config_map(name: str, args: TritonModelServiceArgs) -> dict[str, Any]:
    """The fill script itself (standard library only), run by the Triton image's python3."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {**object_metadata(name, args), "name": f"{name}-model-cache"},
        "data": {CACHE_SCRIPT: Path(model_cache.__file__).read_text()},
    }


def model_cache_digest(name: str, args: TritonModelServiceArgs) -> str:
    return hashlib.sha256(model_cache_config_map(name, args)["data"][CACHE_SCRIPT].encode()).hexdigest()


def fill_models(args: TritonModelServiceArgs) -> str:
    """The fill's ``--models``: each model, with the versions the deploy ships (a pod of a new release
    must not start on the previous release's manifest)."""
    served = args.source.served.versions if args.source.served is not None else {}
    return ",".join(f"{m}:{'+'.join(str(v) for v in served[m])}" if m in served else m for m in args.models)


def fill_container(
    name: str, args: TritonModelServiceArgs, repository_uri: pulumi.Input[str]
) -> dict[str, Any]:
    """The init container that waits for the models' manifests, fills the node cache with the versions
    their policies serve (skipping what the node already holds) and copies them into Triton's folder."""
    sized = {"cpu": f"{FILL_CPU:g}", "memory": f"{FILL_MEMORY_GIB * 1024:g}Mi"}
    source = (
        pulumi.Output.concat("--source=", repository_uri)
        if isinstance(repository_uri, pulumi.Output)
        else f"--source={repository_uri}"
    )
    return {
        "name": "model-cache",
        # Triton's own image: its python3 runs the script, and the node pulls one image, not two.
        "image": args.image,
        "command": ["python3", f"{CACHE_SCRIPT_DIR}/{CACHE_SCRIPT}"],
        "args": [
            source,
            f"--models={fill_models(args)}",
            f"--cache={NODE_CACHE_MOUNT}",
            f"--repository={MODEL_REPOSITORY_DIR}",
            f"--max-gib={args.node_cache_gib:g}",
            f"--wait-s={args.manifest_wait_s}",
        ],
        "env": [
            # IRSA supplies the credentials (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE); nothing else does.
            {"name": "AWS_REGION", "value": args.region},
            {"name": "AWS_DEFAULT_REGION", "value": args.region},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "resources": {"requests": dict(sized), "limits": dict(sized)},
        "securityContext": restricted_security_context(TRITON_UID),
        "volumeMounts": [
            {"name": "model-cache-script", "mountPath": CACHE_SCRIPT_DIR, "readOnly": True},
            {"name": "node-model-cache", "mountPath": NODE_CACHE_MOUNT},
            {"name": "model-repository", "mountPath": MODEL_REPOSITORY_DIR},
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
        "args": [*triton_args(args, MODEL_REPOSITORY_DIR), *tracing_args(name, args)],
        "env": [
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
            "requests": {**sized, "ephemeral-storage": f"{model_cache_gib(args) + SCRATCH_GIB:g}Gi"},
            "limits": dict(sized),
        },
        "securityContext": restricted_security_context(TRITON_UID),
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "model-repository", "mountPath": MODEL_REPOSITORY_DIR, "readOnly": True},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_metadata(name, args),
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
                    "annotations": {
                        "inferstack.io/request-front-sha256": front_digest(name, args),
                        "inferstack.io/model-cache-sha256": model_cache_digest(name, args),
                        **served_versions_annotation(args),
                    },
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
                    # The fill first: the front has nothing to answer for until Triton can load.
                    "initContainers": [
                        fill_container(name, args, repository_uri),
                        front_container(name, args),
                    ],
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "dshm",
                            "emptyDir": {"medium": "Memory", "sizeLimit": f"{args.shm_gib:g}Gi"},
                        },
                        {"name": "tmp", "emptyDir": {"sizeLimit": f"{SCRATCH_GIB}Gi"}},
                        {
                            "name": "model-repository",
                            "emptyDir": {"sizeLimit": f"{model_cache_gib(args):g}Gi"},
                        },
                        # Made by the node's bootstrap, owned by Triton's uid (infra/nodegroups.py); on a
                        # node without it the kubelet creates it root-owned and the fill says so.
                        {
                            "name": "node-model-cache",
                            "hostPath": {"path": NODE_MODEL_CACHE_PATH, "type": "DirectoryOrCreate"},
                        },
                        {"name": "model-cache-script", "configMap": {"name": f"{name}-model-cache"}},
                        {"name": "request-front-config", "configMap": {"name": f"{name}-request-front"}},
                        # pid file and the model-config cache (8 MiB at most); bodies stay in memory
                        {"name": "request-front-tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }
