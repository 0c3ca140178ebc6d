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

The modules: ``names`` (Services, ports, the log group), ``args`` (what the component is given),
``configs`` (the files each piece reads), ``values`` (the charts' values), ``resource`` (the component).
"""

from inferstack.components.telemetry.args import (
    TelemetryArgs,
    validate,
)
from inferstack.components.telemetry.configs import (
    FLUENT_BIT_PARSERS_FILE,
    collector_config,
    fluent_bit_config,
    fluent_bit_parsers,
    jaeger_config,
    log_shipping_policy,
)
from inferstack.components.telemetry.names import (
    BADGER_CLAIM,
    BADGER_DIR,
    COLLECTOR_SERVICE,
    CONFIG_DIGEST_LABEL,
    DNS_LABEL,
    FLUENT_BIT_CONF_DIR,
    FLUENT_BIT_HTTP_PORT,
    FLUENT_BIT_ROLE_SUFFIX,
    FLUENT_BIT_SERVICE_ACCOUNT,
    FLUENT_BIT_STATE_DIR,
    HEALTH_PORT,
    IMAGE_UID,
    IRSA_ANNOTATION,
    JAEGER_QUERY_PORT,
    JAEGER_SERVICE,
    LOG_RETENTION_DAYS,
    collector_traces_url,
    jaeger_otlp_endpoint,
    jaeger_query_url,
    log_group_arn,
    log_group_name,
)
from inferstack.components.telemetry.resource import (
    Telemetry,
)
from inferstack.components.telemetry.values import (
    badger_claim,
    collector_values,
    fluent_bit_values,
    jaeger_values,
    labels,
)

__all__ = [
    "BADGER_CLAIM",
    "BADGER_DIR",
    "COLLECTOR_SERVICE",
    "CONFIG_DIGEST_LABEL",
    "DNS_LABEL",
    "FLUENT_BIT_CONF_DIR",
    "FLUENT_BIT_HTTP_PORT",
    "FLUENT_BIT_PARSERS_FILE",
    "FLUENT_BIT_ROLE_SUFFIX",
    "FLUENT_BIT_SERVICE_ACCOUNT",
    "FLUENT_BIT_STATE_DIR",
    "HEALTH_PORT",
    "IMAGE_UID",
    "IRSA_ANNOTATION",
    "JAEGER_QUERY_PORT",
    "JAEGER_SERVICE",
    "LOG_RETENTION_DAYS",
    "Telemetry",
    "TelemetryArgs",
    "badger_claim",
    "collector_config",
    "collector_traces_url",
    "collector_values",
    "fluent_bit_config",
    "fluent_bit_parsers",
    "fluent_bit_values",
    "jaeger_config",
    "jaeger_otlp_endpoint",
    "jaeger_query_url",
    "jaeger_values",
    "labels",
    "log_group_arn",
    "log_group_name",
    "log_shipping_policy",
    "validate",
]
