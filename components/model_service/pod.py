"""The pod of a TritonModelService: Triton's container and arguments, the request front beside it, where
it may run (node affinity, zone spread), the ServiceAccount and the admin key it reads."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pulumi

from inferstack.components import model_wait
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
from inferstack.infra.instance_types import lookup
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

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002  # HTTP_PORT: the request front's
FRONT_METRICS_PORT = 8003  # the request front's own metrics: the time requests spend in it
# Triton's own HTTP server, on loopback only: HTTP reaches it through the request front.
TRITON_HTTP_PORT = 8080
POD_FRONT = FrontPaths(listen_port=HTTP_PORT, triton_port=TRITON_HTTP_PORT, metrics_port=FRONT_METRICS_PORT)
TRITON_UID = 1000  # the image's triton-server user
HEALTH_READY = "/v2/health/ready"
STARTUP_PERIOD_S = 10
# Triton copies the S3 repository here (TRITON_AWS_MOUNT_DIRECTORY); the root filesystem is read-only.
MODEL_CACHE_DIR = "/var/cache/triton"
# Triton's admin APIs (explicit model control lets anyone who reaches them unload a model) answer only
# requests carrying this header with the service's key, on HTTP and gRPC alike. The key lives in a
# Secret and reaches the args through the container's env ($(VAR) expansion), never the pod spec.
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
ADMIN_KEY_HEADER = "inferstack-admin-key"
GRPC_ADMIN_KEY_HEADER = f"triton-grpc-protocol-{ADMIN_KEY_HEADER}"  # the metadata key 2.51 reads over gRPC
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
    """Triton 2.51's own restriction flags. The separator before the header is ':' (its --help says
    ',', which 2.51 refuses with its usage text)."""
    rule = f"{','.join(RESTRICTED_APIS)}:{ADMIN_KEY_HEADER}=$({ADMIN_KEY_ENV})"
    return [f"--http-restricted-api={rule}", f"--grpc-restricted-protocol={rule}"]


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
        "data": config_files(POD_FRONT),
    }


def front_digest(name: str, args: TritonModelServiceArgs) -> str:
    return hashlib.sha256(
        json.dumps(front_config_map(name, args)["data"], sort_keys=True).encode()
    ).hexdigest()


SERVED_VERSIONS_ANNOTATION = "inferstack.io/served-versions"


def served_versions(args: TritonModelServiceArgs) -> dict[str, list[int]]:
    """Model -> the versions every pod must serve, where nothing else in the pod template names them:
    a canary's stable and canary versions when the models are published out of band. A shipped
    repository's versions are in the wait-for-models arguments already (``wait_args``), and a canary's
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


def wait_args(args: TritonModelServiceArgs, repository_uri: pulumi.Input[str]) -> list[pulumi.Input[str]]:
    """What ``model_wait`` is told: Triton's repository and each model, with the versions the deploy
    ships (a pod of a new release must not start on the previous release's manifest)."""
    served = args.source.served.versions if args.source.served is not None else {}
    specs = [f"{m}:{','.join(str(v) for v in served[m])}" if m in served else m for m in args.models]
    return [_repository_flag(repository_uri), *(item for spec in specs for item in ("--model", spec))]


def model_wait_container(args: TritonModelServiceArgs, repository_uri: pulumi.Input[str]) -> dict[str, Any]:
    """Runs before Triton and ends only once every model is complete in S3 (``components/model_wait.py``):
    on an empty or partly published prefix the pod waits in ``Init``, saying what it waits for, where
    Triton itself would exit 1 and crash-loop. Triton's own image and IRSA identity: no other image
    to pull, no other role. No probes: it may wait as long as publishing takes."""
    sized = {"cpu": "100m", "memory": "128Mi"}
    return {
        "name": "wait-for-models",
        "image": args.image,
        "command": ["python3", "-c", Path(model_wait.__file__).read_text()],
        "args": wait_args(args, repository_uri),
        "env": [
            {"name": "AWS_DEFAULT_REGION", "value": args.region},
            {"name": "AWS_REGION", "value": args.region},
            {"name": "HOME", "value": "/tmp"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "resources": {"requests": dict(sized), "limits": dict(sized)},
        "securityContext": restricted_security_context(TRITON_UID),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
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
            "requests": {**sized, "ephemeral-storage": f"{model_cache_gib(args) + SCRATCH_GIB:g}Gi"},
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
                    "initContainers": [
                        front_container(name, args),
                        model_wait_container(args, repository_uri),
                    ],
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "dshm",
                            "emptyDir": {"medium": "Memory", "sizeLimit": f"{args.shm_gib:g}Gi"},
                        },
                        {"name": "tmp", "emptyDir": {"sizeLimit": f"{SCRATCH_GIB}Gi"}},
                        {"name": "model-cache", "emptyDir": {"sizeLimit": f"{model_cache_gib(args):g}Gi"}},
                        {"name": "request-front-config", "configMap": {"name": f"{name}-request-front"}},
                        # pid file and the model-config cache (8 MiB at most); bodies stay in memory
                        {"name": "request-front-tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }
