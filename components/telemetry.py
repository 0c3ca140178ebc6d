"""Telemetry: where the platform's traces and logs go, as three pinned upstream Helm releases.

- The **OpenTelemetry Collector** (chart ``opentelemetry-collector``, the Kubernetes distribution)
  receives OTLP (gRPC 4317, HTTP 4318) from every Triton (and any client that exports its own
  spans), bounds its memory (memory_limiter), batches, and exports to
- **Jaeger v2** (chart ``jaeger`` 4.x, the single v2 binary), which takes OTLP, keeps spans in
  Badger on a gp3 volume for a retention TTL and serves the query API Grafana reads (a Jaeger data
  source provisioned through kube-prometheus-stack's values, `components.monitoring`). Jaeger rather
  than Tempo: Tempo's single binary wants object storage (S3) for anything durable, a second bucket,
  role and lifecycle; one Badger volume is enough for sampled inference traces kept for days.
- **Fluent Bit** (chart ``fluent-bit``) on every node, GPU nodes included, tails the containers'
  logs, parses Triton's lines into fields with the request id (the pattern `serving.triton_logs`
  parses locally, from `components.triton_telemetry`), and ships them to one CloudWatch Logs group
  that this component creates with a retention, through IRSA: the role may create streams in and
  write to that group only. No static keys.

Each release is named after its chart (`charts.release`) and each chart names its objects after the
release, so the Services and the ServiceAccount named below are the ones helm renders (the render
tests check it). Upgrading is bumping a chart in `components.charts`: the tests render the new
version with these values and fail on a key it no longer knows.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from inferstack.components.charts import (
    COLLECTOR_IMAGE,
    FLUENT_BIT,
    FLUENT_BIT_IMAGE,
    JAEGER,
    JAEGER_IMAGE,
    OPENTELEMETRY_COLLECTOR,
    release,
)
from inferstack.components.manifests import PART_OF, namespace, restricted_security_context
from inferstack.components.storage import GP3
from inferstack.components.triton_telemetry import (
    LOG_LINE_PATTERN,
    LOG_TIME_FORMAT,
    OTLP_GRPC_PORT,
    OTLP_HTTP_PORT,
    TRACES_PATH,
    onigmo_pattern,
)
from inferstack.infra.children import child_options
from inferstack.infra.errors import InvalidInput
from inferstack.infra.irsa import service_account_role
from inferstack.infra.names import (
    IAM_ROLE_NAME_MAX,
    check_derived_name,
    check_log_group_name,
)
from inferstack.infra.nodegroups import NODE_ROLE_LABEL

# The objects the charts render for releases named after them (see the module's docstring).
COLLECTOR_SERVICE = OPENTELEMETRY_COLLECTOR.name
JAEGER_SERVICE = JAEGER.name
FLUENT_BIT_SERVICE_ACCOUNT = FLUENT_BIT.name
IMAGE_UID = 10001  # the collector's and Jaeger's images run as this user
JAEGER_QUERY_PORT = 16686  # UI and the HTTP API Grafana's Jaeger data source reads
HEALTH_PORT = 13133  # both charts probe their pods here: the health check extension must serve it
BADGER_DIR = "/badger"
BADGER_CLAIM = "jaeger-badger"
FLUENT_BIT_CONF_DIR = "/fluent-bit/etc/conf"  # where the chart mounts its ConfigMap
FLUENT_BIT_HTTP_PORT = 2020  # health and metrics: the chart's probes and Service use `metricsPort`
FLUENT_BIT_STATE_DIR = "/var/fluent-bit/state"  # tail offsets, on the node: a restart resumes
# What CloudWatch Logs accepts as a retention (PutRetentionPolicy's enum).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557)
FLUENT_BIT_ROLE_SUFFIX = "-fluent-bit"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
CONFIG_DIGEST_LABEL = "inferstack.io/config-sha256"  # label values: 63 characters at most
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def collector_traces_url(ns: str) -> str:
    """The collector's OTLP/HTTP traces endpoint, as a Triton in any namespace reaches it."""
    return f"http://{COLLECTOR_SERVICE}.{ns}.svc:{OTLP_HTTP_PORT}{TRACES_PATH}"


def jaeger_otlp_endpoint(ns: str) -> str:
    return f"{JAEGER_SERVICE}.{ns}.svc:{OTLP_GRPC_PORT}"


def jaeger_query_url(ns: str) -> str:
    return f"http://{JAEGER_SERVICE}.{ns}.svc:{JAEGER_QUERY_PORT}"


def log_group_name(cluster_name: str) -> str:
    return f"/inferstack/{cluster_name}/containers"


def log_group_arn(*, partition: str, region: str, account: str, name: str) -> str:
    """The group as IAM names it, from the account: the role's policy is known before the group exists."""
    return f"arn:{partition}:logs:{region}:{account}:log-group:{name}"


@dataclass
class TelemetryArgs:
    """The Kubernetes provider comes through ``ResourceOptions(provider=...)``."""

    cluster_name: str  # names the log group
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    region: str | None = None  # the log group's region; None: that of this component's AWS provider
    namespace: str = "telemetry"
    log_retention_days: int = 30
    trace_retention_hours: int = 72
    trace_storage_gib: int = 20
    storage_class: str = GP3  # components.storage creates it
    node_selector: dict[str, str] = field(default_factory=lambda: {NODE_ROLE_LABEL: "system"})


def validate(name: str, args: TelemetryArgs) -> None:
    if not _DNS_LABEL.match(args.namespace):
        raise InvalidInput("namespace", args.namespace, "a DNS-1123 label (lowercase letters, digits, '-')")
    if args.log_retention_days not in LOG_RETENTION_DAYS:
        raise InvalidInput(
            "log_retention_days",
            args.log_retention_days,
            f"one of CloudWatch's retentions {LOG_RETENTION_DAYS}",
        )
    for field_name, minimum in (("trace_retention_hours", 1), ("trace_storage_gib", 1)):
        value = getattr(args, field_name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InvalidInput(field_name, value, f"an integer >= {minimum}")
    check_log_group_name("cluster_name", args.cluster_name, log_group_name(args.cluster_name))
    check_derived_name("name", name, suffix=FLUENT_BIT_ROLE_SUFFIX, limit=IAM_ROLE_NAME_MAX)


# --- configuration files (pure) -------------------------------------------------------------------

# The collector chart's pods get their own IP as this variable; receivers listen there (the
# collector binds to localhost by default since 0.104, where no other pod reaches it).
_POD_IP = "${env:MY_POD_IP}"


def _otlp_receiver(host: str) -> dict[str, Any]:
    return {
        "otlp": {
            "protocols": {
                "grpc": {"endpoint": f"{host}:{OTLP_GRPC_PORT}"},
                "http": {"endpoint": f"{host}:{OTLP_HTTP_PORT}"},
            }
        }
    }


def collector_config(jaeger_otlp_endpoint: str) -> dict[str, Any]:
    """OTLP in, memory bounded, batched, OTLP/gRPC out to Jaeger; the health check the chart probes."""
    return {
        "extensions": {"health_check": {"endpoint": f"{_POD_IP}:{HEALTH_PORT}"}},
        "receivers": _otlp_receiver(_POD_IP),
        "processors": {
            # First in the pipeline: refuse data (receivers answer "retry later") before the pod is
            # OOM-killed with every batch it holds. Percentages of the container's memory limit.
            "memory_limiter": {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 25},
            "batch": {"send_batch_size": 1024, "timeout": "5s"},
        },
        # `otlp_grpc` is the exporter's name since collector 0.144 (`otlp` is a deprecated alias).
        "exporters": {"otlp_grpc/jaeger": {"endpoint": jaeger_otlp_endpoint, "tls": {"insecure": True}}},
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["memory_limiter", "batch"],
                    "exporters": ["otlp_grpc/jaeger"],
                }
            },
        },
    }


def jaeger_config(*, trace_retention_hours: int) -> dict[str, Any]:
    """Jaeger v2: OTLP in, Badger on the volume with a TTL, the query API on 16686, health on 13133."""
    store = "badger"
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
        },
        "extensions": {
            # The chart's probes read /status here; the extension's default host is localhost.
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"0.0.0.0:{HEALTH_PORT}"}},
            "jaeger_query": {
                "storage": {"traces": store},
                "http": {"endpoint": f"0.0.0.0:{JAEGER_QUERY_PORT}"},
            },
            "jaeger_storage": {
                "backends": {
                    store: {
                        "badger": {
                            "directories": {"keys": f"{BADGER_DIR}/keys", "values": f"{BADGER_DIR}/values"},
                            "ephemeral": False,
                            "ttl": {"spans": f"{trace_retention_hours}h"},
                        }
                    }
                }
            },
        },
        "receivers": _otlp_receiver("0.0.0.0"),
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": store}},
    }


def _section(name: str, settings: list[tuple[str, str]]) -> str:
    width = max(len(key) for key, _ in settings)
    return "\n".join([f"[{name}]", *(f"    {key.ljust(width)} {value}" for key, value in settings)])


def fluent_bit_parsers() -> str:
    """Triton's log line as fields (request id included), in Fluent Bit's parsers file format."""
    return _section(
        "PARSER",
        [
            ("Name", "triton"),
            ("Format", "regex"),
            ("Regex", onigmo_pattern(LOG_LINE_PATTERN)),
            ("Time_Key", "time"),
            ("Time_Format", LOG_TIME_FORMAT),
            ("Time_Keep", "On"),
            ("Types", "thread:integer"),
        ],
    )


# The chart's ConfigMap key for the parsers file, in the folder it mounts.
FLUENT_BIT_PARSERS_FILE = "custom_parsers.conf"


def fluent_bit_config(*, region: str, log_group: str) -> dict[str, str]:
    """Tail every container's log, add its pod's metadata, parse Triton's lines, ship to CloudWatch.

    The chart's four sections (each goes through helm's ``tpl``: no ``{{`` in them).
    """
    service = _section(
        "SERVICE",
        [
            ("Daemon", "Off"),
            ("Flush", "5"),
            ("Log_Level", "info"),
            ("Parsers_File", f"{FLUENT_BIT_CONF_DIR}/{FLUENT_BIT_PARSERS_FILE}"),
            ("HTTP_Server", "On"),
            ("HTTP_Listen", "0.0.0.0"),
            ("HTTP_Port", str(FLUENT_BIT_HTTP_PORT)),
            ("Health_Check", "On"),
        ],
    )
    inputs = _section(
        "INPUT",
        [
            ("Name", "tail"),
            ("Tag", "kube.*"),
            ("Path", "/var/log/containers/*.log"),
            # containerd's CRI lines, long lines reassembled from their partial chunks.
            ("multiline.parser", "cri"),
            ("DB", f"{FLUENT_BIT_STATE_DIR}/tail.db"),
            ("Mem_Buf_Limit", "50MB"),
            ("Skip_Long_Lines", "On"),
        ],
    )
    filters = "\n\n".join(
        [
            _section(
                "FILTER",
                [
                    ("Name", "kubernetes"),
                    ("Match", "kube.*"),
                    ("Kube_Tag_Prefix", "kube.var.log.containers."),
                    ("Labels", "Off"),
                    ("Annotations", "Off"),
                ],
            ),
            # Lines that are not Triton's pass through unchanged; Triton's become time, level, thread,
            # source, request_id and message, beside the pod's metadata (Reserve_Data).
            _section(
                "FILTER",
                [
                    ("Name", "parser"),
                    ("Match", "kube.*"),
                    ("Key_Name", "log"),
                    ("Parser", "triton"),
                    ("Reserve_Data", "On"),
                ],
            ),
        ]
    )
    outputs = _section(
        "OUTPUT",
        [
            ("Name", "cloudwatch_logs"),
            ("Match", "kube.*"),
            ("region", region),
            ("log_group_name", log_group),
            # One stream per container (the tag names the pod, namespace and container).
            ("log_stream_prefix", "container."),
            # The group is this component's, with its retention; the role may not create groups.
            ("auto_create_group", "Off"),
        ],
    )
    return {
        "service": service + "\n",
        "inputs": inputs + "\n",
        "filters": filters + "\n",
        "outputs": outputs + "\n",
        "customParsers": fluent_bit_parsers() + "\n",
    }


def log_shipping_policy(log_group_arn: str) -> dict[str, Any]:
    """Write to one log group's streams, and nothing else.

    ``<group ARN>:*`` is how IAM names the group for stream-level calls (DescribeLogStreams) and
    every stream in it (CreateLogStream, PutLogEvents): still this group only.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ShipContainerLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
                "Resource": [log_group_arn, f"{log_group_arn}:*"],
            }
        ],
    }


# --- chart values (pure) --------------------------------------------------------------------------


def labels(app: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/component": "telemetry", **PART_OF}


def collector_values(ns: str, node_selector: dict[str, str]) -> dict[str, Any]:
    """Two stateless replicas on different nodes (a node drain does not stop the spans), OTLP only."""
    return {
        "mode": "deployment",
        "image": {
            "repository": f"{COLLECTOR_IMAGE.registry}/{COLLECTOR_IMAGE.repository}",
            "tag": COLLECTOR_IMAGE.tag,
        },
        "command": {"name": "otelcol-k8s"},  # the binary of the Kubernetes distribution
        # The whole configuration, unmerged with the chart's default one (Jaeger, Zipkin and Prometheus
        # receivers, debug exporters, logs and metrics pipelines). Helm deletes a default key set to
        # null, but the Python SDK drops null map values before they reach the engine
        # (pulumi/pulumi#12178), so `config` could not remove them; `alternateConfig` replaces it.
        "alternateConfig": collector_config(jaeger_otlp_endpoint(ns)),
        # The container ports (and the Service's) of the receivers that are not configured.
        "ports": {
            name: {"enabled": False} for name in ("jaeger-compact", "jaeger-thrift", "jaeger-grpc", "zipkin")
        },
        "replicaCount": 2,
        "nodeSelector": node_selector,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": COLLECTOR_SERVICE}},
            }
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": restricted_security_context(IMAGE_UID),
        "serviceAccount": {"automountServiceAccountToken": False},  # it never calls the API server
    }


def badger_claim(*, storage_class: str, storage_gib: int) -> dict[str, Any]:
    """Jaeger's Badger volume, rendered by the release (the chart mounts volumes, it claims none)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": BADGER_CLAIM, "labels": labels(JAEGER_SERVICE)},
        "spec": {
            "storageClassName": storage_class,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": f"{storage_gib}Gi"}},
        },
    }


def jaeger_values(
    *, trace_retention_hours: int, storage_class: str, storage_gib: int, node_selector: dict[str, str]
) -> dict[str, Any]:
    """One replica (Badger is a single-process store on one volume), replaced by Recreate: the chart's
    default strategy, which frees the ReadWriteOnce volume before the next pod mounts it."""
    config = jaeger_config(trace_retention_hours=trace_retention_hours)
    # The chart stamps no checksum of its ConfigMap on the pod: without this label, a changed retention
    # would update the ConfigMap and leave the running pod on the old one until something restarts it.
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:32]
    return {
        "userconfig": config,
        "jaeger": {
            "podLabels": {CONFIG_DIGEST_LABEL: digest},
            "image": {
                "registry": JAEGER_IMAGE.registry,
                "repository": JAEGER_IMAGE.repository,
                "tag": JAEGER_IMAGE.tag,
            },
            "replicas": 1,
            "nodeSelector": node_selector,
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
            # The volume is written as the image's user (the chart's pod context: fsGroup 10001).
            "securityContext": restricted_security_context(IMAGE_UID),
            "serviceAccount": {"automountServiceAccountToken": False},
            "extraVolumes": [{"name": "data", "persistentVolumeClaim": {"claimName": BADGER_CLAIM}}],
            "extraVolumeMounts": [{"name": "data", "mountPath": BADGER_DIR}],
        },
        "extraObjects": [badger_claim(storage_class=storage_class, storage_gib=storage_gib)],
    }


def fluent_bit_values(*, region: str, log_group: str, role_arn: pulumi.Input[str]) -> dict[str, Any]:
    """On every node, GPU nodes and their taint included: that is where Triton's logs are."""
    return {
        "image": {
            "repository": f"{FLUENT_BIT_IMAGE.registry}/{FLUENT_BIT_IMAGE.repository}",
            "tag": FLUENT_BIT_IMAGE.tag,
        },
        "testFramework": {"enabled": False},  # `helm test`'s pod pulls busybox:latest from Docker Hub
        # IRSA: EKS injects a web-identity token for the log-shipping role into the pods; no keys.
        "serviceAccount": {"annotations": {IRSA_ANNOTATION: role_arn}},
        "priorityClassName": "system-node-critical",
        "tolerations": [{"operator": "Exists"}],
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        # Container logs are root's files (0640): read as root, nothing more.
        "securityContext": {
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "metricsPort": FLUENT_BIT_HTTP_PORT,
        "config": fluent_bit_config(region=region, log_group=log_group),
        # The node's logs read-only (the chart's default mounts them writable, with Docker's folder
        # and the machine id, which containerd nodes and this configuration do not use).
        "daemonSetVolumes": [
            {"name": "varlog", "hostPath": {"path": "/var/log", "type": "Directory"}},
            {"name": "state", "hostPath": {"path": FLUENT_BIT_STATE_DIR, "type": "DirectoryOrCreate"}},
        ],
        "daemonSetVolumeMounts": [
            {"name": "varlog", "mountPath": "/var/log", "readOnly": True},
            {"name": "state", "mountPath": FLUENT_BIT_STATE_DIR},
        ],
    }


# --- the resource ---------------------------------------------------------------------------------


class Telemetry(pulumi.ComponentResource):
    """The trace pipeline (collector -> Jaeger) and log shipping (Fluent Bit -> CloudWatch Logs)."""

    namespace: str
    collector_url: str  # OTLP/HTTP traces endpoint for TritonModelService's TraceSettings
    jaeger_url: str  # Jaeger's query API: Grafana's data source
    log_group_name: str
    fluent_bit_role_arn: pulumi.Output[str]

    def __init__(self, name: str, args: TelemetryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        validate(name, args)
        super().__init__("inferstack:telemetry:Telemetry", name, None, opts)
        invoke = pulumi.InvokeOptions(parent=self)  # this component's AWS provider: its account and region
        region = args.region or aws.get_region(opts=invoke).region
        group_arn = log_group_arn(
            partition=aws.get_partition(opts=invoke).partition,
            region=region,
            account=aws.get_caller_identity(opts=invoke).account_id,
            name=log_group_name(args.cluster_name),
        )
        ns = args.namespace
        group_name = log_group_name(args.cluster_name)
        child = child_options(self, opts)

        group = aws.cloudwatch.LogGroup(
            f"{name}-containers", name=group_name, retention_in_days=args.log_retention_days, opts=child
        )
        role = service_account_role(
            f"{name}{FLUENT_BIT_ROLE_SUFFIX}",
            oidc_provider_arn=args.oidc_provider_arn,
            oidc_issuer_url=args.oidc_issuer_url,
            namespace=ns,
            service_account=FLUENT_BIT_SERVICE_ACCOUNT,
            opts=child,
        )
        role_policy = aws.iam.RolePolicy(
            f"{name}{FLUENT_BIT_ROLE_SUFFIX}",
            role=role.id,
            policy=json.dumps(log_shipping_policy(group_arn)),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(parent=role)),
        )

        ns_resource = namespace(f"{name}-ns", ns, child)
        # Each chart renders its pods' ServiceAccount and ConfigMaps itself, and helm creates those
        # kinds, one kind at a time, before any workload (the render tests check both).
        jaeger = release(
            f"{name}-{JAEGER.name}",
            JAEGER,
            namespace=ns,
            values=jaeger_values(
                trace_retention_hours=args.trace_retention_hours,
                storage_class=args.storage_class,
                storage_gib=args.trace_storage_gib,
                node_selector=args.node_selector,
            ),
            opts=child_options(self, opts, after=[ns_resource]),
        )
        # After Jaeger is ready (the release waits for its pod), so the first spans are not refused.
        release(
            f"{name}-{OPENTELEMETRY_COLLECTOR.name}",
            OPENTELEMETRY_COLLECTOR,
            namespace=ns,
            values=collector_values(ns, args.node_selector),
            opts=child_options(self, opts, after=[ns_resource, jaeger]),
        )
        # Fluent Bit's pods may write from their first line: the role's permissions and the group
        # (which the role may not create) exist before the release does.
        release(
            f"{name}-{FLUENT_BIT.name}",
            FLUENT_BIT,
            namespace=ns,
            values=fluent_bit_values(region=region, log_group=group_name, role_arn=role.arn),
            opts=child_options(self, opts, after=[ns_resource, group, role_policy]),
        )

        self.namespace = ns
        self.collector_url = collector_traces_url(ns)
        self.jaeger_url = jaeger_query_url(ns)
        self.log_group_name = group_name
        self.fluent_bit_role_arn = role.arn
        self.register_outputs(
            {
                "namespace": self.namespace,
                "collector_url": self.collector_url,
                "jaeger_url": self.jaeger_url,
                "log_group_name": self.log_group_name,
                "fluent_bit_role_arn": self.fluent_bit_role_arn,
            }
        )
