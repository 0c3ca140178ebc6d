"""A monthly cost estimate of a stack, from the resources its program registers and a dated price table.

Pure: it prices a stack's footprint (``infra.footprint``, read off the resources its program registers)
with a price table (``prices.json`` beside this module, or a file of the same shape that overrides it),
so a stack is priced before anything is deployed, and the arithmetic can be checked by hand.

What is counted, per month of ``hours_per_month`` hours:
- control plane: each EKS cluster's hourly fee;
- NAT: each NAT gateway's hour and each Elastic IP's public-IPv4 hour (data processed is not known);
- system nodes and the GPU on-demand baseline: on-demand groups at their desired size; with
  Karpenter, whose GPU nodes follow the pods, the on-demand pool's nodes for the GPUs of services
  that may not run on spot;
- GPU reserved: every instance a reservation (Capacity Block or ODCR) holds, paid whether used or
  not, at the given hourly price or the on-demand one;
- GPU spot at min / expected / max: the spot groups' summed min and max sizes, and in between the
  nodes the services' minimum replicas ask for (their GPUs over the nodes' GPUs); each spot node is
  priced as its group's (or NodePool's) first instance type at on-demand x (1 - the family's spot
  discount); a NodePool's maximum is its GPU limit over the GPUs of a node;
- storage: node volumes (gp3) of the nodes counted above at expected, the model store's GB
  (``model_gb``, not known from the stack) in S3 Standard, and KMS keys;
- load balancers: NLBs from LoadBalancer Services, and Route 53 health checks (fast interval extra);
- logs: what the Triton services' log level and their request fronts' request log write per request
  (measured, infra.log_volume) at
  ``requests_per_s`` (not known from the stack; split evenly over the services), ingested into
  CloudWatch Logs; Fluent Bit's Kubernetes metadata comes on top.
The spot saving compares the estimate with the same fleet run entirely on demand.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferstack.infra.errors import InvalidInput
from inferstack.infra.footprint import Footprint, NodeGroupShape
from inferstack.infra.json_input import json_object

PRICES_FILE = Path(__file__).with_name("prices.json")


@dataclass(frozen=True)
class Prices:
    """The price table (prices.json): where and when it was read, its region and currency."""

    source: str
    date: str
    region: str
    currency: str
    hours_per_month: float
    on_demand_hourly: Mapping[str, float]
    spot_discount: Mapping[str, float]
    spot_discount_source: str
    eks_cluster_hourly: float
    nat_gateway_hourly: float
    public_ipv4_hourly: float
    nlb_hourly: float
    gp3_gb_month: float
    s3_standard_gb_month: float
    kms_key_month: float
    route53_health_check_month: float
    route53_fast_interval_month: float
    cloudwatch_logs_ingest_gb: float

    def on_demand(self, instance_type: str) -> float:
        if instance_type not in self.on_demand_hourly:
            raise InvalidInput(
                "prices.on_demand_hourly",
                instance_type,
                f"a price for every instance type the stack runs (the table of {self.date} has "
                f"{', '.join(sorted(self.on_demand_hourly))}); add it with --prices FILE",
            )
        return self.on_demand_hourly[instance_type]

    def spot(self, instance_type: str) -> float:
        family = instance_type.split(".")[0]
        if family not in self.spot_discount:
            raise InvalidInput(
                "prices.spot_discount",
                family,
                f"a spot discount for every spot family the stack runs (known: "
                f"{', '.join(sorted(self.spot_discount))}); add it with --prices FILE",
            )
        return self.on_demand(instance_type) * (1 - self.spot_discount[family])


def load_prices(override: Path | None = None) -> Prices:
    """The packaged table, with ``override`` (a JSON file of the same shape, any subset) on top."""
    table: dict[str, Any] = json.loads(PRICES_FILE.read_text())
    if override is not None:
        given = json_object(
            override, "--prices", readable="JSON price table", shaped="shaped like infra/prices.json"
        )
        unknown = sorted(set(given) - set(table))
        if unknown:
            raise InvalidInput("--prices", unknown, f"keys among {', '.join(table)}")
        for key, value in given.items():
            table[key] = {**table[key], **value} if isinstance(table[key], dict) else value
    for family, discount in table["spot_discount"].items():
        if not 0 <= discount < 1:
            raise InvalidInput(f"prices.spot_discount.{family}", discount, "a fraction from 0 to below 1")
    return Prices(**table)


@dataclass(frozen=True)
class Line:
    """One line of an estimate: a group's monthly cost and how it was reached."""

    group: str
    monthly: float
    detail: str
    in_total: bool = True  # spot at min and max are alternatives to the expected line, not additions


@dataclass(frozen=True)
class Estimate:
    """A stack's monthly cost: its lines, the total, and the same fleet all on demand."""

    lines: tuple[Line, ...]
    total: float
    all_on_demand: float  # the same fleet with the expected spot nodes on demand

    @property
    def spot_saving_pct(self) -> float:
        return 100 * (self.all_on_demand - self.total) / self.all_on_demand if self.all_on_demand else 0.0


def estimate(
    fp: Footprint,
    prices: Prices,
    *,
    model_gb: float = 20.0,
    reserved_hourly: float | None = None,
    requests_per_s: float = 0.0,
) -> Estimate:
    """``reserved_hourly``: what a reserved instance costs by the hour (a Capacity Block's price);
    None: its on-demand price, which is what an ODCR costs. ``requests_per_s``: the fleet's request
    rate, which prices the Triton logs."""
    if model_gb < 0:
        raise InvalidInput("model_gb", model_gb, "a size in GB >= 0")
    if reserved_hourly is not None and reserved_hourly <= 0:
        raise InvalidInput("reserved_hourly", reserved_hourly, "a price per instance-hour > 0")
    if requests_per_s < 0:
        raise InvalidInput("requests_per_s", requests_per_s, "a request rate >= 0")
    hours = prices.hours_per_month
    reserved = [g for g in fp.node_groups if g.reserved]
    on_demand = [g for g in fp.node_groups if not g.spot and not g.reserved]
    system = [g for g in on_demand if not g.gpus_per_node]
    baseline = [g for g in on_demand if g.gpus_per_node]
    spot = [g for g in fp.node_groups if g.spot]

    def hourly(groups: list[NodeGroupShape]) -> float:
        return sum(g.desired_size * prices.on_demand(g.instance_type) for g in groups) * hours

    lines = [
        Line(
            "control plane", fp.clusters * prices.eks_cluster_hourly * hours, f"{fp.clusters} EKS cluster(s)"
        ),
        Line(
            "NAT",
            (fp.nat_gateways * prices.nat_gateway_hourly + fp.public_ips * prices.public_ipv4_hourly) * hours,
            f"{fp.nat_gateways} gateway(s), {fp.public_ips} public IPv4; data processed not included",
        ),
        Line(
            "system nodes", hourly(system), ", ".join(f"{g.desired_size} x {g.instance_type}" for g in system)
        ),
        Line(
            "GPU on-demand baseline",
            hourly(baseline),
            f"{sum(g.desired_size for g in baseline)} x {baseline[0].instance_type}" if baseline else "none",
        ),
    ]
    if reserved:
        instances = sum(g.max_size for g in reserved)
        lines.append(
            Line(
                "GPU reserved",
                sum(g.max_size * (reserved_hourly or prices.on_demand(g.instance_type)) for g in reserved)
                * hours,
                f"{instances} x {reserved[0].instance_type}, paid whether used or not",
            )
        )
    expected_spot = 0
    spot_node_on_demand = 0.0
    if spot:
        low, high = sum(g.min_size for g in spot), sum(g.max_size for g in spot)
        first = spot[0]
        per_node = math.ceil(fp.spot_gpu_demand / first.gpus_per_node) if first.gpus_per_node else 0
        expected_spot = min(max(per_node, low), high)
        price = prices.spot(first.instance_type)
        spot_node_on_demand = prices.on_demand(first.instance_type) * hours
        discount = prices.spot_discount[first.instance_type.split(".")[0]]
        for label, nodes in (("min", low), ("expected", expected_spot), ("max", high)):
            lines.append(
                Line(
                    f"GPU spot ({label})",
                    nodes * price * hours,
                    f"{nodes} x {first.instance_type} at {discount:.0%} off on-demand",
                    in_total=label == "expected",
                )
            )
    node_disks = (
        sum(g.desired_size * g.disk_gib for g in on_demand)
        + sum(g.max_size * g.disk_gib for g in reserved)
        + expected_spot * (spot[0].disk_gib if spot else 0)
    )
    lines.append(
        Line(
            "storage",
            node_disks * prices.gp3_gb_month
            + fp.model_buckets * model_gb * prices.s3_standard_gb_month
            + fp.kms_keys * prices.kms_key_month,
            f"{node_disks} GiB gp3, {fp.model_buckets} x {model_gb:g} GB S3, {fp.kms_keys} KMS key(s)",
        )
    )
    fast = sum(1 for interval in fp.health_check_intervals if interval < 30)
    lines.append(
        Line(
            "load balancers",
            fp.load_balancers * prices.nlb_hourly * hours
            + len(fp.health_check_intervals) * prices.route53_health_check_month
            + fast * prices.route53_fast_interval_month,
            f"{fp.load_balancers} NLB(s) (capacity units not included), "
            f"{len(fp.health_check_intervals)} health check(s), {fast} fast",
        )
    )
    services = len(fp.service_log_bytes)
    log_gb = (
        sum(requests_per_s / services * b * 3600 * hours / 1e9 for b in fp.service_log_bytes)
        if services
        else 0
    )
    per_request = ", ".join(f"{b} B" for b in fp.service_log_bytes) or "no Triton"
    lines.append(
        Line(
            "logs",
            log_gb * prices.cloudwatch_logs_ingest_gb,
            f"{log_gb:,.1f} GB at {requests_per_s:g} req/s ({per_request} a request, measured); "
            "Fluent Bit's metadata not included",
        )
    )
    total = sum(line.monthly for line in lines if line.in_total)
    spot_expected = next((line.monthly for line in lines if line.group == "GPU spot (expected)"), 0.0)
    return Estimate(
        lines=tuple(lines),
        total=total,
        all_on_demand=total - spot_expected + expected_spot * spot_node_on_demand,
    )
