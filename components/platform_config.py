"""The stack config of an inferstack platform: one typed schema, spelled as Pulumi spells it.

`PlatformConfig` parses what the Pulumi engine hands a program: every ``inferstack:*`` key as a
string, objects and lists as JSON text, and numbers as strings where ``pulumi config set --path``
stored them (``"37.5"``). Unknown keys are refused at every level, the top-level namespace
included, and every error names the key in Pulumi's own spelling (``inferstack:gpu.maxPerZone``,
``inferstack:services[1].models``), so a user can fix the stack file without reading code.

The same schema writes the config reference in the README (`reference_table`), and names the stack key
behind a component's error (`stack_key`): a setting declares, beside its key, which component fields it
feeds (`Feeds`). It is longer than most modules: one section class per config object, each field with
its description, is the schema the reference and the provider are generated from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pulumi.runtime
import pulumi.runtime.config
import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from inferstack.components.alert_routing import AlertRouting, Receiver, check_routing
from inferstack.components.telemetry import LOG_RETENTION_DAYS
from inferstack.infra.errors import InvalidInput
from inferstack.infra.versions import DEFAULT_KUBERNETES_VERSION

NAMESPACE = "inferstack"
Environment = Literal["dev", "staging", "prod"]
Nat = Literal["per_zone", "single", "none"]
Placement = Literal["on-demand", "spot", "spot-with-fallback"]
Capacity = Literal["managed-node-groups", "karpenter"]


def _not_a_boolean(value: Any) -> Any:
    # A YAML `true` is an int to pydantic's lax mode; in a stack file it is a mistake.
    if isinstance(value, bool):
        raise ValueError("a number, not true or false")
    return value


@dataclass(frozen=True)
class Feeds:
    """The component fields a setting's value becomes: a component's error on one of them (or on an
    element, ``zones[2]``) is reported under the setting's stack key. A field ending in ``-`` names a
    prefix (per-zone node groups are named ``gpu-spot-<zone>``)."""

    fields: tuple[str, ...]

    def __init__(self, *fields: str) -> None:
        object.__setattr__(self, "fields", fields)


Int = Annotated[int, BeforeValidator(_not_a_boolean)]
Float = Annotated[float, BeforeValidator(_not_a_boolean)]


def _a_boolean(value: Any) -> Any:
    # pydantic's lax mode reads "yes", "on", "1" and 1 as true: in a stack file or `-c` they are typos
    # as often as not, and a boolean that means the opposite of what was meant is silent.
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ValueError("true or false")


def _a_string(value: Any) -> Any:
    # YAML reads an unquoted 1.30 as the number 1.3 and yes as true: never turn it back into text.
    if not isinstance(value, str):
        raise ValueError(f"text; YAML read this unquoted value as {type(value).__name__}: quote it")
    return value


Bool = Annotated[bool, BeforeValidator(_a_boolean)]
Str = Annotated[str, BeforeValidator(_a_string)]


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True, strict=False
    )


class ClusterConfig(_Section):
    """The EKS control plane: name, Kubernetes version, who administers it and from where."""

    name: Annotated[Str | None, Feeds("name", "cluster_name")] = Field(
        None, description="EKS cluster name; default `inferstack-<stack>`"
    )
    kubernetes_version: Annotated[Str, Feeds("version")] = Field(
        DEFAULT_KUBERNETES_VERSION, description="EKS minor version, pinned"
    )
    admin_principal_arns: Annotated[tuple[Str, ...], Feeds("admin_principal_arns")] = Field(
        (), description="IAM roles/users made cluster admins besides the identity running Pulumi"
    )
    public_access_cidrs: Annotated[tuple[Str, ...], Feeds("public_access_cidrs")] = Field(
        (), description="where `pulumi up` and kubectl reach the API from (required; public ranges)"
    )


class NetworkConfig(_Section):
    """The VPC: its range, the zones it spans and how private subnets reach the internet."""

    # A VPC too small for the subnets shows as a subnet prefix that does not fit.
    vpc_cidr: Annotated[Str, Feeds("vpc_cidr", "private_prefix", "public_prefix")] = Field(
        "10.0.0.0/16", description="the VPC's IPv4 range, /16 to /24"
    )
    zones: Annotated[Int | tuple[Str, ...], Feeds("zones")] = Field(
        3, description="how many zones (the first usable ones), or a list of zone names"
    )
    nat: Annotated[Nat, Feeds("nat")] = Field(
        "per_zone", description="NAT gateways: per_zone, single (dev) or none"
    )


class NodesConfig(_Section):
    """The system node group (CPU) that runs the platform's controllers and monitoring."""

    system_instance_types: Annotated[tuple[Str, ...], Feeds("system.instance_types")] = Field(
        ("m7i.xlarge", "m6i.xlarge"), description="CPU types of the on-demand system group"
    )


class ReservedConfig(_Section):
    """Reserved GPU capacity: Capacity Blocks for ML or On-Demand Capacity Reservations, by id."""

    kind: Literal["capacity-block", "odcr"] = Field(
        description="capacity-block (Capacity Blocks for ML) or odcr (On-Demand Capacity Reservations)"
    )
    reservation_ids: tuple[Annotated[Str, Field(pattern=r"^cr-[0-9a-f]{8}([0-9a-f]{9})?$")], ...] = Field(
        min_length=1, description="the reservations' ids (cr-...), in the stack's zones"
    )
    instance_type: Str = Field(description="the GPU instance type the reservations hold")
    instances: Int = Field(ge=1, description="instances each reservation holds")
    zone: Str | None = Field(
        None, description="the reservations' zone (managed node groups need it; Karpenter reads it)"
    )
    hourly_price: Float | None = Field(
        None, gt=0, description="price per instance-hour (a Capacity Block's); default the on-demand price"
    )


class GpuConfig(_Section):
    """GPU capacity: the on-demand and spot groups per zone, and what must survive a zone loss."""

    instance_type: Annotated[Str, Feeds("gpu.instance_types", "instance_type", "gpu-")] = Field(
        "g5.xlarge", description="on-demand GPU instance type, one group per zone"
    )
    max_per_zone: Annotated[Int, Feeds("gpu.max_size")] = Field(
        4, ge=1, description="on-demand GPU nodes per zone at most"
    )
    spot_instance_types: Annotated[tuple[Str, ...], Feeds("gpu_spot.instance_types", "gpu-spot-")] = Field(
        ("g5.xlarge", "g6.xlarge", "g4dn.xlarge"), description="spot GPU types: same GPU count and shape"
    )
    spot_max_per_zone: Annotated[Int, Feeds("gpu_spot.max_size")] = Field(
        6, ge=1, description="spot GPU nodes per zone at most"
    )
    # Too little surviving capacity shows on the node group plans as a whole.
    min_surviving_share: Annotated[Float, Feeds("min_surviving_gpu_share", "plans")] = Field(
        0.5, ge=0, lt=1, description="share of GPU capacity that must survive losing any one zone"
    )
    reserved: ReservedConfig | None = Field(None, description="reserved GPU capacity, used before any other")


class CanaryConfig(_Section):
    """A canary release: two versions of one model, split per request, with its alert margins."""

    model: Str = Field(description="which of the service's models runs a canary")
    stable_version: Int = Field(ge=1, description="the version most requests go to")
    canary_version: Int = Field(ge=1, description="the version under trial")
    weight_percent: Float = Field(5.0, ge=0, le=100, description="share of requests the canary answers")
    mirror_percent: Float = Field(0.0, ge=0, le=100, description="share of stable requests mirrored")
    failure_ratio_margin: Float = Field(0.01, ge=0, description="alert: failure ratio over stable's by")
    p99_margin_ms: Float = Field(25.0, ge=0, description="alert: canary p99 above stable's by (ms)")


class ServiceConfig(_Section):
    """One Triton model service: its models, where they are in the bucket, its size and autoscaling."""

    name: Str = Field(description="service name: Kubernetes namespace, Services, IAM role")
    models: tuple[Str, ...] = Field(description="Triton model names to load (a list, even of one)")
    prefix: Str = Field(description="the service's folder in the model bucket")
    min_replicas: Int = Field(3, ge=1, description="replicas at least (prod: one more than a zone holds)")
    max_replicas: Int = Field(12, ge=1, description="replicas at most")
    placement: Placement = Field("spot-with-fallback", description="on-demand, spot or spot-with-fallback")
    queue_time_target_ms: Float = Field(50.0, gt=0, description="KEDA target: average queue time per request")
    pending_requests_per_replica: Float = Field(16.0, gt=0, description="KEDA target: pending requests")
    gpu_utilization_target: Float | None = Field(
        None, gt=0, le=100, description="KEDA target: GPU utilisation percent (off when unset)"
    )
    canary: CanaryConfig | None = Field(None, description="a canary version; promote or roll back by editing")
    repository: Str | None = Field(
        None,
        description="a built model repository (`inferstack models build` output), relative to the stack "
        "files: `pulumi up` ships its served versions into the prefix before the service starts; unset, "
        "publish with `inferstack models publish` (pods wait for it)",
    )
    model_cache_gib: Float | None = Field(
        None,
        gt=0,
        description="the pod's model cache (GiB); default twice the served versions' size with a "
        "repository, 40 without",
    )
    expected_request_bytes: Int = Field(
        16 << 10, ge=1, description="the usual HTTP request body (bytes): sizes the request front's CPU"
    )
    expected_requests_per_second: Float = Field(
        100.0, gt=0, description="requests per second one replica takes at the busiest: sizes the front's CPU"
    )
    front_time_target_ms: Float | None = Field(
        None, gt=0, description="KEDA target: time a request spends in the request front (off when unset)"
    )
    log_verbose: Int = Field(
        0, ge=0, le=1, description="Triton --log-verbose: 0 no line per request, 1 ~1.7 KB a request"
    )
    request_log: Bool = Field(
        True, description="the request front's JSON line per HTTP inference request, with its id (~186 B)"
    )


class TelemetryConfig(_Section):
    """Traces (OpenTelemetry Collector, Jaeger) and logs (Fluent Bit to CloudWatch)."""

    enabled: Bool = Field(True, description="traces (collector, Jaeger) and log shipping (Fluent Bit)")
    sample_rate: Float = Field(
        0.01, gt=0, le=1, description="share of requests Triton traces unasked (a traceparent always is)"
    )
    log_retention_days: Annotated[Int, Feeds("log_retention_days")] = Field(
        30, description="CloudWatch Logs retention: 1, 3, 5, 7, 14, 30, 60, 90 ... days"
    )
    trace_retention_hours: Annotated[Int, Feeds("trace_retention_hours")] = Field(
        72, ge=1, description="how long Jaeger keeps spans"
    )

    @pydantic.field_validator("log_retention_days")
    @classmethod
    def _a_cloudwatch_retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(f"one of CloudWatch's retentions {LOG_RETENTION_DAYS}")
        return value


class FailoverConfig(_Section):
    """A standby stack's pairing with its primary: DNS failover of one service across regions."""

    primary_stack: Str = Field(
        description="the primary's stack (name, or org/project/name); this one is its standby"
    )
    primary_region: Str = Field(description="the primary stack's region")
    service: Str = Field(description="the service whose endpoint fails over")
    zone: Str = Field(description="your public Route 53 hosted zone, where the failover record goes")
    record_name: Str | None = Field(None, description="the failover record; default `<service>.<zone>`")
    ttl: Int = Field(60, description="the record's TTL in seconds")
    health_check_interval: Int = Field(10, description="Route 53 health check interval: 10 or 30 s")
    failure_threshold: Int = Field(3, description="failed checks in a row before traffic moves")
    replication_time_control: Bool = Field(True, description="S3 RTC: replicas within 15 minutes")
    source_ranges: tuple[Str, ...] = Field(
        description="CIDRs that may call the endpoints (required; Route 53's health checkers are added)"
    )
    certificate_arns: tuple[Str, ...] = Field(
        description="ACM certificates for the endpoints' TLS, one in each region of the pair (required)"
    )


class ReceiverConfig(_Section):
    """One place alerts can go: an SNS topic, a PagerDuty key or a webhook (Slack format with a channel)."""

    name: Str = Field(description="the receiver's name, as the severity lists name it")
    sns_topic_arn: Str | None = Field(
        None, description="an SNS topic (Alertmanager publishes with its own role)"
    )
    pagerduty_routing_key: Str | None = Field(
        None, description="PagerDuty Events v2 key (secret config only)"
    )
    webhook_url: Str | None = Field(None, description="an https webhook (secret config only)")
    slack_channel: Str | None = Field(None, description="with webhookUrl: send Slack-format messages here")


class AlertsConfig(_Section):
    """Alertmanager's routing: the receivers, and which of them each severity (P0, P1, P2) reaches."""

    receivers: tuple[ReceiverConfig, ...] = Field((), description="where alerts can go")
    p0: tuple[Str, ...] = Field((), description="receivers paged for P0 (service down)")
    p1: tuple[Str, ...] = Field((), description="receivers told of P1 (users feel it)")
    p2: tuple[Str, ...] = Field((), description="receivers told of P2 (waste, headroom)")

    def routing(self) -> AlertRouting:
        return AlertRouting(
            receivers=tuple(Receiver(**r.model_dump()) for r in self.receivers),
            by_severity={"P0": self.p0, "P1": self.p1, "P2": self.p2},
        )


class PlatformConfig(_Section):
    """The whole stack config of one environment (the ``inferstack:*`` keys of a stack file)."""

    environment: Environment = Field("dev", description="dev, staging or prod: sets the prod checks")
    capacity: Capacity = Field(
        "managed-node-groups",
        description="GPU nodes from managed-node-groups (cluster-autoscaler) or karpenter (NodePools)",
    )
    cluster: ClusterConfig = ClusterConfig()
    network: NetworkConfig = NetworkConfig()
    nodes: NodesConfig = NodesConfig()
    gpu: GpuConfig = GpuConfig()
    services: tuple[ServiceConfig, ...] = Field((), description="the model services, one per list entry")
    telemetry: TelemetryConfig = TelemetryConfig()
    alerts: AlertsConfig = Field(AlertsConfig(), description="alert receivers per severity")
    failover: FailoverConfig | None = Field(
        None, description="set on a standby stack: pairs it with its primary"
    )

    def cluster_name(self, stack: str) -> str:
        return self.cluster.name or f"inferstack-{stack}"


def _engine_value(text: Any) -> Any:
    """A config value as the engine stores it: objects and lists as JSON text, scalars as text."""
    if isinstance(text, str) and text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def _key(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as Pulumi spells the key: ``inferstack:services[1].models``."""
    key = f"{NAMESPACE}:{loc[0]}" if loc else NAMESPACE
    for part in loc[1:]:
        key += f"[{part}]" if isinstance(part, int) else f".{part}"
    return key


def _walk(loc: tuple[int | str, ...]) -> tuple[tuple[int | str, ...], type[BaseModel], FieldInfo | None]:
    """The keys of a location (without pydantic's union-member tags), the section it ends in, and
    the field it names."""
    model: type[BaseModel] = PlatformConfig
    keys: list[int | str] = []
    field: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            keys.append(part)
            continue
        if field is not None and section_type(field.annotation) is None:
            continue  # past a value's own key: pydantic's tag of a union member or a validator
        # A document may use either spelling (the provider's args come in the Python one).
        named = next((f for n, f in model.model_fields.items() if part in (f.alias, n)), None)
        if named is None:
            keys.append(part)  # an unknown key: name it as given
            continue
        keys.append(named.alias or part)
        field = named
        model = section_type(named.annotation) or model
    return tuple(keys), model, field


def section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def engine_config() -> dict[str, Any]:
    """Every config key the Pulumi engine handed this program, whatever its namespace."""
    return {**pulumi.runtime.get_config_env(), **pulumi.runtime.config.CONFIG.get()}


def parse_config(config: Mapping[str, Any], *, namespace: str = NAMESPACE) -> PlatformConfig:
    """The ``<namespace>:*`` keys of an engine config map, typed and checked; other namespaces ignored."""
    raw: dict[str, Any] = {}
    for key, value in config.items():
        owner, _, name = key.partition(":")
        if owner != namespace:
            continue
        if "." in name or "[" in name:
            top = name.split(".")[0].split("[")[0]
            raise InvalidInput(
                key,
                value,
                f"set inside the {namespace}:{top} object: `pulumi config set --path '{key}' ...` "
                "(without --path Pulumi stores a new top-level key that nothing reads)",
            )
        raw[name] = _engine_value(value)
    parsed = validate_config(raw)
    check_alerts(parsed.alerts, f"{namespace}:alerts", pulumi.runtime.config.is_config_secret)
    return parsed


def validate_config(raw: Mapping[str, Any]) -> PlatformConfig:
    """Settings as a document (keys in the stack file's or the Python spelling), typed and checked; an
    error names the key as the stack file spells it."""
    try:
        parsed = PlatformConfig.model_validate(raw)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        keys, section, field = _walk(tuple(first["loc"]))
        if first["type"] == "missing":
            raise InvalidInput(
                _key(keys), None, f"required: {field.description if field else 'a value'}"
            ) from None
        if first["type"] == "extra_forbidden":
            known = ", ".join(f.alias or n for n, f in section.model_fields.items())
            raise InvalidInput(
                _key(keys), first["input"], f"not a setting here; the keys are {known}"
            ) from None
        what = f" ({field.description})" if field is not None and field.description else ""
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidInput(_key(keys), first.get("input"), f"{message}{what}") from None
    return parsed


def check_alerts(alerts: AlertsConfig, key: str, is_secret: Callable[[str], bool]) -> None:
    """Receivers are sound, and their credentials come from secret config: a routing key or webhook
    URL in plain config would sit in the stack file, the plan and the state for anyone to read."""
    routing = alerts.routing()
    check_routing(routing, key)
    if any(r.holds_secret for r in routing.receivers) and not is_secret(key):
        raise InvalidInput(
            key,
            "(plain text)",
            "routing keys and webhook URLs from secret config: "
            f"`pulumi config set --secret --path '{key}.receivers[0].webhookUrl' <url>`",
        )
