"""Telemetry: where the platform's traces and logs go.

- An **OpenTelemetry Collector** receives OTLP (gRPC 4317, HTTP 4318) from every Triton (and any
  client that exports its own spans), bounds its memory (memory_limiter), batches, and exports to
- **Jaeger v2**, one binary that takes OTLP, keeps spans in Badger on a gp3 volume for a retention
  TTL and serves the query API Grafana reads (a Jaeger data source provisioned through
  kube-prometheus-stack's values, `components.monitoring`). Jaeger rather than Tempo: Tempo's
  single binary wants object storage (S3) for anything durable, a second bucket, role and
  lifecycle; one Badger volume is enough for sampled inference traces kept for days.
- **Fluent Bit** on every node (GPU nodes included) tails the containers' logs, parses Triton's
  lines into fields with the request id (the pattern `serving.triton_logs` parses locally, from
  `components.triton_telemetry`), and ships them to one CloudWatch Logs group that this component
  creates with a retention, through IRSA: the role may create streams in and write to that group
  only. No static keys.

These are first-party manifests with pinned images, not Helm releases: the charts are not among
the vendored chart sources, and no chart repository is reachable where this is built, so they could
not be rendered by the real helm as every other release is. Each manifest is a pure function of the
args, validated against the Kubernetes schemas like the model service's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import yaml

from inferstack.components.awaits import SKIP_AWAIT, workload_timeouts
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
from inferstack.infra.irsa import trust_policy
from inferstack.infra.names import (
    IAM_ROLE_NAME_MAX,
    check_derived_name,
    check_log_group_name,
)
from inferstack.infra.nodegroups import NODE_ROLE_LABEL

# Pinned images: not pulled here (no registry is reachable); each tag is one public deployments run.
COLLECTOR_IMAGE = "otel/opentelemetry-collector:0.114.0"  # opentelemetry-collector-releases v0.114.0, core
JAEGER_IMAGE = "jaegertracing/jaeger:2.10.0"  # jaegertracing/jaeger v2.10.0, the v2 single binary
FLUENT_BIT_IMAGE = "cr.fluentbit.io/fluent/fluent-bit:3.2.2"  # fluent/fluent-bit v3.2.2
IMAGE_UID = 10001  # the collector's and Jaeger's images run as this user

COLLECTOR, JAEGER, FLUENT_BIT = "otel-collector", "jaeger", "fluent-bit"
JAEGER_QUERY_PORT = 16686  # UI and the HTTP API Grafana's Jaeger data source reads
FLUENT_BIT_HTTP_PORT = 2020
BADGER_DIR = "/badger"
FLUENT_BIT_STATE_DIR = "/var/fluent-bit/state"  # tail offsets, on the node: a restart resumes
# What CloudWatch Logs accepts as a retention (PutRetentionPolicy's enum).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557)
FLUENT_BIT_ROLE_SUFFIX = "-fluent-bit"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def collector_traces_url(ns: str) -> str:
    """The collector's OTLP/HTTP traces endpoint, as a Triton in any namespace reaches it."""
    return f"http://{COLLECTOR}.{ns}.svc:{OTLP_HTTP_PORT}{TRACES_PATH}"


def jaeger_query_url(ns: str) -> str:
    return f"http://{JAEGER}.{ns}.svc:{JAEGER_QUERY_PORT}"


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


def collector_config(jaeger_otlp_endpoint: str) -> dict[str, Any]:
    """OTLP in, memory bounded, batched, OTLP out to Jaeger."""
    return {
        "receivers": {
            "otlp": {
                "protocols": {
                    # The collector binds to localhost by default (since 0.104): pods must reach it.
                    "grpc": {"endpoint": f"0.0.0.0:{OTLP_GRPC_PORT}"},
                    "http": {"endpoint": f"0.0.0.0:{OTLP_HTTP_PORT}"},
                }
            }
        },
        "processors": {
            # First in the pipeline: refuse data (receivers answer "retry later") before the pod is
            # OOM-killed with every batch it holds. Percentages of the container's memory limit.
            "memory_limiter": {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 25},
            "batch": {"send_batch_size": 1024, "timeout": "5s"},
        },
        "exporters": {"otlp/jaeger": {"endpoint": jaeger_otlp_endpoint, "tls": {"insecure": True}}},
        "service": {
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["memory_limiter", "batch"],
                    "exporters": ["otlp/jaeger"],
                }
            }
        },
    }


def jaeger_config(*, trace_retention_hours: int) -> dict[str, Any]:
    """Jaeger v2 (2.10's schema): OTLP in, Badger on the volume with a TTL, the query API on 16686."""
    store = "badger"
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
        },
        "extensions": {
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
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"0.0.0.0:{OTLP_GRPC_PORT}"},
                    "http": {"endpoint": f"0.0.0.0:{OTLP_HTTP_PORT}"},
                }
            }
        },
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


def fluent_bit_config(*, region: str, log_group: str) -> str:
    """Tail every container's log, add its pod's metadata, parse Triton's lines, ship to CloudWatch."""
    sections = [
        _section(
            "SERVICE",
            [
                ("Flush", "5"),
                ("Log_Level", "info"),
                ("Parsers_File", "/fluent-bit/etc/conf/parsers.conf"),
                ("HTTP_Server", "On"),
                ("HTTP_Listen", "0.0.0.0"),
                ("HTTP_Port", str(FLUENT_BIT_HTTP_PORT)),
                ("Health_Check", "On"),
            ],
        ),
        _section(
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
        ),
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
        _section(
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
        ),
    ]
    return "\n\n".join(sections) + "\n"


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


# --- manifests (pure) -----------------------------------------------------------------------------


def labels(app: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/component": "telemetry", **PART_OF}


def _metadata(app: str, ns: str, **extra: Any) -> dict[str, Any]:
    return {"name": app, "namespace": ns, "labels": labels(app), **extra}


def _otlp_ports() -> list[dict[str, Any]]:
    return [
        {"name": "otlp-grpc", "containerPort": OTLP_GRPC_PORT, "protocol": "TCP"},
        {"name": "otlp-http", "containerPort": OTLP_HTTP_PORT, "protocol": "TCP"},
    ]


def config_map(app: str, ns: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(app, ns), "data": data}


def collector_config_map(ns: str) -> dict[str, Any]:
    endpoint = f"{JAEGER}.{ns}.svc:{OTLP_GRPC_PORT}"
    return config_map(COLLECTOR, ns, {"collector.yaml": yaml.safe_dump(collector_config(endpoint))})


def collector_deployment(ns: str, node_selector: dict[str, str]) -> dict[str, Any]:
    """Two stateless replicas on different nodes: a node drain does not stop the spans."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(COLLECTOR, ns),
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels(COLLECTOR)},
            "template": {
                "metadata": {"labels": labels(COLLECTOR)},
                "spec": {
                    "nodeSelector": node_selector,
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": labels(COLLECTOR)},
                        }
                    ],
                    "containers": [
                        {
                            "name": "collector",
                            "image": COLLECTOR_IMAGE,
                            "args": ["--config=/conf/collector.yaml"],
                            "ports": _otlp_ports(),
                            "readinessProbe": {"tcpSocket": {"port": "otlp-http"}, "periodSeconds": 10},
                            "livenessProbe": {"tcpSocket": {"port": "otlp-grpc"}, "periodSeconds": 20},
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "256Mi"},
                                "limits": {"memory": "512Mi"},
                            },
                            "securityContext": restricted_security_context(IMAGE_UID),
                            "volumeMounts": [{"name": "config", "mountPath": "/conf", "readOnly": True}],
                        }
                    ],
                    "volumes": [{"name": "config", "configMap": {"name": COLLECTOR}}],
                },
            },
        },
    }


def jaeger_config_map(ns: str, *, trace_retention_hours: int) -> dict[str, Any]:
    config = jaeger_config(trace_retention_hours=trace_retention_hours)
    return config_map(JAEGER, ns, {"config.yaml": yaml.safe_dump(config)})


def jaeger_stateful_set(
    ns: str, *, storage_class: str, storage_gib: int, node_selector: dict[str, str]
) -> dict[str, Any]:
    """One replica: Badger is a single-process store on one volume."""
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(JAEGER, ns),
        "spec": {
            "serviceName": JAEGER,
            "replicas": 1,
            "selector": {"matchLabels": labels(JAEGER)},
            "template": {
                "metadata": {"labels": labels(JAEGER)},
                "spec": {
                    "nodeSelector": node_selector,
                    # The volume is written as the image's user.
                    "securityContext": {"fsGroup": IMAGE_UID, "runAsNonRoot": True},
                    "containers": [
                        {
                            "name": "jaeger",
                            "image": JAEGER_IMAGE,
                            "args": ["--config=/conf/config.yaml"],
                            "ports": [
                                *_otlp_ports(),
                                {"name": "query", "containerPort": JAEGER_QUERY_PORT, "protocol": "TCP"},
                            ],
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": "query"},
                                "periodSeconds": 10,
                            },
                            "livenessProbe": {"tcpSocket": {"port": "otlp-grpc"}, "periodSeconds": 20},
                            "resources": {
                                "requests": {"cpu": "250m", "memory": "512Mi"},
                                "limits": {"memory": "2Gi"},
                            },
                            "securityContext": restricted_security_context(IMAGE_UID),
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/conf", "readOnly": True},
                                {"name": "data", "mountPath": BADGER_DIR},
                            ],
                        }
                    ],
                    "volumes": [{"name": "config", "configMap": {"name": JAEGER}}],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data", "labels": labels(JAEGER)},
                    "spec": {
                        "storageClassName": storage_class,
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": f"{storage_gib}Gi"}},
                    },
                }
            ],
        },
    }


def service(app: str, ns: str, ports: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(app, ns),
        "spec": {
            "type": "ClusterIP",
            "selector": labels(app),
            "ports": [{"name": n, "port": p, "targetPort": n, "protocol": "TCP"} for n, p in ports],
        },
    }


def fluent_bit_config_map(ns: str, *, region: str, log_group: str) -> dict[str, Any]:
    data = {
        "fluent-bit.conf": fluent_bit_config(region=region, log_group=log_group),
        "parsers.conf": fluent_bit_parsers() + "\n",
    }
    return config_map(FLUENT_BIT, ns, data)


def fluent_bit_service_account(ns: str, role_arn: pulumi.Input[str]) -> dict[str, Any]:
    """IRSA: EKS injects a web-identity token for the log-shipping role; there are no keys."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(FLUENT_BIT, ns, annotations={"eks.amazonaws.com/role-arn": role_arn}),
    }


def fluent_bit_cluster_role() -> dict[str, Any]:
    """The kubernetes filter reads each log's pod and namespace: read-only, those two kinds."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": FLUENT_BIT, "labels": labels(FLUENT_BIT)},
        "rules": [
            {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]}
        ],
    }


def fluent_bit_cluster_role_binding(ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": FLUENT_BIT, "labels": labels(FLUENT_BIT)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FLUENT_BIT},
        "subjects": [{"kind": "ServiceAccount", "name": FLUENT_BIT, "namespace": ns}],
    }


def fluent_bit_daemon_set(ns: str) -> dict[str, Any]:
    """On every node, GPU nodes and their taint included: that is where Triton's logs are."""
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        # Its rollout waits for a pod on every node the autoscaler may add, one at a time; nothing
        # later in the plan needs its logs shipped first.
        "metadata": _metadata(FLUENT_BIT, ns, annotations={SKIP_AWAIT: "true"}),
        "spec": {
            "selector": {"matchLabels": labels(FLUENT_BIT)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels(FLUENT_BIT)},
                "spec": {
                    "serviceAccountName": FLUENT_BIT,
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [
                        {
                            "name": "fluent-bit",
                            "image": FLUENT_BIT_IMAGE,
                            "args": ["--config=/fluent-bit/etc/conf/fluent-bit.conf"],
                            "ports": [
                                {"name": "http", "containerPort": FLUENT_BIT_HTTP_PORT, "protocol": "TCP"}
                            ],
                            "livenessProbe": {
                                "httpGet": {"path": "/api/v1/health", "port": "http"},
                                "periodSeconds": 30,
                            },
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "64Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                            # Container logs are root's files (0640): read as root, nothing more.
                            "securityContext": {
                                "runAsUser": 0,
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/fluent-bit/etc/conf", "readOnly": True},
                                {"name": "varlog", "mountPath": "/var/log", "readOnly": True},
                                {"name": "state", "mountPath": FLUENT_BIT_STATE_DIR},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": FLUENT_BIT}},
                        {"name": "varlog", "hostPath": {"path": "/var/log", "type": "Directory"}},
                        {
                            "name": "state",
                            "hostPath": {"path": FLUENT_BIT_STATE_DIR, "type": "DirectoryOrCreate"},
                        },
                    ],
                },
            },
        },
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

        aws.cloudwatch.LogGroup(
            f"{name}-containers", name=group_name, retention_in_days=args.log_retention_days, opts=child
        )
        trust = pulumi.Output.all(args.oidc_provider_arn, args.oidc_issuer_url).apply(
            lambda v: json.dumps(trust_policy(v[0], v[1], ns, FLUENT_BIT))
        )
        role = aws.iam.Role(f"{name}{FLUENT_BIT_ROLE_SUFFIX}", assume_role_policy=trust, opts=child)
        aws.iam.RolePolicy(
            f"{name}{FLUENT_BIT_ROLE_SUFFIX}",
            role=role.id,
            policy=json.dumps(log_shipping_policy(group_arn)),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(parent=role)),
        )

        ns_resource = namespace(f"{name}-ns", ns, child)
        in_ns = child_options(self, opts, after=[ns_resource])
        maps = {
            COLLECTOR: collector_config_map(ns),
            JAEGER: jaeger_config_map(ns, trace_retention_hours=args.trace_retention_hours),
            FLUENT_BIT: fluent_bit_config_map(ns, region=region, log_group=group_name),
        }
        config_maps = {
            app: k8s.core.v1.ConfigMap(
                f"{name}-{app}-config", metadata=built["metadata"], data=built["data"], opts=in_ns
            )
            for app, built in maps.items()
        }

        def mounting(app: str, *also: pulumi.Resource, **timeouts: str) -> pulumi.ResourceOptions:
            """A workload waits for the ConfigMap (and account) its pods mount or run as, for as long as
            its pods take."""
            return pulumi.ResourceOptions.merge(
                in_ns,
                pulumi.ResourceOptions(
                    depends_on=[config_maps[app], *also],
                    custom_timeouts=pulumi.CustomTimeouts(**timeouts) if timeouts else None,
                ),
            )

        jaeger = jaeger_stateful_set(
            ns,
            storage_class=args.storage_class,
            storage_gib=args.trace_storage_gib,
            node_selector=args.node_selector,
        )
        k8s.apps.v1.StatefulSet(
            f"{name}-{JAEGER}",
            metadata=jaeger["metadata"],
            spec=jaeger["spec"],
            opts=mounting(JAEGER, **workload_timeouts(jaeger["spec"], 1, stateful=True)),
        )
        collector = collector_deployment(ns, args.node_selector)
        k8s.apps.v1.Deployment(
            f"{name}-{COLLECTOR}",
            metadata=collector["metadata"],
            spec=collector["spec"],
            opts=mounting(COLLECTOR, **workload_timeouts(collector["spec"], collector["spec"]["replicas"])),
        )
        otlp = [("otlp-grpc", OTLP_GRPC_PORT), ("otlp-http", OTLP_HTTP_PORT)]
        for app, ports in ((JAEGER, [*otlp, ("query", JAEGER_QUERY_PORT)]), (COLLECTOR, otlp)):
            built = service(app, ns, ports)
            k8s.core.v1.Service(f"{name}-{app}", metadata=built["metadata"], spec=built["spec"], opts=in_ns)

        account = fluent_bit_service_account(ns, role.arn)
        fluent_bit_account = k8s.core.v1.ServiceAccount(
            f"{name}-{FLUENT_BIT}", metadata=account["metadata"], opts=in_ns
        )
        cluster_role = fluent_bit_cluster_role()
        k8s.rbac.v1.ClusterRole(
            f"{name}-{FLUENT_BIT}", metadata=cluster_role["metadata"], rules=cluster_role["rules"], opts=child
        )
        binding = fluent_bit_cluster_role_binding(ns)
        k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-{FLUENT_BIT}",
            metadata=binding["metadata"],
            role_ref=binding["roleRef"],
            subjects=binding["subjects"],
            opts=in_ns,
        )
        daemon_set = fluent_bit_daemon_set(ns)
        k8s.apps.v1.DaemonSet(
            f"{name}-{FLUENT_BIT}",
            metadata=daemon_set["metadata"],
            spec=daemon_set["spec"],
            # Its pods run as the IRSA account: created first, or the API server refuses them.
            opts=mounting(FLUENT_BIT, fluent_bit_account),
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
