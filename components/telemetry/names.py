"""What the telemetry releases are called and where they answer: Services, ports, paths, the log group."""

from __future__ import annotations

import re

from inferstack.components.charts import (
    FLUENT_BIT,
    JAEGER,
    OPENTELEMETRY_COLLECTOR,
)
from inferstack.components.triton_telemetry import (
    OTLP_GRPC_PORT,
    OTLP_HTTP_PORT,
    TRACES_PATH,
)

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
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


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
