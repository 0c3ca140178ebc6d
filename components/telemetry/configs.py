"""The telemetry's own configuration files (pure): the collector's pipeline, Jaeger v2's config,
Fluent Bit's inputs, filters, parsers and output, and the log shipper's IAM policy."""

from __future__ import annotations

from typing import Any

from inferstack.components.telemetry.names import (
    BADGER_DIR,
    FLUENT_BIT_CONF_DIR,
    FLUENT_BIT_HTTP_PORT,
    FLUENT_BIT_STATE_DIR,
    HEALTH_PORT,
    JAEGER_QUERY_PORT,
)
from inferstack.components.triton_telemetry import (
    LOG_LINE_PATTERN,
    LOG_TIME_FORMAT,
    OTLP_GRPC_PORT,
    OTLP_HTTP_PORT,
    fluent_bit_throttle,
    onigmo_pattern,
)

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


# What one node's Fluent Bit ships at most, on average over a minute: a service left at
# --log-verbose=1 (11 lines a request) or a crash loop cannot flood CloudWatch's ingestion bill.
FLUENT_BIT_RECORDS_PER_S = 500


def _filter_entry(entry: dict[str, object]) -> str:
    """A YAML-config filter entry as a classic-config section (keys are case-insensitive in both)."""
    return _section(
        "FILTER",
        [
            (key.capitalize(), str(value).lower() if isinstance(value, bool) else str(value))
            for key, value in entry.items()
        ],
    )


# The parsers the filter tries on each line, in order; a line neither reads passes unchanged.
FLUENT_BIT_PARSER_NAMES = ("triton", "front_access")


def fluent_bit_parsers() -> str:
    """Triton's log line as fields (request id included), and the request front's JSON line per request
    (components.request_front's request log), in Fluent Bit's parsers file format."""
    triton, front = FLUENT_BIT_PARSER_NAMES
    return "\n\n".join(
        [
            _section(
                "PARSER",
                [
                    ("Name", triton),
                    ("Format", "regex"),
                    ("Regex", onigmo_pattern(LOG_LINE_PATTERN)),
                    ("Time_Key", "time"),
                    ("Time_Format", LOG_TIME_FORMAT),
                    ("Time_Keep", "On"),
                    ("Types", "thread:integer"),
                ],
            ),
            # Its fields as they are: request_id, model, status, sizes and seconds; its own `time` stays a
            # field beside the record's (the tail's read time, within the flush interval of it).
            _section("PARSER", [("Name", front), ("Format", "json")]),
        ]
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
            # Triton's lines become time, level, thread, source, request_id and message, the request
            # front's its JSON fields, beside the pod's metadata (Reserve_Data); other lines pass unchanged.
            _section(
                "FILTER",
                [
                    ("Name", "parser"),
                    ("Match", "kube.*"),
                    ("Key_Name", "log"),
                    *(("Parser", name) for name in FLUENT_BIT_PARSER_NAMES),
                    ("Reserve_Data", "On"),
                ],
            ),
            # Last, so that it counts the records as shipped.
            _filter_entry(fluent_bit_throttle(FLUENT_BIT_RECORDS_PER_S, match="kube.*")),
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
