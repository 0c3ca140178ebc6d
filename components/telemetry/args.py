"""What the Telemetry component is given, and its checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from inferstack.components.storage import GP3
from inferstack.components.telemetry.names import (
    DNS_LABEL,
    FLUENT_BIT_ROLE_SUFFIX,
    LOG_RETENTION_DAYS,
    log_group_name,
)
from inferstack.infra.errors import InvalidInput
from inferstack.infra.names import (
    IAM_ROLE_NAME_MAX,
    check_derived_name,
    check_log_group_name,
)
from inferstack.infra.nodegroups import NODE_ROLE_LABEL


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
    if not DNS_LABEL.match(args.namespace):
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
