"""The Telemetry component: a thin shell that installs the three releases with their values."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from inferstack.components.charts import (
    FLUENT_BIT,
    JAEGER,
    OPENTELEMETRY_COLLECTOR,
    release,
)
from inferstack.components.manifests import namespace
from inferstack.components.telemetry.args import TelemetryArgs, validate
from inferstack.components.telemetry.configs import log_shipping_policy
from inferstack.components.telemetry.names import (
    FLUENT_BIT_ROLE_SUFFIX,
    FLUENT_BIT_SERVICE_ACCOUNT,
    collector_traces_url,
    jaeger_query_url,
    log_group_arn,
    log_group_name,
)
from inferstack.components.telemetry.values import collector_values, fluent_bit_values, jaeger_values
from inferstack.infra.children import child_options
from inferstack.infra.irsa import irsa_role

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
        fluent_bit = irsa_role(
            f"{name}{FLUENT_BIT_ROLE_SUFFIX}",
            args,
            ns,
            FLUENT_BIT_SERVICE_ACCOUNT,
            policies={f"{name}{FLUENT_BIT_ROLE_SUFFIX}": json.dumps(log_shipping_policy(group_arn))},
            opts=child,
            grants_under_role=True,
        )
        role = fluent_bit.role

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
            opts=child_options(self, opts, after=[ns_resource, group, *fluent_bit.grants]),
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
