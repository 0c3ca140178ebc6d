"""The standby half of an active/passive pair: the optional ``inferstack:failover`` section.

A standby stack (``prod-dr``) is a whole platform in another region, plus what ties it to the
primary stack: the primary's model bucket replicates into this stack's, each region's Triton gets an
internet-facing NLB (TLS, open only to the configured source ranges and Route 53's health checkers),
and Route 53 answers ``recordName`` with the primary's NLB while it passes its health checks, this
region's once it does not. The primary stack is read through a stack reference (its
``model_bucket`` and ``kubeconfig`` outputs) and is not changed: deleting the standby stack removes
the pairing and nothing of the primary's own.
"""

from __future__ import annotations

import inspect
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from inferstack.components.awaits import LOAD_BALANCER_S, MARGIN_S, WAIT_FOR, duration
from inferstack.components.model_service import HEALTH_READY, labels
from inferstack.components.platform_config import FailoverConfig
from inferstack.infra.aws_identity import provider_settings
from inferstack.infra.errors import InvalidInput
from inferstack.infra.failover import RegionalFailover, RegionalFailoverArgs, check_regions
from inferstack.infra.failover_timing import check_timing
from inferstack.infra.model_store import ModelStore

TLS_PORT = 443
# Modern TLS only (1.3 and 1.2), as AWS names the NLB policy.
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


def inherited_settings(engine: Mapping[str, Any]) -> dict[str, Any]:
    """The stack's ``aws:*`` settings (profile, role, default tags, allowed accounts...) for the
    explicit per-region providers, which would otherwise read none of them."""
    accepted = set(inspect.signature(aws.ProviderArgs.__init__).parameters) - {"self"}
    return provider_settings(engine, accepted)


def record_name(failover: FailoverConfig) -> str:
    return (failover.record_name or f"{failover.service}.{failover.zone}").rstrip(".")


def check_failover(
    failover: FailoverConfig, *, region: str, services: Sequence[str], stack: str | None = None
) -> None:
    """What RegionalFailover would reject, named by config key, before anything is registered."""
    if stack is not None and failover.primary_stack.rsplit("/", 1)[-1] == stack:
        raise InvalidInput(
            "inferstack:failover.primaryStack",
            failover.primary_stack,
            f"another stack than this one ({stack}): a standby paired with itself has no primary",
        )
    keys = {
        "standby_region": "aws:region",
        "primary_region": "inferstack:failover.primaryRegion",
        "health_check_interval_s": "inferstack:failover.healthCheckInterval",
        "failure_threshold": "inferstack:failover.failureThreshold",
        "ttl_s": "inferstack:failover.ttl",
    }
    try:
        check_regions(failover.primary_region, region)
        check_timing(failover.health_check_interval, failover.failure_threshold, failover.ttl)
    except InvalidInput as error:
        raise InvalidInput(keys[error.field], error.value, error.allowed) from None
    if failover.service not in services:
        raise InvalidInput(
            "inferstack:failover.service", failover.service, f"one of this stack's services: {list(services)}"
        )
    if not record_name(failover).endswith(f".{failover.zone.rstrip('.')}"):
        raise InvalidInput(
            "inferstack:failover.recordName", failover.record_name, f"a name in {failover.zone}"
        )
    if not failover.source_ranges:
        raise InvalidInput(
            "inferstack:failover.sourceRanges",
            [],
            "the CIDRs of the endpoints' clients (0.0.0.0/0 only on purpose)",
        )
    for cidr in failover.source_ranges:
        try:
            ipaddress.ip_network(cidr)
        except ValueError:
            raise InvalidInput(
                "inferstack:failover.sourceRanges", cidr, "CIDRs such as 203.0.113.0/24"
            ) from None
    certificate_arns(failover, region)


def certificate_arns(failover: FailoverConfig, region: str) -> dict[str, str]:
    """The ACM certificate of each region of the pair: a certificate serves only its own region."""
    by_region: dict[str, str] = {}
    for arn in failover.certificate_arns:
        parts = arn.split(":")
        if len(parts) != 6 or parts[2] != "acm" or not parts[5].startswith("certificate/"):
            raise InvalidInput("inferstack:failover.certificateArns", arn, "ACM certificate ARNs")
        by_region[parts[3]] = arn
    wanted = {"primary": failover.primary_region, "standby": region}
    missing = [r for r in wanted.values() if r not in by_region]
    if missing:
        raise InvalidInput(
            "inferstack:failover.certificateArns",
            list(failover.certificate_arns),
            f"one ACM certificate in each of {', '.join(wanted.values())} (none in {', '.join(missing)})",
        )
    return {key: by_region[r] for key, r in wanted.items()}


def endpoint_service(
    service: str, *, source_ranges: pulumi.Input[Sequence[str]], certificate_arn: str
) -> dict[str, Any]:
    """An internet-facing NLB in front of the service's Triton pods, for Route 53 to check and clients
    to call; made by the cluster's AWS cloud provider, no controller needed. TLS ends at the NLB (an
    ACM certificate) and only ``source_ranges`` reach it: the cloud provider opens the nodes' security
    group to those ranges alone (the NLB keeps the client's address)."""
    prefix = "service.beta.kubernetes.io/aws-load-balancer"
    return {
        "metadata": {
            "name": f"{service}-public",
            "namespace": service,
            "labels": labels(service),
            "annotations": {
                # Pulumi waits for the NLB's address only: the pods behind it may be another region's
                # (the primary's Service, made from the standby stack) or still starting.
                WAIT_FOR: "jsonpath={.status.loadBalancer.ingress}",
                f"{prefix}-type": "nlb",
                f"{prefix}-ssl-cert": certificate_arn,
                f"{prefix}-ssl-ports": "https",
                f"{prefix}-ssl-negotiation-policy": TLS_POLICY,
                # The NLB sends traffic only to nodes whose Triton is ready, as Route 53 checks it.
                f"{prefix}-healthcheck-protocol": "http",
                f"{prefix}-healthcheck-path": HEALTH_READY,
            },
        },
        "spec": {
            "type": "LoadBalancer",
            "selector": labels(service),
            "ports": [{"name": "https", "port": TLS_PORT, "targetPort": "http", "protocol": "TCP"}],
            "loadBalancerSourceRanges": source_ranges,
        },
    }


def reachable_from(failover: FailoverConfig) -> pulumi.Output[list[str]]:
    """The configured client ranges plus Route 53's health checkers (AWS publishes their ranges):
    without them every check fails and traffic flips to the other region."""
    checkers = aws.get_ip_ranges_output(services=["route53_healthchecks"])
    return checkers.cidr_blocks.apply(lambda blocks: sorted({*failover.source_ranges, *blocks}))


def _hostname(name: str, service: k8s.core.v1.Service) -> pulumi.Output[str]:
    """The NLB's DNS name: Pulumi waits for a LoadBalancer Service's ingress before it is created."""

    def first(status: k8s.core.v1.outputs.ServiceStatus | None) -> str:
        ingress = (status.load_balancer.ingress if status and status.load_balancer else None) or []
        if not ingress or not ingress[0].hostname:
            raise RuntimeError(f"Service {name} has no load balancer hostname: {status}")
        return ingress[0].hostname

    return service.status.apply(first)


def build_failover(
    failover: FailoverConfig,
    *,
    region: str,
    store: ModelStore,
    triton: pulumi.Resource,
    provider: k8s.Provider,
    aws_settings: Mapping[str, Any],
) -> dict[str, Any]:
    """Register the pairing with the primary stack; returns the ``failover`` stack output.

    ``aws_settings``: the stack's own AWS provider settings (``inherited_settings``), so both regions'
    providers act as the identity, with the tags and account guard, that the stack's config names."""
    primary_stack = pulumi.StackReference(failover.primary_stack)
    primary = aws.Provider("primary-region", region=failover.primary_region, **aws_settings)
    standby = aws.Provider("standby-region", region=region, **aws_settings)
    primary_cluster = k8s.Provider("primary-cluster", kubeconfig=primary_stack.require_output("kubeconfig"))
    ranges = reachable_from(failover)
    certificates = certificate_arns(failover, region)
    manifests = {
        key: endpoint_service(failover.service, source_ranges=ranges, certificate_arn=certificates[key])
        for key in certificates
    }
    load_balancer = duration(LOAD_BALANCER_S + MARGIN_S)
    endpoints = {
        key: _hostname(
            f"{failover.service}-public in the {key} region",
            k8s.core.v1.Service(
                f"{failover.service}-public-{key}",
                metadata=manifests[key]["metadata"],
                spec=manifests[key]["spec"],
                opts=pulumi.ResourceOptions(
                    provider=cluster,
                    depends_on=after,
                    custom_timeouts=pulumi.CustomTimeouts(create=load_balancer, update=load_balancer),
                ),
            ),
        )
        for key, cluster, after in (("primary", primary_cluster, []), ("standby", provider, [triton]))
    }
    zone = aws.route53.get_zone_output(name=failover.zone.rstrip("."), private_zone=False)
    pair = RegionalFailover(
        "failover",
        RegionalFailoverArgs(
            primary_region=failover.primary_region,
            standby_region=region,
            primary_bucket=primary_stack.require_output("model_bucket"),
            standby_bucket=store.bucket_name,
            primary_endpoint=endpoints["primary"],
            standby_endpoint=endpoints["standby"],
            zone_id=zone.zone_id,
            record_name=record_name(failover),
            ttl_s=failover.ttl,
            health_check_interval_s=failover.health_check_interval,
            failure_threshold=failover.failure_threshold,
            replication_time_control=failover.replication_time_control,
            health_check_type="HTTPS",
            health_check_port=TLS_PORT,
            after=[store],  # which versions its bucket
        ),
        primary=primary,
        standby=standby,
    )
    return {
        "record": pair.record_name,
        "rto_s": pair.rto_s,
        "rpo_s": pair.rpo_s,
        "endpoints": endpoints,
    }
